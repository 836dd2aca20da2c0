"""The server's background upkeep: it writes the live-state snapshot and archives what training read."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.live.event_archive import archive_events, archive_folder, read_archived_events
from engine.live.event_log import EventLog
from engine.live.events import BehaviorEvent
from engine.live.live_state import LiveState
from engine.live.live_state_snapshot import (
    config_digest,
    newest_snapshot_rowid,
    read_latest_snapshot,
    snapshot_folder,
)
from engine.live.state_store import MemoryStateStore
from engine.personalizer import Personalizer
from serving import log_upkeep
from serving.idle_priority import idle_policy_supported
from serving.log_upkeep import LogUpkeep
from serving.settings import ServeConfigError, add_serve_arguments, settings_from_args
from serving.worker_supervisor import worker_command
from tests.serving.server_harness import trained_artifacts
from training.logged_events import read_logged_events

needs_idle_policy = pytest.mark.skipif(not idle_policy_supported(), reason="SCHED_IDLE is a Linux policy")


def _one_customer_and_item(tmp_path_factory: pytest.TempPathFactory) -> tuple[Personalizer, str, str]:
    """The tests' trained artifact, a customer it knows and an item of its catalog."""
    personalizer = Personalizer.from_path(trained_artifacts(tmp_path_factory).older)
    return (
        personalizer,
        str(personalizer.mixes.customers.ids[0]),
        str(personalizer.artifact.item_catalog.ids.ids[0]),
    )


