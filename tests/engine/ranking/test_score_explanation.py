"""Per-persona shares of an item's score: the definition's properties, checked directly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engine.models.popularity import PersonaPopularityModel
from engine.ranking.score_explanation import PersonaAffinity
from tests.engine.models.checkerboard import make_checkerboard

SCORES = np.asarray([[5.0, 1.0, 0.0, 2.0], [0.0, 4.0, 4.0, 0.0], [1.0, 1.0, 1.0, 1.0]])


def test_shares_are_the_mix_weight_times_exp_of_the_standardised_score_normalised() -> None:
    affinity = PersonaAffinity(SCORES)
    mix = np.asarray([0.5, 0.3, 0.2])
    shares = affinity.shares(mix, np.arange(4))
    z = (SCORES - SCORES.mean(axis=1, keepdims=True)) / SCORES.std(axis=1, keepdims=True).clip(1e-300)
    z[2] = 0.0  # a persona that scores every item the same favours none of them
    expected = mix[None, :] * np.exp(z.T)
    np.testing.assert_allclose(shares, expected / expected.sum(axis=1, keepdims=True))


def test_zero_weight_gets_zero_share_and_a_pure_mix_gets_everything() -> None:
    affinity = PersonaAffinity(SCORES)
    shares = affinity.shares(np.asarray([0.0, 1.0, 0.0]), np.arange(4))
    np.testing.assert_allclose(shares[:, 1], 1.0)
    assert (shares[:, [0, 2]] == 0).all()


def test_favourite_persona_is_the_one_with_the_highest_standardised_score() -> None:
    assert PersonaAffinity(SCORES).favourite_persona().tolist() == [0, 1, 1, 0]


def test_bad_mixes_are_rejected() -> None:
    affinity = PersonaAffinity(SCORES)
    for mix in ([0.0, 0.0, 0.0], [1.0, -0.5, 0.5], [1.0, 0.0]):
        with pytest.raises(ValueError, match="mix must be"):
            affinity.shares(np.asarray(mix), np.arange(4))


def test_of_model_scores_each_pure_persona() -> None:
    data = make_checkerboard().data
    model = PersonaPopularityModel()
    model.fit(data)
    affinity = PersonaAffinity.of_model(model, len(data.persona_names), len(data.demographic_feature_names))
    expected = PersonaAffinity(model.persona_popularity)
    np.testing.assert_allclose(affinity.z, expected.z, rtol=1e-6)


@settings(max_examples=100, deadline=None)
@given(
    # whole numbers: a shift must not absorb score differences below float precision
    scores=arrays(np.float64, (4, 12), elements=st.integers(-50, 50).map(float)),
    scale=st.floats(0.1, 100),
    shift=st.floats(-100, 100),
    raw_mix=arrays(np.float64, 4, elements=st.floats(0, 1)),
)
def test_shares_sum_to_one_and_ignore_each_models_score_scale(
    scores: np.ndarray, scale: float, shift: float, raw_mix: np.ndarray
) -> None:
    if raw_mix.sum() <= 1e-6:
        raw_mix[0] = 1.0
    items = np.arange(12)
    shares = PersonaAffinity(scores).shares(raw_mix, items)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    assert (shares[:, raw_mix == 0] == 0).all()
    rescaled = PersonaAffinity(scores * scale + shift).shares(raw_mix, items)
    np.testing.assert_allclose(rescaled, shares, atol=1e-6)
