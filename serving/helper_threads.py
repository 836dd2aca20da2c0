"""Helper threads that wait for the event loop instead of interrupting it (``serve --helper-threads``).

Why: a worker's event loop does the page renders, but around it run a dozen other threads: gRPC's
completion-queue poller (it wakes for every finished operation and tells the loop through a file
descriptor), gRPC's event-engine pool, the blocking-work executor, polars' pool. On a 2-core machine
that also runs the callers, each of their wake-ups found both cores busy and the kernel preempted
whatever ran, usually a worker's loop in the middle of a batch: about 6,000 involuntary context
switches of each loop thread per second at 2,000 Personalize calls/s, each one refilling its caches.

As ``SCHED_BATCH`` threads (Linux, no privilege needed) they no longer preempt anything when they
wake: they run on a core that becomes free or at the scheduler's next tick. The loop is the one thread
of a worker whose delay is a caller's delay; the helpers' work is handed to it anyway. Measured on the
2-core benchmark machine (2 workers, large shop, 16 callers in one other process, 15 s per run, runs
alternating): the loop threads' involuntary switches fell about fourfold, and Personalize went from
2,057 / 2,101 to 2,145 / 2,251 calls/s (with ``--pin-workers`` from 2,242 / 2,237 to 2,471 / 2,421),
server CPU per call 0.69-0.71 -> 0.66-0.69 ms (pinned 0.65 -> 0.62-0.64 ms). The loop thread itself
stays ``SCHED_OTHER``: made a batch thread too it lost more than it gained (1,953 / 2,029 calls/s).

Threads appear after start (gRPC grows its pools, the executor starts threads on first use), so the
worker sweeps its threads again every ``SWEEP_INTERVAL_S`` while it serves. ``normal`` leaves every
thread as the kernel started it, and so does a server embedded in another program (``serve`` called on
one of its threads, not on the main thread): those threads are the program's.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

LOGGER = logging.getLogger("persona_engine.server")

HELPER_THREAD_POLICIES: Final = ("batch", "normal")
DEFAULT_HELPER_THREADS: Final = "batch"
SWEEP_INTERVAL_S: Final = 1.0
_TASKS: Final = Path("/proc/self/task")


def supported() -> bool:
    """Whether this platform can give single threads the batch policy (Linux)."""
    return hasattr(os, "SCHED_BATCH") and hasattr(os, "sched_setscheduler") and _TASKS.is_dir()


def process_threads() -> list[int]:
    """The kernel thread ids of this process's threads, as listed now."""
    return [int(name) for name in os.listdir(_TASKS)]


def yield_helper_threads(loop_thread: int, threads: Iterable[int] | None = None) -> int:
    """Make every thread of ``threads`` (default: all of this process) but ``loop_thread`` a batch
    thread; returns how many changed. Threads that ended meanwhile, or that another policy was set on
    deliberately (real-time, idle), are left as they are."""
    changed = 0
    for thread in process_threads() if threads is None else threads:
        if thread == loop_thread:
            continue
        try:
            if os.sched_getscheduler(thread) != os.SCHED_OTHER:
                continue
            os.sched_setscheduler(thread, os.SCHED_BATCH, os.sched_param(0))
        except (ProcessLookupError, PermissionError):  # ended, or not ours to change
            continue
        changed += 1
    return changed


async def keep_helper_threads_yielding(loop_thread: int, interval_s: float = SWEEP_INTERVAL_S) -> None:
    """Sweep this process's threads now and every ``interval_s`` until cancelled (see the module doc)."""
    changed = yield_helper_threads(loop_thread)
    LOGGER.info(
        "helper threads run as SCHED_BATCH (%d now; new ones within %.0fs): they wait for the event loop "
        "instead of preempting it",
        changed,
        interval_s,
    )
    while True:
        await asyncio.sleep(interval_s)
        yield_helper_threads(loop_thread)
