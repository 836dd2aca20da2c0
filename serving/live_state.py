"""The server's live customer state: one StateStore, attached to every model the process serves.

Each artifact the server loads (at startup and on every reload) gets its own
``engine.live_customer_state.LiveCustomerStates`` (its persona model scores events, its mixes are the
long-term ones), attached to the model's mix resolution before the model starts serving, so the first
request a new model answers already sees live state. The state itself lives in the StateStore and
outlives reloads. As a LiveEventObserver, this object hands accepted events to the states of the
model attached last, and counts them and the drifts they start in the metrics.

With ``--workers N`` and the default in-memory store each worker keeps its own state; a
``--state redis://...`` store is shared by all workers and replicas.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from engine.drift_detection import DriftStatus
from engine.live_customer_state import LiveCustomerStates, LiveStateConfig
from engine.live_event_scoring import LiveEventScorer
from engine.live_events import BehaviorEvent, DecisionOutcome
from engine.personalizer import Personalizer
from engine.state_store import StateStore
from serving.metrics import ServingMetrics


class LiveState:
    """Attaches live customer state to models and feeds it accepted events."""

    def __init__(
        self, store: StateStore, metrics: ServingMetrics | None = None, config: LiveStateConfig | None = None
    ) -> None:
        self.store = store
        self.config = config or LiveStateConfig()
        self._metrics = metrics
        self._current: LiveCustomerStates | None = None
        self._lock = threading.Lock()

    def attach(self, personalizer: Personalizer) -> LiveCustomerStates:
        """Give ``personalizer`` live state; call before it serves (ModelHolder's ``prepare`` hook)."""
        states = LiveCustomerStates(
            self.store,
            LiveEventScorer.from_artifact(personalizer.artifact),
            personalizer.mixes,
            self.config,
            on_drift_started=self._drift_started,
        )
        personalizer.mixes.live = states
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

    def _drift_started(self, customer_id: str, status: DriftStatus) -> None:
        if self._metrics is not None:
            self._metrics.record_drift_started()
