"""A fitted persona inference model on disk: a JSON manifest plus one ``.npy`` file per array.

No pickle anywhere, so a tampered artifact cannot run code on load; every problem with the files
raises ``PersonaModelFormatError`` naming the file. The file names and manifest layout are the
artifact format (``FORMAT_VERSION``): serving loads models that training wrote long before.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from engine.artifact.arrays import load_arrays, save_arrays
from engine.personas.inference.behaviour import PersonaBehaviour
from engine.personas.inference.config import PersonaInferenceConfig
from engine.personas.inference.em_fit import FitSummary
from engine.personas.inference.errors import PersonaModelFormatError
from engine.personas.inference.mix_prior import MixPrior
from engine.personas.traits import EventFeatureSpace

FORMAT_VERSION = 2
MODEL_KIND = "persona_inference"
MANIFEST_FILE = "persona_inference.json"


@dataclass(frozen=True)
class SavedModel:
    """Everything a model's files hold: its settings, the fitted behaviour and what the fit reported."""

    config: PersonaInferenceConfig
    behaviour: PersonaBehaviour
    unmatched_signals: dict[str, tuple[str, ...]]
    fit_summary: FitSummary | None


def _arrays(behaviour: PersonaBehaviour) -> dict[str, NDArray[np.float64]]:
    """The behaviour's arrays under their file names (without ``.npy``), in the order they are written."""
    return {
        "parameters": behaviour.parameters,
        "offsets": behaviour.offsets,
        "feature_probabilities": behaviour.probabilities,
        "seed_probabilities": behaviour.seed_probabilities,
        "population_marginals": behaviour.marginals,
        "population_mix": behaviour.population_mix,
        "mix_prior_weights": behaviour.mix_prior.weights,
        "mix_prior_alphas": behaviour.mix_prior.alphas,
    }


def _array_shapes(personas: int, columns: int) -> dict[str, tuple[int, ...]]:
    """The shape every array file must have for a model of ``personas`` over ``columns`` features."""
    k, j = personas, columns
    return {
        "parameters": (j, k),
        "offsets": (k,),
        "feature_probabilities": (j, k),
        "seed_probabilities": (j, k),
        "population_marginals": (j,),
        "population_mix": (k,),
        "mix_prior_weights": (k,),
        "mix_prior_alphas": (k, k),
    }


def save_model(directory: Path, saved: SavedModel) -> list[Path]:
    """Write the arrays and then the manifest into ``directory``; returns the files written."""
    behaviour = saved.behaviour
    directory = Path(directory)
    arrays = {name: np.asarray(array, dtype=np.float64) for name, array in _arrays(behaviour).items()}
    written = save_arrays(directory, arrays)
    manifest = {
        "kind": MODEL_KIND,
        "format_version": FORMAT_VERSION,
        "config": saved.config.to_json(),
        "persona_ids": list(behaviour.persona_ids),
        "persona_names": list(behaviour.persona_names),
        "feature_space": behaviour.space.to_json(),
        "unmatched_signals": {p: list(v) for p, v in saved.unmatched_signals.items()},
        "fit_summary": asdict(saved.fit_summary) if saved.fit_summary else None,
    }
    manifest_path = directory / MANIFEST_FILE
    manifest_path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    written.append(manifest_path)
    return written


def load_model(directory: Path) -> SavedModel:
    """Read what ``save_model`` wrote, checking the manifest, every array's shape and finiteness."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        raise PersonaModelFormatError(f"{manifest_path}: persona inference manifest not found")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise PersonaModelFormatError(f"{manifest_path}: not valid JSON: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != MODEL_KIND:
        raise PersonaModelFormatError(f"{manifest_path}: not a {MODEL_KIND!r} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise PersonaModelFormatError(
            f"{manifest_path}: format_version {manifest.get('format_version')!r} is not {FORMAT_VERSION}"
        )
    try:
        config = PersonaInferenceConfig.from_json(manifest["config"])
        space = EventFeatureSpace.from_json(manifest["feature_space"])
        persona_ids = tuple(str(p) for p in manifest["persona_ids"])
        persona_names = tuple(str(p) for p in manifest["persona_names"])
        unmatched = {str(p): tuple(str(s) for s in v) for p, v in manifest["unmatched_signals"].items()}
        summary = FitSummary(**manifest["fit_summary"]) if manifest.get("fit_summary") else None
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise PersonaModelFormatError(f"{manifest_path}: malformed manifest: {error}") from None
    shapes = _array_shapes(len(persona_ids), space.n_columns)
    arrays: dict[str, NDArray[np.float64]] = {}
    for name, array in load_arrays(directory, shapes, error=PersonaModelFormatError).items():
        if array.shape != shapes[name] or not np.all(np.isfinite(array)):
            raise PersonaModelFormatError(
                f"{directory / name}.npy: shape {array.shape} (expected {shapes[name]}) or non-finite values"
            )
        arrays[name] = array.astype(np.float64)
    try:
        mix_prior = MixPrior(arrays["mix_prior_weights"], arrays["mix_prior_alphas"])
    except ValueError as error:
        raise PersonaModelFormatError(f"{directory}: mix prior arrays are invalid: {error}") from None
    behaviour = PersonaBehaviour(
        persona_ids=persona_ids,
        persona_names=persona_names,
        space=space,
        parameters=arrays["parameters"],
        offsets=arrays["offsets"],
        probabilities=arrays["feature_probabilities"],
        seed_probabilities=arrays["seed_probabilities"],
        marginals=arrays["population_marginals"],
        population_mix=arrays["population_mix"],
        mix_prior=mix_prior,
    )
    return SavedModel(config, behaviour, unmatched, summary)
