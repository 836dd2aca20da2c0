"""One CPU per worker process (``serve --workers N --pin-workers``).

Why: on a host whose cores serve this server alone, a worker that the kernel moves between cores
loses its caches with each move, and two workers can end up taking turns on one core while the other
core idles. On the 2-core benchmark machine (2 workers, 16 callers from one other process, large
shop, 10 s per run, pinned and unpinned alternating) pinning gave 1,988 / 2,097 against 1,817 / 1,842
Personalize calls/s, and later 1,869 / 1,822 / 1,506 against 1,566 / 1,627 / 1,519. The full serving
benchmark with every server pinned (one run, in a slow phase of the machine) put Personalize at the
same share of its pinned floor as unpinned runs do, and its server-side p99 at 300 calls/s at
5.4 ms instead of 4.0-4.4. Hence off by default. A pinned worker cannot use another core when
something else runs on its own, and several pinned servers on one host would crowd the first cores.
"""

from __future__ import annotations

import os


def worker_cpu(index: int, allowed: set[int]) -> int:
    """The CPU of worker ``index``: the index-th of the allowed CPUs in order, wrapping around when
    there are more workers than CPUs."""
    if not allowed:
        raise ValueError("no CPU is allowed")
    cpus = sorted(allowed)
    return cpus[index % len(cpus)]


def pin_worker(index: int) -> int | None:
    """Keep the calling process (its thread now and every thread it starts later) on worker
    ``index``'s CPU; returns that CPU, or None where the platform cannot set affinities.

    Call it before the process starts threads: only threads created afterwards inherit the mask.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = worker_cpu(index, os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu
