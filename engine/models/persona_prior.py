"""Persona weights by activity level: how much a factor model leans on a customer's personas.

Collaborative filtering knows a customer by their interactions; with few of them their vector is
mostly regularisation. The persona mix knows them from other signals (the categories, prices and
channels they touched, their demographics). Two persona terms enter an implicit factor model's score,
each with one weight per *activity level* (customers bucketed by how many items they interacted with
in training, edges at quantiles of the training customers; level 0 is a customer the model never saw):

- the blend ``b``: the customer's vector moves toward their mix's persona vector,
  ``(1 - b) u_c + b (mix @ P)``;
- the prior ``w``: the persona popularity of the mix (``PersonaPopularityModel``'s ranking, times
  ``n_items`` so an average item scores 1) is added, ``+ w * n_items * (mix @ PersonaPopularity)_i``.
  With a recency half-life (``prior_half_life_days``) each customer-item pair counts
  ``0.5 ** (age / half_life)``, its age the days from the pair's latest event to the end of training:
  the prior is then what each persona is buying *now*. Collaborative filtering has no clock; the time
  of the visit is what a shop's personas know and its factors do not (a Christmas run-up, a new range).

The half-life is fitted with the weights (``training.persona_weights``; all-time counts are on its
grid and win ties). Without personas (``prior_scope = "population"``, the ablation) every persona's
column is the population's recency-weighted popularity, so the prior is the same for any mix.

How much a light customer should lean on their personas differs from a heavy one, and by how much is
an empirical question: ``search_levels`` picks per level the pair that maximises NDCG@k on a
validation split (``training.persona_weights`` builds it without leaking the held-out events into
the mixes). Both terms are linear in the mix, so the model still scores by inner product: the query
vector gains ``w * mix``, the item vectors gain ``n_items * PersonaPopularity^T``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.evaluation.ranking_metrics import ranking_metrics
from engine.models.persona_attribution import persona_item_distributions
from engine.ranking.top_k import top_k

if TYPE_CHECKING:
    from engine.models.base import TrainingSet

BLEND_GRID: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8)
# Multiples of (mean per-customer spread of the factor scores / spread of the prior term).
PRIOR_GRID: tuple[float, ...] = (0.0, 0.05, 0.15, 0.3, 0.6, 1.0, 2.0)
PRIOR_STRENGTH = 50.0
# The prior counts interactions by membership alone, without the persona popularity model's attribution
# steps: the prior is added to collaborative-filtering scores that know each customer's items already,
# and the sharper attributed distributions lowered the tuned ALS's NDCG@10 in the model-quality
# benchmark (MovieLens 100K 0.3128 -> 0.3106, demo shop 0.1310 -> 0.1304, same seeds and search).
PRIOR_ATTRIBUTION_ITERATIONS = 0


def persona_item_scores(
    interactions: sp.csr_matrix,
    user_mix: NDArray[np.float64],
    prior_strength: float = PRIOR_STRENGTH,
    attribution_iterations: int = PRIOR_ATTRIBUTION_ITERATIONS,
    *,
    ages: sp.csr_matrix | None = None,
    half_life_days: float | None = None,
) -> NDArray[np.float32]:
    """(n_items, n_personas): ``n_items`` x each persona's smoothed popularity (a distribution).

    The persona popularity model's distributions (membership counts by default, see
    ``PRIOR_ATTRIBUTION_ITERATIONS``), scaled by ``n_items`` so an average item scores 1 whatever the
    catalogue size. With ``half_life_days`` each customer-item pair counts ``0.5 ** (age / half_life)``
    (``ages``: ``TrainingSet.interaction_age_days``): what each persona is buying *now*. On the Online
    Retail export, whose held-out weeks are the Christmas run-up, that is most of what the prior adds.
    """
    seen = sp.csr_matrix(interactions > 0, dtype=np.float64)
    if half_life_days is not None:
        seen.data = recency_weights(interactions, ages, half_life_days)
    smoothed = persona_item_distributions(seen, user_mix, prior_strength, attribution_iterations)
    return np.asarray(seen.shape[1] * smoothed.T, dtype=np.float32)


def prior_item_scores(
    interactions: sp.csr_matrix,
    user_mix: NDArray[np.float64],
    *,
    population: bool,
    ages: sp.csr_matrix | None = None,
    half_life_days: float | None = None,
) -> NDArray[np.float32]:
    """(n_items, n_personas) item side of a model's prior. At the population's scope (``population``,
    the ablation of a recency prior) every persona's column is the population's popularity, so
    ``mix @`` it is that popularity for any mix."""
    scores = persona_item_scores(
        interactions,
        np.ones((interactions.shape[0], 1)) if population else user_mix,
        ages=ages,
        half_life_days=half_life_days,
    )
    if population:
        return np.ascontiguousarray(np.repeat(scores, user_mix.shape[1], axis=1))
    return scores


PRIOR_SCOPES: tuple[str, ...] = ("personas", "population")


def check_prior_settings(half_life_days: float | None, scope: str) -> tuple[float | None, str]:
    """A prior's recency half-life (None: every pair alike; else a positive, finite number of days) and
    scope (``PRIOR_SCOPES``), checked."""
    if half_life_days is not None and (
        isinstance(half_life_days, bool)
        or not isinstance(half_life_days, (int, float))
        or not np.isfinite(half_life_days)
        or half_life_days <= 0
    ):
        raise ValueError(
            f"prior_half_life_days must be a positive number of days or absent, got {half_life_days!r}"
        )
    if scope not in PRIOR_SCOPES:
        raise ValueError(f"prior_scope must be one of {', '.join(PRIOR_SCOPES)}, got {scope!r}")
    return (None if half_life_days is None else float(half_life_days)), scope


def ablated_prior(config: dict[str, Any]) -> dict[str, Any]:
    """The prior settings of a model's ablation (``without_personas``). A prior weighted by recency
    stays, at the population's scope: what the whole shop is buying now is the time of the visit, not
    a persona, so the ablation keeps it and the difference to it is what the personas add. An all-time
    prior goes (its population form is plain popularity, which the model holds already)."""
    weights = config.get("prior_weights")
    if config.get("prior_half_life_days") is not None and weights and any(w != 0.0 for w in weights):
        return {"prior_scope": "population"}
    return {"prior_weights": None, "prior_half_life_days": None, "prior_scope": "personas"}


def prior_state(
    data: TrainingSet, activity_levels: int, *, population: bool, half_life_days: float | None
) -> dict[str, NDArray[np.float32]]:
    """The arrays a model's prior scores from, as saved: each training customer's interaction count,
    the activity levels' edges and the prior's item side (``prior_item_scores``)."""
    counts = interaction_counts(data.interactions)
    return {
        "activity_counts": counts.astype(np.float32),
        "activity_edges": activity_edges(counts, activity_levels).astype(np.float32),
        "persona_item_scores": prior_item_scores(
            data.interactions,
            data.user_mix,
            population=population,
            ages=data.interaction_age_days,
            half_life_days=half_life_days,
        ),
    }


def recency_weights(
    interactions: sp.csr_matrix, ages: sp.csr_matrix | None, half_life_days: float
) -> NDArray[np.float64]:
    """Each stored pair's weight ``0.5 ** (age / half_life_days)``, in the order of ``interactions``."""
    if not half_life_days > 0:
        raise ValueError(f"half_life_days must be a positive number of days, got {half_life_days}")
    if ages is None:
        raise ValueError("a recency half-life needs the training set's interaction ages")
    if ages.nnz != interactions.nnz:
        raise ValueError(f"ages hold {ages.nnz} pairs, interactions {interactions.nnz}")
    positive = np.asarray(interactions.data) > 0
    return np.exp2(-np.asarray(ages.data, dtype=np.float64)[positive] / half_life_days)


