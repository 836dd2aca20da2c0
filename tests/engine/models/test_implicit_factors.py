from __future__ import annotations

import dataclasses
import warnings
from types import SimpleNamespace

import implicit.utils
import numpy as np
import pytest
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from engine.models.base import ModelFitError
from engine.models.fitted_shape import FittedShape, UserBatchError
from engine.models.implicit_factors import (
    ImplicitALSModel,
    ImplicitBPRModel,
    ImplicitFactorsModel,
    membership_weighted_means,
)
from tests.engine.models.checkerboard import GROUP_MIX, SMALL_CONFIGS, Checkerboard, training_set_from_dense

MODELS: dict[str, type[ImplicitFactorsModel]] = {"als": ImplicitALSModel, "bpr": ImplicitBPRModel}


def make(kind: str, **overrides: float | str) -> ImplicitFactorsModel:
    return MODELS[kind](**{**SMALL_CONFIGS[kind], **overrides})


def test_membership_weighted_means_fall_back_for_empty_columns() -> None:
    weights = np.array([[1.0, 0.0], [3.0, 0.0]])
    vectors = np.array([[4.0, 0.0], [0.0, 8.0]], dtype=np.float32)
    means = membership_weighted_means(weights, vectors, fallback=np.array([-1.0, -1.0]))
    np.testing.assert_allclose(means, [[1.0, 6.0], [-1.0, -1.0]])


