"""Promotion rules and pins: slot counts, matching, and the request checks that name the field."""

from __future__ import annotations

import numpy as np
import pytest

from engine.invalid_request import InvalidRequestError
from engine.ranking.promotions import PinnedItem, PromotionRule, Promotions
from tests.engine.ranking.test_filters import catalog


@pytest.mark.parametrize(("share", "k", "slots"), [(0.25, 10, 2), (0.01, 10, 1), (1.0, 7, 7), (0.3, 10, 3)])
def test_slots_are_share_of_k_rounded_down_and_at_least_one(share: float, k: int, slots: int) -> None:
    assert PromotionRule("p", share, brands=("acme",)).slots(k) == slots


def test_an_item_matches_when_it_meets_every_non_empty_condition() -> None:
    rule = PromotionRule("p", 0.5, categories=("books", "toys"), brands=("acme",))
    assert np.flatnonzero(rule.matches(catalog())).tolist() == [0, 3, 7]
    by_ids = PromotionRule("q", 0.5, categories=("books",), item_ids=("i3", "i2", "nope"))
    assert np.flatnonzero(by_ids.matches(catalog())).tolist() == [3]
    assert not PromotionRule("r", 0.5, brands=("",)).matches(catalog()).any(), "no brand is not a brand"


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: PromotionRule("", 0.5, brands=("a",)), "promotion_id"),
        (lambda: PromotionRule("p", 0.0, brands=("a",)), "share"),
        (lambda: PromotionRule("p", 1.5, brands=("a",)), "share"),
        (lambda: PromotionRule("p", float("nan"), brands=("a",)), "share"),
        (
            lambda: Promotions(
                rules=(PromotionRule("p", 0.5, brands=("a",)), PromotionRule("p", 0.2, brands=("b",)))
            ),
            "rules[1].promotion_id",
        ),
        (
            lambda: Promotions(
                rules=(PromotionRule("p", 0.6, brands=("a",)), PromotionRule("q", 0.5, brands=("b",)))
            ),
            "rules",
        ),
        (lambda: Promotions(pins=(PinnedItem("i1", 2), PinnedItem("i2", 2))), "pins[1].position"),
    ],
)
def test_invalid_rules_and_pins_name_the_field(build: object, field: str) -> None:
    with pytest.raises(InvalidRequestError) as error:
        build()  # type: ignore[operator]
    assert error.value.field == field


def test_a_rule_without_conditions_is_rejected() -> None:
    with pytest.raises(InvalidRequestError, match="would match everything") as error:
        PromotionRule("p", 0.5)
    assert str(error.value.within("promotions.rules[2]")).startswith("promotions.rules[2]: ")


def test_shares_that_add_up_to_one_in_floating_point_are_accepted() -> None:
    rules = tuple(PromotionRule(f"p{i}", 0.1, brands=("acme",)) for i in range(10))
    assert len(Promotions(rules=rules).rules) == 10


@pytest.mark.parametrize(
    ("pins", "k", "field"),
    [
        ((PinnedItem("i1", 4),), 3, "pins[0].position"),
        ((PinnedItem("i1", 0),), 3, "pins[0].position"),
        ((PinnedItem("zzz", 1),), 3, "pins[0].item_id"),
        ((PinnedItem("i1", 1), PinnedItem("i1", 2)), 3, "pins[1].item_id"),
        ((PinnedItem("i1", 1), PinnedItem("i2", 2)), 1, "pins"),
    ],
)
def test_pins_must_fit_the_list_and_name_known_distinct_items(
    pins: tuple[PinnedItem, ...], k: int, field: str
) -> None:
    with pytest.raises(InvalidRequestError) as error:
        Promotions(pins=pins).check_for(k, catalog())
    assert error.value.field == field


def test_compile_gives_masks_slots_and_zero_based_pin_positions() -> None:
    promotions = Promotions(
        rules=(PromotionRule("books", 0.25, categories=("books",)),), pins=(PinnedItem("i4", 3),)
    ).compile(8, catalog())
    assert promotions.rule_ids == ("books",) and promotions.rule_slots == (2,)
    assert np.flatnonzero(promotions.rule_masks[0]).tolist() == [0, 3, 7]
    assert promotions.pin_items.tolist() == [4] and promotions.pin_positions.tolist() == [2]
