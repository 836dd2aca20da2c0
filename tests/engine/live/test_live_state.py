"""LiveState's wiring: what attach builds, where events go, what is counted, what catch_up replays.

The customer states themselves are tested on a real artifact in test_customer_state.py and
test_live_loop.py; here they are replaced by a recorder, so each promise of LiveState is checked alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from engine.live import live_state as live_state_module
from engine.live.customer_state import LiveStateConfig
from engine.live.event_log import EventLog
from engine.live.events import BehaviorEvent, DecisionOutcome, OutcomeKind
from engine.live.live_state import LiveState
from engine.live.state_store import MemoryStateStore
from engine.personas.change_detection import ChangeDetectorConfig
from engine.personas.drift import DEFAULT_THRESHOLD, DriftConfig, DriftStatus
from engine.personas.drift_calibration import DriftCalibration, statistic_settings

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)


class RecordingStates:
    """Stands in for LiveCustomerStates: keeps what it was built with and every batch it observes."""

    def __init__(
        self,
        store: object,
        scorer: object,
        mixes: object,
        config: LiveStateConfig,
        *,
        on_drift_started: Callable[[str, DriftStatus], None],
        on_drift_ended: Callable[[str], None],
        prior_mean: object,
        drift_threshold: float | None = None,
    ) -> None:
        self.built_with = (store, scorer, mixes, config)
        self.drift_threshold = drift_threshold
        self.on_drift_started = on_drift_started
        self.on_drift_ended = on_drift_ended
        self.prior_mean = prior_mean
        self.batches: list[tuple[list[BehaviorEvent], tuple[DecisionOutcome, ...]]] = []
        self.arrivals: list[list[list[str]]] = []

    def observe(self, events: Sequence[BehaviorEvent], outcomes: Sequence[DecisionOutcome]) -> None:
        self.batches.append((list(events), tuple(outcomes)))

    def observe_batches(self, batches: Sequence[Sequence[BehaviorEvent]]) -> None:
        """A replay's page: recorded as one call, its arrival batches kept apart in ``arrivals``."""
        self.batches.append(([e for batch in batches for e in batch], ()))
        self.arrivals.append([[e.event_id for e in batch] for batch in batches])


class Scorer:
    @classmethod
    def from_artifact(cls, artifact: object) -> tuple[str, object]:
        return ("scorer of", artifact)


@dataclass(frozen=True)
class Artifact:
    version: str = "20260301T000000Z"
    mix_overall: tuple[tuple[float, ...], ...] = ((0.6, 0.4), (0.2, 0.8))
    drift_calibration: DriftCalibration | None = None


@dataclass
class Model:
    artifact: object = field(default_factory=Artifact)
    mixes: object = field(default_factory=object)
    live: object = None

    def use_live_state(self, live: object) -> None:
        self.live = live


@dataclass
class Metrics:
    events: list[int] = field(default_factory=list)
    drifts: int = 0
    ended: int = 0

    def record_live_events(self, count: int) -> None:
        self.events.append(count)

    def record_drift_started(self) -> None:
        self.drifts += 1

    def record_drift_ended(self) -> None:
        self.ended += 1


@pytest.fixture(autouse=True)
def recording(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_state_module, "LiveCustomerStates", RecordingStates)
    monkeypatch.setattr(live_state_module, "LiveEventScorer", Scorer)


def view(n: int, at: dt.datetime) -> BehaviorEvent:
    return BehaviorEvent(f"e{n}", f"c{n % 2}", "i1", "view", at)


def test_attach_builds_states_on_the_shared_store_and_gives_them_to_the_model() -> None:
    store, config = MemoryStateStore(), LiveStateConfig(max_events=8)
    live = LiveState(store, config=config)
    assert LiveState(store).config == LiveStateConfig()
    with pytest.raises(RuntimeError, match="no model attached"):
        _ = live.states
    model = Model()
    states = live.attach(model)  # type: ignore[arg-type]
    assert states.built_with == (store, ("scorer of", model.artifact), model.mixes, config)
    np.testing.assert_allclose(states.prior_mean, [0.4, 0.6])  # the artifact's mean mix: as offline
    assert states.drift_threshold == DEFAULT_THRESHOLD  # this artifact holds no calibrated threshold
    assert model.live is states and live.states is states


def test_attach_tests_drift_against_the_artifacts_calibrated_threshold() -> None:
    calibrated = DriftCalibration(7.25, 0.05, 1_000, 950, 20_000, statistic_settings(ChangeDetectorConfig()))
    model = Model(artifact=Artifact(drift_calibration=calibrated))
    assert LiveState(MemoryStateStore()).attach(model).drift_threshold == 7.25  # type: ignore[arg-type]
    # a threshold set in the live config wins over the artifact's
    configured = LiveStateConfig(drift=DriftConfig(detector=ChangeDetectorConfig(threshold=3.0)))
    assert LiveState(MemoryStateStore(), config=configured).attach(model).drift_threshold == 3.0  # type: ignore[arg-type]
    # a live test with other settings than the calibrated one computes another statistic
    other = LiveStateConfig(drift=DriftConfig(detector=ChangeDetectorConfig(shift=0.3)))
    assert LiveState(MemoryStateStore(), config=other).attach(model).drift_threshold == DEFAULT_THRESHOLD  # type: ignore[arg-type]


