"""A deployment's live customer state: one StateStore, attached to every model the process serves.

Each artifact served (at startup and on every reload) gets its own
``engine.live.customer_state.LiveCustomerStates`` (its persona model scores events, its mixes are the
long-term ones), built into the model's mix resolution before the model starts serving, so the first
request a new model answers already sees live state. The state itself lives in the StateStore and
outlives reloads. As a LiveEventObserver, this object hands accepted events to the states of the
model attached last, and counts them and the drifts they start in the metrics it is given (the
server's; anything with the two ``record_`` methods of ``LiveStateMetrics``).

With ``--workers N`` and the default in-memory store each worker keeps its own state; a
``--state redis://...`` store is shared by all workers and replicas and survives restarts (start-up
then replays nothing). An in-memory store starts empty, so a server with an event log first rebuilds
it (``catch_up``): from the newest snapshot (``engine.live.live_state_snapshot``), then the logged
events after it that are recent enough to count (the drift window), so a restart loses no session and
no drift and replays only what the snapshot does not hold. ``write_snapshot`` advances the snapshot:
it restores the newest one into a private store, replays the events logged since and writes the
result, without touching the serving state; the server runs it in the background.

Restoring a snapshot and replaying the rest gives the same state as replaying the whole window
(tested): a customer's state after a batch depends only on their own events, and a day's drift check
replaces any earlier check of that day, so it does not matter where the snapshot cut the log. It
assumes a customer's events arrive in time order, as replay has always assumed within a batch.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from engine.live.arrival_batches import arrival_batches
from engine.live.customer_state import LiveCustomerStates, LiveStateConfig
from engine.live.event_log import EventLog, to_micros
from engine.live.event_scoring import LiveEventScorer
from engine.live.events import BehaviorEvent, DecisionOutcome
from engine.live.live_state_snapshot import (
    LiveStateSnapshot,
    config_digest,
    read_latest_snapshot,
    write_snapshot,
)
from engine.live.state_store import MemoryStateStore, StateStore
from engine.personalizer import Personalizer
from engine.personas.drift import WINDOW_HALF_LIVES, DriftStatus, population_mean_mix
from engine.personas.drift_calibration import live_threshold

LOGGER = logging.getLogger("persona_engine.live")

_REPLAY_CHUNK = 5_000  # events per observe call when catching up
_SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class CatchUp:
    """What one rebuild of live state did."""

    restored: int  # customers restored from the snapshot
    snapshot_rowid: int  # the log position the snapshot covered (0: none was used)
    replayed: int  # events replayed after it
    through_rowid: int  # the log position the state now covers
    stopped: bool = False  # asked to stop before the end: the state is incomplete


class LiveStateMetrics(Protocol):
    """What live state counts: events folded into customer state, and drifts those events start and end."""

    def record_live_events(self, count: int) -> None: ...

    def record_drift_started(self) -> None: ...

    def record_drift_ended(self) -> None: ...


class LiveState:
    """Attaches live customer state to models and feeds it accepted events."""

    def __init__(
        self,
        store: StateStore,
        metrics: LiveStateMetrics | None = None,
        config: LiveStateConfig | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.store = store
        self.config = config or LiveStateConfig()
        self._metrics = metrics
        self._current: LiveCustomerStates | None = None
        self.artifact_version = ""  # of the model attached last: recorded in snapshots
        self._lock = threading.Lock()
        self._clock = clock

    def attach(self, personalizer: Personalizer) -> LiveCustomerStates:
        """Give ``personalizer`` live state; call before it serves (the server's model ``prepare`` hook)."""
        threshold, source = live_threshold(self.config.drift, personalizer.artifact.drift_calibration)
        LOGGER.info("drift threshold %.3f nats: %s", threshold, source)
        states = LiveCustomerStates(
            self.store,
            LiveEventScorer.from_artifact(personalizer.artifact),
            personalizer.mixes,
            self.config,
            on_drift_started=self._drift_started,
            on_drift_ended=self._drift_ended,
            prior_mean=population_mean_mix(np.asarray(personalizer.artifact.mix_overall, dtype=np.float64)),
            drift_threshold=threshold,
        )
        personalizer.use_live_state(states)
        with self._lock:
            self._current = states
            self.artifact_version = personalizer.artifact.version
        return states

    @property
    def states(self) -> LiveCustomerStates:
        if self._current is None:
            raise RuntimeError("no model attached to the live state yet")
        return self._current

    def observe(self, events: Sequence[BehaviorEvent], outcomes: Sequence[DecisionOutcome]) -> None:
        """Hand accepted events to the states, but only those recent enough to count (the drift
        window), the rule a restart's replay applies: an event that happened earlier (a backfill,
        say) is logged and trains the next models, but moving live state with it would give a
        customer another drift verdict after a restart than before it."""
        with self._lock:
            states = self._current
        if states is None or not events:
            return
        since = window_start(self.config, self._clock())
        recent = [event for event in events if event.timestamp >= since]
        if not recent:
            return
        states.observe(recent, outcomes)
        if self._metrics is not None:
            self._metrics.record_live_events(len(recent))

    @property
    def is_process_local(self) -> bool:
        """Whether the state dies with the process (and must be rebuilt from the event log at start)."""
        return isinstance(self.store, MemoryStateStore)

    def catch_up(
        self,
        event_log: EventLog,
        now: dt.datetime | None = None,
        *,
        snapshots: Path | None = None,
        stop: threading.Event | None = None,
    ) -> CatchUp:
        """Rebuild the state: the newest usable snapshot in ``snapshots`` (when given), then the logged
        events after it recent enough to still count (the drift window), in arrival order.

        Older events weigh under 1/16 of a fresh one in the drift check and nothing in a session.
        ``stop`` is checked between pages of events: a server asked to stop during start-up stops
        within one page instead of finishing the rebuild.
        """
        with _cyclic_collector_paused():
            return _rebuild(self.states, self.config, event_log, now, snapshots, stop)[0]

    def write_snapshot(
        self,
        event_log: EventLog,
        folder: Path,
        now: dt.datetime | None = None,
        stop: threading.Event | None = None,
    ) -> LiveStateSnapshot | None:
        """Advance the snapshot in ``folder`` to the end of the log; None when there was nothing new
        (or ``stop`` was set). The serving state is not touched: the newest snapshot is restored into
        a private store, the events logged since are replayed into it, and it is written out."""
        current = self.states
        private = MemoryStateStore(max_values=2**62)
        states = LiveCustomerStates(
            private,
            current.scorer,
            current.mixes,
            self.config,
            prior_mean=current.prior_mean,
            drift_threshold=current.drift_threshold,
        )
        result, last_event_us = _rebuild(states, self.config, event_log, now, folder, stop)
        if result.stopped or result.through_rowid == result.snapshot_rowid:
            return None
        customers = sorted(last_event_us)
        stored = [(c, private.get(states.key(c))) for c in customers]
        present = [(c, data) for c, data in stored if data is not None]
        snapshot = LiveStateSnapshot(
            last_event_rowid=result.through_rowid,
            taken_at=now or dt.datetime.now(dt.UTC),
            artifact_version=self.artifact_version,
            config_digest=config_digest(self.config),
            customer_ids=tuple(c for c, _ in present),
            states=tuple(data for _, data in present),
            last_event_us=tuple(last_event_us[c] for c, _ in present),
        )
        write_snapshot(folder, snapshot)
        return snapshot

    def _drift_started(self, customer_id: str, status: DriftStatus) -> None:
        if self._metrics is not None:
            self._metrics.record_drift_started()

    def _drift_ended(self, customer_id: str) -> None:
        if self._metrics is not None:
            self._metrics.record_drift_ended()


@contextlib.contextmanager
def _cyclic_collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a start-up rebuild runs.

    A rebuild decodes and re-encodes thousands of customer states: millions of short-lived, acyclic
    objects (tuples, lists, small arrays) that reference counting frees. Each 700 allocations made the
    collector scan the young generation, and every so often the whole heap with the model in it: a
    quarter of the rebuild's CPU time (2.9 s -> 2.2 s on the start-up benchmark's 1M-event log),
    for nothing to collect. Only for ``catch_up``, which runs before serving: the background snapshot
    runs beside request handling, whose garbage must still be collected.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def window_start(config: LiveStateConfig, now: dt.datetime) -> dt.datetime:
    """The oldest moment an event may have happened and still move live state: one rule for events as
    they arrive (``LiveState.observe``) and as a restart replays them (``_rebuild``)."""
    return now - dt.timedelta(days=WINDOW_HALF_LIVES * config.drift.half_life_days)


