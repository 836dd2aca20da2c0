"""Model kinds by name: the one place that turns a kind string into a model class.

Training configs and saved ``model.json`` files name a model by its ``kind``. Dispatching on that
string here, and nowhere else, means a new model is added by listing it once, and an unknown kind
is reported with the list of known ones instead of a ``KeyError`` from deep inside a job.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any

from engine.errors import PersonaEngineError
from engine.models.base import ModelFormatError, Recommender, read_model_manifest
from engine.models.implicit_factors import ImplicitALSModel, ImplicitBPRModel
from engine.models.lightfm_hybrid import LightFMHybridModel
from engine.models.linear_autoencoder import LinearAutoencoderModel
from engine.models.model_blend import ModelBlend
from engine.models.popularity import PersonaPopularityModel, PopularityModel

MODEL_KINDS: dict[str, type[Recommender]] = {
    model.kind: model
    for model in (
        PopularityModel,
        PersonaPopularityModel,
        LightFMHybridModel,
        ImplicitALSModel,
        ImplicitBPRModel,
        LinearAutoencoderModel,
        ModelBlend,
    )
}

# Kinds a training config must name to train: the linear autoencoder (and a blend, which holds one by
# default) refuses catalogues above its item limit, so a config without ``[models]`` (every other
# kind) keeps working on any shop.
OPT_IN_KINDS: frozenset[str] = frozenset({LinearAutoencoderModel.kind, ModelBlend.kind})
DEFAULT_KINDS: tuple[str, ...] = tuple(kind for kind in MODEL_KINDS if kind not in OPT_IN_KINDS)


class UnknownModelKindError(PersonaEngineError, ValueError):
    """A configuration names a model kind that is not registered."""


def model_class(kind: str) -> type[Recommender]:
    if kind not in MODEL_KINDS:
        raise UnknownModelKindError(f"unknown model kind {kind!r}; known kinds: {', '.join(MODEL_KINDS)}")
    return MODEL_KINDS[kind]


def model_parameters(kind: str) -> tuple[str, ...]:
    """The hyperparameter names ``create_model`` accepts for ``kind``."""
    signature = inspect.signature(model_class(kind).__init__)
    return tuple(name for name in signature.parameters if name != "self")


def model_settings_schema(kind: str) -> dict[str, tuple[Any, Any]]:
    """Each setting of ``kind``: its declared type and default, read from the model's constructor.

    The constructor is the one schema of a model's settings: a training config is checked against it
    (names and types) before any work starts, so a new parameter needs no second list anywhere.
    """
    init = model_class(kind).__init__
    hints = typing.get_type_hints(init)
    return {
        name: (hints.get(name, Any), parameter.default)
        for name, parameter in inspect.signature(init).parameters.items()
        if name != "self"
    }


def create_model(kind: str, **params: Any) -> Recommender:
    """An unfitted model of ``kind``; unknown parameter names are rejected by name, not ignored."""
    known = model_parameters(kind)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(
            f"model kind {kind!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters: {', '.join(known) or '(none)'}"
        )
    return model_class(kind)(**params)


def load_model(directory: Path) -> Recommender:
    """Load a saved model of whatever kind its ``model.json`` names."""
    kind = read_model_manifest(directory)["kind"]
    if kind not in MODEL_KINDS:
        raise ModelFormatError(
            f"{directory}: model.json names unknown model kind {kind!r}; "
            f"known kinds: {', '.join(MODEL_KINDS)}"
        )
    return MODEL_KINDS[kind].load(directory)
