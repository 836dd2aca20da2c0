"""Snapshots of live state on a real artifact: restore + tail equals a whole replay, damage is skipped."""

from __future__ import annotations

import datetime as dt
import itertools
import random
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.live import live_state as live_state_module
from engine.live.customer_state import LiveStateConfig
from engine.live.event_log import EventLog
from engine.live.events import BehaviorEvent
from engine.live.live_state import LiveState
from engine.live.live_state_snapshot import (
    LiveStateSnapshot,
    config_digest,
    read_latest_snapshot,
    read_snapshot,
    snapshot_folder,
    write_snapshot,
)
from engine.live.state_store import MemoryStateStore
from engine.personalizer import Personalizer
from engine.personas.change_detection import ChangeDetectorConfig
from engine.personas.drift import WINDOW_HALF_LIVES, DriftConfig
from tests.engine.small_artifact import train_small_artifact

NOW = dt.datetime(2026, 3, 20, 12, 0, tzinfo=dt.UTC)
# A short baseline lag and a low threshold make drift start and end within the few days the generated
# events span.
CONFIG = LiveStateConfig(
    max_events=6,
    max_purchases=3,
    drift=DriftConfig(
        detector=ChangeDetectorConfig(threshold=2.0, baseline_lag_days=1.0, min_baseline_evidence=1.0),
        half_life_days=2.0,
    ),
)


@pytest.fixture(scope="module")
def personalizer(tmp_path_factory: pytest.TempPathFactory) -> Personalizer:
    return Personalizer.from_path(train_small_artifact(tmp_path_factory.mktemp("snapshot")), "als")


def live_state(personalizer: Personalizer, config: LiveStateConfig = CONFIG) -> LiveState:
    live = LiveState(MemoryStateStore(), config=config)
    live.attach(personalizer)
    return live


def stored_states(live: LiveState, customers: set[str]) -> dict[str, bytes | None]:
    return {c: live.store.get(live.states.key(c)) for c in sorted(customers)}


# One event: customer, item (a known one by position, or one the artifact does not know), kind, and how
# many minutes after the previous event it arrived (arrival in time order, several per day or gaps).
event_specs = st.lists(
    st.tuples(
        st.integers(0, 5),
        st.one_of(st.integers(0, 40), st.just(-1)),
        st.sampled_from(["view", "view", "add_to_cart", "purchase"]),
        st.sampled_from([0, 1, 30, 400, 1_500, 3_000]),
        st.one_of(st.none(), st.sampled_from([0.0, 0.2])),
    ),
    min_size=1,
    max_size=60,
)


def build_events(
    personalizer: Personalizer, specs: list[tuple[int, int, str, int, float | None]]
) -> list[BehaviorEvent]:
    customers = personalizer.mixes.customers.ids.tolist()
    items = personalizer.artifact.item_catalog.ids.ids.tolist()
    total = sum(gap for *_, gap, _ in specs)
    at = NOW - dt.timedelta(minutes=total + 60)
    events = []
    for n, (customer, item, kind, gap, discount) in enumerate(specs):
        at += dt.timedelta(minutes=gap)
        item_id = "not-in-the-catalog" if item < 0 else str(items[item])
        events.append(BehaviorEvent(f"e{n}", str(customers[customer * 7]), item_id, kind, at, None, discount))
    return events


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=event_specs, cut=st.floats(0, 1), page=st.integers(1, 7))
def test_restoring_a_snapshot_then_the_tail_equals_replaying_the_whole_log(
    personalizer: Personalizer, specs: list[tuple[int, int, str, int, float | None]], cut: float, page: int
) -> None:
    events = build_events(personalizer, specs)
    split = int(cut * len(events))
    customers = {e.customer_id for e in events}
    window = dt.timedelta(days=WINDOW_HALF_LIVES * CONFIG.drift.half_life_days)
    in_window = [n for n, e in enumerate(events) if e.timestamp >= NOW - window]
    chunk = live_state_module._REPLAY_CHUNK
    live_state_module._REPLAY_CHUNK = page  # pages cut the log in other places than the snapshot
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "events.db"
            with EventLog.open(path) as log:
                log.append(events[:split])
                writer = live_state(personalizer)
                written = writer.write_snapshot(log, snapshot_folder(path), now=NOW)
                assert (written is None) == (split == 0)
                log.append(events[split:])
                whole = live_state(personalizer)
                replay = whole.catch_up(log, now=NOW)
                restored = live_state(personalizer)
                tail = restored.catch_up(log, now=NOW, snapshots=snapshot_folder(path))
    finally:
        live_state_module._REPLAY_CHUNK = chunk
    assert (replay.replayed, replay.restored) == (len(in_window), 0)
    assert tail.replayed == sum(n >= split for n in in_window)
    assert tail.snapshot_rowid == split and tail.through_rowid == len(events)
    assert stored_states(restored, customers) == stored_states(whole, customers)


