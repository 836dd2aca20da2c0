"""The shop's offers and page layouts, and the logging policies that chose among them.

Offer and layout decisions are logged with the propensity of the arm shown, as a real shop's logging
policy would; the policies here are deliberately non-uniform (tilted by context and income band) so
that off-policy estimators have to use those propensities to be right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.data.contract import OFFER_KINDS
from engine.personas.shopping_context import CONTEXTS, WEEKDAY, WEEKEND_HOLIDAY
from training.synthetic_shop.planted_personas import INCOME_BANDS, TECH_CATEGORIES
from training.synthetic_shop.sampling import FloatArray

LAYOUT_EPSILON = 0.5  # layout logging policy: epsilon-greedy around a per-context default


@dataclass(frozen=True)
class OfferSpec:
    """One row of the offers table; eligibility lists are empty when the offer applies everywhere."""

    offer_id: str
    kind: str
    description: str
    eligible_categories: tuple[str, ...] = ()
    min_basket: float = 0.0
    cost: float = 1.0
    top_brands: int = 0  # restrict to the shop's N most popular brands (resolved once items exist)


OFFER_SPECS: tuple[OfferSpec, ...] = (
    OfferSpec("offer_pct10_sitewide", "percent_off", "10% off the whole basket", cost=3.5),
    OfferSpec(
        "offer_pct20_style",
        "percent_off",
        "20% off fashion, jewelry and beauty",
        ("fashion", "jewelry", "beauty"),
        min_basket=50.0,
        cost=9.0,
    ),
    OfferSpec(
        "offer_pct15_tech", "percent_off", "15% off gadgets", TECH_CATEGORIES, min_basket=100.0, cost=18.0
    ),
    OfferSpec(
        "offer_bundle_pantry",
        "bundle",
        "3 for 2 on groceries, health food and supplements",
        ("groceries", "health_food", "supplements"),
        cost=2.5,
    ),
    OfferSpec(
        "offer_bundle_gadgets",
        "bundle",
        "Free accessory with a phone or electronics purchase",
        ("phones", "electronics"),
        min_basket=150.0,
        cost=12.0,
    ),
    OfferSpec(
        "offer_bundle_gifts", "bundle", "Buy two toys or books, get one free", ("toys", "books"), cost=6.0
    ),
    OfferSpec("offer_freeship_35", "free_shipping", "Free shipping over 35", min_basket=35.0, cost=4.5),
    OfferSpec("offer_freeship_all", "free_shipping", "Free shipping on every order", cost=5.5),
    OfferSpec("offer_points_double", "loyalty_points", "Double loyalty points this week", cost=2.0),
    OfferSpec(
        "offer_points_brands",
        "loyalty_points",
        "Triple points on the shop's top brands",
        cost=2.5,
        top_brands=3,
    ),
    OfferSpec(
        "offer_early_collection",
        "early_access",
        "Early access to the new fashion, jewelry and beauty collection",
        ("fashion", "jewelry", "beauty"),
        cost=0.5,
    ),
    OfferSpec(
        "offer_early_tech", "early_access", "Early access to new gadget launches", TECH_CATEGORIES, cost=0.5
    ),
)

# Offer logging policy: softmax over a fixed prior (the shop's old heuristic), tilted by context and
# by the customer's income band so that propensities differ between customers and must be used.
_OFFER_PRIOR_BY_KIND = {
    "percent_off": 0.6,
    "free_shipping": 0.4,
    "bundle": 0.0,
    "loyalty_points": 0.2,
    "early_access": -0.2,
}
_OFFER_CONTEXT_TILT = {WEEKDAY: {}, WEEKEND_HOLIDAY: {"early_access": 0.6, "percent_off": -0.3}}
_OFFER_INCOME_TILT = {
    "low": {"percent_off": 0.5, "free_shipping": 0.3, "early_access": -0.5},
    "middle": {},
    "high": {"early_access": 0.6, "loyalty_points": 0.2, "percent_off": -0.4},
}
_RESTRICTED_OFFER_PRIOR = -0.2  # offers limited to some categories were shown less often


@dataclass(frozen=True)
class LayoutSpec:
    """One row of the layouts table: a home-page variant and its slots, top to bottom."""

    variant_id: str
    description: str
    slots: tuple[str, ...]


LAYOUT_SPECS: tuple[LayoutSpec, ...] = (
    LayoutSpec(
        "deals_first", "Deals and bestsellers above the fold", ("hero_deals", "recommended", "bestsellers")
    ),
    LayoutSpec(
        "brand_showcase",
        "Favourite brands and quick reorder",
        ("brand_spotlight", "reorder", "recommended", "deals"),
    ),
    LayoutSpec(
        "wellness", "Healthy and sustainable picks", ("healthy_picks", "organic", "recommended", "deals")
    ),
    LayoutSpec("new_tech", "Latest gadgets and launches", ("new_tech", "trending", "recommended", "deals")),
    LayoutSpec(
        "premium", "Premium and limited collections", ("premium_collection", "limited_edition", "recommended")
    ),
)
_LAYOUT_DEFAULT_BY_CONTEXT = {WEEKDAY: "deals_first", WEEKEND_HOLIDAY: "premium"}


def _softmax(scores: FloatArray) -> FloatArray:
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def offer_propensities() -> FloatArray:
    if set(_OFFER_PRIOR_BY_KIND) != set(OFFER_KINDS):
        raise ValueError("the offer logging prior must cover every offer kind of the data contract")
    scores = np.zeros((len(CONTEXTS), len(INCOME_BANDS), len(OFFER_SPECS)))
    for c, context in enumerate(CONTEXTS):
        for b, band in enumerate(INCOME_BANDS):
            for j, spec in enumerate(OFFER_SPECS):
                scores[c, b, j] = (
                    _OFFER_PRIOR_BY_KIND[spec.kind]
                    + _OFFER_CONTEXT_TILT[context].get(spec.kind, 0.0)
                    + _OFFER_INCOME_TILT[band].get(spec.kind, 0.0)
                    + (_RESTRICTED_OFFER_PRIOR if spec.eligible_categories or spec.top_brands else 0.0)
                )
    return _softmax(scores)


def layout_propensities() -> FloatArray:
    variants = [s.variant_id for s in LAYOUT_SPECS]
    table = np.full((len(CONTEXTS), len(variants)), LAYOUT_EPSILON / len(variants))
    for c, context in enumerate(CONTEXTS):
        table[c, variants.index(_LAYOUT_DEFAULT_BY_CONTEXT[context])] += 1.0 - LAYOUT_EPSILON
    return table
