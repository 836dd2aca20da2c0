"""Sums over contiguous groups of events (a customer's, or a context's, events).

Inference keeps events sorted by customer with a CSR-style ``indptr``; this turns per-event
quantities into per-customer ones without a Python loop over customers.
"""

from __future__ import annotations

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
