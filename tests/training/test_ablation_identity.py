"""Ablation identity: an engine model with persona conditioning off *is* the plain library model.

``compare`` measures what personas add as engine model minus its ablation; that is only the personas'
contribution if the ablation differs from the raw library in nothing else. So with the same
hyperparameters and seed, the ablated engine model must score known customers as the library does.
For ALS that holds for implicit's penalty form (``penalty = "constant"``, an engine-only setting); the
default per-interaction form is the engine's own solver, compared with its estimator in
tests/engine/models/test_implicit_factors.py.
Interactions are binary here: the engine's LightFM weighs pairs by confidence, the raw library does
not, and with equal confidences the two are the same computation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from engine.models.registry import create_model, model_class
from tests.engine.models.checkerboard import Checkerboard, make_checkerboard
from training.library_baselines import create_library_model

# (engine kind, library kind, the hyperparameters both take, settings only the engine model takes)
PAIRS: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    (
        "als",
        "implicit_als",
        {"factors": 8, "regularization": 0.5, "alpha": 2.0, "iterations": 6},
        {"penalty": "constant"},
    ),
    (
        "bpr",
        "implicit_bpr",
        {"factors": 8, "learning_rate": 0.05, "regularization": 0.01, "iterations": 30},
        {},
    ),
    (
        "lightfm_hybrid",
        "lightfm_warp",
        {"no_components": 8, "learning_rate": 0.05, "epochs": 5, "item_alpha": 1e-6, "user_alpha": 1e-6},
        {},
    ),
]


@pytest.fixture(scope="module")
def board() -> Checkerboard:
    board = make_checkerboard()
    binary = sp.csr_matrix(board.data.interactions > 0, dtype=np.float32)
    return dataclasses.replace(board, data=dataclasses.replace(board.data, interactions=binary))


@pytest.mark.parametrize(("engine_kind", "library_kind", "hyperparameters", "engine_only"), PAIRS)
def test_ablated_engine_model_scores_known_customers_as_the_library(
    board: Checkerboard,
    engine_kind: str,
    library_kind: str,
    hyperparameters: dict[str, Any],
    engine_only: dict[str, Any],
) -> None:
    settings = {**hyperparameters, "num_threads": 1, "random_state": 5}
    ablated_config = model_class(engine_kind).without_personas({**settings, **engine_only})
    assert ablated_config is not None
    ablated = create_model(engine_kind, **ablated_config)
    library = create_library_model(library_kind, **settings)
    ablated.fit(board.data)
    library.fit(board.data)
    known = board.batch(list(range(board.data.n_users)))
    np.testing.assert_allclose(ablated.score(known), library.score(known), rtol=1e-5, atol=1e-6)
    excluded = board.data.interactions
    np.testing.assert_array_equal(
        ablated.recommend(known, 5, exclude=excluded)[0], library.recommend(known, 5, exclude=excluded)[0]
    )


@pytest.mark.parametrize(("engine_kind", "library_kind", "hyperparameters", "engine_only"), PAIRS)
def test_with_personas_on_the_engine_model_differs(
    board: Checkerboard,
    engine_kind: str,
    library_kind: str,
    hyperparameters: dict[str, Any],
    engine_only: dict[str, Any],
) -> None:
    """The identity is not vacuous: the conditioned model with the same settings scores differently."""
    settings = {**hyperparameters, "num_threads": 1, "random_state": 5}
    conditioned = create_model(engine_kind, **settings, **engine_only)
    library = create_library_model(library_kind, **settings)
    conditioned.fit(board.data)
    library.fit(board.data)
    known = board.batch(list(range(board.data.n_users)))
    assert not np.allclose(conditioned.score(known), library.score(known), rtol=1e-3, atol=1e-4)
