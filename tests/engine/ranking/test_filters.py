"""ItemFilters: every condition is a hard mask, checked against a per-item predicate."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.data.id_map import IdMap
from engine.data.item_catalog import ItemCatalog
from engine.invalid_request import InvalidRequestError
from engine.ranking.filters import ItemFilters
from engine.ranking.product_lists import ListSpec
from engine.ranking.promotions import Promotions

CATEGORIES = ["books", "phones", "fashion", "books", "toys", "phones", "fashion", "books"]
PRICES = [5.0, 300.0, 80.0, 12.5, 20.0, 150.0, 80.0, 9.0]
STOCK = [True, True, False, True, True, False, True, True]


def catalog() -> ItemCatalog:
    n = len(CATEGORIES)
    return ItemCatalog(
        IdMap([f"i{i}" for i in range(n)]),
        titles=np.asarray([f"title {i}" for i in range(n)]),
        categories=np.asarray(CATEGORIES),
        brands=np.asarray(["acme", "", "zen", "acme", "", "zen", "zen", "acme"]),
        prices=np.asarray(PRICES),
        in_stock=np.asarray(STOCK),
    )


def test_defaults_keep_exactly_the_items_in_stock() -> None:
    assert ItemFilters().shared_mask(catalog()).tolist() == STOCK
    assert ItemFilters(include_out_of_stock=True).shared_mask(catalog()).all()


def test_exclude_categories_win_over_include_and_unknown_names_match_nothing() -> None:
    filters = ItemFilters(
        include_categories=("books", "phones", "garden"),
        exclude_categories=("phones",),
        include_out_of_stock=True,
    )
    kept = np.flatnonzero(filters.shared_mask(catalog())).tolist()
    assert kept == [0, 3, 7]
    assert not ItemFilters(include_categories=("garden",)).shared_mask(catalog()).any()


def test_price_bounds_are_inclusive_and_unknown_excluded_ids_are_ignored() -> None:
    filters = ItemFilters(
        price_min=12.5, price_max=80.0, include_out_of_stock=True, exclude_item_ids=("i6", "x")
    )
    assert np.flatnonzero(filters.shared_mask(catalog())).tolist() == [2, 3, 4]


def test_customer_mask_leaves_out_purchases_unless_included_and_always_the_exclusions() -> None:
    shared = np.ones(len(CATEGORIES), dtype=bool)
    purchased = np.asarray([1, 2])
    cart = np.asarray([4])
    mask = ItemFilters().customer_mask(shared, purchased=purchased, excluded=[cart])
    assert np.flatnonzero(~mask).tolist() == [1, 2, 4]
    mask = ItemFilters(include_purchased=True).customer_mask(shared, purchased=purchased, excluded=[cart])
    assert np.flatnonzero(~mask).tolist() == [4]
    assert shared.all(), "the shared mask must not be modified"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"price_min": -1.0}, "price_min"),
        ({"price_max": float("nan")}, "price_max"),
        ({"price_min": float("inf")}, "price_min"),
        ({"price_min": 10.0, "price_max": 5.0}, "price_max"),
    ],
)
def test_bad_prices_are_rejected_naming_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(InvalidRequestError) as error:
        ItemFilters(**kwargs)  # type: ignore[arg-type]
    assert error.value.field == field and str(error.value).startswith(f"{field}: ")
    assert str(error.value.within("filters")).startswith(f"filters.{field}: ")


names = st.sampled_from(["books", "phones", "fashion", "toys", "garden"])
prices = st.one_of(st.none(), st.floats(0, 400, allow_nan=False))


@settings(max_examples=150, deadline=None)
@given(
    include=st.lists(names, max_size=3),
    exclude=st.lists(names, max_size=2),
    low=prices,
    high=prices,
    out_of_stock=st.booleans(),
    excluded_ids=st.lists(st.sampled_from([f"i{i}" for i in range(10)]), max_size=4),
)
def test_mask_equals_the_per_item_rule(
    include: list[str],
    exclude: list[str],
    low: float | None,
    high: float | None,
    out_of_stock: bool,
    excluded_ids: list[str],
) -> None:
    if low is not None and high is not None and high < low:
        low, high = high, low
    filters = ItemFilters(
        exclude_item_ids=tuple(excluded_ids),
        include_categories=tuple(include),
        exclude_categories=tuple(exclude),
        price_min=low,
        price_max=high,
        include_out_of_stock=out_of_stock,
    )
    expected = [
        (out_of_stock or STOCK[i])
        and (not include or CATEGORIES[i] in include)
        and CATEGORIES[i] not in exclude
        and (low is None or PRICES[i] >= low)
        and (high is None or PRICES[i] <= high)
        and f"i{i}" not in excluded_ids
        for i in range(len(CATEGORIES))
    ]
    assert filters.shared_mask(catalog()).tolist() == expected
    # A list's spec keeps the attribute part (read-only, maybe the catalog's own) and the excluded ids
    # apart, and each customer's mask puts them together again, leaving the catalog untouched.
    items = catalog()
    assert not filters.attribute_mask(items).flags.writeable
    spec = ListSpec.compile(
        items, k=3, filters=filters, promotions=Promotions(), diversity=0.0, explain=False
    )
    assert spec.eligible(np.zeros(0, dtype=np.int64)).tolist() == expected
    assert spec.eligible(np.zeros(0, dtype=np.int64), (np.array([0, 7]),)).tolist() == [
        allowed and i not in (0, 7) for i, allowed in enumerate(expected)
    ]
    assert items.in_stock.tolist() == STOCK and items.in_stock_mask.tolist() == STOCK