def test_events_go_to_the_model_attached_last_and_are_counted() -> None:
    metrics = Metrics()
    live = LiveState(MemoryStateStore(), metrics, clock=lambda: NOW)
    live.observe([view(0, NOW)], [])  # nothing attached yet: dropped, not counted
    old = live.attach(Model())  # type: ignore[arg-type]
    new = live.attach(Model())  # type: ignore[arg-type]
    events = [view(1, NOW), view(2, NOW)]
    outcome = DecisionOutcome("o1", "d1", "c1", OutcomeKind.OFFER_SHOWN, NOW)
    live.observe(events, [outcome])
    live.observe([], [outcome])  # outcomes alone are the bandits' business
    assert old.batches == []
    assert new.batches == [(events, (outcome,))]
    assert metrics.events == [2]


def test_drifts_the_states_start_and_end_are_counted_in_the_metrics() -> None:
    metrics = Metrics()
    states = LiveState(MemoryStateStore(), metrics).attach(Model())  # type: ignore[arg-type]
    status = DriftStatus(
        drifting=True,
        statistic=8.0,
        confidence=0.99,
        since=NOW,
        from_persona="p0",
        to_persona="p1",
        evidence=4.0,
        threshold=6.0,
    )
    states.on_drift_started("c1", status)
    states.on_drift_started("c2", status)
    states.on_drift_ended("c1")
    assert (metrics.drifts, metrics.ended) == (2, 1)
    without_metrics = LiveState(MemoryStateStore()).attach(Model())  # type: ignore[arg-type]
    without_metrics.on_drift_started("c1", status)
    without_metrics.on_drift_ended("c1")


def test_only_an_in_memory_store_is_process_local() -> None:
    class SharedStore:  # stands in for Redis: the state outlives the process
        pass

    assert LiveState(MemoryStateStore()).is_process_local
    assert not LiveState(SharedStore()).is_process_local  # type: ignore[arg-type]


def test_catch_up_replays_the_drift_window_in_arrival_order_and_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_state_module, "_REPLAY_CHUNK", 2)
    config = LiveStateConfig(drift=DriftConfig(half_life_days=1.5))  # window: 4 half-lives = 6 days
    ages = [dt.timedelta(days=d) for d in (7, 6, 0.5, 3, 6.0001, 1, 2)]
    with EventLog.open(tmp_path / "events.db") as log:
        for batch in ((0, 1), (2, 3, 4), (5,), (6,)):  # as four RecordEvents calls stored them
            log.append([view(n, NOW - ages[n]) for n in batch])
        live = LiveState(MemoryStateStore(), config=config)
        with pytest.raises(RuntimeError, match="no model attached"):
            live.catch_up(log, now=NOW)
        states = live.attach(Model())  # type: ignore[arg-type]
        caught_up = live.catch_up(log, now=NOW)
    assert (caught_up.replayed, caught_up.restored, caught_up.through_rowid) == (5, 0, 7)
    assert not caught_up.stopped
    # e0 and e4 are older than the window. Pages of two events, but a batch no longer than a page
    # is never cut: the first page ends at e2, and e2 waits for e3, which arrived with it.
    assert states.arrivals == [[["e1"]], [["e2", "e3"]], [["e5"]], [["e6"]]]
    assert all(outcomes == () for _, outcomes in states.batches)


def test_events_older_than_the_drift_window_are_left_out_as_a_restart_would_leave_them(
    tmp_path: Path,
) -> None:
    """A backfill through RecordEvents is logged, but only its events inside the drift window move
    live state: the ones a restart's replay of the log would replay, so a customer's drift verdict
    is the same before and after a restart (found by a fuzz pass: 200 of 400 customers differed)."""
    config = LiveStateConfig(drift=DriftConfig(half_life_days=1.5))  # window: 4 half-lives = 6 days
    ages = [dt.timedelta(days=d) for d in (9, 7, 6.0001, 6, 2, 0.5)]
    events = [view(n, NOW - age) for n, age in enumerate(ages)]
    metrics = Metrics()
    live = LiveState(MemoryStateStore(), metrics, config=config, clock=lambda: NOW)
    serving = live.attach(Model())  # type: ignore[arg-type]
    live.observe(events, [])
    live.observe(events[:2], [])  # nothing recent: nothing to hand on, nothing counted
    with EventLog.open(tmp_path / "events.db") as log:
        log.append(events)
        rebuilt_live = LiveState(MemoryStateStore(), config=config)
        rebuilt = rebuilt_live.attach(Model())  # type: ignore[arg-type]
        rebuilt_live.catch_up(log, now=NOW)
    observed = [e.event_id for batch, _ in serving.batches for e in batch]
    assert observed == [e.event_id for batch, _ in rebuilt.batches for e in batch] == ["e3", "e4", "e5"]
    assert metrics.events == [3]
