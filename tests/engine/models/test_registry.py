from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.models.base import MODEL_MANIFEST, ModelFormatError
from engine.models.implicit_factors import ImplicitALSModel
from engine.models.popularity import PersonaPopularityModel, PopularityModel
from engine.models.registry import (
    DEFAULT_KINDS,
    MODEL_KINDS,
    UnknownModelKindError,
    create_model,
    load_model,
    model_parameters,
)
from tests.engine.models.checkerboard import Checkerboard
from training.config import TrainConfig


def test_kinds_are_registered_under_their_own_names() -> None:
    assert set(MODEL_KINDS) == {
        "popularity",
        "persona_popularity",
        "lightfm_hybrid",
        "als",
        "bpr",
        "linear_autoencoder",
        "blend",
    }
    assert all(model.kind == kind for kind, model in MODEL_KINDS.items())
    # a config without [models] trains every kind that fits any catalogue
    assert set(DEFAULT_KINDS) == set(MODEL_KINDS) - {"linear_autoencoder", "blend"}
    assert set(TrainConfig().models) == set(DEFAULT_KINDS)


def test_create_model_passes_parameters() -> None:
    model = create_model("als", factors=12, persona_blend=0.5)
    assert isinstance(model, ImplicitALSModel)
    assert model.factors == 12 and model.persona_blend == 0.5
    assert "persona_blend" in model_parameters("bpr")
    assert model_parameters("popularity") == ()


def test_create_model_rejects_unknown_kinds_and_parameters() -> None:
    with pytest.raises(UnknownModelKindError, match=r"'neural'.*known kinds: popularity"):
        create_model("neural")
    with pytest.raises(ValueError, match=r"'als' has no parameter 'factor'.*factors"):
        create_model("als", factor=12)
    with pytest.raises(ValueError, match=r"'popularity' has no parameter 'prior_strength'.*\(none\)"):
        create_model("popularity", prior_strength=3.0)


def test_load_model_dispatches_on_the_saved_kind(checkerboard: Checkerboard, tmp_path: Path) -> None:
    model = PersonaPopularityModel()
    model.fit(checkerboard.data)
    model.save(tmp_path)
    assert isinstance(load_model(tmp_path), PersonaPopularityModel)
    with pytest.raises(ModelFormatError, match="persona_popularity"):
        PopularityModel.load(tmp_path)


def test_load_model_names_an_unknown_kind(checkerboard: Checkerboard, tmp_path: Path) -> None:
    model = PopularityModel()
    model.fit(checkerboard.data)
    model.save(tmp_path)
    manifest_path = tmp_path / MODEL_MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "kind": "deep_persona_net"}))
    with pytest.raises(ModelFormatError, match="'deep_persona_net'"):
        load_model(tmp_path)


def test_load_model_needs_a_manifest(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match=MODEL_MANIFEST):
        load_model(tmp_path)
