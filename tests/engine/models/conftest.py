"""Shared fixtures: the checkerboard shop and one small, fast configuration per registered model kind."""

from __future__ import annotations

import pytest

from engine.models.base import Recommender
from engine.models.registry import MODEL_KINDS, create_model
from tests.engine.models.checkerboard import SMALL_CONFIGS, Checkerboard, make_checkerboard


@pytest.fixture(scope="session")
def checkerboard() -> Checkerboard:
    return make_checkerboard()


@pytest.fixture(scope="module", params=sorted(MODEL_KINDS))
def fitted(request: pytest.FixtureRequest, checkerboard: Checkerboard) -> Recommender:
    """Each registered kind, fitted once per test module on the checkerboard."""
    model = create_model(request.param, **SMALL_CONFIGS[request.param])
    model.fit(checkerboard.data)
    return model
