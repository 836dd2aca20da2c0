"""Fold-in around a centre: it leans towards the centre and leaves the caller's array alone."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from engine.data.id_map import IdMap
from engine.personas.inference.fold_in import fold_in
from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.inference.model import PersonaInferenceModel
from tests.engine.personas.planted_shop import PERSONAS, PlantedShop


def test_fold_in_with_a_centre_leans_towards_it(
    planted: PlantedShop, fitted: tuple[PersonaInferenceModel, InferredMixes]
) -> None:
    """A demographic centre shifts which persona a customer with few events is thought to be."""
    model, mixes = fitted
    health = PERSONAS.index("health_enthusiast")
    row = int(np.argsort(mixes.overall[:, health])[len(mixes.overall) // 2])  # a middling customer
    customer = str(mixes.customer_ids.ids[row])
    few = planted.shop.events.filter(pl.col("customer_id") == customer).head(3)
    ids = IdMap([customer], kind="customer")
    plain = model.infer(few, planted.shop.items, ids)
    centre = np.full((1, len(PERSONAS)), 0.05)
    centre[0, health] = 0.8
    leaning = model.infer(few, planted.shop.items, ids, prior=centre)
    assert leaning.overall[0, health] > plain.overall[0, health] + 0.1


@pytest.mark.parametrize("groups", [1, 3])
def test_fold_in_leaves_the_callers_centre_alone(groups: int) -> None:
    """One group's (1, k) centre transposes to an array that is already contiguous: it must be copied,
    or the fold-in overwrites the caller's long-term mix (and drift is measured against itself)."""
    rng = np.random.default_rng(groups)
    k, n = 4, 12
    centre = rng.dirichlet(np.ones(k), size=groups)
    before = centre.copy()
    likelihoods = rng.random((k, n)) * np.array([[4.0], [1.0], [1.0], [1.0]])
    mixes = fold_in(likelihoods, np.ones(n), rng.integers(0, groups, n), centre, 3.0, 100)
    assert np.array_equal(centre, before)
    assert not np.allclose(mixes, centre)
