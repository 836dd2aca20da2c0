"""The graceful stop's wait: for the calls running when it began, until their responses are sent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from serving.response_drain import ResponseDrain


class _Call:
    """What the drain sees of a call: its start, and the context its done callbacks hang on."""

    def __init__(self, drain: ResponseDrain) -> None:
        self.drain = drain
        self.callbacks: list[Callable[[Any], None]] = []
        drain.handlers_running += 1
        self.started = time.perf_counter()

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self.callbacks.append(callback)

    def handler_returns(self) -> None:
        self.drain.handler_ended(self, self.started, time.perf_counter())

    def response_sent(self) -> None:
        for callback in self.callbacks:
            callback(self)


async def _still_waiting(task: asyncio.Task[tuple[int, float]]) -> bool:
    await asyncio.sleep(0.02)
    return not task.done()


def test_the_stop_waits_for_the_responses_of_calls_running_when_it_began() -> None:
    async def scenario() -> None:
        drain = ResponseDrain(flush_s=0.0)
        first, second = _Call(drain), _Call(drain)
        stop = asyncio.get_running_loop().create_task(drain.drain(30.0))
        assert await _still_waiting(stop)
        first.handler_returns()
        first.response_sent()
        assert await _still_waiting(stop)
        second.handler_returns()
        assert await _still_waiting(stop)  # its handler returned, but its response is still being sent
        second.response_sent()
        running, waited = await asyncio.wait_for(stop, 5.0)
        assert running == 2
        assert waited < 30.0
        assert drain.awaited == 0 and drain.handlers_running == 0

    asyncio.run(scenario())


def test_calls_arriving_during_the_stop_are_not_waited_for() -> None:
    async def scenario() -> None:
        drain = ResponseDrain(flush_s=0.0)
        before = _Call(drain)
        stop = asyncio.get_running_loop().create_task(drain.drain(30.0))
        await asyncio.sleep(0.01)
        after = _Call(drain)  # served, but not awaited: steady load would hold the stop forever
        before.handler_returns()
        before.response_sent()
        running, _ = await asyncio.wait_for(stop, 5.0)
        assert running == 1
        after.handler_returns()
        assert after.callbacks == []  # nothing registered for a call the stop does not wait for
        assert drain.handlers_running == 0

    asyncio.run(scenario())


def test_connections_stay_open_a_while_after_the_last_response_and_not_at_all_when_idle() -> None:
    drain = ResponseDrain(flush_s=0.2)
    call = _Call(drain)
    call.handler_returns()  # just before the stop: its response may still be on its way
    running, waited = asyncio.run(drain.drain(30.0))
    assert running == 0
    assert waited >= 0.15
    running, waited = asyncio.run(ResponseDrain(flush_s=10.0).drain(30.0))  # no call yet: no pause
    assert (running, waited < 5.0) == (0, True)


def test_the_wait_never_outlasts_the_grace_period() -> None:
    drain = ResponseDrain(flush_s=10.0)
    _Call(drain)  # a handler that never returns
    running, waited = asyncio.run(drain.drain(0.05))
    assert running == 1
    assert 0.05 <= waited < 5.0
