"""ItemCatalog: column checks, id look-ups, and attribute masks against a naive string comparison."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.data.id_map import IdMap
from engine.data.item_catalog import ItemCatalog

IDS = ["i0", "i1", "i2", "i3", "i4", "i5"]
CATEGORIES = ["books", "toys", "books", "garden", "toys", "books"]
BRANDS = ["acme", "", "zen", "acme", "", "zen"]
NAMES = ["books", "toys", "garden", "acme", "zen", "", "phones", "Books"]


def catalog(**overrides: object) -> ItemCatalog:
    columns: dict[str, object] = {
        "titles": np.asarray([f"title {i}" for i in range(len(IDS))]),
        "categories": np.asarray(CATEGORIES),
        "brands": np.asarray(BRANDS),
        "prices": np.asarray([1, 2, 3, 4, 5, 6], dtype=np.int32),
        "in_stock": np.asarray([1, 0, 1, 1, 0, 1]),
    }
    columns.update(overrides)
    return ItemCatalog(IdMap(IDS), **columns)  # type: ignore[arg-type]


@pytest.mark.parametrize("column", ["titles", "categories", "brands", "prices", "in_stock"])
def test_a_column_of_the_wrong_length_is_refused_by_name(column: str) -> None:
    with pytest.raises(ValueError, match=rf"^ItemCatalog\.{column} has shape \(5,\), expected \(6,\)"):
        catalog(**{column: np.zeros(5)})


def test_columns_are_stored_in_their_working_dtypes() -> None:
    items = catalog()
    assert len(items) == 6
    assert items.prices.dtype == np.float64 and items.prices.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert items.in_stock.dtype == bool and items.in_stock.tolist() == [True, False, True, True, False, True]
    # category codes are one small integer per item, equal exactly where the categories are equal
    codes = items.category_codes.tolist()
    assert all((codes[i] == codes[j]) == (CATEGORIES[i] == CATEGORIES[j]) for i in range(6) for j in range(6))


def test_indices_keep_request_order_and_drop_unknown_ids() -> None:
    items = catalog()
    assert items.indices(["i4", "nope", "i0", "i4"]).tolist() == [4, 0, 4]
    assert items.indices([]).tolist() == []
    assert items.mask_of(iter(["i5", "nope", "i1"])).tolist() == [False, True, False, False, False, True]
    assert not items.mask_of(["nope"]).any()


def test_items_without_a_brand_have_none_and_are_never_matched_by_the_empty_name() -> None:
    items = catalog()
    assert [items.brand_or_none(i) for i in range(6)] == ["acme", None, "zen", "acme", None, "zen"]
    assert not items.brand_mask([""]).any()
    assert items.brand_mask(["", "zen"]).tolist() == [False, False, True, False, False, True]


@given(st.lists(st.sampled_from(NAMES), max_size=6))
def test_category_mask_matches_a_string_comparison_and_unknown_names_match_nothing(
    names: list[str],
) -> None:
    expected = [category in names for category in CATEGORIES]
    assert catalog().category_mask(names).tolist() == expected
    assert catalog().category_mask(iter(names)).tolist() == expected  # a one-shot iterable will do


@given(st.lists(st.sampled_from(NAMES), max_size=6))
def test_brand_mask_matches_a_string_comparison(names: list[str]) -> None:
    expected = [brand != "" and brand in names for brand in BRANDS]
    assert catalog().brand_mask(names).tolist() == expected


def test_an_empty_catalog_matches_nothing() -> None:
    empty = ItemCatalog(
        IdMap([]),
        titles=np.asarray([], dtype=np.str_),
        categories=np.asarray([], dtype=np.str_),
        brands=np.asarray([], dtype=np.str_),
        prices=np.zeros(0),
        in_stock=np.zeros(0, dtype=bool),
    )
    assert len(empty) == 0
    assert empty.category_mask(["books"]).shape == (0,)
    assert empty.brand_mask(["acme"]).shape == (0,)
    assert empty.mask_of(["i0"]).shape == (0,)
