"""Where engine calls run: page renders on the event loop, waits and big batches on blocking threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, cast

import pytest

from engine.personalizer import Personalizer
from serving.engine_calls import INLINE_TARGETS, DeadlinePassedError, EngineCalls
from serving.event_loop import BLOCKING_THREAD_PREFIX, EventLoopThread

NO_MODEL = cast(Personalizer, None)  # the engine calls below ignore the model


class Deadline:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


@pytest.fixture(scope="module")
def loop() -> Iterator[EventLoopThread]:
    running = EventLoopThread(threads=2, name="engine-calls-test")
    yield running
    running.close()


def where(_: Personalizer, call: list[str]) -> str:
    call.append("ran")
    return threading.current_thread().name


def run(loop: EventLoopThread, engine: EngineCalls, deadline: Deadline, targets: int = 1) -> tuple[str, Any]:
    ran: list[str] = []
    thread = loop.run(engine.run(deadline, where, NO_MODEL, ran, targets=targets))
    return thread, ran


def test_page_renders_run_on_the_loop_and_big_batches_on_blocking_threads(loop: EventLoopThread) -> None:
    engine = EngineCalls()
    assert run(loop, engine, Deadline(5.0))[0] == "engine-calls-test"
    assert run(loop, engine, Deadline(None), targets=INLINE_TARGETS)[0] == "engine-calls-test"
    assert run(loop, engine, Deadline(5.0), targets=INLINE_TARGETS + 1)[0].startswith(BLOCKING_THREAD_PREFIX)


def test_with_a_network_state_store_every_call_runs_on_a_blocking_thread(loop: EventLoopThread) -> None:
    thread, ran = run(loop, EngineCalls(blocking_state=True), Deadline(None))
    assert thread.startswith(BLOCKING_THREAD_PREFIX) and ran == ["ran"]


def test_a_call_whose_deadline_passed_while_queued_for_a_thread_is_not_run(loop: EventLoopThread) -> None:
    ran: list[str] = []
    with pytest.raises(DeadlinePassedError, match="waited for a thread"):
        loop.run(EngineCalls(blocking_state=True).run(Deadline(0.0), where, NO_MODEL, ran))
    assert ran == []
    with pytest.raises(ValueError, match="inline_targets"):
        EngineCalls(inline_targets=-1)
