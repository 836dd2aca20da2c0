"""The dynamic batcher's semantics, driven deterministically on a real event loop.

Requests "arriving while a batch is processed" are submitted by tasks that ``process`` itself creates:
they can only run once it returns, exactly like requests a server reads while the loop is busy. No
test depends on how fast anything runs; a timeout only guards against a hang.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from serving.dynamic_batcher import WAIT_PROBE_EVERY, DynamicBatcher

T = TypeVar("T")
HANG_GUARD_S = 30.0
FOREVER_S = 3600.0


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    async def guarded() -> T:
        return await asyncio.wait_for(scenario(), HANG_GUARD_S)

    return asyncio.run(guarded())


class Doubler:
    """``process``: doubles each request, fails negative ones alone, records every batch, and runs
    ``during[n]`` while processing batch n (that is how tests make requests arrive meanwhile)."""

    def __init__(self, during: dict[int, Callable[[], object]] | None = None, sleep_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.during = during or {}
        self.sleep_s = sleep_s

    def __call__(self, requests: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(requests))
        if hook := self.during.get(len(self.batches) - 1):
            hook()
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return [ValueError(f"negative: {r}") if r < 0 else 2 * r for r in requests]


def spawn(batcher: DynamicBatcher[int, int], requests: Sequence[int], into: list[Any]) -> Callable[[], None]:
    """A hook that starts one submitting task per request (they run after the current batch)."""
    return lambda: into.extend(asyncio.get_running_loop().create_task(batcher.submit(r)) for r in requests)


def test_a_request_to_an_idle_batcher_is_processed_at_once_without_waiting() -> None:
    process = Doubler()
    sizes: list[int] = []
    batcher = DynamicBatcher(
        process, max_batch_size=8, max_wait_s=FOREVER_S, on_batch=lambda n, s: sizes.append(n)
    )

    async def scenario() -> int:
        result = await batcher.submit(3)  # an hour's wait would trip the hang guard
        assert not batcher.idle, "after a batch the batcher waits for the next one"
        return result

    assert run(scenario) == 6
    assert process.batches == [[3]] and sizes == [1] and batcher.queued == 0


def test_a_batcher_nobody_came_to_after_a_batch_goes_idle_after_max_wait() -> None:
    process = Doubler()
    batcher = DynamicBatcher(process, max_batch_size=8, max_wait_s=0.002)

    async def scenario() -> list[int]:
        results = [await batcher.submit(3)]
        waited = time.perf_counter()
        while not batcher.idle:
            await asyncio.sleep(0)
        assert time.perf_counter() - waited >= 0.0015, "idle only once the wait after the batch ran out"
        results.append(await batcher.submit(4))  # idle again: processed at once, alone
        return results

    assert run(scenario) == [6, 8]
    assert process.batches == [[3], [4]]


def test_under_sparse_traffic_a_batch_end_neither_waits_nor_holds_queued_requests() -> None:
    """Arrivals further apart than the wait: the batcher stops expecting company, so a request that
    arrives during a batch is processed right after it (no wait), and the batcher then goes idle at
    once. A burst of quick arrivals makes it wait again."""
    wait_s = 0.02
    later: list[asyncio.Task[int]] = []
    process = Doubler()
    batcher = DynamicBatcher(process, max_batch_size=8, max_wait_s=wait_s)

    async def scenario() -> tuple[float, bool]:
        assert batcher.expects_company, "it starts out expecting company"
        for r in range(5):
            await batcher.submit(r)
            await asyncio.sleep(5 * wait_s)
        assert not batcher.expects_company
        process.during[len(process.batches)] = spawn(batcher, [7], later)
        started = time.perf_counter()
        assert await batcher.submit(6) == 12
        assert await later[0] == 14
        for _ in range(3):
            await asyncio.sleep(0)
        took = time.perf_counter() - started
        idle = batcher.idle
        # a burst (all in one loop turn, so no gap depends on this machine's speed): company is
        # expected again. Sequential calls would not do: each would wait out the batcher's own wait
        # and arrive about max_wait_s after the last, right at the threshold.
        await asyncio.gather(*(batcher.submit(r) for r in range(20)))
        return took, idle and batcher.expects_company

    took, idle_then_expecting = run(scenario)
    assert took < wait_s / 2, "the queued request was processed without a wait"
    assert idle_then_expecting
    assert process.batches[5:7] == [[6], [7]]


def test_a_caller_that_calls_in_sequence_stops_paying_the_wait_and_company_is_noticed_again() -> None:
    """A sequential caller's next call arrives during the wait after its last batch, and the wait
    only holds it: once waits have formed batches of one, batch ends stop waiting (but for a probe
    every ``WAIT_PROBE_EVERY``). Callers that come together again are noticed at the next probe.
    A held call takes the whole wait (50 ms), one that is not a fraction of a millisecond."""
    wait_s = 0.05
    process = Doubler()
    batcher = DynamicBatcher(process, max_batch_size=8, max_wait_s=wait_s)

    async def late(r: int) -> int:  # reaches the batcher a few loop turns after its caller started
        for _ in range(3):
            await asyncio.sleep(0)
        return await batcher.submit(r)

    async def scenario() -> tuple[int, bool, int]:
        held = 0
        for r in range(64):
            started = time.perf_counter()
            assert await batcher.submit(r) == 2 * r
            held += time.perf_counter() - started >= wait_s / 2
        alone = batcher.waits_find_company
        rounds = 0
        while not batcher.waits_find_company and rounds < 2 * WAIT_PROBE_EVERY:
            await asyncio.gather(*(late(1000 + 4 * rounds + i) for i in range(4)))
            rounds += 1
        assert batcher.waits_find_company, "four callers at a time are company again"
        return held, alone, rounds

    held, alone, rounds = run(scenario)
    assert not alone
    # a few waits before the smoothed batch size falls, then one probe in sixteen (the old rule held
    # about every other call: each gap was about the wait itself, right at the threshold)
    assert held <= 12
    assert rounds <= WAIT_PROBE_EVERY + 1


def test_requests_that_come_one_by_one_just_after_a_batch_are_gathered_into_the_next() -> None:
    """A server hands calls to their handlers some loop turns after reading them: the queue is empty
    right after a batch although calls are on their way. They must not each go alone."""
    later: list[asyncio.Task[int]] = []
    process = Doubler()
    batcher = DynamicBatcher(process, max_batch_size=3, max_wait_s=FOREVER_S)

    async def scenario() -> list[int]:
        await batcher.submit(0)
        for r in (1, 2, 3):
            for _ in range(5):
                await asyncio.sleep(0)
            assert process.batches == [[0]], "short of three: still waiting"
            later.append(asyncio.create_task(batcher.submit(r)))
        return list(await asyncio.gather(*later))  # the third fills the batch: no hour's wait

    assert run(scenario) == [2, 4, 6]
    assert process.batches == [[0], [1, 2, 3]]


def test_requests_that_arrive_during_a_batch_form_the_next_one() -> None:
    later: list[asyncio.Task[int]] = []
    process = Doubler()
    batcher = DynamicBatcher(process, max_batch_size=8, max_wait_s=0.0005)
    process.during[0] = spawn(batcher, [1, 2, 3, 4, 5], later)

    async def scenario() -> list[int]:
        first = await batcher.submit(0)
        return [first, *await asyncio.gather(*later)]

    assert run(scenario) == [0, 2, 4, 6, 8, 10]
    assert process.batches == [[0], [1, 2, 3, 4, 5]]


def test_batches_never_exceed_the_maximum_and_keep_arrival_order() -> None:
    later: list[asyncio.Task[int]] = []
    process = Doubler()
    batcher = DynamicBatcher(process, max_batch_size=8, max_wait_s=0.0)
    process.during[0] = spawn(batcher, list(range(1, 21)), later)

    async def scenario() -> list[int]:
        await batcher.submit(0)
        return list(await asyncio.gather(*later))

    assert run(scenario) == [2 * r for r in range(1, 21)]
    assert process.batches == [[0], list(range(1, 9)), list(range(9, 17)), list(range(17, 21))]


def test_many_concurrent_callers_share_batches_and_each_gets_its_own_result() -> None:
    process = Doubler(sleep_s=0.001)
    sizes: list[int] = []
    batcher = DynamicBatcher(
        process, max_batch_size=16, max_wait_s=0.0005, on_batch=lambda n, s: sizes.append(n)
    )

    async def caller(n: int) -> int:
        await asyncio.sleep(0.0002 * (n % 7))  # staggered arrivals, some while a batch is processed
        return await batcher.submit(n)

    async def scenario() -> list[int]:
        return list(await asyncio.gather(*(caller(n) for n in range(50))))

    assert run(scenario) == [2 * n for n in range(50)]
    assert sorted(r for batch in process.batches for r in batch) == list(range(50))
    assert sizes == [len(batch) for batch in process.batches]
    assert max(sizes) > 1 and max(sizes) <= 16


def test_a_short_batch_waits_for_more_until_it_is_full() -> None:
    later: list[asyncio.Task[int]] = []
    process = Doubler()
    batcher = DynamicBatcher(process, max_batch_size=3, max_wait_s=FOREVER_S)
    process.during[0] = spawn(batcher, [1], later)

    async def scenario() -> list[int]:
        await batcher.submit(0)
        for _ in range(5):
            await asyncio.sleep(0)
        assert process.batches == [[0]] and batcher.queued == 1, "one queued, short of three: waiting"
        later.append(asyncio.create_task(batcher.submit(2)))
        await asyncio.sleep(0.001)
        assert process.batches == [[0]], "still short"
        later.append(asyncio.create_task(batcher.submit(3)))  # full: processed without the rest of the wait
        return list(await asyncio.gather(*later))

    assert run(scenario) == [2, 4, 6]
    assert process.batches == [[0], [1, 2, 3]]


def test_a_wait_ends_at_the_preferred_size_and_a_longer_queue_is_taken_up_to_the_largest_batch() -> None:
    later: list[asyncio.Task[int]] = []
    process = Doubler()
    batcher = DynamicBatcher(process, max_batch_size=4, preferred_batch_size=2, max_wait_s=FOREVER_S)
    process.during[0] = spawn(batcher, [1], later)
    process.during[2] = spawn(batcher, [5, 6, 7, 8, 9, 10], later)  # queued during a batch: a backlog

    async def scenario() -> list[int]:
        await batcher.submit(0)
        for _ in range(5):
            await asyncio.sleep(0)
        assert process.batches == [[0]] and batcher.queued == 1, "one queued, short of two: waiting"
        later.append(asyncio.create_task(batcher.submit(2)))  # two: the wait ends, an hour early
        for _ in range(5):
            await asyncio.sleep(0)
        assert process.batches == [[0], [1, 2]]
        later.extend([asyncio.create_task(batcher.submit(3)), asyncio.create_task(batcher.submit(4))])
        await asyncio.gather(*later)  # [3, 4] queued six more while it was processed
        return list(await asyncio.gather(*later))

    assert run(scenario) == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
    assert process.batches == [[0], [1, 2], [3, 4], [5, 6, 7, 8], [9, 10]], "six queued: four at once"


@pytest.mark.parametrize("preferred", [0, 5])
def test_a_preferred_size_outside_one_to_the_largest_batch_is_refused(preferred: int) -> None:
    with pytest.raises(ValueError, match=r"preferred_batch_size must be 1\.\.4 \(the max\)"):
        DynamicBatcher(Doubler(), max_batch_size=4, preferred_batch_size=preferred, max_wait_s=0.0)


def test_the_wait_for_more_ends_after_max_wait() -> None:
    later: list[asyncio.Task[int]] = []
    released = asyncio.Event()
    process = Doubler()
    batcher = DynamicBatcher(
        process,
        max_batch_size=3,
        max_wait_s=0.002,
        on_batch=lambda n, s: released.set() if len(process.batches) == 2 else None,
    )
    process.during[0] = spawn(batcher, [1], later)

    async def late() -> int:
        await released.wait()  # arrives only once the short batch went without it
        return await batcher.submit(2)

    async def scenario() -> list[int]:
        await batcher.submit(0)
        return list(await asyncio.gather(*later, late()))

    assert run(scenario) == [2, 4]
    assert process.batches == [[0], [1], [2]]


def test_one_failing_request_fails_alone() -> None:
    later: list[asyncio.Task[int]] = []
    process = Doubler()
    batcher = DynamicBatcher(process, max_batch_size=8, max_wait_s=0.0)
    process.during[0] = spawn(batcher, [1, -2, 3], later)

    async def scenario() -> list[object]:
        await batcher.submit(0)
        return list(await asyncio.gather(*later, return_exceptions=True))

    one, failed, three = run(scenario)
    assert (one, three) == (2, 6)
    assert isinstance(failed, ValueError) and str(failed) == "negative: -2"
    assert process.batches == [[0], [1, -2, 3]]


def test_a_batch_that_fails_as_a_whole_fails_every_request_in_it_and_only_those() -> None:
    batches: list[list[int]] = []
    later: list[asyncio.Task[int]] = []

    def process(requests: Sequence[int]) -> list[int]:
        batches.append(list(requests))
        if len(batches) == 1:
            spawn(batcher, [1, 2], later)()
            raise RuntimeError("model exploded")
        return [10 * r for r in requests]

    batcher: DynamicBatcher[int, int] = DynamicBatcher(process, max_batch_size=8, max_wait_s=0.0)

    async def scenario() -> tuple[BaseException | int, list[int]]:
        first = (await asyncio.gather(batcher.submit(0), return_exceptions=True))[0]
        return first, list(await asyncio.gather(*later))

    first, rest = run(scenario)
    assert isinstance(first, RuntimeError) and str(first) == "model exploded"
    assert rest == [10, 20]


def test_a_wrong_number_of_outcomes_fails_the_batch() -> None:
    batcher: DynamicBatcher[int, int] = DynamicBatcher(lambda rs: [], max_batch_size=4, max_wait_s=0.0)

    async def scenario() -> None:
        await batcher.submit(1)

    with pytest.raises(ValueError, match="0 outcomes for 1 requests"):
        run(scenario)


def test_a_caller_cancelled_while_queued_is_dropped_before_processing() -> None:
    later: list[asyncio.Task[int]] = []
    process = Doubler()
    batcher = DynamicBatcher(process, max_batch_size=4, max_wait_s=FOREVER_S)
    process.during[0] = spawn(batcher, [1, 2, 3], later)

    async def scenario() -> list[object]:
        await batcher.submit(0)
        for _ in range(5):
            await asyncio.sleep(0)
        assert batcher.queued == 3
        later[1].cancel()  # the client of request 2 went away
        await asyncio.sleep(0)
        assert batcher.queued == 2
        later.append(asyncio.create_task(batcher.submit(4)))
        later.append(asyncio.create_task(batcher.submit(5)))
        return list(await asyncio.gather(*later, return_exceptions=True))

    outcomes = run(scenario)
    assert outcomes[0] == 2 and isinstance(outcomes[1], asyncio.CancelledError) and outcomes[2:] == [6, 8, 10]
    assert process.batches == [[0], [1, 3, 4, 5]]


def test_when_every_queued_caller_gave_up_the_batcher_goes_idle_at_once() -> None:
    later: list[asyncio.Task[int]] = []
    process = Doubler()
    batcher = DynamicBatcher(process, max_batch_size=4, max_wait_s=FOREVER_S)
    process.during[0] = spawn(batcher, [1], later)

    async def scenario() -> int:
        await batcher.submit(0)
        while batcher.queued < 1:
            await asyncio.sleep(0)
        later[0].cancel()
        while not batcher.idle:  # not after max_wait (an hour): the hang guard would fail the test
            await asyncio.sleep(0)
        return await batcher.submit(2)

    assert run(scenario) == 4
    assert process.batches == [[0], [2]]


def test_a_failing_batch_callback_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    def broken(size: int, seconds: float) -> None:
        raise RuntimeError("metrics down")

    batcher = DynamicBatcher(Doubler(), max_batch_size=2, max_wait_s=0.0, on_batch=broken)

    async def scenario() -> int:
        return await batcher.submit(21)

    assert run(scenario) == 42
    assert "batch callback failed" in caplog.text


def test_a_batch_is_reported_with_the_cpu_its_processing_took_not_the_time_it_lasted() -> None:
    """A batch that waits costs no CPU, one that computes does; the server's scoring-CPU metric and the
    benchmark's in-server engine cost per call rest on this."""
    burn_s, sleep_s = 0.1, 0.3

    def process(requests: Sequence[str]) -> list[str]:
        if requests[0] == "sleep":
            time.sleep(sleep_s)
        else:
            end = time.thread_time() + burn_s
            while time.thread_time() < end:
                pass
        return list(requests)

    reported: list[float] = []
    batcher = DynamicBatcher(
        process, max_batch_size=1, max_wait_s=0.0, on_batch=lambda n, cpu: reported.append(cpu)
    )

    async def scenario() -> None:
        await batcher.submit("sleep")
        await batcher.submit("burn")

    run(scenario)
    slept, burned = reported
    assert slept < burn_s / 2, "a sleeping batch reported its wall time"
    assert burned >= burn_s


