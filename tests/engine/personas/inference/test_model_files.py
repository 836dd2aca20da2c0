"""The model's files: a saved and reloaded model infers the same, and broken files are named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.personas.inference.errors import PersonaModelFormatError
from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.inference.model import PersonaInferenceModel
from engine.personas.inference.model_files import FORMAT_VERSION
from tests.engine.personas.planted_shop import PERSONAS, PlantedShop


def test_save_and_load_give_identical_inference(
    tmp_path: Path, planted: PlantedShop, fitted: tuple[PersonaInferenceModel, InferredMixes]
) -> None:
    model, _ = fitted
    written = model.save(tmp_path / "personas")
    assert {p.suffix for p in written} == {".npy", ".json"}
    for path in written:
        if path.suffix == ".npy":
            np.load(path, allow_pickle=False)
    loaded = PersonaInferenceModel.load(tmp_path / "personas")
    assert loaded.config == model.config
    assert loaded.persona_ids == model.persona_ids
    events = planted.shop.events.filter(pl.col("customer_id").is_in(["c3", "c4", "c5"]))
    before = model.infer(events, planted.shop.items)
    after = loaded.infer(events, planted.shop.items)
    np.testing.assert_array_equal(before.overall, after.overall)
    np.testing.assert_array_equal(before.by_context, after.by_context)
    assert loaded.explain(after, 0) == model.explain(before, 0)

    manifest = tmp_path / "personas" / "persona_inference.json"
    document = json.loads(manifest.read_text())
    document["format_version"] = 99
    manifest.write_text(json.dumps(document))
    with pytest.raises(PersonaModelFormatError, match="format_version"):
        PersonaInferenceModel.load(tmp_path / "personas")
    document["format_version"] = FORMAT_VERSION
    manifest.write_text(json.dumps(document))
    np.save(tmp_path / "personas" / "mix_prior_weights.npy", np.full(len(PERSONAS), 0.5))
    with pytest.raises(PersonaModelFormatError, match="mix prior"):
        PersonaInferenceModel.load(tmp_path / "personas")
    (tmp_path / "personas" / "offsets.npy").unlink()
    with pytest.raises(PersonaModelFormatError, match=r"offsets\.npy"):
        PersonaInferenceModel.load(tmp_path / "personas")