def test_the_snapshot_advances_from_the_last_one_and_only_the_newest_are_kept(
    personalizer: Personalizer, tmp_path: Path
) -> None:
    events = build_events(personalizer, [(n % 4, n % 30, "view", 200, None) for n in range(30)])
    path, folder = tmp_path / "events.db", tmp_path / "events.db.live-state"
    writer = live_state(personalizer)
    with EventLog.open(path) as log:
        for start in (0, 10, 20):
            log.append(events[start : start + 10])
            snapshot = writer.write_snapshot(log, folder, now=NOW)
            assert snapshot is not None and snapshot.last_event_rowid == start + 10
        assert writer.write_snapshot(log, folder, now=NOW) is None  # nothing new
    assert sorted(p.name for p in folder.glob("*.json")) == [
        "snapshot-000000000000020.json",
        "snapshot-000000000000030.json",
    ]
    assert read_snapshot(folder / "snapshot-000000000000030.json").artifact_version == (
        personalizer.artifact.version
    )


def snapshot_of(rowid: int, digest: str) -> LiveStateSnapshot:
    return LiveStateSnapshot(rowid, NOW, "v1", digest, ("c1",), (b'{"v":1}',), (1,))


def test_a_damaged_snapshot_or_one_of_other_settings_is_skipped_for_the_next_older(tmp_path: Path) -> None:
    digest = config_digest(CONFIG)
    write_snapshot(tmp_path, snapshot_of(5, digest))
    write_snapshot(tmp_path, snapshot_of(9, digest))
    newest = read_latest_snapshot(tmp_path, digest)
    assert newest is not None and newest.last_event_rowid == 9
    parquet = tmp_path / "snapshot-000000000000009.parquet"
    parquet.write_bytes(parquet.read_bytes()[:-3] + b"xyz")
    older = read_latest_snapshot(tmp_path, digest)
    assert older is not None and older.last_event_rowid == 5 and older.states == (b'{"v":1}',)
    assert read_latest_snapshot(tmp_path, config_digest(LiveStateConfig())) is None
    assert read_latest_snapshot(tmp_path / "missing", digest) is None


def test_a_stop_request_ends_the_rebuild_between_pages(personalizer: Personalizer, tmp_path: Path) -> None:
    events = build_events(personalizer, [(n % 4, n % 30, "view", 10, None) for n in range(40)])
    stop = threading.Event()
    stop.set()
    with EventLog.open(tmp_path / "events.db") as log:
        log.append(events)
        caught_up = live_state(personalizer).catch_up(log, now=NOW, stop=stop)
        assert caught_up.stopped and caught_up.replayed == 0
        assert (
            live_state(personalizer).write_snapshot(log, tmp_path / "snapshots", now=NOW, stop=stop) is None
        )
    assert not (tmp_path / "snapshots").exists()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    specs=event_specs,
    arrival=st.randoms(use_true_random=False),
    cuts=st.lists(st.floats(0, 1), max_size=5),
    snapshot_after=st.floats(0, 1),
    page=st.integers(1, 7),
)
def test_a_restart_ends_in_the_live_state_whatever_order_the_batches_arrived_in(
    personalizer: Personalizer,
    specs: list[tuple[int, int, str, int, float | None]],
    arrival: random.Random,
    cuts: list[float],
    snapshot_after: float,
    page: int,
) -> None:
    """Events that arrive out of time order, in batches (a mobile app's queue, a backfill), then a
    restart: replaying the log from nothing, or a snapshot and the tail, ends in the state the live
    path reached (a fuzz pass found the drift statistic of 50 of 400 customers changed by a restart
    without a snapshot, 14.15 nats live against 37.52 after)."""
    events = build_events(personalizer, specs)
    arrival.shuffle(events)
    bounds = sorted({0, len(events), *(int(c * len(events)) for c in cuts)})
    batches = [events[a:b] for a, b in itertools.pairwise(bounds)]
    snapshot_at = int(snapshot_after * len(batches))
    customers = {e.customer_id for e in events}
    chunk = live_state_module._REPLAY_CHUNK
    live_state_module._REPLAY_CHUNK = page
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "events.db"
            with EventLog.open(path) as log:
                live = LiveState(MemoryStateStore(), config=CONFIG, clock=lambda: NOW)
                live.attach(personalizer)
                for number, batch in enumerate(batches):
                    if number == snapshot_at:
                        live_state(personalizer).write_snapshot(log, snapshot_folder(path), now=NOW)
                    live.observe(log.append(batch).new_events, [])
                whole = live_state(personalizer)
                whole.catch_up(log, now=NOW)
                restored = live_state(personalizer)
                restored.catch_up(log, now=NOW, snapshots=snapshot_folder(path))
    finally:
        live_state_module._REPLAY_CHUNK = chunk
    assert stored_states(whole, customers) == stored_states(live, customers)
    assert stored_states(restored, customers) == stored_states(live, customers)
