"""Persona prior: what a customer's personas buy, added to a factor model's scores by activity level.

Collaborative filtering knows a customer by their interactions; with few of them their vector is
mostly regularisation. The persona mix knows them from other signals (the categories, prices and
channels they touched, their demographics), and the persona popularity of a mix,
``mix @ PersonaPopularity`` (as in ``PersonaPopularityModel``), ranks what customers of those
personas take. The prior adds that ranking to the factor model's scores:

    score(c, i) = q_c . v_i + w(level_c) * n_items * (mix_c @ PersonaPopularity)_i

with one weight per *activity level* (customers bucketed by how many items they interacted with in
training, the edges at quantiles of the training customers; level 0 is a customer the model never
saw). How much a light customer should lean on their personas differs from a heavy one, and by how
much is an empirical question, so the weights are *fitted*: ``fit_level_weights`` holds out a seeded
share of every training customer's items, fits the factor model on the rest, and picks per level the
weight that maximises NDCG@k of the held-out items over a grid scaled to the model's score spread
(weight 0, plain CF, is on the grid, so the prior is used only where it helped on held-out items).
Cold-start customers are fitted the same way, scored from their mix without their id.

The term is linear in the mix, so the model still scores by inner product: the query vector gains
``w * mix`` and the item vectors gain ``n_items * PersonaPopularity^T``, and candidate-index serving
keeps working; a request mix moves the prior with it (steering).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.evaluation.ranking_metrics import ranking_metrics
from engine.ranking.top_k import top_k

HOLDOUT_SHARE = 0.2
# Multiples of (mean per-customer spread of the CF scores / spread of the prior term).
WEIGHT_GRID: tuple[float, ...] = (0.0, 0.03, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0)
PRIOR_STRENGTH = 50.0
SCORE_CELLS_PER_CHUNK = 1 << 22

Scorer = Callable[[NDArray[np.int64], bool], NDArray[np.float32]]


@dataclass(frozen=True)
class HeldOutItems:
    """A training matrix with a seeded share of each customer's items removed, and the removed items."""

    kept: sp.csr_matrix
    held_out: sp.csr_matrix


def persona_item_scores(
    interactions: sp.csr_matrix, user_mix: NDArray[np.float64], prior_strength: float = PRIOR_STRENGTH
) -> NDArray[np.float32]:
    """(n_items, n_personas): ``n_items`` x each persona's smoothed popularity (a distribution).

    Scaled by ``n_items`` so an average item scores 1 whatever the catalogue size.
    """
    seen = sp.csr_matrix(interactions > 0, dtype=np.float64)
    n_items = seen.shape[1]
    global_counts = np.asarray(seen.sum(axis=0), dtype=np.float64).ravel()
    global_share = global_counts / max(global_counts.sum(), 1.0)
    weighted = np.asarray(seen.T @ user_mix, dtype=np.float64)  # (n_items, n_personas)
    mass = weighted.sum(axis=0, keepdims=True)
    smoothed = (weighted + prior_strength * global_share[:, None]) / (mass + prior_strength)
    return np.asarray(n_items * smoothed, dtype=np.float32)


def interaction_counts(interactions: sp.csr_matrix) -> NDArray[np.int64]:
    return np.diff(sp.csr_matrix(interactions).indptr).astype(np.int64)


def activity_edges(counts: NDArray[np.int64], levels: int) -> NDArray[np.float64]:
    """``levels - 1`` thresholds at the quantiles of the active customers' interaction counts."""
    active = counts[counts > 0]
    if levels <= 1 or len(active) == 0:
        return np.zeros(0, dtype=np.float64)
    return np.quantile(active.astype(np.float64), np.linspace(0.0, 1.0, levels + 1)[1:-1])


