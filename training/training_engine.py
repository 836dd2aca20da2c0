"""Where a training run does its heavy lifting: in this process, or on a cluster (``training.spark``).

``persona-engine train`` is one pipeline (load, split, persona inference, models, evaluation, refit,
artifact) whatever runs it. What differs between engines is only how the data is read, how the
persona EM is fitted and how each model is fitted; a ``TrainingEngine`` names those three steps, so
the Spark path reuses the split, the evaluation and the one artifact writer of the local path
instead of a second copy of them, and both write artifacts that ``serve`` loads the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.data.loading import load_shop
from engine.data.shop_data import ShopData
from engine.models.base import Recommender
from engine.models.registry import create_model
from engine.personas.inference.em_fit import fit_behaviour
from engine.personas.inference.model import BehaviourFitter


def _load_local(path: Path, skip_invalid: bool) -> ShopData:
    return load_shop(path, skip_invalid=skip_invalid)


def _create_local(kind: str, settings: dict[str, Any]) -> Recommender:
    return create_model(kind, **settings)


@dataclass(frozen=True)
class TrainingEngine:
    """The three engine-specific steps of training; the defaults are the local engine's.

    ``load_shop(path, skip_invalid)`` reads and validates the data contract's tables;
    ``behaviour_fit`` is the persona EM (``PersonaInferenceModel.fit``'s ``behaviour_fit``);
    ``create_model(kind, settings)`` an unfitted model whose ``fit`` runs where the engine runs and
    whose saved form is the local model's. ``record`` goes into the manifest's ``engine`` key.
    """

    name: str = "local"
    load_shop: Callable[[Path, bool], ShopData] = _load_local
    behaviour_fit: BehaviourFitter = fit_behaviour
    create_model: Callable[[str, dict[str, Any]], Recommender] = _create_local
    record: dict[str, Any] = field(default_factory=dict)


LOCAL_ENGINE = TrainingEngine()
