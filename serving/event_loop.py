"""The event loop a server process runs on, and the threads its blocking work goes to.

Each serving process runs one asyncio event loop with ``grpc.aio``: a page render is a millisecond
of CPU-bound engine work, so the handlers do it on the loop itself, with no hand-off to a thread and
back. Anything that waits (an fsync, a Redis round trip, loading an artifact) or scores for long (a
batch of a thousand customers) would stall every call behind it, so it goes to the loop's default
executor instead: a thread pool of ``--threads`` threads, created here and used through
``loop.run_in_executor(None, ...)`` and ``asyncio.to_thread``.

``--event-loop uvloop`` swaps the standard library's loop for uvloop's (libuv), when the package is
installed; both run the same code. ``EventLoopThread`` runs a loop on a background thread, for
synchronous code that drives an async server (tests, embedding).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

from serving.settings import DEFAULT_EVENT_LOOP, DEFAULT_THREADS

_T = TypeVar("_T")
BLOCKING_THREAD_PREFIX: Final = "persona-blocking"


def new_event_loop(kind: str = DEFAULT_EVENT_LOOP) -> asyncio.AbstractEventLoop:
    """A new loop of ``kind`` (``asyncio`` or ``uvloop``); uvloop is imported only when asked for."""
    if kind == "uvloop":
        import uvloop  # optional dependency; settings checked that it is installed

        return uvloop.new_event_loop()
    if kind != "asyncio":
        raise ValueError(f"event loop {kind!r}: expected asyncio or uvloop")
    return asyncio.new_event_loop()


def _blocking_executor(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix=BLOCKING_THREAD_PREFIX)


def run(
    main: Coroutine[Any, Any, _T], *, kind: str = DEFAULT_EVENT_LOOP, threads: int = DEFAULT_THREADS
) -> _T:
    """Run ``main`` to completion on a new loop of ``kind`` whose default executor has ``threads``
    threads; cancels what is left, waits for the executor and closes the loop afterwards."""
    with asyncio.Runner(loop_factory=lambda: new_event_loop(kind)) as runner:
        runner.get_loop().set_default_executor(_blocking_executor(threads))
        return runner.run(main)


class EventLoopThread:
    """An event loop running on a daemon thread until ``close()``; ``run`` submits a coroutine to it
    from any other thread and waits for its result."""

    def __init__(
        self, *, kind: str = DEFAULT_EVENT_LOOP, threads: int = DEFAULT_THREADS, name: str = "event-loop"
    ) -> None:
        self.loop = new_event_loop(kind)
        self.loop.set_default_executor(_blocking_executor(threads))
        self._thread = threading.Thread(target=self._run_forever, name=name, daemon=True)
        self._thread.start()

    def _run_forever(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout_s: float | None = None) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def close(self) -> None:
        """Stop the loop, cancel the tasks still on it, wait for its thread and its executor, and
        close it. Cancelled tasks run their ``finally`` blocks (a batcher frees its queued callers),
        as under ``asyncio.run``; a task left pending would be destroyed unfinished with the loop."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        left = asyncio.all_tasks(self.loop)
        for task in left:
            task.cancel()
        if left:
            self.loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()
