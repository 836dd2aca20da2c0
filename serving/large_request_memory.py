"""Giving back the memory that large requests leave behind (a full collection, then ``malloc_trim``).

A request of a megabyte or more is held by native memory: grpc's receive buffers and the protobuf
(upb) arena of the decoded message. Two things kept that memory after the call had ended:

- reference cycles: a refused call's exception, its traceback and the frames holding the request
  are cyclic garbage, and when the call lived through a collection or two (16 calls of 4 MB in
  flight) the cycle sits in an old generation that is rarely collected, holding the message;
- glibc: freed pages go back to the system only from the top of a heap, so a few live chunks above
  freed ones keep them resident, in whichever arena the grpc and event-loop threads used.

Measured with a server in one process (1 MiB and 4 MB requests to every unary RPC, 16 in flight,
rounds of 400 requests, 8 s idle after each): resident memory stayed at 871, 861, 788, 787 MB after
the rounds (from 640 MB after warm-up) while the memory Python traced stayed at 38 MB; a full
collection plus ``malloc_trim(0)`` brought it to 386 MB. ``malloc_trim`` alone, every few seconds,
did not (the messages were still referenced by the garbage cycles), nor did ``MALLOC_ARENA_MAX=2`` or
a fixed ``MALLOC_MMAP_THRESHOLD_`` in the fuzz benchmark.

So the request decoder (``serving.undecodable_requests``) tells ``LargeRequestMemoryTrim`` the size of
every request; once large ones (``large_bytes`` each, 256 KiB) add up to ``trim_after_bytes``
(64 MiB), a daemon thread waits ``delay_s`` for those calls to end, runs ``gc.collect()`` (cheap: the
model is frozen out of collections, ``serving.heap_freeze``) and ``malloc_trim(0)``, which also hands
back free pages inside the heaps. Large requests that never add up to that many get the same once
``idle_s`` has passed since the last one. With it the experiment above stayed at 390, 382, 390 and
392 MB after the rounds. Ordinary traffic never triggers it. Without glibc (musl, macOS) there is no
trim and nothing runs.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import Final

from serving.glibc_malloc import glibc_malloc_trim

LOGGER: Final = logging.getLogger("persona_engine.memory")
LARGE_REQUEST_BYTES: Final = 256 * 1024
TRIM_AFTER_BYTES: Final = 64 * 1024 * 1024
TRIM_DELAY_S: Final = 1.0
IDLE_TRIM_S: Final = 3.0


class LargeRequestMemoryTrim:
    """Trims the native heap after enough large requests (module doc). ``note`` is called on the event
    loop for every request; the trim runs on a daemon thread of its own, started on first need."""

    def __init__(
        self,
        *,
        large_bytes: int = LARGE_REQUEST_BYTES,
        trim_after_bytes: int = TRIM_AFTER_BYTES,
        delay_s: float = TRIM_DELAY_S,
        idle_s: float = IDLE_TRIM_S,
        trim: Callable[[], int] | None = None,
    ) -> None:
        self.large_bytes = large_bytes
        self.trim_after_bytes = trim_after_bytes
        self.delay_s = delay_s
        self.idle_s = idle_s
        self._trim = trim
        self._pending = 0
        self._last_large = 0.0
        self._wanted = threading.Event()
        self._thread: threading.Thread | None = None
        self.trims = 0  # trims done, for tests and logs

    @classmethod
    def for_this_process(cls) -> LargeRequestMemoryTrim:
        return cls(trim=glibc_malloc_trim())

    @property
    def enabled(self) -> bool:
        return self._trim is not None

    def note(self, size: int) -> None:
        """One request of ``size`` bytes arrived."""
        if size < self.large_bytes or self._trim is None:
            return
        self._pending += size
        self._last_large = time.monotonic()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="memory-trim", daemon=True)
            self._thread.start()
        if self._pending >= self.trim_after_bytes:
            self._wanted.set()

    def _run(self) -> None:
        trim = self._trim
        if trim is None:  # note() starts this thread only when there is a trim to run
            return
        while True:
            if self._wanted.wait(self.idle_s):
                time.sleep(self.delay_s)  # let the calls that brought the large requests end
                self._wanted.clear()
            elif not self._pending or time.monotonic() - self._last_large < self.idle_s:
                continue  # no large request since the last trim, or one came less than idle_s ago
            # Read and reset on this thread while the loop adds: a size lost to the race only delays
            # the next trim a little.
            self._pending = 0
            started = time.perf_counter()
            collected = gc.collect()
            released = trim()
            self.trims += 1
            LOGGER.debug(
                "after large requests: %d objects collected, malloc_trim %s, in %.1f ms",
                collected,
                "released memory" if released else "had nothing to release",
                (time.perf_counter() - started) * 1000.0,
            )
