"""Dynamic batching of page renders: concurrent Personalize and RecommendProducts calls of one worker
are scored together (``engine.live.live_loop.LiveLoop.personalize_many`` / ``recommend_products_many``).

Why: a worker's event loop serves one call at a time, so under load calls queue anyway; scoring the
queued ones in one pass shares the user-vector build, the matrix products and the offer and layout
policy passes, which is what lifts throughput when the server is busiest. An idle worker scores a
call at once (a batch of one costs what the single path costs); calls arriving while a batch is
scored, or within ``max_wait_s`` after it, form the next one (``serving.dynamic_batcher``).

Answers are exactly those of unbatched calls in arrival order (the engine's batch entry points
promise it, ``tests/engine/live/test_live_loop_batches.py`` checks it). A batch holds calls against
whichever model each call read when it arrived, so a reload in between splits the batch by model.
When a batch fails as a whole, its calls are served one by one, so only a bad call fails, with its
own error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from engine.live.live_loop import LiveLoop, ServedPage, ServedProductLists
from engine.personalization_request import PageRequest, ProductListsRequest
from engine.personalizer import Personalizer
from serving.dynamic_batcher import DynamicBatcher

LOGGER = logging.getLogger("persona_engine.batcher")

DEFAULT_MAX_BATCH_SIZE: Final = 32
# A batching wait ends once the preferred number of calls is queued; the largest batch bounds how
# many queued calls one batch takes. With the wait ending only at 32, two workers under closed-loop
# callers never filled a batch and every wait ran its whole 4 ms, although the callers were mostly
# back sooner. 1M x 100k benchmark shop, 2 workers, Personalize only, 10 s phases, alternating rounds
# with both sizes set to N (2026-12-06; mean calls/s, 5 rounds of 32 and 8, 3 of 7): under 16
# callers 1,316 (32) / 1,915 (8) / 2,181 (7), under 32 callers 1,882 / 2,082 / 2,260, under 64
# callers 1,911 / 2,040 / 2,171; 12 and 16 did no better than 32 under 16 callers (1,417, 1,360). At
# an open 1,000 calls/s batches stay at 3.4-3.7 (3.2-4.1 with 32). 8 rather than 7: 7 ends a wait
# before the last of eight callers per worker is back, a gain tied to that benchmark's 16 callers
# over 2 workers. The largest batch stays 32, so that a queue that grew during a batch is taken in
# one: a single worker at an open 1,000 calls/s, near its capacity, with both sizes 8 filled almost
# every batch (7.7 calls) and read an end-to-end p99 of 274 ms, against 21 ms with both at 32 (one
# round in a fast phase; 47 ms with 8 preferred and 32 largest; benchmarks/README.md).
DEFAULT_PREFERRED_BATCH_SIZE: Final = 8
# On the 1M x 100k benchmark shop (2 workers, 16 concurrent callers, 8 s each, 2026-12-05) waits of
# 0.2 / 0.5 / 1 / 2 ms gave 1,473 / 1,796 / 2,037 / 1,906 Personalize calls/s and batches of 1.2 /
# 2.4 / 4.1 / 5.5 calls: shorter waits let calls still on their way through gRPC miss the batch.
# Once helper threads stopped preempting the loop (serving.helper_threads), 2 ms gave the same calls/s
# as 1 ms at 8% less server CPU per call (0.61 against 0.66-0.73 ms, batches of 5.3 against 2.9-3.6),
# and the batcher waits only while calls come closer together than this (dynamic_batcher), so light
# traffic does not pay for it: server p99 at 300 calls/s fell from 4.3-4.8 ms to 2.5 ms.
# 4 ms (2026-12-06, five alternating rounds against 2 ms, 2 workers): batches of 6.6-7.2 against
# 2.5-4.5 under 16 callers and of 3.9-4.4 against 1.3-1.5 at an open 1,000 calls/s, 0.72-1.04 against
# 0.90-1.31 server CPU ms a call under 16 callers, 26% more calls/s under 32 callers (2,028 against
# 1,608 on average, ahead in every round), and at 1,000 calls/s 97.3-99.7% of calls within 25 ms
# against 76-99.6%; at 300 calls/s over two workers (arrivals 6.7 ms apart in each) it never waits,
# and server p99 stayed 2.5 ms. 6 ms began to wait there (server p99 4.3-5.4 ms). With 4 ms the
# batcher needs 1.5 calls expected per wait before it waits (dynamic_batcher.ARRIVALS_PER_WAIT).
DEFAULT_MAX_WAIT_MS: Final = 4.0

_Request = TypeVar("_Request")
_Served = TypeVar("_Served")


@dataclass(frozen=True)
class BatchSettings:
    """``max_size`` 1 turns batching off; ``max_wait_s`` 0 never waits for a batch to fill; a wait ends
    once ``preferred_size`` calls are queued (at most ``max_size``: a larger one is lowered to it, so
    that ``--batch-max-size 1`` alone turns batching off). The batcher checks the values
    (``DynamicBatcher``), the server's flags name them (``serving.settings``)."""

    max_size: int = DEFAULT_MAX_BATCH_SIZE
    max_wait_s: float = DEFAULT_MAX_WAIT_MS / 1000
    preferred_size: int = DEFAULT_PREFERRED_BATCH_SIZE

    @property
    def wait_ends_at(self) -> int:
        """The queue length that ends a wait: ``preferred_size``, lowered to ``max_size``."""
        return min(self.preferred_size, self.max_size)


