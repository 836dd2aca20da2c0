"""Offers and layout variants for one page: eligibility, the decision policy, and filling the slots.

Offers: the offers table's rules decide which offers may be shown for what the customer is looking at
(``engine.decisions.offer_eligibility``: items in the session and the cart, the basket value); the decision
policy (``engine.decisions.decision_policy``, epsilon-greedy by default) ranks the eligible ones under the
customer's mix and reports the propensity of every placement, so each decision can be evaluated
off-policy later. Layouts: the policy chooses one variant of the layouts table.

Without logged decisions for an arm set (a new shop), the estimates are the Beta(1, 1) prior for
every persona and arm: every arm scores the same and the policy explores uniformly among the
eligible ones, with exact propensities all the same.

Slot filling (``fill_slots``) is deliberately simple, because slot names are the shop's own words:
a slot whose name has a word such as "offer", "deal", "coupon", "promo" or "voucher" (split on
``_``, ``-`` and spaces, e.g. "hero_deals") is an *offer slot*; every other slot is a *product slot*.
The ranked products are dealt into the product slots in page order as consecutive runs of nearly
equal length (earlier slots get the extra item, since page order is prominence); the ranked offers
are dealt into the offer slots the same way. A page without offer slots shows no offers in its
layout (they are still in the response), and likewise for products.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from engine.artifact.layout import LAYOUT
from engine.data.item_catalog import ItemCatalog
from engine.decisions.arm_estimates import ArmEstimates
from engine.decisions.decision_policy import DecisionPolicy, Draws, NoEligibleArmError, PolicyMode, RankedArm
from engine.decisions.offer_eligibility import EligibilityContext, OfferRules
from engine.errors import PersonaEngineError
from engine.invalid_request import InvalidRequestError
from engine.personas.mix import PersonaMix

if TYPE_CHECKING:
    from engine.artifact.contents import LoadedArtifact

OFFER_SLOT_WORDS = frozenset(
    {"offer", "offers", "deal", "deals", "coupon", "coupons", "promo", "promos", "voucher", "vouchers"}
)
_WORD_SPLIT = re.compile(r"[_\-\s]+")


class PageDecisionError(PersonaEngineError, ValueError):
    """Offer or layout tables that do not fit their estimates; names the file and the arms."""


@dataclass(frozen=True)
class Offer:
    offer_id: str
    kind: str
    description: str


@dataclass(frozen=True)
class LayoutVariant:
    variant_id: str
    description: str
    slots: tuple[str, ...]


# Results built per page (offers, slots, the layout) are plain dataclasses, not frozen: a frozen
# dataclass sets every field through object.__setattr__ and costs five times as much to construct,
# and a page builds about a dozen of them. They are never shared between calls.
@dataclass
class RankedOffer:
    offer_id: str
    kind: str
    description: str
    rank: int
    score: float
    propensity: float
    reason: str


@dataclass  # not frozen: built per page, where frozen construction costs 5x (see RankedOffer)
class FilledSlot:
    name: str
    item_ids: tuple[str, ...] = ()
    offer_ids: tuple[str, ...] = ()


@dataclass  # not frozen: built per page, where frozen construction costs 5x (see RankedOffer)
class LayoutDecision:
    variant_id: str
    description: str
    slots: tuple[FilledSlot, ...]
    score: float
    propensity: float


@functools.lru_cache(maxsize=1024)
def is_offer_slot(name: str) -> bool:
    return any(word in OFFER_SLOT_WORDS for word in _WORD_SPLIT.split(name.lower()))


@functools.lru_cache(maxsize=1024)
def _slot_kinds(slots: tuple[str, ...]) -> tuple[list[int], list[int]]:
    """Positions of the product slots and of the offer slots of a variant (a variant has few names,
    and every page of it asks again)."""
    return (
        [i for i, name in enumerate(slots) if not is_offer_slot(name)],
        [i for i, name in enumerate(slots) if is_offer_slot(name)],
    )


def _deal(values: Sequence[str], n_slots: int) -> list[tuple[str, ...]]:
    """Consecutive runs of nearly equal length, the earlier runs one longer when it does not divide."""
    if n_slots == 0:
        return []
    base, extra = divmod(len(values), n_slots)
    runs, start = [], 0
    for slot in range(n_slots):
        size = base + (1 if slot < extra else 0)
        runs.append(tuple(values[start : start + size]))
        start += size
    return runs


def fill_slots(
    slots: Sequence[str], item_ids: Sequence[str], offer_ids: Sequence[str]
) -> tuple[FilledSlot, ...]:
    """The variant's slots with products and offers dealt in (see the module docstring)."""
    product_slots, offer_slots = _slot_kinds(tuple(slots))
    items = dict(zip(product_slots, _deal(item_ids, len(product_slots)), strict=True))
    offers = dict(zip(offer_slots, _deal(offer_ids, len(offer_slots)), strict=True))
    return tuple(
        FilledSlot(name, item_ids=items.get(i, ()), offer_ids=offers.get(i, ()))
        for i, name in enumerate(slots)
    )


