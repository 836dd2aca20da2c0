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
prior weight that served the validation split's cold-start customers best.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.models.implicit_factors import ImplicitFactorsModel
from engine.models.persona_prior import grid_search_levels
from engine.models.registry import create_model, model_class
from training.prepared_data import EvaluationSegment, PreparedData, evaluation_segments

# Scores held at once while trying weights: users x items cells (a seeded sample of users beyond it).
SCORE_CELLS = 1 << 24
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


def fit_persona_weights(
    kind: str, parameters: dict[str, Any], validation: PreparedData, k: int
) -> dict[str, Any]:
    """``parameters`` with ``blend_weights`` and ``prior_weights`` fitted on ``validation``."""
    if not fits_persona_weights(kind):
        return dict(parameters)
    plain = create_model(
        kind, **{**parameters, "persona_blend": 0.0, "blend_weights": None, "prior_weights": None}
    )
    assert isinstance(plain, ImplicitFactorsModel)
    plain.fit(validation.training_set)
    levels = plain.activity_levels
    seed = validation.training_set.seed
    segments = {s.name: s for s in evaluation_segments(validation) if s.name in ("all", "cold_start")}
    blends = np.zeros(levels + 1)
    priors = np.zeros(levels + 1)
    item_scores = plain.persona_item_scores
    if "all" in segments:
        warm = _sample(segments["all"], plain.n_items, seed)
        prior = np.asarray(warm.users.mix, dtype=np.float32) @ item_scores.T

        def score_warm(blend: float) -> np.ndarray:
            return plain.with_persona_weights([blend] * levels, None).score(warm.users)

        level = plain.activity_levels_of(warm.users.user_index)
        blends, priors = grid_search_levels(score_warm, prior, level, levels, warm.exclude, warm.relevant, k)
    if "cold_start" in segments:
        cold = _sample(segments["cold_start"], plain.n_items, seed)
        cold_scores = plain.score(cold.users)  # the blend plays no part for a customer without a vector
        cold_prior = np.asarray(cold.users.mix, dtype=np.float32) @ item_scores.T
        _, cold_priors = grid_search_levels(
            lambda _blend: cold_scores,
            cold_prior,
            np.zeros(len(cold.customer_ids), dtype=np.int64),
            levels,
            None,
            cold.relevant,
            k,
            blends=(0.0,),
        )
        priors[0] = cold_priors[0]
    return {
        **parameters,
        "blend_weights": [round(float(b), 4) for b in blends[1:]],
        "prior_weights": [float(f"{w:.4g}") for w in priors],
    }
