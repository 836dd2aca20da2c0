"""A blend of factor models: standardised member scores weighed as one inner product, checked settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from engine.models.model_blend import ModelBlend
from engine.models.persona_prior import persona_item_scores
from engine.models.registry import create_model
from tests.engine.models.checkerboard import SMALL_CONFIGS, Checkerboard
from training.config import ConfigError, load_config

ALS = {"kind": "als", **SMALL_CONFIGS["als"]}
AUTOENCODER = {"kind": "linear_autoencoder", **SMALL_CONFIGS["linear_autoencoder"]}


def test_scores_are_the_weighted_sum_of_each_members_scores_over_their_spread(
    checkerboard: Checkerboard,
) -> None:
    blend = ModelBlend(members=[ALS, AUTOENCODER], weights=[0.3, 0.7])
    blend.fit(checkerboard.data)
    users = checkerboard.batch([0, 5, 61, -1])
    expected = sum(
        weight * member.score(users) / member.score(users).std(axis=1, keepdims=True)
        for weight, member in zip(blend.weights, blend.members, strict=True)
    )
    np.testing.assert_allclose(blend.score(users), expected, rtol=1e-4, atol=1e-5)


def test_one_member_ranks_as_that_model_alone(checkerboard: Checkerboard) -> None:
    blend = ModelBlend(members=[AUTOENCODER], weights=[2.0])
    alone = create_model("linear_autoencoder", **SMALL_CONFIGS["linear_autoencoder"])
    blend.fit(checkerboard.data)
    alone.fit(checkerboard.data)
    users = checkerboard.batch(list(checkerboard.eval_users))
    seen = checkerboard.data.interactions[checkerboard.eval_users]
    np.testing.assert_array_equal(
        blend.recommend(users, 5, exclude=seen)[0], alone.recommend(users, 5, exclude=seen)[0]
    )


def test_the_ablation_turns_off_every_members_personas() -> None:
    ablated = ModelBlend.without_personas({"members": [ALS, AUTOENCODER], "weights": [0.5, 0.5]})
    assert [m["kind"] for m in ablated["members"]] == ["als", "linear_autoencoder"]
    assert all(m["persona_blend"] == 0.0 and m["demographic_weight"] == 0.0 for m in ablated["members"])
    assert ablated["weights"] == [0.5, 0.5]
    assert ModelBlend(**ablated).members[0].persona_blend == 0.0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"members": [{"kind": "lightfm_hybrid"}]}, r"members\[0\]: kind 'lightfm_hybrid' cannot be blended"),
        ({"members": [ALS, {"factors": 8}]}, r"members\[1\]: kind None cannot be blended"),
        (
            {"members": [ALS, {"kind": "bpr", "factorz": 8}]},
            r"members\[1\] \(bpr\): .*no parameter 'factorz'",
        ),
        ({"members": [ALS], "weights": [0.5, 0.5]}, "weights has 2 values for 1 members"),
        ({"members": [ALS, AUTOENCODER], "weights": [1.0, -1.0]}, "weights must be non-negative"),
        ({"members": []}, "at least one model"),
    ],
)
def test_settings_that_cannot_blend_are_refused_by_name(settings: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=message):
        ModelBlend(**settings)


def test_a_training_config_names_members_as_inline_tables(tmp_path: Path) -> None:
    config = tmp_path / "blend.toml"
    config.write_text(
        "[models.blend]\n"
        'members = [{kind = "als", factors = 16}, {kind = "bpr", factors = 8}]\n'
        "weights = [0.6, 0.4]\n"
    )
    loaded = load_config(config)
    assert loaded.models == {
        "blend": {
            "members": [{"kind": "als", "factors": 16}, {"kind": "bpr", "factors": 8}],
            "weights": [0.6, 0.4],
        }
    }
    config.write_text('[models.blend]\nmembers = [{kind = "popularity"}]\n')
    with pytest.raises(
        ConfigError, match=r"\[models.blend\] members\[0\]: kind 'popularity' cannot be blended"
    ):
        load_config(config)


def test_the_persona_prior_adds_each_levels_weight_times_the_mixs_persona_popularity(
    checkerboard: Checkerboard,
) -> None:
    plain = ModelBlend(members=[ALS, AUTOENCODER], weights=[0.5, 0.5])
    plain.fit(checkerboard.data)
    prior_weights = [0.4, 0.1, 0.2, 0.3]
    with_prior = plain.with_weights([0.5, 0.5], prior_weights)
    users = checkerboard.batch([0, 5, 61, -1])
    levels = with_prior.activity_levels_of(users)
    assert levels[-1] == 0 and (levels[:3] >= 1).all()
    added = np.asarray(prior_weights)[levels][:, None] * (users.mix @ with_prior.persona_item_scores.T)
    np.testing.assert_allclose(with_prior.score(users) - plain.score(users), added, rtol=1e-4, atol=1e-4)
    assert ModelBlend.without_personas(with_prior.get_config())["prior_weights"] is None


def test_a_recency_prior_is_kept_by_the_ablation_for_the_population_and_survives_save_and_load(
    checkerboard: Checkerboard, tmp_path: Path
) -> None:
    ages = sp.csr_matrix(checkerboard.data.interactions, dtype=np.float32, copy=True)
    ages.data = np.random.default_rng(0).uniform(0.0, 60.0, size=ages.nnz).astype(np.float32)
    data = dataclasses.replace(checkerboard.data, interaction_age_days=ages)
    settings = {
        "members": [ALS, AUTOENCODER],
        "weights": [0.5, 0.5],
        "prior_weights": [0.4, 0.1, 0.2, 0.3],
        "prior_half_life_days": 10.0,
    }
    ablated = ModelBlend.without_personas(settings)
    assert ablated["prior_weights"] == settings["prior_weights"] and ablated["prior_scope"] == "population"
    personas, population = ModelBlend(**settings), ModelBlend(**ablated)
    for model in (personas, population):
        model.fit(data)
    expected = persona_item_scores(
        data.interactions, np.ones((data.n_users, 1)), ages=ages, half_life_days=10.0
    )
    np.testing.assert_allclose(
        population.persona_item_scores, np.repeat(expected, data.user_mix.shape[1], axis=1), rtol=1e-6
    )
    assert not np.allclose(personas.persona_item_scores, population.persona_item_scores)
    # an all-time prior is the personas' alone: the ablation drops it
    assert ModelBlend.without_personas({**settings, "prior_half_life_days": None})["prior_weights"] is None
    personas.save(tmp_path / "blend")
    loaded = ModelBlend.load(tmp_path / "blend")
    assert (loaded.prior_half_life_days, loaded.prior_scope) == (10.0, "personas")
    batch = checkerboard.batch([0, 3, -1])
    np.testing.assert_array_equal(loaded.score(batch), personas.score(batch))
