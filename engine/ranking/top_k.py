"""Top-k selection with exclusions, shared by every model so that filtering behaves the same everywhere."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray


def top_k(
    scores: NDArray[np.floating],
    k: int,
    *,
    exclude: sp.csr_matrix | None = None,
    item_mask: NDArray[np.bool_] | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """The k best items per row of ``scores`` (n_users, n_items), best first.

    ``exclude`` (n_users, n_items, sparse) removes per-user items such as those already bought;
    ``item_mask`` (n_items,) keeps only the items where it is True. When fewer than k items remain,
    the tail of a row is padded with index -1 and score -inf; callers backfill from there.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    s = np.array(scores, dtype=np.float32, copy=True)
    if s.ndim != 2:
        raise ValueError("scores must be a 2-D array (users x items)")
    n_users, n_items = s.shape
    if item_mask is not None:
        s[:, ~np.asarray(item_mask, dtype=bool)] = -np.inf
    if exclude is not None:
        if exclude.shape != s.shape:
            raise ValueError(f"exclude has shape {exclude.shape}, scores {s.shape}")
        coo = exclude.tocoo()
        s[coo.row, coo.col] = -np.inf
    k_eff = min(k, n_items)
    if k_eff < n_items:
        part = np.argpartition(-s, k_eff - 1, axis=1)[:, :k_eff]
    else:
        part = np.tile(np.arange(n_items), (n_users, 1))
    part_scores = np.take_along_axis(s, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    ids = np.take_along_axis(part, order, axis=1).astype(np.int64)
    top = np.take_along_axis(part_scores, order, axis=1)
    ids[~np.isfinite(top)] = -1
    if k_eff < k:
        ids = np.pad(ids, ((0, 0), (0, k - k_eff)), constant_values=-1)
        top = np.pad(top, ((0, 0), (0, k - k_eff)), constant_values=-np.inf)
    return ids, top.astype(np.float32)
