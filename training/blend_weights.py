"""The weights of a blend (``engine.models.model_blend``), fitted on a validation split.

Which member deserves how much depends on the shop: on MovieLens 100K the validation split picked 0.3
/ 0.5 / 0.2 for ALS, the linear autoencoder and BPR. The members are fitted once on the validation
split's training part; every weighting on a grid over the simplex (steps of ``STEP``) is then scored
through the blend's own scoring code (``ModelBlend.with_weights``: no refit), and the best NDCG@k on
the warm customers wins. Ties go to the earlier point of the grid, which starts at the first member
alone, so the result is reproducible. A grid rather than an optimiser: NDCG is a step function of the
weights, and with three members the grid is 66 scorings.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.models.model_blend import DEFAULT_MEMBERS, ModelBlend
from engine.models.persona_prior import search_levels
from training.compare_verdict import COLD_SEGMENT, WARM_SEGMENT
from training.evaluation import evaluate_models
from training.prepared_data import EvaluationSegment, PreparedData

STEP = 0.1


def simplex_grid(members: int, step: float = STEP) -> list[list[float]]:
    """Every weighting of ``members`` members in steps of ``step`` that sums to 1, first member first."""
    if members < 1:
        raise ValueError(f"a blend needs at least one member, got {members}")
    units = round(1 / step)
    points = []
    for rest in itertools.product(range(units + 1), repeat=members - 1):
        if sum(rest) <= units:
            points.append([round((units - sum(rest)) * step, 10), *(round(r * step, 10) for r in rest)])
    return points


def blend_members(configured: dict[str, Any], chosen: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The blend's members (``configured``: its config table), each at ``chosen[kind]`` when its kind
    was searched there (``tune``'s winners, ``compare``'s rows), at its own settings otherwise, and
    without persona conditioning: personas enter the blend once, through its own prior."""
    members = [
        {"kind": member["kind"], **chosen[member["kind"]]} if member["kind"] in chosen else member
        for member in configured.get("members") or [{"kind": kind} for kind in DEFAULT_MEMBERS]
    ]
    ablated: list[dict[str, Any]] = ModelBlend.without_personas({"members": members})["members"]
    return ablated


@dataclass(frozen=True)
class BlendFit:
    weights: list[float]
    prior_weights: list[float] | None
    ndcg: float  # the warm validation customers' NDCG@k at ``weights``, before the prior


def fit_blend_weights(
    config: dict[str, Any], validation: PreparedData, segments: list[EvaluationSegment], k: int
) -> BlendFit:
    """The members' weights of the blend ``config`` that score best on the warm customers of
    ``segments`` (of ``validation``), then its persona prior's weight per activity level, chosen as
    the factor models' are (``search_levels``; level 0 on the cold-start customers)."""
    blend = ModelBlend(**{**config, "prior_weights": None})
    blend.fit(validation.training_set)
    named = {segment.name: segment for segment in segments}
    warm = named[WARM_SEGMENT]
    best: tuple[float, list[float]] | None = None
    for weights in simplex_grid(len(blend.members)):
        ndcg = evaluate_models({"blend": blend.with_weights(weights)}, [warm], k)[0].metrics["ndcg"]
        if best is None or ndcg > best[0]:
            best = (ndcg, weights)
    assert best is not None
    ndcg, weights = best
    chosen = blend.with_weights(weights)
    levels = blend.activity_levels
    item_scores = blend.persona_item_scores.T
    priors = search_levels(
        lambda _blend: chosen.score(warm.users),
        np.asarray(warm.users.mix, dtype=np.float32) @ item_scores,
        blend.activity_levels_of(warm.users),
        levels,
        warm.exclude,
        warm.relevant,
        k,
        blends=(0.0,),
    ).prior_weights
    cold = named.get(COLD_SEGMENT)
    if cold is not None and len(cold.customer_ids):
        strangers = cold.users.without_events()  # level 0: no events, the mix is all there is
        priors[0] = search_levels(
            lambda _blend: chosen.score(strangers),
            np.asarray(strangers.mix, dtype=np.float32) @ item_scores,
            np.zeros(len(cold.customer_ids), dtype=np.int64),
            levels,
            None,
            cold.relevant,
            k,
            blends=(0.0,),
        ).prior_weights[0]
    prior = [round(float(w), 6) for w in priors]
    return BlendFit(weights, prior if any(w != 0.0 for w in prior) else None, ndcg)