def eligibility_context(
    catalog: ItemCatalog, in_view: NDArray[np.int64], in_cart: NDArray[np.int64], basket_value: float | None
) -> EligibilityContext:
    """What offer rules are checked against; the basket value defaults to the cart's list prices."""
    items = np.concatenate([in_view, in_cart]).astype(np.int64)
    value = float(catalog.prices[in_cart].sum()) if basket_value is None else float(basket_value)
    return EligibilityContext(
        categories=tuple(str(c) for c in catalog.categories[items]),
        brands=tuple(catalog.brand_or_none(int(i)) for i in items),
        basket_value=value,
    )


def _prior_estimates(arm_ids: Sequence[str], persona_ids: Sequence[str]) -> ArmEstimates:
    shape = (len(persona_ids), len(arm_ids))
    return ArmEstimates(tuple(arm_ids), tuple(persona_ids), np.ones(shape), np.ones(shape))


def _aligned(
    estimates: ArmEstimates | None, arm_ids: Sequence[str], persona_ids: Sequence[str], where: str
) -> ArmEstimates:
    if estimates is None:
        return _prior_estimates(arm_ids, persona_ids)
    if estimates.persona_ids != tuple(persona_ids):
        raise PageDecisionError(
            f"{where}: estimates are over personas {estimates.persona_ids}, not {persona_ids}"
        )
    if set(estimates.arm_ids) != set(arm_ids):
        raise PageDecisionError(
            f"{where}: estimates cover arms {sorted(estimates.arm_ids)}, the table {sorted(arm_ids)}"
        )
    return estimates


def _candidate_mask(
    arm_ids: Sequence[str], candidates: Sequence[str], field: str, kind: str
) -> NDArray[np.bool_] | None:
    if not candidates:
        return None
    position = {arm: i for i, arm in enumerate(arm_ids)}
    mask = np.zeros(len(arm_ids), dtype=bool)
    for i, arm in enumerate(candidates):
        if arm not in position:
            raise InvalidRequestError(f"{field}[{i}]", f"unknown {kind} {arm!r}")
        mask[position[arm]] = True
    return mask