def interaction_counts(interactions: sp.csr_matrix) -> NDArray[np.int64]:
    return np.diff(sp.csr_matrix(interactions).indptr).astype(np.int64)


def activity_edges(counts: NDArray[np.int64], levels: int) -> NDArray[np.float64]:
    """``levels - 1`` thresholds at the quantiles of the active customers' interaction counts."""
    active = counts[counts > 0]
    if levels <= 1 or len(active) == 0:
        return np.zeros(0, dtype=np.float64)
    return np.quantile(active.astype(np.float64), np.linspace(0.0, 1.0, levels + 1)[1:-1])


def activity_level(
    user_index: NDArray[np.int64], counts: NDArray[np.number[Any]], edges: NDArray[np.floating[Any]]
) -> NDArray[np.int64]:
    """Level per customer: 0 for unknown (index -1), 1..levels by training interactions otherwise.

    ``counts`` may be the saved float32 column: its values are whole numbers, so they compare with the
    edges exactly as integers would."""
    index = np.asarray(user_index, dtype=np.int64)
    known = index >= 0
    level = np.zeros(len(index), dtype=np.int64)
    level[known] = 1 + np.searchsorted(edges, counts[index[known]], side="right")
    return level


def levels_from_events(
    events: sp.csr_matrix, rows: NDArray[np.int64], edges: NDArray[np.floating[Any]]
) -> NDArray[np.int64]:
    """Activity level of the customers in ``rows``, outside the fit, from the events they bring: each
    event counts as a training interaction would."""
    brought = np.diff(sp.csr_matrix(events).indptr)[rows]
    return (1 + np.searchsorted(edges, brought, side="right")).astype(np.int64)


