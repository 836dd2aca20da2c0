"""The mix prior: its empirical-Bayes shape, weights for a centre, the tied Dirichlet fit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.personas.catalog import load_catalog
from engine.personas.inference.config import PersonaInferenceConfig
from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.inference.mix_prior import MixPrior, _tied_dirichlet_mle
from engine.personas.inference.model import PersonaInferenceModel
from tests.engine.personas.planted_shop import planted_shop


def test_mix_prior_learns_how_concentrated_the_shops_mixes_are(
    fitted: tuple[PersonaInferenceModel, InferredMixes],
) -> None:
    """Empirical Bayes reads the planted shape: "mostly one persona" here, even mixes in an even shop.

    Planted here: Dirichlet 0.3 on every persona plus 2.0 on one, a dominant share of 2.3/3.5 = 0.66
    on average, each persona dominant for a fifth of the customers. In the even shop every mix is
    Dirichlet(6, ..., 6): no persona dominates, the largest weight averages about 0.3.
    """
    model, _ = fitted
    assert 0.55 < model.mix_prior.dominant_share < 0.75
    assert model.mix_prior.weights.min() > 0.1
    np.testing.assert_allclose(model.population_mix, model.mix_prior.mean)
    even = planted_shop(n_customers=300, seed=3, mix_concentration=(6.0, 0.0))
    even_model = PersonaInferenceModel(PersonaInferenceConfig(max_iterations=60))
    even_model.fit(even.shop, load_catalog("default"), customer_ids=even.customer_ids)
    assert even_model.mix_prior.dominant_share < 0.4


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(min_value=2, max_value=7),
    lean=st.floats(min_value=0.05, max_value=0.95),
    concentration=st.floats(min_value=0.5, max_value=50.0),
    raw_weights=st.lists(st.floats(min_value=0.01, max_value=1.0), min_size=7, max_size=7),
)
def test_mix_prior_weights_for_a_centre_have_that_centre_as_their_mean(
    k: int, lean: float, concentration: float, raw_weights: list[float]
) -> None:
    weights = np.array(raw_weights[:k]) / sum(raw_weights[:k])
    prior = MixPrior.mostly_one(weights, concentration, 1 / k + lean * (1 - 1 / k))
    np.testing.assert_allclose(prior.weights_for(prior.mean[None, :])[0], weights, atol=1e-8)
    # A pure mix is below every minor share: the weights stay valid and put the most on that persona.
    pure = prior.weights_for(np.eye(k)[:1])[0]
    assert (pure >= 0).all() and pure.sum() == pytest.approx(1.0) and pure.argmax() == 0


def test_tied_dirichlet_fit_recovers_the_shape_and_keeps_to_the_cap() -> None:
    rng = np.random.default_rng(0)
    alphas = np.array([6.0, 0.8, 0.8, 0.8, 0.8])
    logs = np.log(rng.dirichlet(alphas, size=20_000))
    mean_dominant, mean_minors = logs[:, 0].mean(), logs[:, 1:].sum(axis=1).mean()
    dominant, minor = _tied_dirichlet_mle(1.0, 1.0, mean_dominant, mean_minors, 4, 1e4)
    assert dominant == pytest.approx(6.0, rel=0.05)
    assert minor == pytest.approx(0.8, rel=0.05)
    dominant, minor = _tied_dirichlet_mle(1.0, 1.0, mean_dominant, mean_minors, 4, 5.0)
    assert dominant + 4 * minor == pytest.approx(5.0)
    assert 0.5 < dominant / 5.0 < 0.75  # still mostly one persona, as planted (6 / 9.2 = 0.65)
