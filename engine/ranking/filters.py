"""Which catalog items a request allows to be recommended.

Filters are business rules, so they are applied as hard masks before ranking, never as score
penalties: an excluded item must not appear however well it scores. The mask is split in two because
a batch request shares one set of filters across up to a thousand customers: the part every customer
shares is computed once per request, and only the per-customer part (their purchases, their cart,
their own exclusions) per customer by ``customer_mask``, which copies the shared part. The request
path keeps the shared part as ``attribute_mask`` (stock, categories, prices; the catalog's own
read-only mask when stock is the only condition) plus the excluded ids' indices, which go into the
customer's copy (``engine.ranking.product_lists.ListSpec``); ``shared_mask`` is the two put together.

"Already purchased" means purchase events, not views or carts: a viewed item is often exactly what
the customer still wants, while a bought one is what ``include_purchased`` exists to bring back for
repeat-purchase shops.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from engine.data.item_catalog import ItemCatalog
from engine.invalid_request import InvalidRequestError


@dataclass(frozen=True)
class ItemFilters:
    """Conditions every recommended item must meet; the defaults are the safe behaviour.

    Unknown item ids and category names match nothing and are ignored. ``exclude_categories`` wins
    over ``include_categories``; an empty ``include_categories`` means every category. Prices are
    inclusive bounds on the list price.
    """

    exclude_item_ids: tuple[str, ...] = ()
    include_purchased: bool = False
    include_categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    price_min: float | None = None
    price_max: float | None = None
    include_out_of_stock: bool = False

    def __post_init__(self) -> None:
        for name in ("price_min", "price_max"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise InvalidRequestError(name, f"must be a finite number >= 0, got {value}")
        if self.price_min is not None and self.price_max is not None and self.price_max < self.price_min:
            raise InvalidRequestError(
                "price_max", f"must be >= price_min ({self.price_min}), got {self.price_max}"
            )

    def shared_mask(self, catalog: ItemCatalog) -> NDArray[np.bool_]:
        """(n_items,) True where an item passes every condition that does not depend on the customer."""
        mask = self.attribute_mask(catalog).copy()
        if self.exclude_item_ids:
            mask[catalog.indices(self.exclude_item_ids)] = False
        return mask

    def attribute_mask(self, catalog: ItemCatalog) -> NDArray[np.bool_]:
        """``shared_mask`` before the excluded ids: stock, categories and prices. Read-only, and the
        catalog's own mask when stock is the only condition (most requests), so that a request does not
        copy a mask of the whole catalog only to read it; ``customer_mask`` copies it once per customer
        anyway, and takes the excluded ids there (``ListSpec``)."""
        if not (
            self.include_categories
            or self.exclude_categories
            or self.price_min is not None
            or self.price_max is not None
        ):
            return catalog.every_item_mask if self.include_out_of_stock else catalog.in_stock_mask
        mask = np.ones(len(catalog), dtype=bool) if self.include_out_of_stock else catalog.in_stock.copy()
        if self.include_categories:
            mask &= catalog.category_mask(self.include_categories)
        if self.exclude_categories:
            mask &= ~catalog.category_mask(self.exclude_categories)
        if self.price_min is not None:
            mask &= catalog.prices >= self.price_min
        if self.price_max is not None:
            mask &= catalog.prices <= self.price_max
        mask.flags.writeable = False
        return mask

    def customer_mask(
        self,
        shared: NDArray[np.bool_],
        *,
        purchased: NDArray[np.integer],
        excluded: Iterable[NDArray[np.integer]] = (),
    ) -> NDArray[np.bool_]:
        """``shared`` minus this customer's ``blocked_items``."""
        mask = shared.copy()
        for indices in self.blocked_items(purchased, excluded):
            mask[np.asarray(indices, dtype=np.int64)] = False
        return mask

    def blocked_items(
        self, purchased: NDArray[np.integer], excluded: Iterable[NDArray[np.integer]] = ()
    ) -> list[NDArray[np.integer]]:
        """The item indices one customer may never be shown, as the arrays they come in: their
        purchases (unless included) and ``excluded``, the per-customer index sets that are never
        recommended back, such as the cart and the target's own ``exclude_item_ids``. A mask clears
        them (``customer_mask``); the batch search marks them per row instead of copying a mask."""
        parts: list[NDArray[np.integer]] = [] if self.include_purchased else [purchased]
        parts.extend(excluded)
        return parts