@pytest.fixture
def upkeep_due_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first snapshot and the first retention round are due as soon as the upkeep starts."""
    monkeypatch.setattr(log_upkeep, "FIRST_SNAPSHOT_S", 0.0)
    monkeypatch.setattr(log_upkeep, "FIRST_RETENTION_S", 0.0)


def _snapshots_on_the_tail_only(monkeypatch: pytest.MonkeyPatch, tail_events: int) -> None:
    """No periodic snapshot or retention round comes; a tail of ``tail_events`` triggers a snapshot,
    checked every 20 ms, however soon after the last one."""
    monkeypatch.setattr(log_upkeep, "FIRST_SNAPSHOT_S", 3_600.0)
    monkeypatch.setattr(log_upkeep, "FIRST_RETENTION_S", 3_600.0)
    monkeypatch.setattr(log_upkeep, "SNAPSHOT_TAIL_EVENTS", tail_events)
    monkeypatch.setattr(log_upkeep, "SNAPSHOT_CHECK_S", 0.02)
    monkeypatch.setattr(log_upkeep, "SNAPSHOT_MIN_GAP_S", 0.0)


def _live_state(personalizer: Personalizer) -> LiveState:
    live = LiveState(MemoryStateStore())
    live.attach(personalizer)
    return live


def _log_views(path: Path, customer: str, item: str, numbers: range) -> None:
    """Views ``e<n>`` of ``item`` by ``customer``, each ``n`` minutes ago, appended to the log."""
    now = dt.datetime.now(dt.UTC)
    with EventLog.open(path) as log:
        log.append(
            [BehaviorEvent(f"e{n}", customer, item, "view", now - dt.timedelta(minutes=n)) for n in numbers]
        )


def _logged(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, views: int
) -> tuple[Path, LiveState, str, str]:
    """A log at ``tmp_path`` with ``views`` views of one item by one customer (``_log_views``), and a
    live state over the tests' artifact; returns the log's path, the live state, the customer and
    the item."""
    personalizer, customer, item = _one_customer_and_item(tmp_path_factory)
    path = tmp_path / "events.db"
    _log_views(path, customer, item, range(views))
    return path, _live_state(personalizer), customer, item


@contextlib.contextmanager
def _running(upkeep: LogUpkeep) -> Iterator[LogUpkeep]:
    """``upkeep`` started for the block and closed after it, whatever happens in it."""
    upkeep.start()
    try:
        yield upkeep
    finally:
        upkeep.close()


def _wait_until(done: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Poll ``done`` until it holds; fail naming ``what`` did not happen within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"{what} after {timeout_s:g} s"
        time.sleep(0.02)


@pytest.mark.usefixtures("upkeep_due_at_once")
def test_upkeep_writes_the_snapshot_and_moves_old_read_events_to_the_archive(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    personalizer, customer, item = _one_customer_and_item(tmp_path_factory)
    now = dt.datetime.now(dt.UTC)
    path = tmp_path / "events.db"
    with EventLog.open(path) as log:
        log.append(
            [BehaviorEvent(f"old{n}", customer, item, "view", now - dt.timedelta(days=90)) for n in range(4)]
        )
        log.append(
            [BehaviorEvent(f"new{n}", customer, item, "view", now - dt.timedelta(hours=n)) for n in range(3)]
        )
    read_logged_events(path)  # a training run read all 7
    live = _live_state(personalizer)
    with _running(LogUpkeep(path, live)):
        _wait_until(
            lambda: (
                read_latest_snapshot(snapshot_folder(path), config_digest(live.config)) is not None
                and any(archive_folder(path).glob("*.parquet"))
            ),
            "no snapshot or no archive part",
        )
    snapshot = read_latest_snapshot(snapshot_folder(path), config_digest(live.config))
    assert snapshot is not None and snapshot.last_event_rowid == 7
    assert snapshot.customer_ids == (customer,) and snapshot.artifact_version == personalizer.artifact.version
    assert sorted(read_archived_events(archive_folder(path))["event_id"]) == [f"old{n}" for n in range(4)]
    with EventLog.open(path) as log:
        assert log.event_ids() == {"new0", "new1", "new2"}


@pytest.mark.usefixtures("upkeep_due_at_once")
def test_upkeep_forgets_the_ids_archived_before_its_window(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    personalizer, customer, item = _one_customer_and_item(tmp_path_factory)
    now = dt.datetime.now(dt.UTC)
    path = tmp_path / "events.db"

    def log_old_and_new(numbers: range, new: str) -> None:
        with EventLog.open(path) as log:
            old = [
                BehaviorEvent(f"old{n}", customer, item, "view", now - dt.timedelta(days=90)) for n in numbers
            ]
            log.append([*old, BehaviorEvent(new, customer, item, "view", now)])
        read_logged_events(path)

    log_old_and_new(range(4), "new0")
    with EventLog.open(path) as log:  # archived 40 days ago, as far as the log knows
        assert archive_events(log, archive_folder(path), now - dt.timedelta(days=56)).moved == 4
    with sqlite3.connect(path) as raw:
        raw.execute(
            "UPDATE archived_ids SET archived_s = ?", (int((now - dt.timedelta(days=40)).timestamp()),)
        )
    log_old_and_new(range(4, 6), "new1")

    def archived_ids() -> set[str]:
        with sqlite3.connect(path) as raw:
            return {row[0] for row in raw.execute("SELECT id FROM archived_ids")}

    upkeep = LogUpkeep(
        path, _live_state(personalizer), snapshots=False, forget_ids_after=dt.timedelta(days=30)
    )
    with _running(upkeep):
        _wait_until(lambda: archived_ids() == {"old4", "old5"}, "the old ids were not forgotten")
    assert sorted(read_archived_events(archive_folder(path))["event_id"]) == [f"old{n}" for n in range(6)]


def test_the_forget_window_reaches_the_upkeep_process_and_needs_a_sqlite_log(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    EventLog.open(tmp_path / "events.db").close()
    base = ["--artifact", str(tmp_path), "--event-log", str(tmp_path / "events.db")]
    assert settings_from_args(parser.parse_args(base), {}).forget_archived_ids_after_days is None
    asked = settings_from_args(parser.parse_args([*base, "--forget-archived-ids-after-days", "7.5"]), {})
    command = worker_command(asked, "127.0.0.1:0", tmp_path, 0)
    upkeep = settings_from_args(parser.parse_args(["--artifact", str(tmp_path), *command[3:]]), {})
    assert upkeep.forget_archived_ids_after_days == 7.5
    with pytest.raises(
        ServeConfigError, match=r"--forget-archived-ids-after-days 0: must be a number of days"
    ):
        settings_from_args(parser.parse_args([*base, "--forget-archived-ids-after-days", "0"]), {})
    with pytest.raises(ServeConfigError, match=r"applies to a SQLite --event-log, and none is given"):
        settings_from_args(
            parser.parse_args(["--artifact", str(tmp_path), "--forget-archived-ids-after-days", "7"]), {}
        )


def test_upkeep_snapshots_as_soon_as_the_tail_a_restart_would_replay_grows_long(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only on the clock: a log that grows fast gets a snapshot per ``SNAPSHOT_TAIL_EVENTS``."""
    _snapshots_on_the_tail_only(monkeypatch, 5)
    # a start-up that finds a tail over the bound snapshots it
    path, live, customer, item = _logged(tmp_path, tmp_path_factory, 6)
    folder = snapshot_folder(path)

    def wait_for_snapshot_through(rowid: int) -> None:
        _wait_until(lambda: newest_snapshot_rowid(folder) == rowid, f"no snapshot through event {rowid}")

    with _running(LogUpkeep(path, live)):
        wait_for_snapshot_through(6)
        _log_views(path, customer, item, range(6, 9))  # 3 after it: under the bound, 25 checks later none
        time.sleep(0.5)
        assert newest_snapshot_rowid(folder) == 6
        _log_views(path, customer, item, range(9, 11))  # 5 after it: at the bound
        wait_for_snapshot_through(11)
    snapshot = read_latest_snapshot(folder, config_digest(live.config))
    assert snapshot is not None and snapshot.last_event_rowid == 11 and snapshot.customer_ids == (customer,)


