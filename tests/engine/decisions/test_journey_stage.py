"""Journey stages at their boundaries, history merging, and the tracker against a naive count.

The rules in order and a first tracker round trip are in tests/engine/decisions/test_online_bandit.py.
"""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.decisions.journey_stage import (
    DEFAULT_LAPSED_AFTER,
    JOURNEY_STAGES,
    CustomerHistory,
    JourneyStage,
    JourneyTracker,
    journey_stage,
)
from engine.live.events import BehaviorEvent
from engine.live.state_store import MemoryStateStore

NOW = dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC)


def stage(history: CustomerHistory, cart_items: int = 0, **kwargs: dt.timedelta) -> JourneyStage:
    return journey_stage(history, cart_items=cart_items, now=NOW, **kwargs)


def test_lapsed_starts_exactly_at_the_threshold() -> None:
    assert DEFAULT_LAPSED_AFTER.days == 90  # the documented default
    just_before = CustomerHistory(3, 1, NOW - DEFAULT_LAPSED_AFTER + dt.timedelta(seconds=1))
    assert stage(just_before) is JourneyStage.REPEAT_BUYER
    assert stage(CustomerHistory(3, 1, NOW - DEFAULT_LAPSED_AFTER)) is JourneyStage.LAPSED
    browser = CustomerHistory(3, 0, NOW - dt.timedelta(days=10))
    assert stage(browser) is JourneyStage.BROWSING
    assert stage(browser, lapsed_after=dt.timedelta(days=7)) is JourneyStage.LAPSED


def test_edges_of_the_rules() -> None:
    assert stage(CustomerHistory(), cart_items=1) is JourneyStage.CART  # a cart beats no history
    assert stage(CustomerHistory(50, 5, NOW - dt.timedelta(days=400)), cart_items=1) is JourneyStage.CART
    # purchases known without events (e.g. imported orders) are history, not a new visitor
    assert stage(CustomerHistory(0, 2, None)) is JourneyStage.REPEAT_BUYER
    # known but never dated: cannot be lapsed
    assert stage(CustomerHistory(4, 0, None)) is JourneyStage.BROWSING
    assert {s.value for s in JOURNEY_STAGES} == {"new_visitor", "browsing", "cart", "repeat_buyer", "lapsed"}


def test_combined_adds_counts_and_keeps_the_latest_known_sighting() -> None:
    old, new = NOW - dt.timedelta(days=30), NOW - dt.timedelta(days=2)
    assert CustomerHistory(2, 1, old).combined(CustomerHistory(5, 0, new)) == CustomerHistory(7, 1, new)
    assert CustomerHistory(2, 1, new).combined(CustomerHistory(5, 0, old)) == CustomerHistory(7, 1, new)
    assert CustomerHistory(1, 0, None).combined(CustomerHistory(0, 0, old)) == CustomerHistory(1, 0, old)
    assert CustomerHistory(1, 0, None).combined(CustomerHistory()) == CustomerHistory(1, 0, None)


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["c1", "c2", "c3"]),
        st.sampled_from(["view", "cart", "purchase"]),
        st.integers(0, 10_000),  # minutes before NOW
    ),
    max_size=12,
)


@settings(max_examples=30, deadline=None)
@given(st.lists(EVENTS, max_size=4))
def test_tracker_history_is_the_naive_count_and_latest_time_over_any_batches(
    batches: list[list[tuple[str, str, int]]],
) -> None:
    store = MemoryStateStore()
    tracker = JourneyTracker(store)
    expected: dict[str, list] = {}
    for b, batch in enumerate(batches):
        events = [
            BehaviorEvent(f"{b}-{n}", customer, "item", kind, NOW - dt.timedelta(minutes=minutes))
            for n, (customer, kind, minutes) in enumerate(batch)
        ]
        tracker.observe(events, [])
        for event in events:
            n, purchases, seen = expected.get(event.customer_id, [0, 0, None])
            latest = event.timestamp if seen is None else max(seen, event.timestamp)
            expected[event.customer_id] = [n + 1, purchases + (event.event_type == "purchase"), latest]
    replica = JourneyTracker(store)  # another process on the same store sees the same history
    for customer in ("c1", "c2", "c3"):
        n, purchases, seen = expected.get(customer, [0, 0, None])
        assert replica.history(customer) == CustomerHistory(n, purchases, seen)
