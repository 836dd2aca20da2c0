"""The final product list: pins, promotions, ranking, diversity and backfill, and its invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from engine.data.id_map import IdMap
from engine.data.item_catalog import ItemCatalog
from engine.ranking.diversity import DiversitySpace
from engine.ranking.list_assembly import ItemReason, ListEntry, assemble_list, ranked_only
from engine.ranking.promotions import CompiledPromotions, PinnedItem, PromotionRule, Promotions

N_ITEMS = 30
CATEGORIES = np.asarray([f"c{i % 5}" for i in range(N_ITEMS)])
BRANDS = np.asarray([f"b{i % 3}" for i in range(N_ITEMS)])


def items() -> ItemCatalog:
    return ItemCatalog(
        IdMap([f"i{i}" for i in range(N_ITEMS)]),
        titles=np.asarray([f"t{i}" for i in range(N_ITEMS)]),
        categories=CATEGORIES,
        brands=BRANDS,
        prices=np.arange(N_ITEMS, dtype=float),
        in_stock=np.ones(N_ITEMS, dtype=bool),
    )


SPACE = DiversitySpace(category=items().category_codes, persona=np.arange(N_ITEMS) % 2)


def build(
    scores: NDArray[np.float64],
    *,
    k: int = 10,
    eligible: NDArray[np.bool_] | None = None,
    backfill: NDArray[np.float64] | None = None,
    promotions: CompiledPromotions | None = None,
    diversity: float = 0.0,
) -> list[ListEntry]:
    return assemble_list(
        k=k,
        scores=scores,
        eligible=np.ones(N_ITEMS, dtype=bool) if eligible is None else eligible,
        backfill_scores=backfill,
        promotions=promotions or CompiledPromotions.none(N_ITEMS),
        diversity=diversity,
        space=SPACE,
        model_reason=ItemReason.PERSONALIZED,
    )


def test_without_merchandising_the_list_is_the_top_k_by_score() -> None:
    scores = np.random.default_rng(0).normal(size=N_ITEMS)
    entries = build(scores, k=7)
    assert [e.item for e in entries] == np.argsort(-scores)[:7].tolist()
    assert {e.reason for e in entries} == {ItemReason.PERSONALIZED}


def test_pins_take_their_positions_even_when_filtered_out() -> None:
    scores = np.linspace(1, 0, N_ITEMS)
    eligible = np.ones(N_ITEMS, dtype=bool)
    eligible[25] = False
    promotions = Promotions(pins=(PinnedItem("i25", 1), PinnedItem("i3", 4))).compile(6, items())
    entries = build(scores, k=6, eligible=eligible, promotions=promotions)
    assert [e.item for e in entries] == [25, 0, 1, 3, 2, 4]
    assert [e.reason for e in entries][::3] == [ItemReason.PINNED, ItemReason.PINNED]


def test_promoted_slots_go_to_the_best_matching_items_and_merge_by_score() -> None:
    scores = np.linspace(1, 0, N_ITEMS)  # item 0 best
    rule = PromotionRule("brand-b2", 0.3, brands=("b2",))  # items 2, 5, 8, ...
    promotions = Promotions(rules=(rule,)).compile(10, items())
    low = scores.copy()
    low[BRANDS == "b2"] = -1.0 - 0.01 * np.arange(10)  # the brand's items would not make the list alone
    low[[11, 14]] = [-0.5, -0.6]
    entries = build(low, k=10, promotions=promotions)
    promoted = [e for e in entries if e.reason is ItemReason.PROMOTED]
    assert [e.item for e in promoted] == [11, 14, 2] and {e.promotion_id for e in promoted} == {"brand-b2"}
    assert [e.score for e in entries] == sorted((e.score for e in entries), reverse=True)


def test_backfill_fills_what_the_model_cannot_score() -> None:
    scores = np.full(N_ITEMS, -np.inf)
    scores[:3] = [3.0, 2.0, 1.0]
    popularity = np.linspace(0, 1, N_ITEMS)  # item 29 most popular
    entries = build(scores, k=5, backfill=popularity)
    assert [e.item for e in entries] == [0, 1, 2, 29, 28]
    assert [e.reason for e in entries[3:]] == [ItemReason.POPULAR_BACKFILL] * 2


def test_the_list_is_short_only_when_too_few_items_pass_the_filters() -> None:
    eligible = np.zeros(N_ITEMS, dtype=bool)
    eligible[[4, 9]] = True
    promotions = Promotions(pins=(PinnedItem("i0", 5),)).compile(5, items())
    entries = build(
        np.ones(N_ITEMS), k=5, eligible=eligible, promotions=promotions, backfill=np.ones(N_ITEMS)
    )
    assert [e.item for e in entries] == [4, 9, 0], "the pin moves up to the end of a short list"


def test_diversity_zero_is_pure_relevance_and_higher_diversity_spreads_categories() -> None:
    scores = np.zeros(N_ITEMS)
    scores[CATEGORIES == "c0"] = 10 + np.arange(6)  # one category dominates the top
    scores += np.linspace(0, 1, N_ITEMS)
    relevance = build(scores, k=6, diversity=0.0)
    assert [e.item for e in relevance] == np.argsort(-scores, kind="stable")[:6].tolist()
    varied = build(scores, k=6, diversity=0.7)
    assert len({CATEGORIES[e.item] for e in varied}) > len({CATEGORIES[e.item] for e in relevance})
    assert varied[0].item == relevance[0].item


@settings(max_examples=120, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 15),
    n_eligible=st.integers(0, N_ITEMS),
    unscorable=st.integers(0, N_ITEMS),
    n_pins=st.integers(0, 4),
    shares=st.lists(st.sampled_from([0.1, 0.2, 0.3]), max_size=3),
    diversity=st.sampled_from([0.0, 0.3, 1.0]),
    with_backfill=st.booleans(),
)
def test_lists_are_distinct_allowed_and_full_unless_the_filters_leave_too_few(
    seed: int,
    k: int,
    n_eligible: int,
    unscorable: int,
    n_pins: int,
    shares: list[float],
    diversity: float,
    with_backfill: bool,
) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=N_ITEMS)
    scores[rng.choice(N_ITEMS, unscorable, replace=False)] = -np.inf
    eligible = np.zeros(N_ITEMS, dtype=bool)
    eligible[rng.choice(N_ITEMS, n_eligible, replace=False)] = True
    pins = [int(i) for i in rng.choice(N_ITEMS, min(n_pins, k), replace=False)]
    positions = rng.choice(np.arange(1, k + 1), len(pins), replace=False)
    rules = tuple(
        PromotionRule(f"r{i}", share, categories=(f"c{int(rng.integers(5))}",))
        for i, share in enumerate(shares)
    )
    promotions = Promotions(
        rules=rules, pins=tuple(PinnedItem(f"i{i}", int(p)) for i, p in zip(pins, positions, strict=True))
    ).compile(k, items())
    backfill = rng.random(N_ITEMS) if with_backfill else None
    entries = build(
        scores, k=k, eligible=eligible, backfill=backfill, promotions=promotions, diversity=diversity
    )

    listed = [e.item for e in entries]
    assert len(listed) == len(set(listed)) <= k
    assert all(eligible[e.item] for e in entries if e.reason is not ItemReason.PINNED)
    assert sorted(e.item for e in entries if e.reason is ItemReason.PINNED) == sorted(pins)
    available = eligible.copy()
    available[pins] = False
    if not with_backfill:
        available &= np.isfinite(scores)
    assert len(entries) == min(k, len(pins) + int(available.sum()))
    if len(entries) == k:
        for item, position in zip(pins, positions, strict=True):
            assert listed[int(position) - 1] == item
    free = k - len(pins)
    for rule, slots in zip(rules, promotions.rule_slots, strict=True):
        got = sum(1 for e in entries if e.promotion_id == rule.promotion_id)
        assert got <= min(slots, free)
        matching = np.flatnonzero(promotions.rule_masks[rules.index(rule)] & eligible & np.isfinite(scores))
        if got < min(slots, free):
            assert set(matching.tolist()) <= set(listed)
        free -= got


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="k must be positive"):
        build(np.zeros(N_ITEMS), k=0)


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.integers(-3, 3), min_size=0, max_size=N_ITEMS),
    k=st.integers(1, N_ITEMS + 3),
)
def test_a_list_with_nothing_but_the_ranking_is_the_assembled_one(values: list[int], k: int) -> None:
    """``ranked_only`` (the lean path of plain lists) lists exactly what ``assemble_list`` does, ties
    included (scores are small integers, so most of them tie)."""
    scores = np.asarray(values, dtype=np.float32)
    assembled = assemble_list(
        k=k,
        scores=scores,
        eligible=np.ones(len(scores), dtype=bool),
        backfill_scores=None,
        promotions=CompiledPromotions.none(len(scores)),
        diversity=0.0,
        space=DiversitySpace(np.zeros(len(scores), dtype=np.int64), np.zeros(len(scores), dtype=np.int64)),
        model_reason=ItemReason.PERSONA,
    )
    ranked = ranked_only(scores, k)
    assert ranked is not None
    assert ranked[0].tolist() == [e.item for e in assembled]
    assert ranked[1].tolist() == [e.score for e in assembled]
    assert ranked_only(np.asarray([1.0, np.nan]), 1) is None