@needs_idle_policy
@pytest.mark.usefixtures("upkeep_due_at_once")
def test_the_snapshot_replays_on_an_idle_priority_thread_and_retention_does_not(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention deletes in write transactions that RecordEvents would queue behind: normal priority."""
    path, live, _, _ = _logged(tmp_path, tmp_path_factory, 1)
    policies: dict[str, int] = {}
    write_snapshot, archive_events = live.write_snapshot, log_upkeep.archive_events

    def snapshot_noting_policy(*args: Any, **kwargs: Any) -> Any:
        policies["snapshot"] = os.sched_getscheduler(0)
        return write_snapshot(*args, **kwargs)

    def retention_noting_policy(*args: Any, **kwargs: Any) -> Any:
        policies["retention"] = os.sched_getscheduler(0)
        return archive_events(*args, **kwargs)

    monkeypatch.setattr(live, "write_snapshot", snapshot_noting_policy)
    monkeypatch.setattr(log_upkeep, "archive_events", retention_noting_policy)
    with _running(LogUpkeep(path, live)):
        _wait_until(
            lambda: newest_snapshot_rowid(snapshot_folder(path)) == 1 and "retention" in policies,
            "no snapshot or no retention round",
        )
    assert policies == {"snapshot": os.SCHED_IDLE, "retention": os.sched_getscheduler(0)}


def _noting_policies(live: LiveState, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """(scheduling policy, wrote a snapshot) of each ``write_snapshot`` call, in the order they end."""
    calls: list[tuple[int, bool]] = []
    write_snapshot = live.write_snapshot

    def noting(*args: Any, **kwargs: Any) -> Any:
        policy = os.sched_getscheduler(0)
        snapshot = write_snapshot(*args, **kwargs)
        calls.append((policy, snapshot is not None))
        return snapshot

    monkeypatch.setattr(live, "write_snapshot", noting)
    return calls


@needs_idle_policy
@pytest.mark.usefixtures("upkeep_due_at_once")
def test_a_snapshot_that_gets_no_idle_cpu_is_written_at_the_upkeeps_priority_and_the_idle_one_gives_up(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Cores that never idle starve a SCHED_IDLE thread; restarts must not replay ever longer tails.

    The idle thread is kept busy (as a saturated machine keeps it from running) while the first
    snapshot is due: after the patience the upkeep thread writes it, and the idle attempt, once it
    runs, ends without writing.
    """
    monkeypatch.setattr(log_upkeep, "SNAPSHOT_IDLE_PATIENCE_S", 0.3)
    monkeypatch.setattr(log_upkeep, "SNAPSHOT_CHECK_S", 0.02)
    path, live, _, _ = _logged(tmp_path, tmp_path_factory, 1)
    calls = _noting_policies(live, monkeypatch)
    upkeep = LogUpkeep(path, live)
    gate = threading.Event()
    busy = upkeep._idle.submit(gate.wait)  # the idle thread gets no turn until the gate opens
    try:
        with _running(upkeep):
            _wait_until(lambda: newest_snapshot_rowid(snapshot_folder(path)) == 1, "no snapshot")
            assert calls == [(os.sched_getscheduler(0), True)]  # the upkeep thread's, not SCHED_IDLE
            assert "no idle CPU in 0.3s on the idle thread; replaying at the upkeep's priority" in caplog.text
            gate.set()
            busy.result(timeout=10)
            _wait_until(lambda: len(calls) == 2, "the idle attempt never ran")
    finally:
        gate.set()  # before the close, which waits for the idle thread
    assert calls[1] == (os.SCHED_IDLE, False)  # given up: stopped before writing
    assert newest_snapshot_rowid(snapshot_folder(path)) == 1


@needs_idle_policy
@pytest.mark.usefixtures("upkeep_due_at_once")
def test_a_tail_at_the_overdue_bound_is_snapshotted_at_the_upkeeps_priority_without_waiting(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_upkeep, "SNAPSHOT_OVERDUE_EVENTS", 3)
    path, live, _, _ = _logged(tmp_path, tmp_path_factory, 3)
    calls = _noting_policies(live, monkeypatch)
    with _running(LogUpkeep(path, live)):
        _wait_until(lambda: newest_snapshot_rowid(snapshot_folder(path)) == 3, "no snapshot")
    assert calls == [(os.sched_getscheduler(0), True)]


@needs_idle_policy
def test_the_first_snapshot_of_a_tail_the_start_replayed_is_written_at_once_and_later_ones_wait_for_idle_cpu(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that crashes again before that snapshot is written would replay the tail again, and more
    (the crash benchmark: tails of 24,800 and 32,220 events when it waited for idle CPU)."""
    _snapshots_on_the_tail_only(monkeypatch, 2)
    path, live, customer, item = _logged(tmp_path, tmp_path_factory, 3)
    calls = _noting_policies(live, monkeypatch)
    with _running(LogUpkeep(path, live)):
        _wait_until(lambda: newest_snapshot_rowid(snapshot_folder(path)) == 3, "no snapshot at start")
        _log_views(path, customer, item, range(3, 5))
        _wait_until(lambda: newest_snapshot_rowid(snapshot_folder(path)) == 5, "no snapshot of the new tail")
    assert calls == [(os.sched_getscheduler(0), True), (os.SCHED_IDLE, True)]
