from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.models.base import ModelFitError, ModelFormatError, UserBatch
from engine.models.fitted_shape import FittedShape, UserBatchError, expect_array
from tests.engine.models.checkerboard import training_set_from_dense

SHAPE = FittedShape(n_users=5, n_items=7, n_personas=3, n_demographic_features=2)


def batch(index: list[int], mix: np.ndarray) -> UserBatch:
    return UserBatch(
        np.array(index, dtype=np.int64), mix, sp.csr_matrix(np.zeros((len(index), 2), dtype=np.float32))
    )


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(min_value=-3, max_value=7), min_size=1, max_size=8),
    st.data(),
)
def test_check_batch_accepts_exactly_the_valid_user_indices(index: list[int], draw: st.DataObject) -> None:
    weights = draw.draw(
        st.lists(
            st.lists(st.floats(min_value=0.01, max_value=1.0), min_size=3, max_size=3),
            min_size=len(index),
            max_size=len(index),
        )
    )
    mix = np.array(weights) / np.array(weights).sum(axis=1, keepdims=True)
    users = batch(index, mix)
    if all(-1 <= i < SHAPE.n_users for i in index):
        SHAPE.check_batch(users, "demo")
    else:
        first_bad = next(row for row, i in enumerate(index) if not -1 <= i < SHAPE.n_users)
        with pytest.raises(UserBatchError, match=rf"user_index {index[first_bad]} in row {first_bad}"):
            SHAPE.check_batch(users, "demo")


def test_mix_rows_off_the_simplex_are_named_by_row() -> None:
    mix = np.array([[1.0, 0.0, 0.0], [0.5, 0.4, 0.0]])
    with pytest.raises(UserBatchError, match=r"demo model: mix row 1 sums to 0.900000") as caught:
        SHAPE.check_batch(batch([0, 1], mix), "demo")
    assert caught.value.field == "mix"


def test_shape_round_trips_through_its_array() -> None:
    assert FittedShape.from_arrays({"shape": SHAPE.as_array()}, "demo") == SHAPE


@pytest.mark.parametrize(
    "arrays",
    [
        {},
        {"shape": np.array([5, 7, 3])},
        {"shape": np.array([5.0, 7.0, 3.0, 2.0])},
        {"shape": np.array([0, 7, 3, 2])},
    ],
)
def test_broken_shape_arrays_are_refused(arrays: dict[str, np.ndarray]) -> None:
    with pytest.raises(ModelFormatError, match="demo model"):
        FittedShape.from_arrays(arrays, "demo")


def test_expect_array_checks_presence_shape_and_finiteness() -> None:
    good = np.ones((2, 3))
    assert expect_array({"a": good}, "a", (2, 3), "demo").dtype == np.float32
    with pytest.raises(ModelFormatError, match="lack 'b'"):
        expect_array({"a": good}, "b", (2, 3), "demo")
    with pytest.raises(ModelFormatError, match=r"'a' has shape \(2, 3\), expected \(3, 2\)"):
        expect_array({"a": good}, "a", (3, 2), "demo")
    with pytest.raises(ModelFormatError, match="finite"):
        expect_array({"a": np.full((2, 3), np.nan)}, "a", (2, 3), "demo")


def test_training_sets_without_positive_interactions_are_refused() -> None:
    data = training_set_from_dense(interactions=[[0.0, 0.0], [0.0, 0.0]], mix=[[1.0], [1.0]])
    with pytest.raises(ModelFitError, match="demo model: training set has no positive interactions"):
        FittedShape.of(data).check_training_set(data, "demo")
