"""Turning one customer's item scores into the final product list: pins, promotions, ranking, backfill.

The list is built position by position from sources of decreasing authority:

1. pinned items take their positions (the caller asked for them explicitly; filters do not apply);
2. each promotion rule, in request order, takes its reserved slots with its best-scoring matching
   eligible items (see ``engine.ranking.promotions``);
3. the remaining slots take the best-scoring eligible items, re-ranked for variety when
   ``diversity`` > 0 (see ``engine.ranking.diversity``);
4. if the model leaves slots empty (items it cannot score, i.e. non-finite scores), persona-mixed
   popularity fills them among the still-eligible items.

Promoted items are merged into the ranked items by score, so a promotion earns slots without
pushing a weak item to the top; backfill comes after everything the model ranked; pins are then
inserted at their positions. The list is shorter than asked only when fewer items pass the filters;
a pin whose position is past the end of such a short list moves up to the end.

Every item appears at most once, and every item except pins passes the filters.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from engine.ranking.diversity import DiversitySpace, diversify, pool_size
from engine.ranking.promotions import CompiledPromotions


class ItemReason(StrEnum):
    """Why an item is in the list (the API's ReasonCode)."""

    PERSONALIZED = "personalized"  # scored by a model that knows the customer's own history
    PERSONA = "persona"  # scored from the persona mix (and demographics) alone
    PROMOTED = "promoted"
    POPULAR_BACKFILL = "popular_backfill"
    PINNED = "pinned"


@dataclass(slots=True)  # not frozen: built per listed item per call, where frozen construction costs 5x
class ListEntry:
    item: int
    score: float
    reason: ItemReason
    promotion_id: str = ""


def _top(values: NDArray[np.floating], n: int) -> NDArray[np.int64]:
    """Positions of the n largest values, best first, ties to the lower position (compiled: see
    ``engine.ranking.candidate_search.top_positions``, imported on first use like the search)."""
    from engine.ranking.candidate_search import top_positions

    return np.asarray(top_positions(values, n), dtype=np.int64)


def _best(scores: NDArray[np.floating], allowed: NDArray[np.bool_], n: int) -> NDArray[np.int64]:
    """Indices of the n best allowed items, best first; ties go to the lower index."""
    candidates = np.flatnonzero(allowed)
    if n <= 0 or candidates.size == 0:
        return np.zeros(0, dtype=np.int64)
    return candidates[_top(np.asarray(scores, dtype=np.float64)[candidates], n)]


def ranked_only(scores: NDArray[np.floating], k: int) -> tuple[NDArray[np.int64], NDArray[np.float64]] | None:
    """``assemble_list`` of a list with nothing but the ranking, without building its entries.

    For ``scores`` of items that are all eligible and a list without promotions, pins, diversity or
    backfill, the list is the k best items, best first, ties to the lower index: this returns their
    positions and scores (as ``assemble_list``'s entries hold them). None when a score is not finite
    (then ``assemble_list`` decides which items can be listed at all).
    """
    values = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(values).all():
        return None
    positions = _top(values, k) if k > 0 else np.zeros(0, dtype=np.int64)
    return positions, values[positions]


def _merge_by_score(promoted: list[ListEntry], ranked: list[ListEntry]) -> list[ListEntry]:
    promoted = sorted(promoted, key=lambda e: -e.score)
    merged: list[ListEntry] = []
    i = j = 0
    while i < len(promoted) and j < len(ranked):
        if promoted[i].score >= ranked[j].score:
            merged.append(promoted[i])
            i += 1
        else:
            merged.append(ranked[j])
            j += 1
    return merged + promoted[i:] + ranked[j:]


def assemble_list(
    *,
    k: int,
    scores: NDArray[np.floating],
    eligible: NDArray[np.bool_],
    backfill_scores: NDArray[np.floating] | None,
    promotions: CompiledPromotions,
    diversity: float,
    space: DiversitySpace,
    model_reason: ItemReason,
) -> list[ListEntry]:
    """The k-item list (or fewer, when fewer items are eligible) for one customer, best first.

    ``scores`` and ``backfill_scores`` are (n_items,) for this customer; ``eligible`` is the filters'
    mask for this customer; ``model_reason`` is PERSONALIZED or PERSONA depending on whether the
    model knows the customer.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    scores = np.asarray(scores, dtype=np.float64)
    used = np.zeros(len(scores), dtype=bool)
    used[promotions.pin_items] = True
    scorable = eligible & np.isfinite(scores)
    free = k - len(promotions.pin_items)

    promoted: list[ListEntry] = []
    for rule_id, mask, slots in zip(
        promotions.rule_ids, promotions.rule_masks, promotions.rule_slots, strict=True
    ):
        picked = _best(scores, scorable & mask & ~used, min(slots, free))
        used[picked] = True
        free -= len(picked)
        promoted += [ListEntry(int(i), float(scores[i]), ItemReason.PROMOTED, rule_id) for i in picked]

    open_ = scorable & ~used
    pool = _best(scores, open_, pool_size(free, diversity, int(open_.sum())))
    chosen = diversify(pool, scores[pool], free, diversity, space, already_listed=np.flatnonzero(used))
    used[chosen] = True
    ranked = [ListEntry(int(i), float(scores[i]), model_reason) for i in chosen]

    backfill: list[ListEntry] = []
    short = free - len(chosen)
    if short > 0 and backfill_scores is not None:
        fallback = np.asarray(backfill_scores, dtype=np.float64)
        picked = _best(fallback, eligible & ~used & np.isfinite(fallback), short)
        used[picked] = True
        backfill = [ListEntry(int(i), float(fallback[i]), ItemReason.POPULAR_BACKFILL) for i in picked]

    entries = _merge_by_score(promoted, ranked) + backfill
    for position, item in sorted(
        zip(promotions.pin_positions.tolist(), promotions.pin_items.tolist(), strict=True)
    ):
        value = float(scores[item]) if np.isfinite(scores[item]) else 0.0
        entries.insert(min(position, len(entries)), ListEntry(int(item), value, ItemReason.PINNED))
    return entries