@dataclass(frozen=True)
class LevelSearch:
    """The chosen weights per level and the mean NDCG@k they give the evaluated customers together
    (what tells one prior, e.g. one recency half-life, from another)."""

    blends: NDArray[np.float64]
    prior_weights: NDArray[np.float64]
    ndcg: float


def search_levels(
    score: Callable[[float], NDArray[np.float32]],
    prior: NDArray[np.float32] | None,
    level: NDArray[np.int64],
    n_levels: int,
    exclude: sp.csr_matrix | None,
    relevant: sp.csr_matrix,
    k: int = 10,
    *,
    blends: tuple[float, ...] = BLEND_GRID,
) -> LevelSearch:
    """Per level (0..n_levels), the (blend, prior weight) with the best mean NDCG@k of its customers.

    ``score(b)`` gives the (users, items) factor scores with blend ``b``; ``prior`` the (users, items)
    persona popularity term (None: prior weight stays 0). The prior's grid is scaled to the spread of
    the factor scores. Ties go to the smaller weights (the grids start at 0), so a level keeps plain
    CF unless the personas helped on validation. Levels without customers keep 0.
    """
    gains: dict[tuple[float, float], NDArray[np.float64]] = {}
    for blend in blends:
        base = score(blend)
        scale = 0.0
        if prior is not None:
            spread = float(np.mean(prior.std(axis=1)))
            scale = float(np.mean(base.std(axis=1))) / spread if spread > 0 else 0.0
        for multiple in PRIOR_GRID if scale > 0 else (0.0,):
            weight = multiple * scale
            scores = base if weight == 0.0 or prior is None else base + np.float32(weight) * prior
            recommended, _ = top_k(scores, k, exclude=exclude)
            gains[(blend, weight)] = ranking_metrics(recommended, relevant).ndcg
    chosen_blends = np.zeros(n_levels + 1, dtype=np.float64)
    weights = np.zeros(n_levels + 1, dtype=np.float64)
    evaluated = np.flatnonzero(np.diff(sp.csr_matrix(relevant).indptr) > 0)
    level = level[evaluated]
    reached = np.zeros(len(evaluated), dtype=np.float64)
    for lv in range(n_levels + 1):
        members = level == lv
        if not members.any():
            continue
        best = max(gains, key=lambda pair: (float(gains[pair][members].mean()), -pair[0], -pair[1]))
        chosen_blends[lv], weights[lv] = best
        reached[members] = gains[best][members]
    return LevelSearch(chosen_blends, weights, float(reached.mean()) if len(reached) else float("nan"))
