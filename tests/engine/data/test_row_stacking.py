"""Row stacking that lets each block go as it copies it: the same matrix ``sp.vstack`` gives."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.data.row_stacking import stack_rows


@st.composite
def blocks(draw: st.DrawFn) -> tuple[list[sp.csr_matrix], int]:
    n_columns = draw(st.integers(1, 12))
    parts = []
    for seed in draw(st.lists(st.integers(0, 2**16), min_size=1, max_size=6)):
        rows = draw(st.integers(0, 9))
        density = draw(st.sampled_from([0.0, 0.2, 0.7]))
        parts.append(
            sp.random(rows, n_columns, density=density, format="csr", random_state=seed, dtype=np.float32)
        )
    return parts, n_columns


@settings(max_examples=60, deadline=None)
@given(blocks())
def test_stacked_rows_equal_vstack_and_the_blocks_are_released(
    drawn: tuple[list[sp.csr_matrix], int],
) -> None:
    parts, n_columns = drawn
    expected = sp.vstack(parts, format="csr")
    stacked = stack_rows(parts, n_columns, np.float32)
    assert parts == []  # each block was let go once copied
    assert stacked.shape == expected.shape and stacked.dtype == np.float32
    assert np.array_equal(stacked.toarray(), expected.toarray())
    assert np.array_equal(stacked.indptr, expected.indptr)


def test_no_blocks_is_an_empty_matrix_of_the_given_width() -> None:
    stacked = stack_rows([], 4, np.float32)
    assert stacked.shape == (0, 4) and stacked.nnz == 0
