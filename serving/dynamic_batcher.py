"""Requests that arrive together are served together: a dynamic batcher for asyncio servers.

Scoring one request costs a model call with a fixed overhead (Python dispatch, numpy set-up, a matrix
product too small to use the CPU well); scoring twenty in one call costs far less than twenty calls.
An asyncio server handles many requests at once, so it can gather those that wait at the same moment
into one call, as Triton's dynamic batcher does, without making a lone request wait:

- A request that arrives while the batcher is idle is processed at once: no timer, no waiting for
  company. It is processed by a worker task started for it, so requests whose handlers reach
  ``submit`` in the same event-loop turn (a burst the server read at once) still share its batch.
- ``process`` is synchronous and CPU-bound and runs on the event loop, so while a batch is being
  processed nothing else runs: requests that arrive meanwhile queue up. When it returns, the worker
  waits at most ``max_wait_s`` (0 disables waiting) for ``preferred_batch_size`` requests to be queued,
  and the queued ones, up to ``max_batch_size``, form the next batch (Triton's preferred and
  maximum batch sizes: a wait ends once a batch worth scoring has come, while a queue that grew
  during a long batch is still taken in one). That wait runs also when nothing is queued yet, and only
  a batcher that found nobody after it goes idle again. Why: a gRPC server hands a request to its
  handler several event-loop turns after reading it, so right after a batch the queue is nearly
  always empty although calls are on their way; going idle at once made almost every batch a batch
  of one (96% of them in a 2-worker server under 16 concurrent callers) and batching bought nothing.
  Waiting up to 1 ms there gave batches of about four and 1.4x the calls per second on the same
  server (``serving.batched_calls.DEFAULT_MAX_WAIT_MS``). The cost is bounded: a request that
  arrives within ``max_wait_s`` of a batch waits at most that long.
- That wait is only worth it when company is likely. The batcher keeps a smoothed gap between
  arrivals (``ARRIVAL_SMOOTHING``; each gap counted at most ``GAP_CAP`` times the wait, so that one
  quiet minute does not hide a burst for long) and waits only while ``ARRIVALS_PER_WAIT`` (1.5)
  calls are expected within one wait, the gap shorter than ``max_wait_s / 1.5``: under light traffic
  a batch's end neither holds queued requests nor delays the next one, and a server at 300 calls/s
  answers as an unbatched one would. With the 4 ms default that is from 375 calls/s per worker. With
  one expected call per wait a single worker at 300 calls/s (arrivals 3.3 ms apart) waited after
  most batches for batches of 1.1 calls (server p99 9.6 ms, against 2.7 in a faster phase with a 2 ms
  wait); with two, two workers at an open 1,000 calls/s (2 ms apart) waited only now and then and
  formed batches of 1.8 instead of 4.1. It starts out expecting company.
- Close arrivals are not company yet: a caller that calls in sequence (its next call leaves when the
  answer to the last one arrives) sends calls less than ``max_wait_s`` apart, yet each wait after a
  batch only holds its next call until the wait runs out, a batch of one paid for with up to
  ``max_wait_s``. So the batcher also keeps a smoothed size of the batches its waits formed
  (``FORMED_SMOOTHING``) and waits only while that is at least ``COMPANY_FORMED``; while it is below,
  one batch end in ``WAIT_PROBE_EVERY`` waits anyway, so that concurrent callers are noticed again.
- Errors stay with the requests they concern. ``process`` returns one outcome per request, in order:
  a result, or an exception instance that ``submit`` raises for that request alone, so one bad
  request does not fail the others. If ``process`` itself raises, every request of that batch gets
  the exception (its caller answers INTERNAL).
- A caller whose task is cancelled while queued (the client went away, its deadline passed) is taken
  out of the queue and never processed. Batches are formed in arrival order.
- ``on_batch(size, cpu_seconds)`` is told each batch's size and the CPU time the loop's thread spent
  processing it (``time.thread_time``: not the time other threads or processes took meanwhile), for
  a batch-size histogram and the engine's CPU per call inside the server; a failing callback is
  logged and ignored.

One batcher serves one event loop; call ``submit`` from that loop only.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

LOGGER = logging.getLogger("persona_engine.batcher")

ARRIVAL_SMOOTHING = 0.1  # weight of the newest gap in the smoothed gap between arrivals
GAP_CAP = 4.0  # a gap counts as at most this many waits (after 13 quick arrivals the batcher waits again)
FORMED_SMOOTHING = 0.2  # weight of the newest wait's batch in the smoothed size of the batches waits formed
ARRIVALS_PER_WAIT = 1.5  # wait only while at least this many calls are expected within one wait
COMPANY_FORMED = 1.5  # waits that formed batches this large on average are worth their time
WAIT_PROBE_EVERY = 16  # while they are not, every 16th batch end waits anyway (has company come back?)

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")


class _Pending(Generic[RequestT, ResultT]):
    """One queued request and the future its caller awaits (compared by identity, for removal)."""

    __slots__ = ("future", "request")

    def __init__(self, request: RequestT, future: asyncio.Future[ResultT]) -> None:
        self.request = request
        self.future = future


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class DynamicBatcher(Generic[RequestT, ResultT]):
    """Gathers concurrent ``submit`` calls into batches for ``process`` (see the module docstring)."""

    def __init__(
        self,
        process: Callable[[Sequence[RequestT]], Sequence[ResultT | BaseException]],
        *,
        max_batch_size: int,
        max_wait_s: float,
        preferred_batch_size: int | None = None,
        on_batch: Callable[[int, float], object] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        preferred = max_batch_size if preferred_batch_size is None else preferred_batch_size
        if not 1 <= preferred <= max_batch_size:
            raise ValueError(
                f"preferred_batch_size must be 1..{max_batch_size} (the max), got {preferred_batch_size}"
            )
        if not (math.isfinite(max_wait_s) and max_wait_s >= 0):
            raise ValueError(f"max_wait_s must be a finite number >= 0, got {max_wait_s}")
        self._process = process
        self._max_batch_size = max_batch_size
        self._preferred_batch_size = preferred
        self._max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._queue: collections.deque[_Pending[RequestT, ResultT]] = collections.deque()
        self._worker: asyncio.Task[None] | None = None
        self._filled: asyncio.Future[None] | None = None  # set while waiting for a fuller batch
        self._last_arrival = -math.inf
        self._arrival_gap_s = 0.0  # smoothed; 0 at first: company is expected until arrivals say otherwise
        self._formed_size = 2.0  # smoothed size of the batches waits formed; company expected at first
        self._skipped_waits = 0  # batch ends without a wait since the last probe

    @property
    def idle(self) -> bool:
        """No batch is being processed or formed: the next request is processed at once."""
        return self._worker is None

    @property
    def expects_company(self) -> bool:
        """Requests have lately come close enough together that ``ARRIVALS_PER_WAIT`` of them are
        expected within ``max_wait_s``: a batch's end waits for more."""
        return self._arrival_gap_s * ARRIVALS_PER_WAIT < self._max_wait_s

    @property
    def waits_find_company(self) -> bool:
        """Lately a wait after a batch formed a batch of more than one on average (module docstring)."""
        return self._formed_size >= COMPANY_FORMED

    @property
    def queued(self) -> int:
        """Requests waiting for a batch (not counting the one being processed)."""
        return len(self._queue)

    async def submit(self, request: RequestT) -> ResultT:
        """``request``'s result, processed in a batch; raises its exception, or the batch's."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        gap = min(now - self._last_arrival, GAP_CAP * self._max_wait_s)
        self._last_arrival = now
        self._arrival_gap_s += ARRIVAL_SMOOTHING * (gap - self._arrival_gap_s)
        pending: _Pending[RequestT, ResultT] = _Pending(request, loop.create_future())
        self._queue.append(pending)
        if self._worker is None:
            self._worker = loop.create_task(self._work())
        elif self._filled is not None and len(self._queue) >= self._preferred_batch_size:
            _wake(self._filled)
        try:
            return await pending.future
        except asyncio.CancelledError:
            if pending.future.done() and not pending.future.cancelled():
                pending.future.exception()  # processed just before: mark it seen, or asyncio logs it
            elif pending in self._queue:
                self._queue.remove(pending)
                if not self._queue and self._filled is not None:
                    _wake(self._filled)  # nobody left to wait for: let the batcher go idle
            raise

    async def _work(self) -> None:
        """Process batches until nobody came during the wait after one, then let the batcher go idle."""
        try:
            self._run(self._take())  # the request that found the batcher idle, and its burst
            while True:
                await asyncio.sleep(0)  # requests that arrived during the batch reach the queue
                await self._fill()
                if not self._queue:
                    break
                self._run(self._take())
        finally:
            self._worker = None
            if self._queue:  # the worker itself was cancelled (the loop is closing): free its callers
                for pending in self._queue:
                    pending.future.cancel()
                self._queue.clear()

    async def _fill(self) -> None:
        """Wait until ``preferred_batch_size`` requests are queued or ``max_wait_s`` has passed (also when
        none is queued yet), unless requests have lately come too far apart for that (module docstring)."""
        if not self.expects_company or len(self._queue) >= self._preferred_batch_size:
            return
        if not self.waits_find_company:
            self._skipped_waits += 1
            if self._skipped_waits < WAIT_PROBE_EVERY:
                return
        self._skipped_waits = 0
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(self._max_wait_s, _wake, waiter)
        self._filled = waiter
        try:
            await waiter
        finally:
            timer.cancel()
            self._filled = None
        formed = min(len(self._queue), self._max_batch_size)
        self._formed_size += FORMED_SMOOTHING * (formed - self._formed_size)

    def _take(self) -> list[_Pending[RequestT, ResultT]]:
        batch: list[_Pending[RequestT, ResultT]] = []
        while self._queue and len(batch) < self._max_batch_size:
            pending = self._queue.popleft()
            if not pending.future.done():  # a cancelled caller is dropped here at the latest
                batch.append(pending)
        return batch

    def _run(self, batch: list[_Pending[RequestT, ResultT]]) -> None:
        if not batch:
            return
        started = time.thread_time()
        failure: Exception | None = None
        outcomes: Sequence[ResultT | BaseException] = ()
        try:
            outcomes = self._process([pending.request for pending in batch])
            if len(outcomes) != len(batch):
                failure = ValueError(f"process returned {len(outcomes)} outcomes for {len(batch)} requests")
        except Exception as error:
            failure = error
        except BaseException:  # KeyboardInterrupt, SystemExit: stop, but leave no caller waiting
            for pending in batch:
                pending.future.cancel()
            raise
        cpu_seconds = time.thread_time() - started
        for n, pending in enumerate(batch):
            if pending.future.done():
                continue
            outcome = failure if failure is not None else outcomes[n]
            if isinstance(outcome, BaseException):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)
        if self._on_batch is not None:
            try:
                self._on_batch(len(batch), cpu_seconds)
            except Exception:  # a metric must never fail the requests it counts
                LOGGER.exception("the batch callback failed")
