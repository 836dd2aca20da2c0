"""The idle-priority thread: work handed to it runs under SCHED_IDLE, and the caller's thread is untouched."""

from __future__ import annotations

import os
import threading

import pytest

from serving.idle_priority import IdlePriorityThread, idle_policy_supported

needs_idle_policy = pytest.mark.skipif(not idle_policy_supported(), reason="SCHED_IDLE is a Linux policy")


def _policy_and_thread() -> tuple[int, int]:
    return os.sched_getscheduler(0), threading.get_native_id()


@needs_idle_policy
def test_work_runs_on_one_idle_thread_and_the_caller_keeps_its_policy() -> None:
    caller_policy = os.sched_getscheduler(0)
    idle = IdlePriorityThread("test-idle")
    try:
        first_policy, first_thread = idle.submit(_policy_and_thread).result()
        second_policy, second_thread = idle.submit(_policy_and_thread).result()
    finally:
        idle.close()
    assert first_policy == second_policy == os.SCHED_IDLE
    assert first_thread == second_thread != threading.get_native_id()
    assert os.sched_getscheduler(0) == caller_policy


def test_results_and_exceptions_come_back_to_the_caller() -> None:
    idle = IdlePriorityThread("test-idle")
    try:
        assert idle.submit(sorted, [3, 1, 2], reverse=True).result() == [3, 2, 1]
        with pytest.raises(ZeroDivisionError):
            idle.submit(divmod, 1, 0).result()
    finally:
        idle.close()


def test_a_thread_never_used_closes_without_starting_one() -> None:
    before = threading.active_count()
    IdlePriorityThread("test-idle").close()
    assert threading.active_count() == before
