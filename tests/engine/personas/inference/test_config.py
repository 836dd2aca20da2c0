"""The inference settings: round trip through JSON and errors that name the bad field."""

from __future__ import annotations

import json

import pytest

from engine.personas.inference.config import PersonaInferenceConfig


def test_config_round_trips_and_names_bad_fields() -> None:
    config = PersonaInferenceConfig(mix_prior_strength=2.5, holidays=((12, 25),))
    assert PersonaInferenceConfig.from_json(json.loads(json.dumps(config.to_json()))) == config
    with pytest.raises(ValueError, match="mix_prior_strength"):
        PersonaInferenceConfig(mix_prior_strength=-1)
    with pytest.raises(ValueError, match="max_iterations"):
        PersonaInferenceConfig(max_iterations=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown persona inference setting"):
        PersonaInferenceConfig.from_json({"mix_prior": 1.0})
    with pytest.raises(ValueError, match="accelerate must be true or false"):
        PersonaInferenceConfig(accelerate=1)  # type: ignore[arg-type]
    plain = PersonaInferenceConfig(accelerate=False)
    assert PersonaInferenceConfig.from_json(json.loads(json.dumps(plain.to_json()))) == plain