@dataclass(frozen=True)
class Call(Generic[_Request]):
    """One queued call: the model it read on arrival and its validated request."""

    personalizer: Personalizer
    request: _Request


def _serve_batch(
    calls: Sequence[Call[_Request]],
    many: Callable[[Personalizer, Sequence[_Request]], list[_Served]],
    one: Callable[[Personalizer, _Request], _Served],
) -> list[_Served | BaseException]:
    results: list[_Served | BaseException] = [Exception("not served")] * len(calls)
    groups: dict[int, list[int]] = {}
    for position, call in enumerate(calls):
        groups.setdefault(id(call.personalizer), []).append(position)
    for positions in groups.values():
        personalizer = calls[positions[0]].personalizer
        try:
            served = many(personalizer, [calls[i].request for i in positions])
        except Exception:
            for i in positions:
                try:
                    results[i] = one(personalizer, calls[i].request)
                except Exception as error:
                    results[i] = error
            continue
        for i, result in zip(positions, served, strict=True):
            results[i] = result
    return results


def _told(
    results: list[_Served | BaseException], listener: Callable[[Sequence[_Served]], object] | None
) -> list[_Served | BaseException]:
    """``results``, after telling ``listener`` the served ones; a failing listener is logged, never
    fails the calls (it only counts them)."""
    if listener is not None:
        try:
            listener([r for r in results if not isinstance(r, BaseException)])
        except Exception:
            LOGGER.exception("counting a served batch failed")
    return results


class PageBatchers:
    """The two batchers of one worker's event loop (create on that loop's thread, use from it)."""

    def __init__(
        self,
        loop: LiveLoop,
        settings: BatchSettings,
        on_batch: Callable[[str, int, float], object] | None = None,
        *,
        on_pages: Callable[[Sequence[ServedPage]], object] | None = None,
        on_product_lists: Callable[[Sequence[ServedProductLists]], object] | None = None,
    ) -> None:
        """``on_pages`` / ``on_product_lists`` are told each batch's served results (the failed calls
        left out) before any of its callers resumes: the servicer counts a batch's customers and
        decisions there, one metric update per label instead of several per call."""

        def observed(method: str) -> Callable[[int, float], object] | None:
            if on_batch is None:
                return None
            return lambda size, cpu_seconds: on_batch(method, size, cpu_seconds)

        self.settings = settings
        self.pages: DynamicBatcher[Call[PageRequest], ServedPage] = DynamicBatcher(
            lambda calls: _told(_serve_batch(calls, loop.personalize_many, loop.personalize), on_pages),
            max_batch_size=settings.max_size,
            max_wait_s=settings.max_wait_s,
            preferred_batch_size=settings.wait_ends_at,
            on_batch=observed("Personalize"),
        )
        self.product_lists: DynamicBatcher[Call[ProductListsRequest], ServedProductLists] = DynamicBatcher(
            lambda calls: _told(
                _serve_batch(calls, loop.recommend_products_many, loop.recommend_products), on_product_lists
            ),
            max_batch_size=settings.max_size,
            max_wait_s=settings.max_wait_s,
            preferred_batch_size=settings.wait_ends_at,
            on_batch=observed("RecommendProducts"),
        )
