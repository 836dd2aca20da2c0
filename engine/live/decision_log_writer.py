"""Logging served decisions off the request path: a queue and one writer thread per process.

Every Personalize, RankOffers and SelectLayout response is a decision to log (what was served, with
which propensity, for which mix), and a page render should not wait for a disk write. So the handler
only puts the decisions on a queue; a writer thread collects what arrives within ``flush_interval_s``
(0.1 s by default) and stores it in one transaction of the event log (``EventLog.log_decisions``). Few
commits matter because every write transaction takes the log's one write lock, which RecordEvents
calls of every worker process also need; an outcome, which is what needs its decision in the log,
comes seconds after the page was served.

Durability, stated plainly: decisions are not acknowledged to anyone. A decision is durable once the
writer has committed it, normally well under a millisecond after the response; ``close()`` (graceful
stop) writes everything queued. A process killed outright loses what was still queued, and a power
loss may also lose the last commits (the writer's connection uses ``synchronous=NORMAL``). The queue
is bounded: when the disk cannot keep up, handlers wait for room rather than silently dropping
decisions.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from engine.decisions.page_decision import LayoutDecision, RankedOffer
from engine.live.event_store import open_event_store
from engine.live.events import ServedDecision

if TYPE_CHECKING:
    from engine.personalizer import DecisionInfo

LOGGER = logging.getLogger("persona_engine.decision_log")

DEFAULT_QUEUE_SIZE: Final = 10_000
DEFAULT_FLUSH_INTERVAL_S: Final = 0.1
MAX_DECISIONS_PER_COMMIT: Final = 1_000


def served_arms(
    decision: DecisionInfo,
    customer_id: str,
    timestamp: dt.datetime,
    offers: Sequence[RankedOffer] = (),
    layout: LayoutDecision | None = None,
    *,
    experiment_arm: str = "",
    journey_stage: str = "",
) -> list[ServedDecision]:
    """One record per arm a response served (each offer, the layout), all under its decision id."""
    mix = tuple(
        (persona, float(weight))
        for persona, weight in zip(decision.mix.personas, decision.mix.weights, strict=True)
    )

    def arm(decision_type: str, arm_id: str, propensity: float) -> ServedDecision:
        return ServedDecision(
            decision_id=decision.decision_id,
            customer_id=customer_id,
            timestamp=timestamp,
            context=decision.shopping_context or "",
            decision_type=decision_type,
            arm_id=arm_id,
            propensity=propensity,
            persona_mix=mix,
            journey_stage=journey_stage,
            experiment_arm=experiment_arm,
            model_version=decision.model_version,
        )

    served = [arm("offer", offer.offer_id, offer.propensity) for offer in offers]
    if layout is not None:
        served.append(arm("layout", layout.variant_id, layout.propensity))
    return served


class DecisionLogWriter:
    """Writes served decisions to the event log at ``path`` (a SQLite file or a shared log's Redis URL)
    from a background thread.

    ``on_commit(written, failed)`` is called from the writer thread after each commit (for metrics).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        on_commit: Callable[[int, int], None] | None = None,
    ) -> None:
        self._on_commit = on_commit
        self._flush_interval_s = flush_interval_s
        self._log = open_event_store(path, durable=False)
        self._queue: queue.Queue[ServedDecision | None] = queue.Queue(maxsize=queue_size)
        self._closed = False
        self.written = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="decision-log-writer", daemon=True)
        self._thread.start()

    def submit(self, decisions: Sequence[ServedDecision]) -> None:
        """Queue decisions for writing; waits only when the queue is full."""
        if self._closed:
            raise RuntimeError("the decision log writer is closed")
        for decision in decisions:
            self._queue.put(decision)

    def flush(self) -> None:
        """Wait until everything submitted so far is written (or failed)."""
        self._queue.join()

    def close(self) -> None:
        """Write what is queued, stop the thread and close the log."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        self._log.close()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[ServedDecision] = []
            first = self._queue.get()
            taken = 1
            if first is None:
                stopping = True
            else:
                batch.append(first)
            deadline = time.monotonic() + self._flush_interval_s
            while not stopping and len(batch) < MAX_DECISIONS_PER_COMMIT:
                try:
                    item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue.Empty:
                    break
                taken += 1
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
            written = failed = 0
            try:
                written = self._log.log_decisions(batch)
            except Exception:  # a full disk or a locked log must not kill the writer; later batches retry
                failed = len(batch)
                LOGGER.exception("could not log %d served decisions to %s", len(batch), self._log.path)
            finally:
                self.written += written
                self.failed += failed
                if self._on_commit is not None and batch:
                    self._on_commit(written, failed)
                for _ in range(taken):
                    self._queue.task_done()