class PageDecisions:
    """The offers and layouts of one artifact with their policies, ready to decide per request."""

    def __init__(
        self,
        persona_ids: Sequence[str],
        persona_names: Sequence[str],
        *,
        offers: Sequence[Mapping[str, Any]] = (),
        offer_estimates: ArmEstimates | None = None,
        layouts: Sequence[Mapping[str, Any]] = (),
        layout_estimates: ArmEstimates | None = None,
        epsilon: float = 0.1,
        mode: PolicyMode = PolicyMode.EPSILON_GREEDY,
        source: str = "<memory>",
        catalog: ItemCatalog | None = None,
    ) -> None:
        """``offers`` and ``layouts`` are rows of the offers and layouts tables (data contract).

        With the ``catalog`` served, the offers' category and brand rules are compiled per item at
        load, so a page's eligibility is a gather (``page_eligibility_many``).
        """
        self.catalog = catalog
        self.offers = {
            str(row["offer_id"]): Offer(
                str(row["offer_id"]), str(row["kind"]), str(row.get("description") or "")
            )
            for row in offers
        }
        self.layouts = {
            str(row["variant_id"]): LayoutVariant(
                str(row["variant_id"]), str(row.get("description") or ""), tuple(str(s) for s in row["slots"])
            )
            for row in layouts
        }
        self.rules: OfferRules | None = None
        self.offer_policy: DecisionPolicy | None = None
        self._item_rules: NDArray[np.bool_] | None = None
        self._rules_in_arm_order: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        if self.offers:
            self.rules = OfferRules(
                pl.DataFrame(
                    {
                        "offer_id": list(self.offers),
                        "cost": [float(row["cost"]) for row in offers],
                        "min_basket": [float(row.get("min_basket") or 0.0) for row in offers],
                        "eligible_categories": [list(row.get("eligible_categories") or []) for row in offers],
                        "eligible_brands": [list(row.get("eligible_brands") or []) for row in offers],
                    },
                    schema={
                        "offer_id": pl.Utf8,
                        "cost": pl.Float64,
                        "min_basket": pl.Float64,
                        "eligible_categories": pl.List(pl.Utf8),
                        "eligible_brands": pl.List(pl.Utf8),
                    },
                )
            )
            estimates = _aligned(offer_estimates, list(self.offers), persona_ids, f"{source} offers")
            self.offer_policy = DecisionPolicy.for_offers(
                estimates, mode=mode, epsilon=epsilon, persona_names=persona_names
            )
            # Rule positions in the policy's arm order, looked up once instead of per decision.
            self._rules_in_arm_order = self.rules.indices(self.offer_policy.arm_ids)
            if catalog is not None:
                self._item_rules = np.ascontiguousarray(
                    self.rules.item_rules(
                        catalog.categories.tolist(), [brand or None for brand in catalog.brands.tolist()]
                    ).T
                )  # (n_items, n_offers): each item's rules in one row (``eligible_for_pages``)
        self.layout_policy: DecisionPolicy | None = None
        if self.layouts:
            estimates = _aligned(layout_estimates, list(self.layouts), persona_ids, f"{source} layouts")
            self.layout_policy = DecisionPolicy.for_layouts(
                estimates, mode=mode, epsilon=epsilon, persona_names=persona_names
            )

    @classmethod
    def from_artifact(
        cls, artifact: LoadedArtifact, *, epsilon: float = 0.1, mode: PolicyMode = PolicyMode.EPSILON_GREEDY
    ) -> PageDecisions:
        """The decisions of an artifact: its offers and layouts tables and the estimates per arm type."""
        return cls(
            artifact.catalog.ids,
            artifact.catalog.names,
            offers=artifact.offers or [],
            offer_estimates=artifact.arm_estimates.get("offer"),
            layouts=artifact.layouts or [],
            layout_estimates=artifact.arm_estimates.get("layout"),
            epsilon=epsilon,
            mode=mode,
            source=f"{artifact.path}/{LAYOUT.arm_estimates.path}",
            catalog=artifact.item_catalog,
        )

    def rank_offers(
        self,
        mix: PersonaMix,
        context: EligibilityContext,
        n: int,
        rng: Draws,
        candidates: Sequence[str] = (),
    ) -> list[RankedOffer]:
        """Up to n eligible offers, best first; none when no offer is eligible (or the shop has none).

        ``candidates`` restricts the choice to these offer ids; an unknown id is an InvalidRequestError
        naming ``candidate_offer_ids[i]``.
        """
        if self.offer_policy is None or self.rules is None:
            if candidates:
                raise InvalidRequestError("candidate_offer_ids[0]", f"unknown offer {candidates[0]!r}")
            return []
        eligible = self.rules.eligible(context)[self._rules_in_arm_order]
        restricted = _candidate_mask(self.offer_policy.arm_ids, candidates, "candidate_offer_ids", "offer")
        if restricted is not None:
            eligible &= restricted
        try:
            return self._ranked_offers(self.offer_policy.rank_offers(mix, eligible, n, rng))
        except NoEligibleArmError:
            return []

    def page_eligibility_many(
        self,
        in_views: Sequence[NDArray[np.int64]],
        in_carts: Sequence[NDArray[np.int64]],
        basket_values: Sequence[float | None],
    ) -> NDArray[np.bool_]:
        """(pages, n_offers): which offers (in table order) each page, with these catalog items in view
        and in its cart, may show: what ``eligibility_context`` and ``OfferRules.eligible`` give, from
        the rules compiled per item at load, for every page of a batch in one gather. A basket value of
        None defaults to the cart's list prices."""
        if self.rules is None:
            return np.zeros((len(in_views), 0), dtype=bool)
        if self._item_rules is None or self.catalog is None:
            raise PageDecisionError("page_eligibility_many needs the catalog the decisions were built with")
        prices = self.catalog.prices
        values: list[float] = []
        parts: list[NDArray[np.int64]] = []
        starts: list[int] = []  # where each page with items starts in their concatenation
        filled: list[int] = []
        total = 0
        for page, (view, cart, value) in enumerate(zip(in_views, in_carts, basket_values, strict=True)):
            values.append(
                (float(prices[cart].sum()) if len(cart) else 0.0) if value is None else float(value)
            )
            if len(view) or len(cart):
                starts.append(total)
                filled.append(page)
                total += len(view) + len(cart)
                parts += (view, cart)
        items = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return self.rules.eligible_for_pages(
            self._item_rules, items, starts, filled, np.array(values, dtype=np.float64)
        )

    def rank_offers_many(
        self,
        mixes: Sequence[PersonaMix],
        eligible: NDArray[np.bool_],
        ns: Sequence[int],
        draws: Sequence[Draws],
    ) -> list[list[RankedOffer]]:
        """``rank_offers`` (without candidates) for many pages, given each page's eligible offers in
        table order (``page_eligibility_many``: one row per page): the expected scores of every mix come
        from one pass over the batch, then each page is ranked with its own draws. Page i gets exactly
        what ``rank_offers`` gives it alone (the scores are computed row by row, see
        ``mixed_scores``)."""
        policy = self.offer_policy
        if policy is None or not mixes:
            return [[] for _ in mixes]
        weights = np.array([mix.weights for mix in mixes], dtype=np.float64)
        in_arm_order = eligible[:, self._rules_in_arm_order]
        return [self._ranked_offers(ranked) for ranked in policy.rank_many(weights, in_arm_order, ns, draws)]

    def _ranked_offers(self, ranked: Sequence[RankedArm]) -> list[RankedOffer]:
        offers = self.offers
        return [
            RankedOffer(
                offer_id=arm.arm_id,
                kind=offers[arm.arm_id].kind,
                description=offers[arm.arm_id].description,
                rank=rank,
                score=arm.score,
                propensity=arm.propensity,
                reason=arm.reason,
            )
            for rank, arm in enumerate(ranked, start=1)
        ]

    def choose_layout(
        self, mix: PersonaMix, rng: Draws, candidates: Sequence[str] = ()
    ) -> LayoutDecision | None:
        """The chosen variant with unfilled slots, or None when the shop has no layouts table."""
        if self.layout_policy is None:
            if candidates:
                raise InvalidRequestError(
                    "candidate_variant_ids[0]", f"unknown layout variant {candidates[0]!r}"
                )
            return None
        arms = self.layout_policy.arm_ids
        restricted = _candidate_mask(arms, candidates, "candidate_variant_ids", "layout variant")
        return self._layout(self.layout_policy.choose_layout(mix, rng, restricted))

    def choose_layouts_many(
        self,
        mixes: Sequence[PersonaMix],
        draws: Sequence[Draws],
        contents: Sequence[tuple[Sequence[str], Sequence[str]]] | None = None,
    ) -> list[LayoutDecision | None]:
        """``choose_layout`` (without candidates) for many pages, scored in one pass like
        ``rank_offers_many``; page i gets exactly what ``choose_layout`` gives it alone, its slots
        filled (``fill_slots``) with ``contents[i]``, its (item ids, offer ids), when given."""
        policy = self.layout_policy
        if policy is None or not mixes:
            return [None for _ in mixes]
        weights = np.array([mix.weights for mix in mixes], dtype=np.float64)
        chosen = policy.rank_many(weights, None, [1] * len(mixes), draws)
        fill = contents if contents is not None else [None] * len(mixes)
        return [self._layout(ranked[0], page) for ranked, page in zip(chosen, fill, strict=True)]

    def _layout(
        self, chosen: RankedArm, contents: tuple[Sequence[str], Sequence[str]] | None = None
    ) -> LayoutDecision:
        variant = self.layouts[chosen.arm_id]
        slots = (
            fill_slots(variant.slots, *contents)
            if contents is not None
            else tuple(FilledSlot(name) for name in variant.slots)
        )
        return LayoutDecision(variant.variant_id, variant.description, slots, chosen.score, chosen.propensity)
