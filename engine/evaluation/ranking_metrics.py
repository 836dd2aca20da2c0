"""Top-k ranking metrics, computed once for every model and every evaluation.

Offline evaluation compares models by these numbers, so they must be computed the same way for all of
them: one implementation, vectorised over users, with the edge cases decided here rather than in each
caller. The decisions:

- ``recommended`` is (n_users, k) int64, best first; -1 marks an empty slot (a model that had fewer
  than k candidates). An empty slot is a miss, so precision@k keeps k in its denominator.
- ``relevant`` is a CSR (n_users, n_items) of held-out positives; every stored entry with a value > 0
  is relevant, explicit zeros are not.
- Users with no relevant item are excluded from every per-user metric: recall, NDCG and MAP are undefined
  for them, and counting them as 0 would make a metric depend on how many inactive users the split
  happened to contain. ``RankingMetrics.users`` and ``n_evaluated`` say who was scored.
- An item recommended twice to one user is an error, not a double hit: it would let a broken model
  score above a correct one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

EMPTY_SLOT = -1


@dataclass(frozen=True)
class RankingMetrics:
    """Per-user top-k metrics for the evaluated users (those with at least one relevant item).

    Every per-user array is aligned with ``users`` (row indices into the inputs). ``coverage`` is over
    all rows of ``recommended``, evaluated or not, because it describes the model's output, not the
    held-out data.
    """

    k: int
    users: NDArray[np.int64]
    precision: NDArray[np.float64]
    recall: NDArray[np.float64]
    ndcg: NDArray[np.float64]
    average_precision: NDArray[np.float64]
    hit: NDArray[np.float64]
    n_excluded: int
    coverage: float

    @property
    def n_evaluated(self) -> int:
        return len(self.users)

    def means(self) -> dict[str, float]:
        """Mean of each metric over evaluated users, keyed like ``precision@10``; NaN if nobody was."""
        k = self.k
        per_user = {
            f"precision@{k}": self.precision,
            f"recall@{k}": self.recall,
            f"ndcg@{k}": self.ndcg,
            f"map@{k}": self.average_precision,
            f"hit_rate@{k}": self.hit,
        }
        out = {
            name: float(values.mean()) if len(values) else float("nan") for name, values in per_user.items()
        }
        out[f"coverage@{k}"] = self.coverage
        return out


def _check_recommended(recommended: NDArray[np.integer], n_items: int) -> NDArray[np.int64]:
    rec = np.asarray(recommended)
    if rec.ndim != 2:
        raise ValueError(f"recommended must be 2-D (n_users, k), got shape {rec.shape}")
    if not np.issubdtype(rec.dtype, np.integer):
        raise ValueError(f"recommended must hold integer item indices, got dtype {rec.dtype}")
    rec = rec.astype(np.int64, copy=False)
    if rec.shape[1] == 0:
        raise ValueError("recommended has no columns; k must be at least 1")
    bad = (rec < EMPTY_SLOT) | (rec >= n_items)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(
            f"recommended[{row}, {col}] = {rec[row, col]} is neither an item index in [0, {n_items}) "
            "nor -1 padding"
        )
    ordered = np.sort(rec, axis=1)
    repeated = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] != EMPTY_SLOT)
    if repeated.any():
        row, col = (int(v) for v in np.argwhere(repeated)[0])
        raise ValueError(f"recommended row {row} lists item {ordered[row, col + 1]} more than once")
    return rec


def _positives(relevant: sp.csr_matrix) -> sp.csr_matrix:
    """Canonical 0/1 CSR of relevant pairs: duplicates summed first, then entries > 0 kept.

    Any scipy sparse format is accepted at run time (it is converted), CSR is what callers build.
    """
    if len(relevant.shape) != 2:
        raise ValueError("relevant must be a 2-D sparse matrix (n_users, n_items)")
    rel = sp.csr_matrix(relevant, copy=True).astype(np.float64)
    rel.sum_duplicates()
    rel.data = (rel.data > 0).astype(np.float64)
    rel.eliminate_zeros()
    return rel


def hit_matrix(recommended: NDArray[np.integer], relevant: sp.csr_matrix) -> NDArray[np.bool_]:
    """(n_users, k) booleans: whether each recommended slot holds one of that user's relevant items.

    Pairs are encoded as ``user * n_items + item`` and looked up in the sorted relevant pairs, which
    avoids densifying ``relevant`` (n_users x n_items can be far larger than memory).
    """
    rel = _positives(relevant)
    n_users, n_items = rel.shape
    rec = _check_recommended(recommended, n_items)
    if rec.shape[0] != n_users:
        raise ValueError(f"recommended has {rec.shape[0]} rows but relevant has {n_users} users")
    rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(rel.indptr))
    keys = np.sort(rows * n_items + rel.indices.astype(np.int64))
    if len(keys) == 0:
        return np.zeros(rec.shape, dtype=bool)
    rec_keys = np.arange(n_users, dtype=np.int64)[:, None] * n_items + rec
    found = np.searchsorted(keys, rec_keys)
    found = np.minimum(found, len(keys) - 1)
    return (keys[found] == rec_keys) & (rec != EMPTY_SLOT)


def catalog_coverage(recommended: NDArray[np.integer], n_items: int) -> float:
    """Share of the catalog that appears in at least one recommendation list (padding ignored)."""
    if n_items <= 0:
        raise ValueError(f"n_items must be positive, got {n_items}")
    rec = _check_recommended(recommended, n_items)
    shown = np.unique(rec[rec != EMPTY_SLOT])
    return len(shown) / n_items


def ranking_metrics(recommended: NDArray[np.integer], relevant: sp.csr_matrix) -> RankingMetrics:
    """Precision, recall, NDCG, MAP and hit rate at k = recommended.shape[1], per evaluated user.

    precision@k = hits / k;  recall@k = hits / |rel|;  hit@k = 1 if any hit.
    NDCG@k: binary gains, DCG = sum over hit positions i (1-based) of 1 / log2(i + 1), divided by the
    DCG of a ranking with min(|rel|, k) hits at the top.
    AP@k: sum over hit positions i of precision@i, divided by min(|rel|, k), so a list that puts every
    reachable relevant item first scores 1 even when |rel| > k.
    """
    hits = hit_matrix(recommended, relevant)
    n_users, k = hits.shape
    rel = _positives(relevant)
    n_relevant = np.diff(rel.indptr).astype(np.int64)
    evaluated = np.flatnonzero(n_relevant > 0)
    hits = hits[evaluated].astype(np.float64)
    n_rel = n_relevant[evaluated].astype(np.float64)

    n_hits = hits.sum(axis=1)
    positions = np.arange(1, k + 1, dtype=np.float64)
    discount = 1.0 / np.log2(positions + 1.0)
    ideal_hits = np.minimum(n_rel, k).astype(np.int64)
    ideal_dcg = np.concatenate([[0.0], np.cumsum(discount)])[ideal_hits]
    precision_at_i = np.cumsum(hits, axis=1) / positions

    return RankingMetrics(
        k=k,
        users=evaluated.astype(np.int64),
        precision=n_hits / k,
        recall=n_hits / n_rel,
        ndcg=(hits @ discount) / ideal_dcg,
        average_precision=(precision_at_i * hits).sum(axis=1) / np.minimum(n_rel, k),
        hit=(n_hits > 0).astype(np.float64),
        n_excluded=n_users - len(evaluated),
        coverage=catalog_coverage(recommended, rel.shape[1]),
    )
