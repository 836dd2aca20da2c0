"""Settling the heap: what is unreachable is collected, what is alive is frozen, a replaced model is not."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from serving.heap_freeze import settle_heap, settle_heap_later


class _Node:
    """A reference cycle's member, which reference counting alone never frees."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def _unfrozen_after() -> Iterator[None]:
    yield
    gc.unfreeze()  # leave the test process as it was


def test_unreachable_cycles_are_collected_and_the_survivors_frozen() -> None:
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage
    kept = _Node()
    seconds = settle_heap()
    assert gone() is None
    assert seconds >= 0.0
    assert gc.get_freeze_count() > 0
    assert gc.is_tracked(kept)
    # Frozen: in none of the generations a collection walks.
    assert not any(o is kept for generation in (0, 1, 2) for o in gc.get_objects(generation=generation))


def test_a_model_frozen_earlier_is_freed_once_it_is_replaced() -> None:
    old_model = _Node()
    settle_heap()  # the old model is frozen while it serves
    released = weakref.ref(old_model)
    del old_model  # replaced: only its own cycle refers to it now
    gc.collect()
    assert released() is not None  # frozen objects are out of reach of ordinary collections
    settle_heap()
    assert released() is None


def test_settling_later_runs_on_a_daemon_timer() -> None:
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage
    timer = settle_heap_later(0.01)
    assert timer.daemon and timer.name == "heap-settle"
    timer.join(5)
    assert gone() is None


def test_freed_memory_is_trimmed_after_the_replaced_model_is_collected() -> None:
    old_model = _Node()
    settle_heap(trim=None)
    released = weakref.ref(old_model)
    del old_model
    seen_at_trim: list[bool] = []

    def trim() -> int:
        seen_at_trim.append(released() is None)
        return 1

    settle_heap(trim=trim)
    assert seen_at_trim == [True]  # once, and after the collection freed the old model
