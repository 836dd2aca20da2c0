from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.decisions.offer_eligibility import (
    EligibilityContext,
    ItemLookup,
    OfferEligibilityError,
    OfferRules,
    UnknownOfferError,
)

OFFERS = pl.DataFrame(
    {
        "offer_id": ["free_ship", "tech10", "acme_phones", "big_basket", "beauty_or_acme"],
        "kind": ["free_shipping", "percent_off", "percent_off", "bundle", "loyalty_points"],
        "eligible_categories": [[], ["electronics", "computers"], ["phones"], None, ["beauty"]],
        "eligible_brands": [None, [], ["Acme"], [], ["Acme", "Glow"]],
        "min_basket": [50.0, 0.0, None, 200.0, 0.0],
        "cost": [4.0, 12.5, 8.0, 20.0, 1.0],
    }
)
ITEMS = pl.DataFrame(
    {
        "item_id": ["tv", "acme_phone", "other_phone", "acme_lipstick", "glow_cream", "apple"],
        "category": ["electronics", "phones", "phones", "beauty", "beauty", "groceries"],
        "brand": ["Visio", "Acme", "Nokta", "Acme", "Glow", None],
        "price": [500.0, 300.0, 150.0, 20.0, 35.0, 0.5],
    }
)


def eligible_ids(rules: OfferRules, context: EligibilityContext) -> list[str]:
    return [o for o, ok in zip(rules.offer_ids, rules.eligible(context), strict=True) if ok]


def test_rules_against_contexts() -> None:
    rules = OfferRules(OFFERS)
    items = ItemLookup(ITEMS)
    # basket value defaults to list prices of basket items: 500 + 300 = 800
    big = items.context(in_basket=["tv", "acme_phone"])
    assert big.basket_value == 800.0
    assert eligible_ids(rules, big) == ["free_ship", "tech10", "acme_phones", "big_basket"]
    # viewing a non-Acme phone with a small basket: no brand match, free shipping needs 50
    small = items.context(in_view=["other_phone"], in_basket=["apple"])
    assert eligible_ids(rules, small) == []
    # Acme lipstick: brand Acme matches beauty_or_acme's brands and its category; not acme_phones (category)
    lipstick = items.context(in_view=["acme_lipstick"], basket_value=60.0)
    assert eligible_ids(rules, lipstick) == ["free_ship", "beauty_or_acme"]


def test_category_and_brand_must_hold_for_the_same_item() -> None:
    rules = OfferRules(OFFERS)
    # an Acme lipstick (brand ok, category beauty) next to another brand's phone (category ok)
    context = EligibilityContext(categories=("beauty", "phones"), brands=("Acme", "Nokta"))
    assert not rules.eligible(context)[rules.indices(["acme_phones"])[0]]
    assert rules.is_eligible("acme_phones", EligibilityContext(("phones",), ("Acme",)))


def test_empty_context_only_allows_unrestricted_offers() -> None:
    rules = OfferRules(OFFERS)
    assert eligible_ids(rules, EligibilityContext((), (), basket_value=500.0)) == ["free_ship", "big_basket"]


def test_items_without_brand_never_match_a_brand_rule() -> None:
    rules = OfferRules(OFFERS)
    context = EligibilityContext(categories=("beauty",), brands=(None,), basket_value=0.0)
    assert not rules.is_eligible("beauty_or_acme", context)


def test_min_basket_is_inclusive() -> None:
    rules = OfferRules(OFFERS)
    at, below = (EligibilityContext(("groceries",), (None,), basket_value=v) for v in (50.0, 49.99))
    assert rules.is_eligible("free_ship", at) and not rules.is_eligible("free_ship", below)


def test_mask_in_a_given_order_and_unknown_ids_are_named() -> None:
    rules = OfferRules(OFFERS)
    context = EligibilityContext(("electronics",), ("Visio",), basket_value=10.0)
    assert rules.eligible(context, order=["beauty_or_acme", "tech10"]).tolist() == [False, True]
    with pytest.raises(UnknownOfferError, match=r"unknown offer id.*'nope'"):
        rules.eligible(context, order=["tech10", "nope"])
    with pytest.raises(UnknownOfferError, match="'ghost'"):
        rules.is_eligible("ghost", context)
    assert rules.costs_by_id()["tech10"] == 12.5


def test_invalid_tables_and_contexts_are_named() -> None:
    with pytest.raises(OfferEligibilityError, match="offer 'tech10': cost must be"):
        OfferRules(
            OFFERS.with_columns(
                pl.when(pl.col("offer_id") == "tech10").then(-1.0).otherwise("cost").alias("cost")
            )
        )
    with pytest.raises(OfferEligibilityError, match=r"offers\.offer_id repeats 'free_ship'"):
        OfferRules(pl.concat([OFFERS, OFFERS.head(1)]))
    with pytest.raises(OfferEligibilityError, match=r"unknown item id.*'ghost'"):
        ItemLookup(ITEMS).context(in_view=["ghost"])
    with pytest.raises(OfferEligibilityError, match="basket_value"):
        EligibilityContext((), (), basket_value=-1.0)


CATEGORIES = ("a", "b", "c", "d")
BRANDS = ("X", "Y", "Z")


@st.composite
def offers_and_context(draw: st.DrawFn) -> tuple[pl.DataFrame, list[tuple[str, str | None]], float]:
    n = draw(st.integers(1, 8))
    cats = [sorted(draw(st.sets(st.sampled_from(CATEGORIES)))) for _ in range(n)]
    brands = [sorted(draw(st.sets(st.sampled_from(BRANDS)))) for _ in range(n)]
    mins = [draw(st.sampled_from([0.0, 10.0, 100.0])) for _ in range(n)]
    offers = pl.DataFrame(
        {
            "offer_id": [f"o{i}" for i in range(n)],
            "eligible_categories": cats,
            "eligible_brands": brands,
            "min_basket": mins,
            "cost": [1.0] * n,
        },
        schema_overrides={"eligible_categories": pl.List(pl.Utf8), "eligible_brands": pl.List(pl.Utf8)},
    )
    items = draw(
        st.lists(
            st.tuples(st.sampled_from((*CATEGORIES, "zz")), st.sampled_from((*BRANDS, None))), max_size=5
        )
    )
    return offers, items, draw(st.sampled_from([0.0, 10.0, 50.0, 150.0]))


@settings(max_examples=100, deadline=None)
@given(offers_and_context())
def test_vectorised_mask_matches_the_rules_read_literally(
    case: tuple[pl.DataFrame, list[tuple[str, str | None]], float],
) -> None:
    offers, items, basket_value = case
    rules = OfferRules(offers)
    context = EligibilityContext(tuple(c for c, _ in items), tuple(b for _, b in items), basket_value)
    expected = []
    for row in offers.iter_rows(named=True):
        applies = any(
            (not row["eligible_categories"] or category in row["eligible_categories"])
            and (not row["eligible_brands"] or brand in row["eligible_brands"])
            for category, brand in items
        ) or (not row["eligible_categories"] and not row["eligible_brands"])
        expected.append(applies and basket_value >= row["min_basket"])
    np.testing.assert_array_equal(rules.eligible(context), expected)