@pytest.mark.parametrize(("size", "wait"), [(0, 0.0), (1, -1.0), (1, float("nan")), (1, float("inf"))])
def test_settings_are_checked(size: int, wait: float) -> None:
    with pytest.raises(ValueError):
        DynamicBatcher(Doubler(), max_batch_size=size, max_wait_s=wait)


# ---------------------------------------------------------------------------------------- property

_callers = st.lists(
    st.tuples(
        st.integers(-3, 20),  # the request (negative ones fail alone)
        st.integers(0, 6),  # loop turns before it is submitted
        st.one_of(st.none(), st.integers(0, 6)),  # loop turns after which its caller gives up
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=80, deadline=None)
@given(callers=_callers, max_batch_size=st.integers(1, 5), max_wait_s=st.sampled_from([0.0, 0.0003]))
def test_every_caller_gets_exactly_its_own_outcome(
    callers: list[tuple[int, int, int | None]], max_batch_size: int, max_wait_s: float
) -> None:
    log: list[tuple[str, int]] = []  # what happened, in order: ("processed" | "cancelled", caller)

    def process(requests: Sequence[tuple[int, int]]) -> list[int | BaseException]:
        log.extend(("processed", n) for n, _ in requests)
        return [ValueError(n) if r < 0 else 2 * r for n, r in requests]

    batcher = DynamicBatcher(process, max_batch_size=max_batch_size, max_wait_s=max_wait_s)
    sizes: list[int] = []
    batcher._on_batch = lambda size, seconds: sizes.append(size)

    async def caller(n: int, request: int, turns: int) -> int:
        for _ in range(turns):
            await asyncio.sleep(0)
        return await batcher.submit((n, request))

    async def give_up(task: asyncio.Task[int], n: int, turns: int) -> None:
        for _ in range(turns):
            await asyncio.sleep(0)
        if not task.done():
            log.append(("cancelled", n))
            task.cancel()

    async def scenario() -> list[object]:
        tasks = [asyncio.create_task(caller(n, r, t)) for n, (r, t, _) in enumerate(callers)]
        quitters = [
            asyncio.create_task(give_up(tasks[n], n, quit_after))
            for n, (_, _, quit_after) in enumerate(callers)
            if quit_after is not None
        ]
        outcomes = list(await asyncio.gather(*tasks, return_exceptions=True))
        await asyncio.gather(*quitters)
        return outcomes

    outcomes = run(scenario)
    processed = [n for kind, n in log if kind == "processed"]
    event(f"largest batch {max(sizes, default=0)}")
    dropped = sum(
        1 for n, o in enumerate(outcomes) if isinstance(o, asyncio.CancelledError) and n not in processed
    )
    event("a queued caller gave up" if dropped else "no queued caller gave up")
    assert len(processed) == len(set(processed)), "no request is processed twice"
    assert all(size <= max_batch_size for size in sizes) and sum(sizes) == len(processed)
    for n, ((request, _, _), outcome) in enumerate(zip(callers, outcomes, strict=True)):
        if isinstance(outcome, asyncio.CancelledError):
            if n in processed:  # then it was processed before its caller gave up, never after
                assert log.index(("processed", n)) < log.index(("cancelled", n))
        elif request < 0:
            assert isinstance(outcome, ValueError) and outcome.args == (n,)
        else:
            assert outcome == 2 * request and n in processed


def test_a_wait_needs_more_than_one_call_expected_within_it() -> None:
    """Arrivals 0.8 waits apart (1.25 calls expected per wait, as for a single worker at 300 calls/s
    with a 4 ms wait) do not make a batch's end wait; arrivals 0.1 waits apart do."""
    wait_s = 0.05
    batcher = DynamicBatcher(Doubler(), max_batch_size=8, max_wait_s=wait_s)

    async def arrivals(n: int, gap_s: float, tasks: list[asyncio.Task[int]]) -> bool:
        for r in range(n):
            tasks.append(asyncio.ensure_future(batcher.submit(r)))
            await asyncio.sleep(gap_s)
        return batcher.expects_company

    async def scenario() -> tuple[bool, bool]:
        tasks: list[asyncio.Task[int]] = []
        one_per_wait = await arrivals(30, 0.8 * wait_s, tasks)
        ten_per_wait = await arrivals(15, 0.1 * wait_s, tasks)
        await asyncio.gather(*tasks)
        return one_per_wait, ten_per_wait

    assert run(scenario) == (False, True)
