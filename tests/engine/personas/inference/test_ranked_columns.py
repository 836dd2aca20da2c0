"""The strongest-columns selection of explanations against the stable sort it replaced."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.personas.inference.signals import ranked_columns


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 20),
    n_columns=st.integers(1, 12),
    k=st.integers(1, 4),
    top=st.integers(1, 5),
    ties=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_the_top_columns_are_those_of_the_stable_sort(
    n: int, n_columns: int, k: int, top: int, ties: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    # with ties, values from a handful of levels: equal contributions must keep column order
    contribution = (
        rng.integers(-2, 3, size=(n, n_columns, k)).astype(np.float64)
        if ties
        else rng.normal(size=(n, n_columns, k))
    )
    want = np.argsort(-contribution, axis=1, kind="stable")[:, :top, :].transpose(0, 2, 1)
    assert np.array_equal(ranked_columns(contribution, top), want)


def test_nan_contributions_rank_as_the_sort_ranks_them() -> None:
    contribution = np.array([[[1.0], [np.nan], [3.0], [2.0]]])
    assert ranked_columns(contribution, 3)[0, 0].tolist() == [2, 3, 0]
