"""Persona weights fitted on a validation split: per level, never worse there than plain CF."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engine.models.implicit_factors import ImplicitFactorsModel
from engine.models.persona_prior import BLEND_GRID
from engine.models.registry import create_model
from training.config import load_config
from training.evaluation import evaluate_models
from training.persona_weights import HALF_LIFE_GRID, fit_persona_weights, fits_persona_weights
from training.prepared_data import PreparedData, evaluation_segments, prepare
from training.synthetic_shop import ShopConfig, generate_shop
from training.tune_job import validation_data


@pytest.fixture(scope="module")
def validation(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    shop = tmp_path_factory.mktemp("shop")
    generate_shop(shop, ShopConfig(customers=300, items=150, events=8_000, seed=5))
    config_file = tmp_path_factory.mktemp("config") / "small.toml"
    config_file.write_text(
        f'[data]\npath = "{shop}"\n[split]\ntest_days = 28\n[models.als]\n', encoding="utf-8"
    )
    config = load_config(config_file)
    prepared = prepare(config)
    return validation_data(config, prepared.shop, prepared.split)


def test_fitted_weights_never_score_below_plain_cf_on_the_validation_split(validation: PreparedData) -> None:
    settings = {"factors": 8, "iterations": 5, "num_threads": 1, "random_state": 3}
    fitted = fit_persona_weights("als", settings, validation, 10)
    assert len(fitted["blend_weights"]) == 3 and len(fitted["prior_weights"]) == 4
    assert set(fitted["blend_weights"]) <= set(BLEND_GRID)
    warm = [s for s in evaluation_segments(validation) if s.name == "all"]
    conditioned = create_model("als", **fitted)
    plain = create_model("als", **{**settings, "persona_blend": 0.0})
    conditioned.fit(validation.training_set)
    plain.fit(validation.training_set)
    scores = {
        r.model: r.metrics["ndcg"] for r in evaluate_models({"on": conditioned, "off": plain}, warm, 10)
    }
    assert scores["on"] >= scores["off"] - 1e-12
    assert isinstance(conditioned, ImplicitFactorsModel)


def test_only_the_implicit_factor_models_get_fitted_weights(validation: PreparedData) -> None:
    assert fits_persona_weights("als") and fits_persona_weights("bpr")
    assert not fits_persona_weights("lightfm_hybrid")
    settings = {"no_components": 4, "epochs": 1}
    assert fit_persona_weights("lightfm_hybrid", settings, validation, 10) == settings
    assert np.isfinite(validation.training_set.user_mix).all()


def test_parameters_other_than_the_weights_are_kept(validation: PreparedData) -> None:
    settings = {"factors": 8, "iterations": 5, "num_threads": 1, "random_state": 3, "alpha": 3.0}
    fitted = fit_persona_weights("als", settings, validation, 10)
    assert {k: fitted[k] for k in settings} == settings


def test_the_recency_half_life_comes_from_the_grid_and_only_with_ages_and_a_prior(
    validation: PreparedData,
) -> None:
    settings = {"factors": 8, "iterations": 5, "num_threads": 1, "random_state": 3}
    assert validation.training_set.interaction_age_days is not None  # training builds them
    fitted = fit_persona_weights("als", settings, validation, 10)
    assert fitted["prior_half_life_days"] in HALF_LIFE_GRID
    if not any(fitted["prior_weights"]):
        assert fitted["prior_half_life_days"] is None
    # without ages only all-time counts can be tried
    ageless = dataclasses.replace(
        validation, training_set=dataclasses.replace(validation.training_set, interaction_age_days=None)
    )
    assert fit_persona_weights("als", settings, ageless, 10)["prior_half_life_days"] is None
