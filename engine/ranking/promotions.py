"""Merchandising on top of the personalised ranking: reserved shares of the list, and pinned items.

A promotion rule reserves ``max(1, floor(share * k))`` slots of a k-item list for items that match
it (every non-empty condition: category, brand, item id). Those slots go to the matching items the
customer scores highest, so the promotion is personalised too, and promoted items still have to pass
the request's filters: a promotion decides *which* allowed items get a slot, not *whether* an item is
allowed. Pins are the opposite: the caller names an item and a position, and gets exactly that, even
when the filters would exclude the item.

Slots are handed out in this order, each step taking only items no earlier step placed:
pins take their positions; then each rule, in request order, takes its reserved slots, capped by the
positions still free; whatever a rule cannot fill (too few matching items) goes back to the regular
ranking.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from engine.data.item_catalog import ItemCatalog
from engine.invalid_request import InvalidRequestError

# Shares are doubles sent over the wire: 0.1 * 10 rules may add up to 1.0000000000000002.
_SHARE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class PromotionRule:
    """Reserve ``share`` of the list for items meeting every non-empty condition."""

    promotion_id: str
    share: float
    categories: tuple[str, ...] = ()
    brands: tuple[str, ...] = ()
    item_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.promotion_id:
            raise InvalidRequestError("promotion_id", "must not be empty")
        if not (math.isfinite(self.share) and 0.0 < self.share <= 1.0):
            raise InvalidRequestError("share", f"must be in (0, 1], got {self.share}")
        if not (self.categories or self.brands or self.item_ids):
            raise InvalidRequestError(
                "", "a rule needs at least one of categories, brands or item_ids; it would match everything"
            )

    def slots(self, k: int) -> int:
        """Slots reserved in a k-item list: share * k rounded down, and at least one."""
        return max(1, math.floor(self.share * k + _SHARE_TOLERANCE))

    def matches(self, catalog: ItemCatalog) -> NDArray[np.bool_]:
        mask = np.ones(len(catalog), dtype=bool)
        if self.categories:
            mask &= catalog.category_mask(self.categories)
        if self.brands:
            mask &= catalog.brand_mask(self.brands)
        if self.item_ids:
            mask &= catalog.mask_of(self.item_ids)
        return mask


@dataclass(frozen=True)
class PinnedItem:
    """``item_id`` shown at 1-based ``position`` whatever its score."""

    item_id: str
    position: int


@dataclass(frozen=True)
class Promotions:
    """Rules and pins of one request; checked against the list length by ``check_for``."""

    rules: tuple[PromotionRule, ...] = ()
    pins: tuple[PinnedItem, ...] = ()

    def __post_init__(self) -> None:
        seen: dict[str, int] = {}
        for i, rule in enumerate(self.rules):
            if rule.promotion_id in seen:
                raise InvalidRequestError(
                    f"rules[{i}].promotion_id",
                    f"{rule.promotion_id!r} is already used by rules[{seen[rule.promotion_id]}]",
                )
            seen[rule.promotion_id] = i
        total = sum(rule.share for rule in self.rules)
        if total > 1.0 + _SHARE_TOLERANCE:
            raise InvalidRequestError("rules", f"shares add up to {total:g}; they must not exceed 1")
        positions: dict[int, int] = {}
        for i, pin in enumerate(self.pins):
            if pin.position in positions:
                raise InvalidRequestError(
                    f"pins[{i}].position",
                    f"{pin.position} is already taken by pins[{positions[pin.position]}]",
                )
            positions[pin.position] = i

    def check_for(self, k: int, catalog: ItemCatalog) -> None:
        """Pins must fit a k-item list and name known, distinct items."""
        if len(self.pins) > k:
            raise InvalidRequestError("pins", f"{len(self.pins)} pins do not fit a list of {k} items")
        items: dict[str, int] = {}
        for i, pin in enumerate(self.pins):
            if not 1 <= pin.position <= k:
                raise InvalidRequestError(
                    f"pins[{i}].position", f"must be 1..{k} (the list length), got {pin.position}"
                )
            if pin.item_id not in catalog.ids:
                raise InvalidRequestError(f"pins[{i}].item_id", f"unknown item {pin.item_id!r}")
            if pin.item_id in items:
                raise InvalidRequestError(
                    f"pins[{i}].item_id", f"{pin.item_id!r} is already pinned by pins[{items[pin.item_id]}]"
                )
            items[pin.item_id] = i

    def compile(self, k: int, catalog: ItemCatalog) -> CompiledPromotions:
        """Masks and slot counts for a k-item list; call once per request, use for every customer."""
        if not self.rules and not self.pins:  # most requests: nothing to check or look up
            return CompiledPromotions.none(len(catalog))
        self.check_for(k, catalog)
        masks = (
            np.vstack([rule.matches(catalog) for rule in self.rules])
            if self.rules
            else np.zeros((0, len(catalog)), dtype=bool)
        )
        return CompiledPromotions(
            rule_ids=tuple(rule.promotion_id for rule in self.rules),
            rule_masks=masks,
            rule_slots=tuple(rule.slots(k) for rule in self.rules),
            pin_items=catalog.ids.to_internal([pin.item_id for pin in self.pins]),
            pin_positions=np.asarray([pin.position - 1 for pin in self.pins], dtype=np.int64),
        )


@dataclass(frozen=True)
class CompiledPromotions:
    """Promotions as item masks: ``rule_masks`` (rules, n_items), pins as item index and 0-based position."""

    rule_ids: tuple[str, ...]
    rule_masks: NDArray[np.bool_]
    rule_slots: tuple[int, ...]
    pin_items: NDArray[np.int64]
    pin_positions: NDArray[np.int64]

    @classmethod
    def none(cls, n_items: int) -> CompiledPromotions:
        """No rules and no pins (most requests): one read-only instance per catalog size, shared, since
        building its three arrays cost 2 µs a request."""
        return _no_promotions(n_items)


@functools.lru_cache(maxsize=16)
def _no_promotions(n_items: int) -> CompiledPromotions:
    arrays = np.zeros((0, n_items), dtype=bool), np.zeros(0, np.int64), np.zeros(0, np.int64)
    for array in arrays:
        array.flags.writeable = False
    masks, pins, positions = arrays
    return CompiledPromotions((), masks, (), pins, positions)
