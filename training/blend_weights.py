"""The weights of a blend (``engine.models.model_blend``), fitted on a validation split.

Which member deserves how much depends on the shop: on MovieLens 100K the validation split picked 0.3
/ 0.5 / 0.2 for ALS, the linear autoencoder and BPR. The members are fitted once on the validation
split's training part; every weighting on a grid over the simplex (steps of ``STEP``) is then scored
through the blend's own scoring code (``ModelBlend.with_weights``: no refit), and the best NDCG@k on
the warm customers wins. Ties go to the earlier point of the grid, which starts at the first member
alone, so the result is reproducible. A grid rather than an optimiser: NDCG is a step function of the
weights, and with three members the grid is 66 scorings. (Member weights per activity level, each
level taking the grid point its own customers scored best with, moved the blend's test NDCG@10 by
+0.0013, -0.0027 and -0.0007 on MovieLens 100K at search seeds 0, 1, 2 and by -0.0003 on the demo
shop: more freedom than the validation split can fit.) The blend's persona prior is then fitted at
those weights as a factor model's is (``training.persona_weights``): a weight per activity level for
each recency half-life, and the half-life that scores best.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.evaluation.ranking_metrics import ranking_metrics
from engine.models.model_blend import DEFAULT_MEMBERS, ModelBlend
from engine.models.persona_prior import search_levels
from engine.ranking.top_k import top_k
from training.compare_verdict import COLD_SEGMENT, WARM_SEGMENT
from training.evaluation import evaluate_models
from training.paired_bootstrap import paired_bootstrap
from training.persona_weights import best_half_life, level_zero_prior, recency_candidates
from training.prepared_data import EvaluationSegment, PreparedData

STEP = 0.1
# The known customers' prior must lift their validation NDCG by more than the customers' spread: a
# prior fitted per level and half-life on a few hundred customers otherwise fits their noise. On
# MovieLens 100K (ua) it did: validation chose recency priors whose test lift was [-0.0022, -0.0005]
# (search seed 1; README "Model quality").
LIFT_BOOTSTRAP_SEED = 13


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
    prior_half_life_days: float | None = None

    def settings(self) -> dict[str, Any]:
        """What the fit decides of a blend's config."""
        return {
            "weights": self.weights,
            "prior_weights": self.prior_weights,
            "prior_half_life_days": self.prior_half_life_days,
        }


def _lifts(scores: NDArray[np.float32], prior: NDArray[Any], segment: EvaluationSegment, k: int) -> bool:
    """Whether adding ``prior`` to ``scores`` lifts the segment's NDCG@k with the paired bootstrap
    interval of the difference over its customers above 0."""
    lists = [
        top_k(np.asarray(s, dtype=np.float32), k, exclude=segment.exclude)[0]
        for s in (scores + prior, scores)
    ]
    lifted, plain = (ranking_metrics(recommended, segment.relevant).ndcg for recommended in lists)
    return paired_bootstrap(lifted, plain, seed=LIFT_BOOTSTRAP_SEED).low > 0


def fit_blend_weights(
    config: dict[str, Any], validation: PreparedData, segments: list[EvaluationSegment], k: int
) -> BlendFit:
    """The members' weights of the blend ``config`` that score best on the warm customers of
    ``segments`` (of ``validation``), then its persona prior, chosen as the factor models' is
    (``training.persona_weights``): a weight per activity level (``search_levels``; level 0 on the
    cold-start customers) for each recency half-life of ``HALF_LIFE_GRID``, and the half-life whose
    weights score best (all-time counts win ties). The known customers keep their prior only when it
    lifts them on validation with the interval above 0 (``LIFT_BOOTSTRAP_SEED``); the cold-start
    customers, who have nothing but their mix, keep theirs."""
    blend = ModelBlend(
        **{**config, "prior_weights": None, "prior_half_life_days": None, "prior_scope": "personas"}
    )
    data = validation.training_set
    blend.fit(data)
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
    item_scores = recency_candidates(data, blend.persona_item_scores)
    warm_scores = chosen.score(warm.users)
    warm_mix = np.asarray(warm.users.mix, dtype=np.float32)
    warm_levels = blend.activity_levels_of(warm.users)
    searches = {
        half_life: search_levels(
            lambda _blend: warm_scores,
            warm_mix @ scores.T,
            warm_levels,
            levels,
            warm.exclude,
            warm.relevant,
            k,
            blends=(0.0,),
        )
        for half_life, scores in item_scores.items()
    }
    half_life = best_half_life(searches)
    priors = searches[half_life].prior_weights
    if (priors[1:] != 0).any() and not _lifts(
        warm_scores, priors[warm_levels][:, None] * (warm_mix @ item_scores[half_life].T), warm, k
    ):
        priors[1:] = 0.0
    cold = named.get(COLD_SEGMENT)
    if cold is not None and len(cold.customer_ids):
        strangers = cold.users.without_events()  # level 0: no events, the mix is all there is
        cold_scores = chosen.score(strangers)
        cold_prior = np.asarray(strangers.mix, dtype=np.float32) @ item_scores[half_life].T
        priors[0] = level_zero_prior(cold_scores, cold_prior, levels, cold.relevant, k)
    prior = [round(float(w), 6) for w in priors]
    used = any(w != 0.0 for w in prior)
    return BlendFit(weights, prior if used else None, ndcg, half_life if used else None)
