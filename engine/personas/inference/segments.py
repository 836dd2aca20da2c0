"""Sums and selections over contiguous groups of events (a customer's, or a context's, events).

Every step of inference works on (personas x events) arrays whose events are sorted by group, with a
CSR-style ``indptr``; these few helpers turn per-event quantities into per-group ones without a Python
loop over groups, and drop settled groups so later iterations cost less.
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray


def sum_segments(values: NDArray[np.float64], indptr: NDArray[np.int64]) -> NDArray[np.float64]:
    """(rows x segments) sums of each row of ``values`` over contiguous event segments (customers)."""
    lengths = np.diff(indptr)
    out = np.zeros((values.shape[0], lengths.size))
    filled = lengths > 0
    if filled.any():
        out[:, filled] = np.add.reduceat(values, indptr[:-1][filled], axis=1)
    return out


def sum_by(group: NDArray[np.int64], values: NDArray[np.float64], n_groups: int) -> NDArray[np.float64]:
    """(rows x groups) sums of each row of ``values`` (rows x events) over the events of each group."""
    out = np.zeros((values.shape[0], n_groups))
    if values.shape[0] and values.shape[1]:
        _add_by_group(np.ascontiguousarray(group, dtype=np.int64), np.ascontiguousarray(values), out)
    return out


@numba.njit(cache=True, nogil=True)
def _add_by_group(
    group: NDArray[np.int64], values: NDArray[np.float64], out: NDArray[np.float64]
) -> None:  # pragma: no cover - compiled; tested through ``sum_by``
    """One pass over the events for all rows (a bincount per row read every event once per row)."""
    for e in range(group.size):
        g = group[e]
        for r in range(values.shape[0]):
            out[r, g] += values[r, e]


def owners(indptr: NDArray[np.int64]) -> NDArray[np.int64]:
    """The group of each event of contiguous groups (``indptr`` as in CSR)."""
    return np.repeat(np.arange(indptr.size - 1), np.diff(indptr))


def select_groups(
    likelihoods: NDArray[np.float64],
    weight: NDArray[np.float64],
    indptr: NDArray[np.int64],
    keep: NDArray[np.bool_],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """The events of the groups where ``keep`` holds, still contiguous per group, and their indptr."""
    lengths = np.diff(indptr)
    events = np.repeat(keep, lengths)
    kept = lengths[keep]
    return (
        np.ascontiguousarray(likelihoods[:, events]),
        weight[events],
        np.concatenate([[0], np.cumsum(kept)]).astype(np.int64),
    )
