"""ALS with MLlib's objective on one machine: each half-step solves MLlib's normal equations, the fit
is reproducible, and the ``als`` model carries the penalty form through fit, save and load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.models.implicit_factors import ImplicitALSModel
from engine.models.interaction_weighted_als import InteractionWeightedALS
from tests.engine.models.checkerboard import SMALL_CONFIGS, Checkerboard


def _interactions(seed: int, users: int = 40, items: int = 25, density: float = 0.15) -> sp.csr_matrix:
    matrix = sp.random(users, items, density=density, random_state=seed, format="csr", dtype=np.float32)
    matrix.data = (0.7 + 2.3 * matrix.data).astype(np.float32)  # the engine's confidences: 0.7 to 3
    return matrix


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), regularization=st.floats(0.01, 2.0), alpha=st.floats(0.5, 5.0))
def test_the_last_half_step_solves_mllibs_normal_equations(
    seed: int, regularization: float, alpha: float
) -> None:
    """With enough CG steps (more than the factors) the items' half-step is the exact solution of
    (X'X + sum_u (c_ui - 1) x_u x_u' + lambda n_i I) y_i = sum_u c_ui x_u, c = 1 + alpha r: MLlib's
    implicit ALS with its per-interaction penalty, computed here densely."""
    ratings = _interactions(seed)
    fit = InteractionWeightedALS(5, regularization, alpha, iterations=3, random_state=seed, cg_steps=40)
    fit.fit(ratings)
    assert fit.user_factors is not None and fit.item_factors is not None
    x = fit.user_factors.astype(np.float64)
    by_item = ratings.T.tocsr()
    for item in range(by_item.shape[0]):
        users = by_item.indices[by_item.indptr[item] : by_item.indptr[item + 1]]
        confidence = 1.0 + alpha * by_item.data[by_item.indptr[item] : by_item.indptr[item + 1]]
        system = x.T @ x + (x[users].T * (confidence - 1.0)) @ x[users]
        system += regularization * users.size * np.eye(5)
        expected = np.linalg.solve(system, x[users].T @ confidence)
        np.testing.assert_allclose(fit.item_factors[item], expected, rtol=2e-3, atol=2e-4)


def test_the_same_seed_gives_the_same_factors() -> None:
    ratings = _interactions(7)
    first, second = (InteractionWeightedALS(6, 0.3, 2.0, iterations=5, random_state=11) for _ in range(2))
    first.fit(ratings)
    second.fit(ratings)
    assert first.user_factors is not None and second.user_factors is not None
    np.testing.assert_array_equal(first.user_factors, second.user_factors)


def test_rows_without_interactions_get_zero_vectors_even_over_a_rank_deficient_side() -> None:
    """Two users and 64 factors, and items no user touched: each such item row's system is the users'
    Gram matrix alone (rank 2, no penalty). A CG on it diverged to NaN in a walkthrough on two training
    customers; its least-norm solution, 0, is what the row gets, and the rest stays finite."""
    rng = np.random.default_rng(5)
    dense = np.zeros((2, 300), dtype=np.float32)
    dense[0, rng.choice(300, 90, replace=False)] = 1.0
    dense[1, rng.choice(300, 110, replace=False)] = 3.0
    ratings = sp.csr_matrix(dense)
    fit = InteractionWeightedALS(64, 0.2, 2.0, iterations=15, random_state=3)
    fit.fit(ratings)
    assert fit.user_factors is not None and fit.item_factors is not None
    assert np.isfinite(fit.user_factors).all() and np.isfinite(fit.item_factors).all()
    untouched = np.flatnonzero(ratings.getnnz(axis=0) == 0)
    assert untouched.size > 0 and not fit.item_factors[untouched].any()


def test_an_unknown_penalty_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="penalty must be one of constant, per_interaction, got 'ridge'"):
        ImplicitALSModel(penalty="ridge")


def test_the_als_model_fits_saves_and_loads_with_mllibs_penalty(
    checkerboard: Checkerboard, tmp_path: Path
) -> None:
    model = ImplicitALSModel(**{**SMALL_CONFIGS["als"], "regularization": 0.05, "penalty": "per_interaction"})
    model.fit(checkerboard.data)
    model.save(tmp_path)
    loaded = ImplicitALSModel.load(tmp_path)
    assert loaded.penalty == "per_interaction" and loaded.get_config() == model.get_config()
    users = checkerboard.batch(list(checkerboard.eval_users))
    seen = checkerboard.data.interactions[checkerboard.eval_users]
    ids, _ = model.recommend(users, 5, exclude=seen)
    np.testing.assert_array_equal(loaded.recommend(users, 5, exclude=seen)[0], ids)
    # as every model must (test_recommender_contract): the held-out anchor near the top
    assert (ids == checkerboard.held_out[:, None]).any(axis=1).mean() >= 0.9
