from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from engine.data.feature_space import FeatureSpace
from engine.models.base import ModelFitError, UserBatch
from engine.models.fitted_shape import FittedShape
from engine.models.lightfm_hybrid import (
    LightFMHybridModel,
    training_item_features,
    training_user_features,
    user_feature_weights,
)
from tests.engine.models.checkerboard import SMALL_CONFIGS, Checkerboard, training_set_from_dense


def test_feature_weights_keep_known_and_unknown_customers_on_one_scale() -> None:
    identity, personas, demo = user_feature_weights(
        user_index=np.array([3, -1, -1]),
        mix=np.array([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]]),
        demographics=sp.csr_matrix(np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])),
        persona_weight=2.0,
        demographic_weight=1.0,
    )
    dense_demo = demo.toarray()
    # Known: id 1, personas 2, demographics 1 (split over two attributes), out of 4.
    np.testing.assert_allclose(identity, [0.25, 0.0, 0.0])
    np.testing.assert_allclose(personas[0], [0.25, 0.25])
    np.testing.assert_allclose(dense_demo[0], [0.125, 0.125, 0.0])
    # Unknown with demographics: personas 2, demographics 1, out of 3; without: personas only.
    np.testing.assert_allclose(personas[1], [2 / 3, 0.0])
    np.testing.assert_allclose(dense_demo[1], [0.0, 0.0, 1 / 3])
    np.testing.assert_allclose(personas[2], [0.0, 1.0])
    totals = identity + personas.sum(axis=1) + dense_demo.sum(axis=1)
    np.testing.assert_allclose(totals, 1.0)


def test_item_rows_split_weight_between_identity_and_attributes() -> None:
    data = training_set_from_dense(
        interactions=[[1.0, 0.0], [0.0, 1.0]],
        mix=[[1.0], [1.0]],
        item_features=[[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]],
    )
    rows = training_item_features(data, attribute_weight=0.5).toarray()
    # Item 0: id 1, attributes 0.5 shared by two, out of 1.5; item 1 has no attributes: id only.
    np.testing.assert_allclose(rows, [[2 / 3, 0.0, 1 / 6, 1 / 6, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]], rtol=1e-6)


def test_numpy_scores_match_lightfm_predictions(checkerboard: Checkerboard) -> None:
    data = checkerboard.data
    model = LightFMHybridModel(**SMALL_CONFIGS["lightfm_hybrid"])
    item_features = training_item_features(data, model.item_attribute_weight)
    estimator = model._train(data, item_features, show_progress=False)
    model._adopt(estimator, item_features, FittedShape.of(data))

    # Known customers plus one cold-start row (no id feature) appended to LightFM's user features.
    user_features = training_user_features(data, model.persona_weight, model.demographic_weight)
    cold_mix, cold_demo = np.array([[0.2, 0.3, 0.5]]), np.array([[0.0, 1.0, 1.0, 0.0]])
    _, cold_personas, cold_demo_weights = user_feature_weights(
        np.array([-1]), cold_mix, sp.csr_matrix(cold_demo), model.persona_weight, model.demographic_weight
    )
    cold_row = sp.hstack([sp.csr_matrix((1, data.n_users)), sp.csr_matrix(cold_personas), cold_demo_weights])
    all_features = sp.csr_matrix(sp.vstack([user_features, cold_row]), dtype=np.float32)

    users = [0, 1, 57, data.n_users]
    expected = np.stack(
        [
            estimator.predict(
                np.full(data.n_items, user, dtype=np.int32),
                np.arange(data.n_items, dtype=np.int32),
                item_features=item_features,
                user_features=all_features,
            )
            for user in users
        ]
    )
    batch = checkerboard.batch([0, 1, 57])
    ours = np.vstack([model.score(batch), model.score(checkerboard.cold_batch(cold_mix, cold_demo))])
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


