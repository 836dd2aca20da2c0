"""Segment helpers against naive loops over groups, empty groups included."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engine.personas.inference.segments import sum_segments

VALUES = st.floats(-100, 100, allow_nan=False, width=32)


INDPTR = st.lists(st.integers(0, 4), max_size=8).map(
    lambda lengths: np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
)  # groups of 0..4 events, empty ones included; no groups at all too


@st.composite
def segmented(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """(rows x events) values and an indptr over them."""
    indptr = draw(INDPTR)
    rows = draw(st.integers(1, 3))
    values = draw(arrays(np.float64, (rows, int(indptr[-1])), elements=VALUES))
    return values, indptr


def naive_sum_segments(values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    out = np.zeros((values.shape[0], indptr.size - 1))
    for r in range(values.shape[0]):
        for g in range(indptr.size - 1):
            for e in range(indptr[g], indptr[g + 1]):
                out[r, g] += values[r, e]
    return out


@settings(max_examples=40, deadline=None)
@given(segmented())
def test_sum_segments_matches_a_loop_over_groups(case: tuple[np.ndarray, np.ndarray]) -> None:
    values, indptr = case
    got = sum_segments(values, indptr)
    assert got.shape == (values.shape[0], indptr.size - 1)
    np.testing.assert_allclose(got, naive_sum_segments(values, indptr), atol=1e-9)


def test_sum_segments_by_hand_with_empty_groups_first_middle_and_last() -> None:
    values = np.array([[1.0, 2.0, 4.0], [10.0, 20.0, 40.0]])
    indptr = np.array([0, 0, 2, 2, 3, 3])
    expected = [[0.0, 3.0, 0.0, 4.0, 0.0], [0.0, 30.0, 0.0, 40.0, 0.0]]
    assert sum_segments(values, indptr).tolist() == expected
    assert sum_segments(np.zeros((2, 0)), np.array([0, 0, 0])).tolist() == [[0.0, 0.0], [0.0, 0.0]]
