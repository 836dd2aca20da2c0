from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.models.base import UserBatch
from engine.models.popularity import PersonaPopularityModel, PopularityModel, customers_per_item
from tests.engine.models.checkerboard import training_set_from_dense

# Users 0-1 belong to persona 0, users 2-3 to persona 1; nobody belongs to persona 2.
SHOP = training_set_from_dense(
    interactions=[
        [50.0, 0.0, 0.0, 0.0],
        [1.0, 1.0, 0.0, 0.0],
        [0.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, 1.0, 1.0],
    ],
    mix=[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]],
)
GLOBAL_SHARE = np.array([2.0, 3.0, 2.0, 1.0]) / 8.0


def cold(mix: np.ndarray) -> UserBatch:
    mix = np.atleast_2d(mix)
    return UserBatch(
        np.full(len(mix), -1, dtype=np.int64), mix, sp.csr_matrix(np.zeros((len(mix), 1), dtype=np.float32))
    )


def test_popularity_counts_customers_not_confidence() -> None:
    model = PopularityModel()
    model.fit(SHOP)
    scores = model.score(cold(np.array([1.0, 0.0, 0.0])))[0]
    # Item 0's 50 clicks from one customer do not lift it above item 1, bought by three customers.
    np.testing.assert_allclose(scores, GLOBAL_SHARE, rtol=1e-6)


def test_persona_popularity_without_attribution_is_membership_weighted_and_smoothed() -> None:
    strength = 2.0
    model = PersonaPopularityModel(prior_strength=strength, attribution_iterations=0)
    model.fit(SHOP)
    # Persona 0: user 0 (weight 1) has item 0, user 1 (weight 0.5) has items 0 and 1.
    counts_0 = np.array([1.5, 0.5, 0.0, 0.0])
    expected_0 = (counts_0 + strength * GLOBAL_SHARE) / (counts_0.sum() + strength)
    np.testing.assert_allclose(model.persona_popularity[0], expected_0, rtol=1e-6)
    # Nobody belongs to persona 2, so it is exactly global popularity.
    np.testing.assert_allclose(model.persona_popularity[2], GLOBAL_SHARE, rtol=1e-6)


def test_more_smoothing_pulls_personas_toward_global_popularity() -> None:
    distances = []
    for strength in (0.5, 5.0, 500.0):
        model = PersonaPopularityModel(prior_strength=strength)
        model.fit(SHOP)
        distances.append(float(np.abs(model.persona_popularity[:2] - GLOBAL_SHARE).sum()))
    assert distances[0] > distances[1] > distances[2]
    assert distances[2] < 0.05


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(min_value=0.0, max_value=10.0), min_size=3, max_size=3).filter(lambda w: sum(w) > 1e-3)
)
def test_persona_popularity_scores_are_the_mix_blend_of_persona_distributions(weights: list[float]) -> None:
    model = PersonaPopularityModel(prior_strength=3.0)
    model.fit(SHOP)
    mix = np.array(weights) / sum(weights)
    scores = model.score(cold(mix))[0]
    np.testing.assert_allclose(scores, mix @ model.persona_popularity, rtol=1e-5, atol=1e-7)
    assert scores.sum() == pytest.approx(1.0, abs=1e-5)
    assert (scores > 0).all()


def test_a_pure_persona_ranks_its_own_items_first() -> None:
    model = PersonaPopularityModel(prior_strength=0.5)
    model.fit(SHOP)
    pure = model.score(UserBatch.for_personas(3, 1))
    assert pure[0].argmax() == 0
    assert pure[1].argmax() == 1


@pytest.mark.parametrize("strength", [0.0, -1.0, float("nan"), float("inf")])
def test_prior_strength_must_be_positive(strength: float) -> None:
    with pytest.raises(ValueError, match="prior_strength"):
        PersonaPopularityModel(prior_strength=strength)


def test_attribution_gives_a_mixed_customers_items_to_the_persona_each_item_belongs_to() -> None:
    # User 1 is half persona 0, half persona 1, with item 0 (otherwise only persona 0's user 0 has it)
    # and item 1 (otherwise persona 1's users 2 and 3). Membership counts split both votes evenly;
    # attribution hands item 0's vote mostly to persona 0 and item 1's mostly to persona 1.
    counted = PersonaPopularityModel(prior_strength=1e-9, attribution_iterations=0)
    attributed = PersonaPopularityModel(prior_strength=1e-9, attribution_iterations=10)
    counted.fit(SHOP)
    attributed.fit(SHOP)
    assert attributed.persona_popularity[0, 0] > counted.persona_popularity[0, 0]
    assert attributed.persona_popularity[0, 1] < counted.persona_popularity[0, 1]
    assert attributed.persona_popularity[1, 1] > counted.persona_popularity[1, 1]
    np.testing.assert_allclose(attributed.persona_popularity[:2].sum(axis=1), 1.0, rtol=1e-5)


def test_attribution_iterations_must_be_a_whole_non_negative_number() -> None:
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="attribution_iterations"):
            PersonaPopularityModel(attribution_iterations=bad)  # type: ignore[arg-type]


def test_a_model_saved_before_attribution_loads_as_membership_counts(tmp_path: Path) -> None:
    model = PersonaPopularityModel(prior_strength=2.0, attribution_iterations=0)
    model.fit(SHOP)
    model.save(tmp_path / "pp")
    manifest_path = tmp_path / "pp" / "model.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    del manifest["config"]["attribution_iterations"]
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    loaded = PersonaPopularityModel.load(tmp_path / "pp")
    assert loaded.get_config() == {"prior_strength": 2.0, "attribution_iterations": 0}
    np.testing.assert_array_equal(loaded.persona_popularity, model.persona_popularity)


@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 6), st.sampled_from([-1.0, 0.0, 0.5, 2.0])),
        max_size=40,
    ),
    st.booleans(),
)
def test_customers_per_item_counts_each_customer_once_per_item(
    entries: list[tuple[int, int, float]], canonical: bool
) -> None:
    entries = sorted(entries)
    rows = np.array([r for r, _, _ in entries], dtype=np.int32)
    cols = np.array([c for _, c, _ in entries], dtype=np.int32)
    values = np.array([v for _, _, v in entries], dtype=np.float32)
    indptr = np.searchsorted(rows, np.arange(7)).astype(np.int32)
    matrix = sp.csr_matrix((values, cols, indptr), shape=(6, 7))  # repeated pairs kept as they are
    if canonical:
        matrix.sum_duplicates()  # as every training set's matrix is
    dense = matrix.toarray()  # repeated pairs add up, as a customer's confidences do
    expected = (dense > 0).sum(axis=0).astype(np.float64)
    np.testing.assert_array_equal(customers_per_item(matrix), expected)
