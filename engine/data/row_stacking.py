"""Sparse row blocks stacked into one CSR matrix without holding the blocks and the result at once."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import DTypeLike, NDArray


def stack_rows(parts: list[sp.csr_matrix], n_columns: int, dtype: DTypeLike) -> sp.csr_matrix:
    """The rows of ``parts`` one under the other, values of ``dtype``; empties ``parts`` as it goes.

    ``sp.vstack`` holds every part and the result at once: twice the matrix at its end, which set the
    peak memory of persona inference on a million customers (its event features are encoded a chunk of
    customers at a time). Here the result's arrays are allocated untouched and each part is let go once
    it is copied, so the matrix exists about once.
    """
    n_rows = sum(part.shape[0] for part in parts)
    nnz = sum(part.nnz for part in parts)
    index_dtype = np.int32 if max(nnz, n_columns) < np.iinfo(np.int32).max else np.int64
    data = np.empty(nnz, dtype=dtype)
    indices: NDArray[np.integer[Any]] = np.empty(nnz, dtype=index_dtype)
    indptr: NDArray[np.integer[Any]] = np.zeros(n_rows + 1, dtype=index_dtype)
    row = at = 0
    while parts:
        part = parts.pop(0)
        rows, count = part.shape[0], part.nnz
        data[at : at + count] = part.data
        indices[at : at + count] = part.indices
        indptr[row + 1 : row + rows + 1] = part.indptr[1:] + at
        row, at = row + rows, at + count
    return sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_columns))