def activity_level(
    user_index: NDArray[np.int64], counts: NDArray[np.int64], edges: NDArray[np.float64]
) -> NDArray[np.int64]:
    """Level per customer: 0 for unknown (index -1), 1..levels by training interactions otherwise."""
    index = np.asarray(user_index, dtype=np.int64)
    known = index >= 0
    level = np.zeros(len(index), dtype=np.int64)
    level[known] = 1 + np.searchsorted(edges, counts[index[known]], side="right")
    return level


def hold_out(interactions: sp.csr_matrix, share: float, seed: int) -> HeldOutItems:
    """Remove ``share`` (at least one) of the items of every customer with three or more, seeded."""
    matrix = sp.csr_matrix(interactions, dtype=np.float32, copy=True)
    matrix.sum_duplicates()
    counts = np.diff(matrix.indptr)
    rows = np.repeat(np.arange(matrix.shape[0]), counts)
    keys = np.random.default_rng(seed).random(matrix.nnz)
    order = np.lexsort((keys, rows))  # within each row, a seeded random order of its entries
    rank = np.empty(matrix.nnz, dtype=np.int64)
    rank[order] = np.arange(matrix.nnz) - np.repeat(matrix.indptr[:-1], counts)
    n_hold = np.where(counts >= 3, np.maximum(1, np.round(share * counts)), 0).astype(np.int64)
    held = rank < np.repeat(n_hold, counts)
    coo = matrix.tocoo()
    shape = matrix.shape
    kept = sp.csr_matrix((coo.data[~held], (coo.row[~held], coo.col[~held])), shape=shape)
    removed = sp.csr_matrix((coo.data[held], (coo.row[held], coo.col[held])), shape=shape)
    return HeldOutItems(kept=kept, held_out=removed)


def fit_level_weights(
    score: Scorer,
    held: HeldOutItems,
    user_mix: NDArray[np.float64],
    item_scores: NDArray[np.float32],
    levels: int,
    k: int = 10,
) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
    """Activity edges and the fitted weight per level (index 0: cold start), see the module docstring.

    ``score(rows, cold)`` gives the factor model's (fitted on ``held.kept``) scores of those training
    rows, as known customers or, with ``cold``, from their mix alone.
    """
    counts = interaction_counts(held.kept)
    edges = activity_edges(counts, levels)
    users = np.flatnonzero(interaction_counts(held.held_out) > 0)
    weights = np.zeros(levels + 1, dtype=np.float32)
    if len(users) == 0:
        return edges, weights
    level = activity_level(users, counts, edges)
    n_items = held.kept.shape[1]
    rows_per_chunk = max(1, SCORE_CELLS_PER_CHUNK // max(n_items, 1))
    for cold in (False, True):
        # gains[g, u]: NDCG@k of user u with grid weight g; the grid's scale is fixed on the first chunk
        gains = np.zeros((len(WEIGHT_GRID), len(users)), dtype=np.float64)
        scale = 0.0
        for start in range(0, len(users), rows_per_chunk):
            rows = users[start : start + rows_per_chunk]
            base = score(rows, cold)
            prior = (user_mix[rows].astype(np.float32) @ item_scores.T).astype(np.float32)
            if scale == 0.0:
                spread = float(np.mean(prior.std(axis=1)))
                scale = float(np.mean(base.std(axis=1))) / spread if spread > 0 else 0.0
            exclude = None if cold else held.kept[rows]
            relevant = held.held_out[rows]
            for g, multiple in enumerate(WEIGHT_GRID):
                recommended, _ = top_k(base + np.float32(multiple * scale) * prior, k, exclude=exclude)
                gains[g, start : start + len(rows)] = ranking_metrics(recommended, relevant).ndcg
        for lv in [0] if cold else range(1, levels + 1):
            members = np.ones(len(users), dtype=bool) if cold else level == lv
            if members.any():
                best = int(np.argmax(gains[:, members].mean(axis=1)))  # ties: the smallest weight
                weights[lv] = np.float32(WEIGHT_GRID[best] * scale)
    return edges, weights
