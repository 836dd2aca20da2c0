"""A thread for background work that should run only on CPU time no other thread wants.

Why: the live-state snapshot replays the events logged since the previous one, about a second of
pure-Python work per 10,000 events, once a minute on a busy shop. It runs in the upkeep process, at
nice 10 (``serving.upkeep_process``). On this kernel's scheduler (EEVDF, Linux 6.6 and later) a nice-10
task that holds a core is not always preempted when a worker's event loop wakes: in the serving
benchmark's mixed workload (2 workers, large shop, 300 calls/s open loop) the Personalize calls that
overlapped a snapshot had a p50 1.4-2.2 times and a p99 1.9-2.6 times those of the calls outside it, in
three runs of four, and the snapshot falling into one kind of slice decided the mixed ratio. A thread
with the ``SCHED_IDLE`` policy is preempted by any normal thread that wakes on its core, whatever the
nice values. The figures with the snapshot on such a thread are in the benchmarks README.

The price: on a machine whose cores are busy all the time, the work waits (each benchmark run's first
snapshot, 6,600-11,200 events under load, took 1.3-2.0 s at nice 10 and 2.3-3.4 s here), and leaving
``SCHED_IDLE`` takes a privilege an unprivileged server lacks, so the thread stays idle-priority for its
whole life. On cores that are busy without a pause the thread gets next to no CPU at all, so work that
must be done in bounded time needs a way out: ``submit`` lets the caller stop waiting (the snapshot's
is in ``serving.log_upkeep``). Hence the rule for what may run on it: work that holds nothing a serving
thread waits for, and that its caller can give up on.
The snapshot qualifies (it reads the event log a page at a time, in short read-only queries, and writes
its own files); retention does not (it deletes in write transactions that RecordEvents' commits would
queue behind), nor does opening the log (its schema check is a write transaction).

Where the policy is missing (not Linux) or refused, the thread runs at the priority it was started
with, and says so once in the log.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

LOGGER = logging.getLogger("persona_engine.server")

P = ParamSpec("P")
T = TypeVar("T")


def idle_policy_supported() -> bool:
    """Whether this platform has the idle scheduling policy for single threads (Linux)."""
    return hasattr(os, "SCHED_IDLE") and hasattr(os, "sched_setscheduler")


def _become_idle() -> None:
    if not idle_policy_supported():
        LOGGER.info("no SCHED_IDLE on this platform: background work runs at the process's priority")
        return
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: this thread, not the process
    except OSError as error:
        LOGGER.warning("a background thread could not take the SCHED_IDLE policy (%s): it runs as is", error)


class IdlePriorityThread:
    """One thread, ``SCHED_IDLE`` for its whole life, that runs the calls handed to it one at a time."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name, initializer=_become_idle)

    def submit(self, work: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Queue ``work`` for the idle thread, behind whatever it runs now; its future gives the result
        or raises its exception.

        For callers that must not wait for idle time without limit: on cores that never idle, the
        thread gets next to no CPU (see the module doc), and only the caller can decide to stop
        waiting and do the work another way.
        """
        return self._executor.submit(work, *args, **kwargs)

    def close(self) -> None:
        """Wait for the running call, if any, and end the thread."""
        self._executor.shutdown(wait=True)
