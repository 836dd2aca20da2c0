"""Per-activity-level persona weights of the implicit factor models, fitted on a validation split.

``engine.models.persona_prior`` describes the two persona terms (blend toward the mix's persona
vector, persona popularity prior) and their one-weight-per-activity-level form. This job fits them
where they can be fitted honestly: on a validation split carved from the training events
(``training.tune_job.validation_data``), whose persona mixes were inferred *without* the held-out
events. (A split carved inside ``fit`` would score mixes that already saw the held-out items, and
would pick persona weights that only look good because of that.)

The factors are fitted once with every persona weight 0; each (blend, prior) pair is then scored
through the model's own code (``ImplicitFactorsModel.with_persona_weights``), and each level keeps
the pair with the best NDCG@k of its customers. Weight 0 is on both grids and wins ties, so a level
leans on its personas only where that helped on validation; cold-start customers (level 0) get the
prior weight that served the validation split's cold-start customers best. The search runs once per
recency half-life of the prior (``HALF_LIFE_GRID``), and the half-life whose chosen weights reach the
best NDCG@k of the known customers wins.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.models.base import TrainingSet
from engine.models.implicit_factors import ImplicitFactorsModel
from engine.models.persona_prior import LevelSearch, persona_item_scores, search_levels
from engine.models.registry import create_model, model_class
from training.prepared_data import EvaluationSegment, PreparedData, evaluation_segments

# Scores held at once while trying weights: users x items cells (a seeded sample of users beyond it).
SCORE_CELLS = 1 << 24
# Recency half-lives (days) the persona prior is tried with; None counts every pair alike (and wins
# ties). On the Online Retail export, whose held-out weeks are the Christmas run-up, validation picked
# 7 days and the engine's ALS went from 0.0936 to 0.1323 NDCG@10 (`compare`, 20 trials, bundled
# catalog; tuned implicit ALS 0.0950).
HALF_LIFE_GRID: tuple[float | None, ...] = (None, 3.0, 7.0, 14.0, 28.0, 56.0)
MIN_USERS = 500


def fits_persona_weights(kind: str) -> bool:
    return issubclass(model_class(kind), ImplicitFactorsModel)


def _sample(segment: EvaluationSegment, n_items: int, seed: int) -> EvaluationSegment:
    """At most ``SCORE_CELLS / n_items`` (and at least ``MIN_USERS``) customers of the segment."""
    limit = max(MIN_USERS, SCORE_CELLS // max(n_items, 1))
    n = len(segment.customer_ids)
    if n <= limit:
        return segment
    rows = np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
    return EvaluationSegment(
        name=segment.name,
        customer_ids=segment.customer_ids[rows],
        users=segment.users.rows(rows),
        exclude=segment.exclude[rows],
        relevant=segment.relevant[rows],
    )


def recency_candidates(
    data: TrainingSet, all_time: NDArray[np.float32]
) -> dict[float | None, NDArray[np.float32]]:
    """The prior's item side for each half-life of ``HALF_LIFE_GRID`` (``all_time``: the all-time
    counts a model fitted already; without the interactions' ages, those alone)."""
    half_lives = HALF_LIFE_GRID if data.interaction_age_days is not None else (None,)
    return {
        half_life: all_time
        if half_life is None
        else persona_item_scores(
            data.interactions, data.user_mix, ages=data.interaction_age_days, half_life_days=half_life
        )
        for half_life in half_lives
    }


def best_half_life(searches: dict[float | None, LevelSearch]) -> float | None:
    """The half-life whose chosen weights reach the best mean NDCG; on a tie the earlier of the grid
    (all-time counts first, then the shorter half-life), so recency is weighed only where it helped."""
    half_lives = list(searches)
    return max(half_lives, key=lambda h: (searches[h].ndcg, -half_lives.index(h)))


def level_zero_prior(
    scores: NDArray[np.float32], prior: NDArray[np.float32], n_levels: int, relevant: sp.csr_matrix, k: int
) -> float:
    """The prior weight that serves cold-start customers (level 0: scored from their mix alone) best."""
    return float(
        search_levels(
            lambda _blend: scores,
            prior,
            np.zeros(relevant.shape[0], dtype=np.int64),
            n_levels,
            None,
            relevant,
            k,
            blends=(0.0,),
        ).prior_weights[0]
    )


def fit_persona_weights(
    kind: str, parameters: dict[str, Any], validation: PreparedData, k: int
) -> dict[str, Any]:
    """``parameters`` with ``blend_weights``, ``prior_weights`` and ``prior_half_life_days`` fitted on
    ``validation``."""
    if not fits_persona_weights(kind):
        return dict(parameters)
    plain = create_model(
        kind,
        **{
            **parameters,
            "persona_blend": 0.0,
            "blend_weights": None,
            "prior_weights": None,
            "prior_half_life_days": None,
            "prior_scope": "personas",
        },
    )
    assert isinstance(plain, ImplicitFactorsModel)
    data = validation.training_set
    plain.fit(data)
    levels = plain.activity_levels
    seed = data.seed
    segments = {s.name: s for s in evaluation_segments(validation) if s.name in ("all", "cold_start")}
    item_scores = recency_candidates(data, plain.persona_item_scores)
    half_life: float | None = None
    blends = np.zeros(levels + 1)
    priors = np.zeros(levels + 1)
    if "all" in segments:
        warm = _sample(segments["all"], plain.n_items, seed)
        level = plain.activity_levels_of(warm.users.user_index)

        def score_warm(blend: float) -> np.ndarray:
            return plain.with_persona_weights([blend] * levels, None).score(warm.users)

        searches = {
            candidate: search_levels(
                score_warm,
                np.asarray(warm.users.mix, dtype=np.float32) @ scores.T,
                level,
                levels,
                warm.exclude,
                warm.relevant,
                k,
            )
            for candidate, scores in item_scores.items()
        }
        half_life = best_half_life(searches)
        blends, priors = searches[half_life].blends, searches[half_life].prior_weights
    if "cold_start" in segments:
        cold = _sample(segments["cold_start"], plain.n_items, seed)
        # level 0 is a stranger without events, scored from the mix alone (one with events is folded
        # in and takes the weights of their activity level); the blend plays no part there
        cold_scores = plain.score(cold.users.without_events())
        cold_prior = np.asarray(cold.users.mix, dtype=np.float32) @ item_scores[half_life].T
        priors[0] = level_zero_prior(cold_scores, cold_prior, levels, cold.relevant, k)
    prior_used = any(w != 0.0 for w in priors)
    return {
        **parameters,
        "blend_weights": [round(float(b), 4) for b in blends[1:]],
        "prior_weights": [float(f"{w:.4g}") for w in priors],
        "prior_half_life_days": half_life if prior_used else None,
    }
