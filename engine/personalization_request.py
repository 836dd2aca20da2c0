"""What a personalization request asks, as plain validated values the engine core works on.

The gRPC layer translates protobuf messages into these (and checks the wire limits such as list
lengths); the CLI and tests build them directly. Each value checks its own invariants and raises
``InvalidRequestError`` naming its own field, which the translation layer prefixes with the path of
the enclosing message.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

from engine.invalid_request import InvalidRequestError
from engine.personas.mix import PersonaMix
from engine.personas.shopping_context import CONTEXTS
from engine.ranking.filters import ItemFilters
from engine.ranking.promotions import Promotions

DEFAULT_RESULTS = 10
DEFAULT_OFFERS = 3


@dataclass(frozen=True)
class SessionContext:
    """The moment and page of a request; every field is optional.

    ``shopping_context`` (one of CONTEXTS) overrides the context derived from ``timestamp``; with
    neither, the server's current time decides. Unknown session and cart item ids are ignored (items
    newer than the model). ``basket_value`` defaults to the cart's list prices.
    """

    timestamp: dt.datetime | None = None
    shopping_context: str | None = None
    channel: str = ""
    device: str = ""
    page_type: str = ""
    session_item_ids: tuple[str, ...] = ()
    cart_item_ids: tuple[str, ...] = ()
    basket_value: float | None = None

    def __post_init__(self) -> None:
        if self.shopping_context is not None and self.shopping_context not in CONTEXTS:
            raise InvalidRequestError(
                "shopping_context", f"unknown context {self.shopping_context!r}; expected one of {CONTEXTS}"
            )
        if self.timestamp is not None and self.timestamp.tzinfo is None:
            raise InvalidRequestError("timestamp", "must be timezone-aware (UTC when in doubt)")
        if self.basket_value is not None and not (
            math.isfinite(self.basket_value) and self.basket_value >= 0
        ):
            raise InvalidRequestError(
                "basket_value", f"must be a finite number >= 0, got {self.basket_value}"
            )


@dataclass(frozen=True)
class CustomerTarget:
    """One customer to serve; ``mix`` replaces their inferred mix, ``exclude_item_ids`` adds exclusions."""

    customer_id: str
    mix: PersonaMix | None = None
    exclude_item_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.customer_id:
            raise InvalidRequestError("customer_id", "must not be empty")


@dataclass(frozen=True)
class ProductRequest:
    """How to build each product list: length, filters, merchandising, variety, explanations."""

    k: int = DEFAULT_RESULTS
    filters: ItemFilters = field(default_factory=ItemFilters)
    promotions: Promotions = field(default_factory=Promotions)
    diversity: float = 0.0
    explain: bool = False

    def __post_init__(self) -> None:
        if self.k < 1:
            raise InvalidRequestError("num_results", f"must be >= 1, got {self.k}")
        if not (math.isfinite(self.diversity) and 0.0 <= self.diversity <= 1.0):
            raise InvalidRequestError("diversity", f"must be in [0, 1], got {self.diversity}")


@dataclass(frozen=True)
class PageRequest:
    """A whole page for one customer: products, offers and a layout under one mix and decision id."""

    target: CustomerTarget
    products: ProductRequest = field(default_factory=ProductRequest)
    session: SessionContext = field(default_factory=SessionContext)
    num_offers: int = DEFAULT_OFFERS


@dataclass(frozen=True)
class ProductListsRequest:
    """One product list per target, all built the same way and scored in one batch."""

    targets: tuple[CustomerTarget, ...]
    products: ProductRequest = field(default_factory=ProductRequest)
    session: SessionContext = field(default_factory=SessionContext)


@dataclass(frozen=True)
class OfferRankingRequest:
    """Offers for one customer, optionally only among ``candidate_offer_ids``."""

    target: CustomerTarget
    session: SessionContext = field(default_factory=SessionContext)
    num_offers: int = DEFAULT_OFFERS
    candidate_offer_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class LayoutRequest:
    """A layout variant for one customer, optionally only among ``candidate_variant_ids``."""

    target: CustomerTarget
    session: SessionContext = field(default_factory=SessionContext)
    candidate_variant_ids: tuple[str, ...] = ()
