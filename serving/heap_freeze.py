"""Keeping the loaded model out of Python's cyclic garbage collector.

A worker's heap is mostly the model it serves, allocated once at load and alive until the next
reload. CPython's full (generation 2) collection still traverses all of it, with the interpreter lock
held: with a 1M-customer artifact one full collection takes about 45 ms on the benchmark machine,
and under load the collector runs one every few thousand requests (each Personalize leaves a couple of
long-lived objects behind: decision memories, live sessions), so the pause lands on whatever calls are
in flight and shows up as their p99.

``gc.freeze()`` moves every object alive at that moment to a permanent generation the collector
never traverses; reference counting still frees them. So a worker collects and freezes once its model
is loaded and its server built, and again after a reload, when the requests still using the old model
have had time to finish: the old model is then unfrozen, collected (reference cycles included) and the
new one frozen in its place. That one collection is the only full pause a reload costs.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Final

LOGGER: Final = logging.getLogger(__name__)
# After a reload, how long the previous model may still be in use by calls in flight before the heap
# is settled again (calls are bounded by their deadlines; the demo client's is a few seconds).
RESETTLE_DELAY_S: Final = 30.0

_lock = threading.Lock()


def settle_heap() -> float:
    """Collect everything unreachable, then freeze what is left; returns the collection's seconds.

    Objects frozen by an earlier call are unfrozen first, so a model replaced since is collected now
    rather than kept forever.
    """
    with _lock:
        started = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        seconds = time.perf_counter() - started
    LOGGER.debug("heap settled: %d objects frozen in %.3fs", gc.get_freeze_count(), seconds)
    return seconds


def settle_heap_later(delay_s: float = RESETTLE_DELAY_S) -> threading.Timer:
    """``settle_heap`` after ``delay_s`` on a daemon thread (after a reload); returns the timer."""
    timer = threading.Timer(delay_s, settle_heap)
    timer.daemon = True
    timer.name = "heap-settle"
    timer.start()
    return timer
