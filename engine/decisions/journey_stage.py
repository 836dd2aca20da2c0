"""Where a customer is in their journey with the shop, from the request and their history.

The same persona mix wants different things at different moments: a first-time visitor needs a
reason to trust the shop (free shipping), a customer with a full cart a nudge to buy (a basket
discount), a lapsed buyer a reason to come back. The online bandit therefore keeps its statistics per
journey stage, so what it learns about carts does not blur what it learns about first visits.

Stages, decided in this order (the first that applies):

1. ``cart``: the request has items in the cart: purchase intent overrides history.
2. ``new_visitor``: no history at all (no events, in the artifact or since).
3. ``lapsed``: seen before, but not for ``lapsed_after`` (90 days by default, a common retail
   threshold for "lapsed") before this request.
4. ``repeat_buyer``: has bought before (at least one purchase) and is back.
5. ``browsing``: everyone else: known, active, not yet a buyer.

The history combines what the artifact knew at training time (events and purchases per customer)
with what happened since, counted live by ``JourneyTracker`` (a LiveEventObserver) in the StateStore,
so all replicas agree and a customer who buys today is a repeat buyer on their next request.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from engine.live.events import BehaviorEvent, DecisionOutcome
from engine.live.state_store import StateStore

DEFAULT_LAPSED_AFTER = dt.timedelta(days=90)
_KEY_PREFIX = "journey:"
_EVENTS = "events"
_PURCHASES = "purchases"
_LAST_SEEN = "last_seen"  # POSIX seconds


class JourneyStage(StrEnum):
    NEW_VISITOR = "new_visitor"
    BROWSING = "browsing"
    CART = "cart"
    REPEAT_BUYER = "repeat_buyer"
    LAPSED = "lapsed"


JOURNEY_STAGES: tuple[JourneyStage, ...] = tuple(JourneyStage)


@dataclass(frozen=True)
class CustomerHistory:
    """What is known of a customer before this request; ``last_seen`` None when unknown."""

    n_events: int = 0
    n_purchases: int = 0
    last_seen: dt.datetime | None = None

    def combined(self, other: CustomerHistory) -> CustomerHistory:
        seen = [t for t in (self.last_seen, other.last_seen) if t is not None]
        return CustomerHistory(
            self.n_events + other.n_events,
            self.n_purchases + other.n_purchases,
            max(seen) if seen else None,
        )


def journey_stage(
    history: CustomerHistory,
    *,
    cart_items: int,
    now: dt.datetime,
    lapsed_after: dt.timedelta = DEFAULT_LAPSED_AFTER,
) -> JourneyStage:
    """The stage of one request (see the module docstring for the rules and their order)."""
    if cart_items > 0:
        return JourneyStage.CART
    if history.n_events <= 0 and history.n_purchases <= 0:
        return JourneyStage.NEW_VISITOR
    if history.last_seen is not None and now - history.last_seen >= lapsed_after:
        return JourneyStage.LAPSED
    if history.n_purchases > 0:
        return JourneyStage.REPEAT_BUYER
    return JourneyStage.BROWSING


class JourneyTracker:
    """Counts each customer's events and purchases since training, and when they were last seen.

    A LiveEventObserver: the event log calls it with newly accepted events only, so counts are exact.
    Counters are StateStore float counters (atomic in Redis); ``last_seen`` is kept as a counter too,
    raised to the newest timestamp by adding the difference, which is atomic per request and can at
    worst overshoot by the gap between two concurrent batches of the same customer (seconds).
    """

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def observe(self, events: Sequence[BehaviorEvent], outcomes: Sequence[DecisionOutcome]) -> None:
        per_customer: dict[str, tuple[int, int, float]] = {}
        for event in events:
            n, purchases, newest = per_customer.get(event.customer_id, (0, 0, 0.0))
            per_customer[event.customer_id] = (
                n + 1,
                purchases + (event.event_type == "purchase"),
                max(newest, event.timestamp.timestamp()),
            )
        for customer_id, (n, purchases, newest) in per_customer.items():
            key = _KEY_PREFIX + customer_id
            seen = self._store.get_floats(key).get(_LAST_SEEN, 0.0)
            self._store.add_floats(
                key,
                {_EVENTS: float(n), _PURCHASES: float(purchases), _LAST_SEEN: max(0.0, newest - seen)},
            )

    def history(self, customer_id: str) -> CustomerHistory:
        counters = self._store.get_floats(_KEY_PREFIX + customer_id)
        seen = counters.get(_LAST_SEEN, 0.0)
        return CustomerHistory(
            n_events=round(counters.get(_EVENTS, 0.0)),
            n_purchases=round(counters.get(_PURCHASES, 0.0)),
            last_seen=dt.datetime.fromtimestamp(seen, dt.UTC) if seen > 0 else None,
        )
