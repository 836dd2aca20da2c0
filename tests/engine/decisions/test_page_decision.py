"""Offers and layouts for a page: eligibility, exact propensities, reproducibility, slot filling."""

from __future__ import annotations

import numpy as np
import pytest

from engine.decisions.arm_estimates import ArmEstimates
from engine.decisions.page_decision import (
    PageDecisionError,
    PageDecisions,
    eligibility_context,
    fill_slots,
    is_offer_slot,
)
from engine.invalid_request import InvalidRequestError
from engine.personas.mix import PersonaMix
from tests.engine.ranking.test_filters import catalog

PERSONAS = ("a", "b")
OFFERS = [
    {"offer_id": "free_ship", "kind": "free_shipping", "cost": 4.0, "min_basket": 30.0},
    {"offer_id": "tech10", "kind": "percent_off", "cost": 9.0, "eligible_categories": ["phones"]},
    {
        "offer_id": "acme_books",
        "kind": "bundle",
        "cost": 2.0,
        "eligible_categories": ["books"],
        "eligible_brands": ["acme"],
    },
    {"offer_id": "pct5", "kind": "percent_off", "description": "5% off", "cost": 1.0},
]
LAYOUTS = [
    {"variant_id": "deals_first", "description": "Deals first", "slots": ["hero_deals", "recommended"]},
    {"variant_id": "plain", "slots": ["recommended", "more"]},
]
# persona a: free_ship 0.5, tech10 0.1, acme_books 0.2, pct5 0.3; persona b prefers tech10
OFFER_RATES = np.asarray([[0.5, 0.1, 0.2, 0.3], [0.1, 0.6, 0.1, 0.2]])


def estimates(arms: tuple[str, ...], rates: np.ndarray) -> ArmEstimates:
    return ArmEstimates(arms, PERSONAS, alpha=1000 * rates, beta=1000 * (1 - rates))


def decisions(epsilon: float = 0.1) -> PageDecisions:
    return PageDecisions(
        PERSONAS,
        ("Persona A", "Persona B"),
        offers=OFFERS,
        offer_estimates=estimates(tuple(str(o["offer_id"]) for o in OFFERS), OFFER_RATES),
        layouts=LAYOUTS,
        layout_estimates=estimates(("deals_first", "plain"), np.asarray([[0.3, 0.1], [0.1, 0.2]])),
        epsilon=epsilon,
    )


MIX_A = PersonaMix(PERSONAS, np.asarray([0.9, 0.1]))


def test_only_eligible_offers_are_ranked_with_the_greedy_propensity_first() -> None:
    phone_in_view = eligibility_context(catalog(), np.asarray([1]), np.zeros(0, np.int64), 10.0)
    ranked = decisions().rank_offers(MIX_A, phone_in_view, 3, np.random.default_rng(1))
    assert {o.offer_id for o in ranked} == {"tech10", "pct5"}, "free shipping needs a basket of 30"
    scores = {o.offer_id: o.score for o in ranked}
    assert scores["pct5"] == pytest.approx(0.9 * 0.3 + 0.1 * 0.2, abs=1e-3)
    first = ranked[0]
    greedy = max(scores, key=scores.__getitem__)
    assert first.propensity == pytest.approx(0.9 + 0.05 if first.offer_id == greedy else 0.05)
    assert ranked[1].propensity == pytest.approx(1.0), "the last remaining offer is certain"
    assert [o.rank for o in ranked] == [1, 2] and ranked[0].kind == "percent_off"


def test_brand_and_category_must_hold_for_the_same_item_and_basket_defaults_to_the_cart() -> None:
    context = eligibility_context(catalog(), np.asarray([0]), np.asarray([1, 3]), None)
    assert context.basket_value == pytest.approx(312.5) and context.brands == ("acme", None, "acme")
    ranked = decisions().rank_offers(MIX_A, context, 4, np.random.default_rng(0))
    assert {o.offer_id for o in ranked} == {"free_ship", "tech10", "acme_books", "pct5"}


def test_the_reported_propensity_is_the_frequency_of_the_choice() -> None:
    context = eligibility_context(catalog(), np.asarray([1]), np.zeros(0, np.int64), 50.0)
    chosen: dict[str, int] = {}
    propensity: dict[str, float] = {}
    page = decisions(epsilon=0.3)
    for seed in range(3000):
        first = page.rank_offers(MIX_A, context, 1, np.random.default_rng(seed))[0]
        chosen[first.offer_id] = chosen.get(first.offer_id, 0) + 1
        propensity[first.offer_id] = first.propensity
    for offer_id, count in chosen.items():
        assert count / 3000 == pytest.approx(propensity[offer_id], abs=0.03)
    assert sum(propensity.values()) == pytest.approx(1.0)


