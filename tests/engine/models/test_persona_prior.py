"""Persona weights by activity level: levels, the persona popularity term, the grid search, the model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from engine.models.base import ModelFormatError, TrainingSet
from engine.models.implicit_factors import ImplicitALSModel, ImplicitBPRModel, ImplicitFactorsModel
from engine.models.persona_prior import (
    activity_edges,
    activity_level,
    persona_item_scores,
    search_levels,
)
from engine.models.popularity import PersonaPopularityModel
from tests.engine.models.checkerboard import SMALL_CONFIGS, Checkerboard

MODELS: dict[str, type[ImplicitFactorsModel]] = {"als": ImplicitALSModel, "bpr": ImplicitBPRModel}


def test_activity_levels_split_known_customers_at_quantiles_and_put_unknown_ones_at_zero() -> None:
    counts = np.array([1, 2, 3, 4, 5, 6, 0], dtype=np.int64)
    edges = activity_edges(counts, 3)
    np.testing.assert_allclose(edges, np.quantile([1, 2, 3, 4, 5, 6], [1 / 3, 2 / 3]))
    level = activity_level(np.array([0, 3, 5, -1]), counts, edges)
    np.testing.assert_array_equal(level, [1, 2, 3, 0])
    assert len(activity_edges(counts, 1)) == 0
    np.testing.assert_array_equal(
        activity_level(np.array([2, -1]), counts, activity_edges(counts, 1)), [1, 0]
    )


def test_persona_item_scores_are_the_persona_popularity_model_times_n_items(
    checkerboard: Checkerboard,
) -> None:
    data = checkerboard.data
    # membership counts (the prior's default), and with attribution steps when asked
    for steps, given in ((0, {}), (2, {"attribution_iterations": 2})):
        reference = PersonaPopularityModel(prior_strength=50.0, attribution_iterations=steps)
        reference.fit(data)
        scores = persona_item_scores(data.interactions, data.user_mix, **given)
        np.testing.assert_allclose(scores.T, data.n_items * reference.persona_popularity, rtol=1e-5)


def test_grid_search_picks_per_level_the_weights_that_rank_the_held_out_item_first() -> None:
    # two customers, three items; customer 0 (level 1) holds item 2 out, customer 1 (level 2) item 0.
    # Factor scores rank item 1 first for both; the prior ranks item 2 first for customer 0 only and
    # item 1 first for customer 1: level 1 needs the prior, level 2 must keep plain CF.
    base = np.array([[0.0, 1.0, 0.5], [0.6, 1.0, 0.0]], dtype=np.float32)
    prior = np.array([[0.0, 0.0, 3.0], [0.0, 3.0, 0.0]], dtype=np.float32)
    relevant = sp.csr_matrix(np.array([[0, 0, 1], [1, 0, 0]], dtype=np.float32))
    search = search_levels(lambda _b: base, prior, np.array([1, 2]), 2, None, relevant, k=1, blends=(0.0,))
    blends, weights = search.blends, search.prior_weights
    assert weights[1] > 0.0
    assert weights[2] == 0.0 and weights[0] == 0.0  # no customer at level 0: stays 0
    np.testing.assert_array_equal(blends, [0.0, 0.0, 0.0])
    # what the chosen weights reach together: customer 0's held-out item first, customer 1's not
    assert search.ndcg == pytest.approx(0.5)
    without = search_levels(lambda _b: base, None, np.array([1, 2]), 2, None, relevant, k=1, blends=(0.0,))
    assert without.ndcg == pytest.approx(0.0)  # plain CF ranks item 1 first for both: no hit


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_per_level_weights_score_by_inner_product_and_survive_save_and_load(
    kind: str, checkerboard: Checkerboard, tmp_path: Path
) -> None:
    model = MODELS[kind](
        **SMALL_CONFIGS[kind], blend_weights=[0.0, 0.3, 0.6], prior_weights=[0.5, 0.2, 0.1, 0.0]
    )
    model.fit(checkerboard.data)
    batch = checkerboard.batch([0, 1, 2, 5, -1, 7])
    scores = model.score(batch)
    np.testing.assert_allclose(scores, model.query_vectors(batch) @ model.item_vectors().T, rtol=1e-6)
    single = np.vstack([model.score(batch.rows(np.array([i]))) for i in range(len(batch))])
    np.testing.assert_allclose(scores, single, rtol=1e-5, atol=1e-6)
    model.save(tmp_path / kind)
    np.testing.assert_array_equal(type(model).load(tmp_path / kind).score(batch), scores)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_blend_weights_apply_by_activity_level(kind: str, checkerboard: Checkerboard) -> None:
    fitted = MODELS[kind](**SMALL_CONFIGS[kind], persona_blend=0.0)
    fitted.fit(checkerboard.data)
    batch = checkerboard.batch(list(range(20)))
    level = fitted.activity_levels_of(batch.user_index)
    for lv in (1, 2, 3):
        weights = [0.0, 0.0, 0.0]
        weights[lv - 1] = 0.5
        moved = ~np.isclose(
            fitted.with_persona_weights(weights, None).score(batch), fitted.score(batch), atol=1e-6
        ).all(axis=1)
        np.testing.assert_array_equal(moved, level == lv)  # only customers of that level move


def test_bad_level_weights_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="prior_weights must be 4"):
        ImplicitALSModel(prior_weights=[0.1, 0.2])
    with pytest.raises(ValueError, match="blend_weights must each be at most 1"):
        ImplicitALSModel(blend_weights=[0.1, 2.0, 0.0])


def test_a_saved_model_without_prior_arrays_cannot_claim_prior_weights(
    checkerboard: Checkerboard, tmp_path: Path
) -> None:
    model = ImplicitALSModel(**SMALL_CONFIGS["als"])
    model.fit(checkerboard.data)
    model.save(tmp_path / "als")
    for name in ("activity_counts", "activity_edges", "persona_item_scores"):
        (tmp_path / "als" / f"{name}.npy").unlink()
    document = json.loads((tmp_path / "als" / "model.json").read_text(encoding="utf-8"))
    document["arrays"] = [
        a
        for a in document["arrays"]
        if a in ("shape", "user_factors", "item_factors", "persona_factors", "demographic_factors")
    ]
    (tmp_path / "als" / "model.json").write_text(json.dumps(document), encoding="utf-8")
    old = ImplicitALSModel.load(tmp_path / "als")  # a model saved before activity levels still loads
    batch = checkerboard.batch([0, 1])
    np.testing.assert_allclose(old.score(batch), model.score(batch), rtol=1e-6)
    document["config"]["prior_weights"] = [0.1, 0.1, 0.1, 0.1]
    (tmp_path / "als" / "model.json").write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(ModelFormatError, match="no prior arrays"):
        ImplicitALSModel.load(tmp_path / "als")


def _with_ages(data: TrainingSet, seed: int = 0) -> TrainingSet:
    ages = sp.csr_matrix(data.interactions, dtype=np.float32, copy=True)
    ages.data = np.random.default_rng(seed).uniform(0.0, 60.0, size=ages.nnz).astype(np.float32)
    return dataclasses.replace(data, interaction_age_days=ages)


def test_a_pair_one_half_life_old_counts_half_in_the_recency_prior() -> None:
    interactions = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32))
    ages = sp.csr_matrix(np.array([[1e-3, 0.0], [0.0, 7.0]], dtype=np.float32))
    ages.data[0] = 0.0  # bought on the last day: an explicit zero, the pair is still there
    mix = np.ones((2, 1))
    scores = persona_item_scores(interactions, mix, 0.0, ages=ages, half_life_days=7.0)
    np.testing.assert_allclose(scores[:, 0], 2 * np.array([1.0, 0.5]) / 1.5, rtol=1e-6)
    # all-time counts: both pairs alike
    np.testing.assert_allclose(persona_item_scores(interactions, mix, 0.0)[:, 0], [1.0, 1.0], rtol=1e-6)


def test_a_recency_prior_needs_ages_and_a_positive_half_life(checkerboard: Checkerboard) -> None:
    data = checkerboard.data
    with pytest.raises(ValueError, match="needs the training set's interaction ages"):
        persona_item_scores(data.interactions, data.user_mix, half_life_days=7.0)
    with pytest.raises(ValueError, match="half_life_days must be a positive"):
        persona_item_scores(
            data.interactions, data.user_mix, ages=_with_ages(data).interaction_age_days, half_life_days=0.0
        )
    with pytest.raises(ValueError, match="prior_half_life_days must be a positive"):
        ImplicitALSModel(prior_half_life_days=-1.0)
    with pytest.raises(ValueError, match="prior_scope must be one of personas, population"):
        ImplicitALSModel(prior_scope="everyone")


def test_ages_must_hold_the_pairs_of_the_interactions(checkerboard: Checkerboard) -> None:
    data = checkerboard.data
    shifted = sp.csr_matrix(data.interactions[::-1], dtype=np.float32)
    with pytest.raises(ValueError, match="must hold exactly the pairs of interactions"):
        dataclasses.replace(data, interaction_age_days=shifted)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_the_population_prior_is_the_same_for_every_mix_and_survives_save_and_load(
    kind: str, checkerboard: Checkerboard, tmp_path: Path
) -> None:
    data = _with_ages(checkerboard.data)
    settings = {**SMALL_CONFIGS[kind], "prior_weights": [0.5, 0.5, 0.5, 0.5], "prior_half_life_days": 10.0}
    personas = MODELS[kind](**settings)
    population = MODELS[kind](**settings, prior_scope="population")
    for model in (personas, population):
        model.fit(data)
    columns = population.persona_item_scores
    expected = persona_item_scores(
        data.interactions, np.ones((data.n_users, 1)), ages=data.interaction_age_days, half_life_days=10.0
    )
    np.testing.assert_allclose(columns, np.repeat(expected, data.user_mix.shape[1], axis=1), rtol=1e-6)
    assert not np.allclose(personas.persona_item_scores, columns)  # the personas' differ
    # a stranger's prior term does not depend on their mix
    one, other = np.eye(data.user_mix.shape[1])[:2]
    gap = population.score(checkerboard.cold_batch(np.vstack([one, other])))
    plain = MODELS[kind](**SMALL_CONFIGS[kind], prior_scope="population")
    plain.fit(data)
    base = plain.score(checkerboard.cold_batch(np.vstack([one, other])))
    np.testing.assert_allclose(gap - base, np.vstack([gap[0] - base[0]] * 2), rtol=1e-5, atol=1e-5)
    population.save(tmp_path / kind)
    loaded = type(population).load(tmp_path / kind)
    assert (loaded.prior_half_life_days, loaded.prior_scope) == (10.0, "population")
    batch = checkerboard.batch([0, 3, -1])
    np.testing.assert_array_equal(loaded.score(batch), population.score(batch))


def test_without_personas_keeps_a_recency_prior_for_the_population_and_drops_an_all_time_one() -> None:
    weights = [0.1, 0.2, 0.0, 0.3]
    recent = ImplicitALSModel.without_personas({"prior_weights": weights, "prior_half_life_days": 7.0})
    assert (recent["prior_weights"], recent["prior_half_life_days"]) == (weights, 7.0)
    assert recent["prior_scope"] == "population"
    assert (recent["persona_blend"], recent["blend_weights"]) == (0.0, None)
    all_time = ImplicitALSModel.without_personas({"prior_weights": weights, "prior_half_life_days": None})
    assert (all_time["prior_weights"], all_time["prior_half_life_days"]) == (None, None)
    unused = ImplicitALSModel.without_personas({"prior_weights": [0.0] * 4, "prior_half_life_days": 7.0})
    assert unused["prior_weights"] is None
