"""Persona weights by activity level: levels, the persona popularity term, the grid search, the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from engine.models.base import ModelFormatError
from engine.models.implicit_factors import ImplicitALSModel, ImplicitBPRModel, ImplicitFactorsModel
from engine.models.persona_prior import (
    activity_edges,
    activity_level,
    grid_search_levels,
    persona_item_scores,
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
    blends, weights = grid_search_levels(
        lambda _b: base, prior, np.array([1, 2]), 2, None, relevant, k=1, blends=(0.0,)
    )
    assert weights[1] > 0.0
    assert weights[2] == 0.0 and weights[0] == 0.0  # no customer at level 0: stays 0
    np.testing.assert_array_equal(blends, [0.0, 0.0, 0.0])


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
