"""Which offers a customer may receive right now, from the offer rules of the ``offers`` table.

Eligibility is a business rule, not a prediction: an offer for one brand must never be shown on a page
without that brand, however likely the customer is to redeem it. The decision policy therefore only
ever chooses among the offers this module lets through.

The rules of one offer, checked against what the customer is looking at (items in view and in the
basket) and the basket value:
- categories and brands: an empty list means "any"; otherwise at least one item in the context must
  match. Both rules must hold for the *same* item: a brand-X offer limited to electronics needs a
  brand-X electronics item, not a brand-X shirt next to someone else's phone.
- an offer with a category or brand rule needs an item to apply to, so it is never eligible for an
  empty context; an offer without such rules (say free shipping) is.
- ``min_basket``: the basket value must be at least this (missing means 0).

Rules are compiled once into boolean matrices over the offers' category and brand vocabularies, so a
request costs one vectorised pass over the offers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from numpy.typing import NDArray

from engine.data.id_map import IdMap, UnknownIdError
from engine.errors import PersonaEngineError

_ABSENT = -1


class OfferEligibilityError(PersonaEngineError, ValueError):
    """Bad offer rules or a bad request; names the offer, item or column at fault."""


class UnknownOfferError(PersonaEngineError, KeyError):
    """An offer id that the offers table does not have."""

    def __init__(self, unknown: Sequence[str], known: Sequence[str]) -> None:
        shown = ", ".join(repr(u) for u in list(unknown)[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        super().__init__(f"unknown offer id(s): {shown}{more}; the offers table has {len(known)} offers")
        self.unknown = list(unknown)

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


@dataclass(frozen=True)
class EligibilityContext:
    """What the customer is looking at: one entry per item (in view or in the basket), and the basket value.

    ``brands`` entries are None for items without a brand; such items never satisfy a brand rule.
    """

    categories: tuple[str, ...]
    brands: tuple[str | None, ...]
    basket_value: float = 0.0

    def __post_init__(self) -> None:
        if len(self.categories) != len(self.brands):
            raise OfferEligibilityError(
                f"context has {len(self.categories)} item categories but {len(self.brands)} item brands"
            )
        if not np.isfinite(self.basket_value) or self.basket_value < 0:
            raise OfferEligibilityError(f"basket_value must be a finite number >= 0, got {self.basket_value}")


class ItemLookup:
    """Category, brand and price of every catalog item, to turn item ids into a EligibilityContext."""

    def __init__(self, items: pl.DataFrame) -> None:
        for column in ("item_id", "category", "price"):
            if column not in items.columns:
                raise OfferEligibilityError(f"items table has no column {column!r}")
        self._ids = IdMap(items["item_id"].cast(pl.Utf8).to_list(), kind="item")
        self._categories: list[str] = items["category"].cast(pl.Utf8).to_list()
        brands = items["brand"].cast(pl.Utf8).to_list() if "brand" in items.columns else [None] * len(items)
        self._brands: list[str | None] = brands
        self._prices = items["price"].cast(pl.Float64).to_numpy()

    def context(
        self,
        in_view: Iterable[str] = (),
        in_basket: Iterable[str] = (),
        basket_value: float | None = None,
    ) -> EligibilityContext:
        """The context for these items; the basket value defaults to the list prices of the basket items."""
        view, basket = list(in_view), list(in_basket)
        try:
            view_index = self._ids.to_internal(view)
            basket_index = self._ids.to_internal(basket)
        except UnknownIdError as error:
            raise OfferEligibilityError(f"shopping context: {error}") from None
        value = float(self._prices[basket_index].sum()) if basket_value is None else float(basket_value)
        index = np.concatenate([view_index, basket_index]).tolist()
        return EligibilityContext(
            categories=tuple(self._categories[i] for i in index),
            brands=tuple(self._brands[i] for i in index),
            basket_value=value,
        )


def _string_lists(frame: pl.DataFrame, column: str) -> list[list[str]]:
    if column not in frame.columns:
        return [[] for _ in range(len(frame))]
    return [
        [str(v) for v in (cell or []) if v is not None and str(v) != ""] for cell in frame[column].to_list()
    ]


def _membership(lists: list[list[str]]) -> tuple[dict[str, int], NDArray[np.bool_], NDArray[np.bool_]]:
    """Vocabulary, (n_offers, n_terms) membership matrix and the 'no rule, everything matches' flags."""
    vocabulary = {term: i for i, term in enumerate(sorted({t for terms in lists for t in terms}))}
    matrix = np.zeros((len(lists), len(vocabulary)), dtype=bool)
    for row, terms in enumerate(lists):
        matrix[row, [vocabulary[t] for t in terms]] = True
    return vocabulary, matrix, np.array([not terms for terms in lists], dtype=bool)


class OfferRules:
    """The compiled rules of every offer, in the order of the offers table."""

    def __init__(self, offers: pl.DataFrame) -> None:
        for column in ("offer_id", "cost"):
            if column not in offers.columns:
                raise OfferEligibilityError(f"offers table has no column {column!r}")
        ids = offers["offer_id"].cast(pl.Utf8).to_list()
        repeated = sorted(i for i, count in Counter(ids).items() if count > 1)
        if repeated:
            raise OfferEligibilityError(f"offers.offer_id repeats {', '.join(map(repr, repeated))}")
        self._ids = IdMap(ids, kind="offer")
        self.costs = offers["cost"].cast(pl.Float64).to_numpy().copy()
        if "min_basket" in offers.columns:
            self.min_basket = offers["min_basket"].cast(pl.Float64).fill_null(0.0).to_numpy().copy()
        else:
            self.min_basket = np.zeros(len(offers))
        for name, values in (("cost", self.costs), ("min_basket", self.min_basket)):
            bad = ~np.isfinite(values) | (values < 0)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise OfferEligibilityError(
                    f"offer {str(self._ids.ids[row])!r}: {name} must be a finite number >= 0, "
                    f"got {values[row]}"
                )
        self._categories, self._category_rule, self._any_category = _membership(
            _string_lists(offers, "eligible_categories")
        )
        self._brands, self._brand_rule, self._any_brand = _membership(
            _string_lists(offers, "eligible_brands")
        )

    @property
    def offer_ids(self) -> tuple[str, ...]:
        return tuple(self._ids.ids.tolist())

    def __len__(self) -> int:
        return len(self._ids)

    def indices(self, offer_ids: Sequence[str]) -> NDArray[np.int64]:
        """Rule positions of these offers; unknown ids raise UnknownOfferError naming them."""
        try:
            return self._ids.to_internal(list(offer_ids))
        except UnknownIdError as error:
            raise UnknownOfferError(error.unknown, self.offer_ids) from None

    def costs_by_id(self) -> Mapping[str, float]:
        return dict(zip(self.offer_ids, self.costs.tolist(), strict=True))

    def eligible(self, context: EligibilityContext, order: Sequence[str] | None = None) -> NDArray[np.bool_]:
        """Boolean mask over offers, in table order or in ``order`` (e.g. a policy's arm ids)."""
        category_ok = self._matches(
            context.categories, self._categories, self._category_rule, self._any_category
        )
        brand_ok = self._matches(context.brands, self._brands, self._brand_rule, self._any_brand)
        applies = (category_ok & brand_ok).any(axis=1) | (self._any_category & self._any_brand)
        mask = applies & (context.basket_value >= self.min_basket)
        return mask if order is None else mask[self.indices(order)]

    def item_rules(self, categories: Sequence[str], brands: Sequence[str | None]) -> NDArray[np.bool_]:
        """(n_offers, n_items): whether each item (its category and brand) satisfies each offer's
        category and brand rules together. Compiled once per catalog, it turns a page's eligibility
        into a gather (``eligible_for_pages``) instead of a pass over strings per request."""
        return self._matches(categories, self._categories, self._category_rule, self._any_category) & (
            self._matches(brands, self._brands, self._brand_rule, self._any_brand)
        )

    def eligible_for_pages(
        self,
        rules_by_item: NDArray[np.bool_],
        items: NDArray[np.int64],
        starts: Sequence[int],
        filled: Sequence[int],
        basket_values: NDArray[np.float64],
    ) -> NDArray[np.bool_]:
        """(pages, n_offers): ``eligible`` of each page's context, made of catalog items and the basket
        value ``basket_values[p]``. Page ``filled[j]`` has the items from ``items[starts[j]]`` to the
        next start (the last to the end); pages not in ``filled`` have none.

        ``rules_by_item`` is ``item_rules`` transposed, (n_items, n_offers) and C-ordered, so that an
        item's rules are one contiguous row: a batch of pages gathers its few items' rows at once and
        ORs them per page, instead of a strided column gather and four array operations per page.
        """
        pages = len(basket_values)
        if len(filled) == pages:  # every page has items (the usual case): no empty rows to fill in
            applies = np.logical_or.reduceat(rules_by_item[items], starts, axis=0)
        else:
            applies = np.zeros((pages, len(self)), dtype=bool)
            if len(filled):
                applies[filled] = np.logical_or.reduceat(rules_by_item[items], starts, axis=0)
        applies |= self._any_category & self._any_brand
        return applies & (basket_values[:, None] >= self.min_basket)

    def is_eligible(self, offer_id: str, context: EligibilityContext) -> bool:
        return bool(self.eligible(context)[self.indices([offer_id])[0]])

    @staticmethod
    def _matches(
        values: Sequence[str | None],
        vocabulary: dict[str, int],
        rule: NDArray[np.bool_],
        matches_any: NDArray[np.bool_],
    ) -> NDArray[np.bool_]:
        """(n_offers, n_context_items): whether each item satisfies each offer's rule on this attribute."""
        positions = np.array(
            [_ABSENT if v is None else vocabulary.get(v, _ABSENT) for v in values], dtype=np.int64
        )
        known = positions != _ABSENT
        hit = np.zeros((len(matches_any), len(values)), dtype=bool)
        hit[:, known] = rule[:, positions[known]]
        return hit | matches_any[:, None]