def _rebuild(
    states: LiveCustomerStates,
    config: LiveStateConfig,
    event_log: EventLog,
    now: dt.datetime | None,
    snapshots: Path | None,
    stop: threading.Event | None,
) -> tuple[CatchUp, dict[str, int]]:
    """Restore the newest snapshot into ``states``' store and replay the window's events after it;
    also returns each customer's latest event time (UTC microseconds), which a snapshot keeps."""
    now = now or dt.datetime.now(dt.UTC)
    since = window_start(config, now)
    since_us = to_micros(since)
    through = event_log.last_event_rowid()
    snapshot = read_latest_snapshot(snapshots, config_digest(config)) if snapshots is not None else None
    last_event_us: dict[str, int] = {}
    restored, after = 0, 0
    if snapshot is not None and snapshot.last_event_rowid <= through:
        ttl = config.ttl_days * _SECONDS_PER_DAY
        for customer_id, data, latest in zip(
            snapshot.customer_ids, snapshot.states, snapshot.last_event_us, strict=True
        ):
            if latest >= since_us:  # a customer a whole-window replay would not see is not restored
                states.store.set(states.key(customer_id), data, ttl_seconds=ttl)
                last_event_us[customer_id] = latest
                restored += 1
        after = snapshot.last_event_rowid
    replayed = 0
    for _, batches in arrival_batches(event_log, after, through, since, _REPLAY_CHUNK):
        if stop is not None and stop.is_set():
            return CatchUp(restored, after, replayed, through, stopped=True), last_event_us
        states.observe_batches(batches)  # in the batches they arrived in, as live state took them
        for events in batches:
            replayed += len(events)
            for event in events:
                moment = to_micros(event.timestamp)
                if moment > last_event_us.get(event.customer_id, -(2**63)):
                    last_event_us[event.customer_id] = moment
    stopped = stop is not None and stop.is_set()
    return CatchUp(restored, after, replayed, through, stopped=stopped), last_event_us