def test_items_nobody_bought_still_score_through_their_attributes(checkerboard: Checkerboard) -> None:
    data = checkerboard.data
    interactions = data.interactions.tolil()
    interactions[:, 9] = 0  # item 9 (block 0) loses every interaction but keeps its category
    unbought = replace(data, interactions=sp.csr_matrix(interactions))
    model = LightFMHybridModel(**SMALL_CONFIGS["lightfm_hybrid"])
    model.fit(unbought)
    scores = model.score(checkerboard.cold_batch(np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]])))
    # The block-0 persona prefers the unbought block-0 item to the other block's items.
    assert scores[0, 9] > scores[0, checkerboard.block(1)].max()
    assert scores[1, 9] < scores[1, checkerboard.block(1)].min()


def test_progress_is_shown_per_epoch_when_asked(
    checkerboard: Checkerboard, capsys: pytest.CaptureFixture[str]
) -> None:
    config = {**SMALL_CONFIGS["lightfm_hybrid"], "epochs": 2}
    LightFMHybridModel(**config).fit(checkerboard.data, show_progress=True)
    assert "lightfm_hybrid: epochs" in capsys.readouterr().out
    LightFMHybridModel(**config).fit(checkerboard.data)
    assert capsys.readouterr().out == ""


def test_diverged_embeddings_raise_model_fit_error(checkerboard: Checkerboard) -> None:
    data = checkerboard.data
    n_user_features = data.n_users + len(data.persona_names) + len(data.demographic_feature_names)
    n_item_features = data.n_items + len(data.item_feature_names)
    diverged = SimpleNamespace(
        user_embeddings=np.full((n_user_features, 4), np.nan, dtype=np.float32),
        user_biases=np.zeros(n_user_features, dtype=np.float32),
        item_embeddings=np.zeros((n_item_features, 4), dtype=np.float32),
        item_biases=np.zeros(n_item_features, dtype=np.float32),
    )
    model = LightFMHybridModel(no_components=4)
    with pytest.raises(ModelFitError, match=r"lightfm_hybrid.*user_embeddings"):
        model._adopt(diverged, training_item_features(data, 1.0), FittedShape.of(data))


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"loss": "hinge"}, "loss"),
        ({"no_components": 0}, "no_components"),
        ({"epochs": 2.5}, "epochs"),
        ({"num_threads": 0}, "num_threads"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"persona_weight": -1.0}, "persona_weight"),
        ({"item_alpha": float("nan")}, "item_alpha"),
    ],
)
def test_invalid_hyperparameters_are_named(params: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        LightFMHybridModel(**params)  # type: ignore[arg-type]


def test_a_cold_start_recommendation_follows_an_informative_extra_numeric_feature(
    checkerboard: Checkerboard,
) -> None:
    """Only household size tells the groups apart here (big households shop block 0): a newcomer with
    an even mix is steered by it, through the feature space's standardized above/below-mean features."""
    data = checkerboard.data
    rng = np.random.default_rng(4)
    sizes = np.where(checkerboard.group == 0, 5.0, 1.0) + rng.normal(0, 0.5, data.n_users)
    customers = pl.DataFrame({"feature__household_size": sizes})
    space = FeatureSpace.from_frame(customers, ["feature__household_size"])
    even = np.tile([0.45, 0.45, 0.1], (data.n_users, 1))  # mixes that say nothing about the group
    with_size = replace(
        data,
        user_mix=even,
        user_demographics=space.encode(customers, ["feature__household_size"]),
        demographic_feature_names=space.names,
    )
    model = LightFMHybridModel(**{**SMALL_CONFIGS["lightfm_hybrid"], "demographic_weight": 2.0})
    model.fit(with_size)
    newcomers = space.encode(
        pl.DataFrame({"feature__household_size": [6.0, 1.0]}), ["feature__household_size"]
    )
    scores = model.score(
        UserBatch(np.array([-1, -1]), np.array([[0.45, 0.45, 0.1]] * 2), sp.csr_matrix(newcomers))
    )
    big, single = scores[:, checkerboard.block(0)].mean(axis=1) - scores[:, checkerboard.block(1)].mean(
        axis=1
    )
    assert big > 0 > single
