"""A deployment's live customer state: one StateStore, attached to every model the process serves.

Each artifact served (at startup and on every reload) gets its own
``engine.live.customer_state.LiveCustomerStates`` (its persona model scores events, its mixes are the
long-term ones), built into the model's mix resolution before the model starts serving, so the first
request a new model answers already sees live state. The state itself lives in the StateStore and
outlives reloads. As a LiveEventObserver, this object hands accepted events to the states of the
model attached last, and counts them and the drifts they start in the metrics it is given (the
server's; anything with the two ``record_`` methods of ``LiveStateMetrics``).

With ``--workers N`` and the default in-memory store each worker keeps its own state; a
``--state redis://...`` store is shared by all workers and replicas and survives restarts. An
in-memory store starts empty, so a server with an event log first replays the logged events of the
last ``catch_up`` window into it (``catch_up``): a restart then loses no session and no drift.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence
from typing import Protocol

from engine.live.customer_state import LiveCustomerStates, LiveStateConfig
from engine.live.event_log import EventLog
from engine.live.event_scoring import LiveEventScorer
from engine.live.events import BehaviorEvent, DecisionOutcome
from engine.live.state_store import MemoryStateStore, StateStore
from engine.personalizer import Personalizer
from engine.personas.drift import WINDOW_HALF_LIVES, DriftStatus

_REPLAY_CHUNK = 5_000  # events per observe call when catching up


class LiveStateMetrics(Protocol):
    """What live state counts: events folded into customer state, and drifts those events start."""

    def record_live_events(self, count: int) -> None: ...

    def record_drift_started(self) -> None: ...


class LiveState:
    """Attaches live customer state to models and feeds it accepted events."""

    def __init__(
        self,
        store: StateStore,
        metrics: LiveStateMetrics | None = None,
        config: LiveStateConfig | None = None,
    ) -> None:
        self.store = store
        self.config = config or LiveStateConfig()
        self._metrics = metrics
        self._current: LiveCustomerStates | None = None
        self._lock = threading.Lock()

    def attach(self, personalizer: Personalizer) -> LiveCustomerStates:
        """Give ``personalizer`` live state; call before it serves (the server's model ``prepare`` hook)."""
        states = LiveCustomerStates(
            self.store,
            LiveEventScorer.from_artifact(personalizer.artifact),
            personalizer.mixes,
            self.config,
            on_drift_started=self._drift_started,
        )
        personalizer.use_live_state(states)
        with self._lock:
            self._current = states
        return states

    @property
    def states(self) -> LiveCustomerStates:
        if self._current is None:
            raise RuntimeError("no model attached to the live state yet")
        return self._current

    def observe(self, events: Sequence[BehaviorEvent], outcomes: Sequence[DecisionOutcome]) -> None:
        with self._lock:
            states = self._current
        if states is None or not events:
            return
        states.observe(events, outcomes)
        if self._metrics is not None:
            self._metrics.record_live_events(len(events))

    @property
    def is_process_local(self) -> bool:
        """Whether the state dies with the process (and must be rebuilt from the event log at start)."""
        return isinstance(self.store, MemoryStateStore)

    def catch_up(self, event_log: EventLog, now: dt.datetime | None = None) -> int:
        """Replay the logged events recent enough to still count (the drift window); returns how many.

        Older events weigh under 1/16 of a fresh one in the drift check and nothing in a session.
        """
        now = now or dt.datetime.now(dt.UTC)
        window = dt.timedelta(days=WINDOW_HALF_LIVES * self.config.drift.half_life_days)
        events = event_log.behavior_events(since=now - window)
        states = self.states
        for start in range(0, len(events), _REPLAY_CHUNK):
            states.observe(events[start : start + _REPLAY_CHUNK], ())
        return len(events)

    def _drift_started(self, customer_id: str, status: DriftStatus) -> None:
        if self._metrics is not None:
            self._metrics.record_drift_started()