@pytest.mark.parametrize(
    ("kind", "settings"),
    [("als", {"penalty": "constant"}), ("als", {"penalty": "per_interaction"}), ("bpr", {})],
)
def test_without_blending_scores_are_the_estimators_own(
    kind: str, settings: dict[str, str], checkerboard: Checkerboard
) -> None:
    """With no persona weight a known customer's ranking is the fitted estimator's: implicit's own
    ``recommend``, or for the per-interaction ALS (which has none) its factors' dot products."""
    data = checkerboard.data
    model = make(kind, persona_blend=0.0, **settings)
    estimator = model._train(data, show_progress=False)
    model._adopt(estimator, data, FittedShape.of(data))
    users = np.array([0, 3, 64])
    scores = model.score(checkerboard.batch(list(users)))
    for row, user in enumerate(users):
        if hasattr(estimator, "recommend"):
            ids, _ = estimator.recommend(user, data.interactions[user], N=5, filter_already_liked_items=False)
        else:
            ids = np.argsort(-(estimator.item_factors @ estimator.user_factors[user]))[:5]
        np.testing.assert_array_equal(np.argsort(-scores[row])[:5], ids)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_persona_vectors_are_membership_weighted_means_of_active_customers(kind: str) -> None:
    data = training_set_from_dense(
        interactions=[[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0]],
        mix=[[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [1.0, 0.0]],
        demographics=[[1, 0], [1, 0], [0, 1], [1, 0]],
    )
    model = make(kind, factors=2)
    model.fit(data)
    state = model._arrays()
    users = state["user_factors"][:3]  # customer 3 has no interactions and is left out
    np.testing.assert_allclose(
        state["persona_factors"],
        [(users[0] + 0.5 * users[1]) / 1.5, (0.5 * users[1] + users[2]) / 1.5],
        rtol=1e-5,
    )
    np.testing.assert_allclose(state["demographic_factors"], [users[:2].mean(axis=0), users[2]], rtol=1e-5)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_full_blend_scores_a_known_customer_as_their_mix(kind: str, checkerboard: Checkerboard) -> None:
    model = make(kind, persona_blend=1.0)
    model.fit(checkerboard.data)
    known = model.score(checkerboard.batch([0, 1]))
    cold = model.score(checkerboard.cold_batch(GROUP_MIX[checkerboard.group[[0, 1]]]))
    np.testing.assert_allclose(known, cold, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_cold_customers_blend_mix_and_demographics(kind: str, checkerboard: Checkerboard) -> None:
    mix = GROUP_MIX[:1]
    south_and_young = np.array([[0.0, 1.0, 1.0, 0.0]])
    ignoring = make(kind, demographic_weight=0.0)
    ignoring.fit(checkerboard.data)
    np.testing.assert_array_equal(
        ignoring.score(checkerboard.cold_batch(mix, south_and_young)),
        ignoring.score(checkerboard.cold_batch(mix)),
    )
    only_demographics = make(kind, demographic_weight=1.0)
    only_demographics.fit(checkerboard.data)
    state = only_demographics._arrays()
    expected = state["demographic_factors"][[1, 2]].mean(axis=0) @ state["item_factors"].T
    np.testing.assert_allclose(
        only_demographics.score(checkerboard.cold_batch(mix, south_and_young))[0],
        expected,
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_another_mix_replaces_a_known_customers_persona(kind: str, checkerboard: Checkerboard) -> None:
    model = make(kind, persona_blend=0.3)
    model.fit(checkerboard.data)
    state = model._arrays()
    users = [0, 1]
    own_mix = GROUP_MIX[checkerboard.group[users]]
    other_mix = GROUP_MIX[1 - checkerboard.group[users]]
    # Under their own mix, a base_mix changes nothing.
    plain = model.user_vectors(checkerboard.batch(users))
    same = checkerboard.batch(users)
    np.testing.assert_allclose(
        model.user_vectors(dataclasses.replace(same, base_mix=same.mix)), plain, rtol=1e-6
    )
    # Under another mix, the own vector trades persona for persona before the blend.
    moved = model.user_vectors(dataclasses.replace(checkerboard.batch(users, other_mix), base_mix=own_mix))
    own, personas = state["user_factors"][users], state["persona_factors"]
    expected = 0.7 * (own + (other_mix - own_mix) @ personas) + 0.3 * (other_mix @ personas)
    np.testing.assert_allclose(moved, expected, rtol=1e-5, atol=1e-6)
    # ...which moves the customer further toward the other group's block than blending alone.
    blended = model.user_vectors(checkerboard.batch(users, other_mix))
    for row, user in enumerate(users):
        other_block = checkerboard.block(1 - checkerboard.group[user])
        items = state["item_factors"][other_block]
        assert (items @ moved[row]).mean() > (items @ blended[row]).mean()


def test_a_base_mix_off_the_simplex_is_refused_naming_it(checkerboard: Checkerboard) -> None:
    model = make("als")
    model.fit(checkerboard.data)
    batch = checkerboard.batch([0])
    with pytest.raises(UserBatchError, match="base_mix row 0") as error:
        model.score(dataclasses.replace(batch, base_mix=np.array([[0.5, 0.2, 0.1]])))
    assert error.value.field == "base_mix"
    with pytest.raises(ValueError, match="base_mix has shape"):
        dataclasses.replace(batch, base_mix=np.array([1.0]))


def test_bpr_blending_keeps_the_item_bias_column(checkerboard: Checkerboard) -> None:
    model = make("bpr")
    model.fit(checkerboard.data)
    assert model.factor_width == SMALL_CONFIGS["bpr"]["factors"] + 1
    users = checkerboard.batch([0, 1, -1])
    cold = checkerboard.cold_batch(GROUP_MIX, np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    for batch in (users, cold):
        np.testing.assert_allclose(model.user_vectors(batch)[:, -1], 1.0, rtol=1e-6)


def test_fitting_limits_blas_threads(checkerboard: Checkerboard, monkeypatch: pytest.MonkeyPatch) -> None:
    # ALS checks the BLAS thread count when it is built (BPR does not) and warns once per process.
    monkeypatch.setattr(implicit.utils, "_checked_blas_config", False)
    with threadpool_limits(2, "blas"), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        make("als", iterations=1).fit(checkerboard.data)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_diverged_factors_raise_model_fit_error(kind: str, checkerboard: Checkerboard) -> None:
    data = checkerboard.data
    model = make(kind)
    width = model.factor_width
    diverged = SimpleNamespace(
        user_factors=np.ones((data.n_users, width), dtype=np.float32),
        item_factors=np.full((data.n_items, width), np.inf, dtype=np.float32),
    )
    with pytest.raises(ModelFitError, match=rf"{kind} model.*item_factors"):
        model._adopt(diverged, data, FittedShape.of(data))


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_factors_of_the_wrong_orientation_are_refused(kind: str, checkerboard: Checkerboard) -> None:
    data = checkerboard.data
    model = make(kind)
    width = model.factor_width
    transposed = SimpleNamespace(
        user_factors=np.ones((data.n_items, width), dtype=np.float32),
        item_factors=np.ones((data.n_users, width), dtype=np.float32),
    )
    with pytest.raises(
        ModelFitError, match=rf"{kind} model: implicit returned user factors \({data.n_items}, "
    ):
        model._adopt(transposed, data, FittedShape.of(data))


@pytest.mark.parametrize(
    ("kind", "params", "field"),
    [
        ("als", {"factors": 0}, "factors"),
        ("als", {"alpha": 0.0}, "alpha"),
        ("als", {"regularization": -0.1}, "regularization"),
        ("als", {"persona_blend": 1.5}, "persona_blend"),
        ("als", {"num_threads": -1}, "num_threads"),
        ("bpr", {"iterations": 0}, "iterations"),
        ("bpr", {"learning_rate": float("nan")}, "learning_rate"),
        ("bpr", {"demographic_weight": -0.2}, "demographic_weight"),
    ],
)
def test_invalid_hyperparameters_are_named(kind: str, params: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        MODELS[kind](**params)  # type: ignore[arg-type]