def test_the_same_generator_state_makes_the_same_decision() -> None:
    context = eligibility_context(catalog(), np.asarray([1, 0]), np.zeros(0, np.int64), 100.0)
    runs = [decisions(epsilon=0.5).rank_offers(MIX_A, context, 4, np.random.default_rng(7)) for _ in range(2)]
    assert runs[0] == runs[1]


def test_candidates_restrict_the_choice_and_unknown_ones_are_named() -> None:
    context = eligibility_context(catalog(), np.asarray([1]), np.zeros(0, np.int64), 100.0)
    ranked = decisions().rank_offers(MIX_A, context, 3, np.random.default_rng(0), ("tech10", "acme_books"))
    assert [o.offer_id for o in ranked] == ["tech10"]
    with pytest.raises(InvalidRequestError) as error:
        decisions().rank_offers(MIX_A, context, 3, np.random.default_rng(0), ("tech10", "nope"))
    assert str(error.value) == "candidate_offer_ids[1]: unknown offer 'nope'"


def test_no_eligible_offer_and_no_offers_table_give_no_offers() -> None:
    empty = eligibility_context(catalog(), np.zeros(0, np.int64), np.zeros(0, np.int64), 0.0)
    assert decisions().rank_offers(MIX_A, empty, 3, np.random.default_rng(0), ("tech10",)) == []
    bare = PageDecisions(PERSONAS, ("A", "B"))
    assert bare.rank_offers(MIX_A, empty, 3, np.random.default_rng(0)) == []
    assert bare.choose_layout(MIX_A, np.random.default_rng(0)) is None


def test_layouts_are_chosen_with_their_propensity_and_unfilled_slots() -> None:
    layout = decisions(epsilon=0.0).choose_layout(MIX_A, np.random.default_rng(0))
    assert layout is not None and layout.variant_id == "deals_first" and layout.propensity == 1.0
    assert [s.name for s in layout.slots] == ["hero_deals", "recommended"]
    assert all(not s.item_ids and not s.offer_ids for s in layout.slots)
    only = decisions().choose_layout(MIX_A, np.random.default_rng(0), ("plain",))
    assert only is not None and only.variant_id == "plain" and only.propensity == 1.0
    with pytest.raises(InvalidRequestError, match=r"candidate_variant_ids\[0\]: unknown layout variant 'x'"):
        decisions().choose_layout(MIX_A, np.random.default_rng(0), ("x",))


def test_without_logged_decisions_every_arm_gets_the_prior_and_uniform_exploration() -> None:
    fresh = PageDecisions(PERSONAS, ("A", "B"), layouts=LAYOUTS, epsilon=0.2)
    layout = fresh.choose_layout(MIX_A, np.random.default_rng(3))
    assert layout is not None
    assert layout.score == pytest.approx(0.5)
    assert layout.propensity == pytest.approx(0.8 + 0.1 if layout.variant_id == "deals_first" else 0.1)


def test_estimates_for_other_arms_are_refused() -> None:
    with pytest.raises(PageDecisionError, match="estimates cover arms"):
        PageDecisions(
            PERSONAS,
            ("A", "B"),
            layouts=LAYOUTS,
            layout_estimates=estimates(("deals_first", "other"), np.full((2, 2), 0.5)),
        )


def test_offer_slots_are_recognised_by_their_words() -> None:
    assert [is_offer_slot(n) for n in ("hero_deals", "Offer-Banner", "coupons", "recommended", "dealer")] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_products_and_offers_are_dealt_into_their_slots_in_page_order() -> None:
    slots = fill_slots(["hero", "deals", "recommended", "more"], [f"i{i}" for i in range(7)], ["o1", "o2"])
    assert [(s.name, s.item_ids, s.offer_ids) for s in slots] == [
        ("hero", ("i0", "i1", "i2"), ()),
        ("deals", (), ("o1", "o2")),
        ("recommended", ("i3", "i4"), ()),
        ("more", ("i5", "i6"), ()),
    ]
    assert fill_slots(["recommended"], ["i0"], ["o1"])[0].offer_ids == ()
