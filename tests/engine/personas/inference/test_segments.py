"""Segment helpers against naive loops over groups, empty groups included."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engine.personas.inference.segments import owners, select_groups, sum_by, sum_segments

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


@settings(max_examples=40, deadline=None)
@given(INDPTR)
def test_owners_names_each_events_group(indptr: np.ndarray) -> None:
    expected = [g for g in range(indptr.size - 1) for _ in range(indptr[g], indptr[g + 1])]
    got = owners(indptr)
    assert got.tolist() == expected
    assert got.dtype.kind == "i"


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_sum_by_matches_a_loop_over_events(data: st.DataObject) -> None:
    n_groups = data.draw(st.integers(1, 5))
    n_events = data.draw(st.integers(0, 12))
    group = np.asarray(
        data.draw(st.lists(st.integers(0, n_groups - 1), min_size=n_events, max_size=n_events))
    )
    values = data.draw(arrays(np.float64, (data.draw(st.integers(1, 3)), n_events), elements=VALUES))
    expected = np.zeros((values.shape[0], n_groups))
    for r in range(values.shape[0]):
        for e, g in enumerate(group.tolist()):
            expected[r, g] += values[r, e]
    got = sum_by(group.astype(np.int64), values, n_groups)
    assert got.shape == expected.shape  # groups without events are there, as zeros
    np.testing.assert_allclose(got, expected, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(segmented(), st.data())
def test_select_groups_keeps_exactly_the_kept_groups_events_in_order(
    case: tuple[np.ndarray, np.ndarray], data: st.DataObject
) -> None:
    likelihoods, indptr = case
    n_groups = indptr.size - 1
    keep = np.asarray(data.draw(st.lists(st.booleans(), min_size=n_groups, max_size=n_groups)), dtype=bool)
    weight = np.arange(likelihoods.shape[1], dtype=np.float64) + 0.5
    kept_likelihoods, kept_weight, kept_indptr = select_groups(likelihoods, weight, indptr, keep)

    columns, new_indptr = [], [0]
    for g in range(n_groups):
        if keep[g]:
            columns += range(indptr[g], indptr[g + 1])
            new_indptr.append(len(columns))
    assert kept_indptr.tolist() == new_indptr
    assert kept_indptr.dtype == np.int64
    assert kept_weight.tolist() == weight[columns].tolist()
    assert kept_likelihoods.shape == (likelihoods.shape[0], len(columns))
    assert kept_likelihoods.tolist() == likelihoods[:, columns].tolist()
    assert kept_likelihoods.flags.c_contiguous
    # the kept groups' sums are the original groups' sums, column for column
    np.testing.assert_allclose(
        sum_segments(kept_likelihoods, kept_indptr), sum_segments(likelihoods, indptr)[:, keep], atol=1e-9
    )


def test_sum_by_with_no_rows_is_an_empty_table_of_groups() -> None:
    assert sum_by(np.array([0, 2], dtype=np.int64), np.zeros((0, 2)), 3).shape == (0, 3)
