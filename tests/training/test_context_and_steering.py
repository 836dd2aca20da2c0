"""On a small generated shop: evaluation by shopping context, and steering of known customers' lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.evaluation.ranking_metrics import ranking_metrics
from engine.models.base import Recommender
from engine.models.model_blend import ModelBlend
from engine.personas.shopping_context import CONTEXTS
from engine.personas.steering import DEFAULT_STEERING
from training.config import parse_config
from training.evaluation import ScoredLists, evaluate_context_mixes, evaluate_models, recommend_in_chunks
from training.prepared_data import PreparedData, context_segments, evaluation_segments, prepare
from training.steering_evaluation import evaluate_steering
from training.synthetic_shop import ShopConfig, generate_shop
from training.train_job import fit_models

MODELS = {
    "popularity": {},
    "persona_popularity": {},
    "als": {"factors": 16, "iterations": 5, "num_threads": 1},
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    out = tmp_path_factory.mktemp("shop")
    generate_shop(out, ShopConfig(customers=600, items=300, events=24_000, seed=5))
    config = parse_config({"data": {"path": str(out)}, "models": MODELS})
    return prepare(config, data_path=Path(out))


@pytest.fixture(scope="module")
def models(prepared: PreparedData) -> dict[str, Recommender]:
    config = parse_config({"data": {"path": "."}, "models": MODELS})
    fitted, _ = fit_models(prepared, config, show_progress=False)
    return fitted


def test_context_segments_pair_the_same_customers_under_two_mixes(prepared: PreparedData) -> None:
    pairs = context_segments(prepared)
    assert [p.context for p in pairs] == list(CONTEXTS)
    for pair in pairs:
        context, overall = pair.with_context_mix, pair.with_overall_mix
        np.testing.assert_array_equal(context.customer_ids, overall.customer_ids)
        assert (context.relevant != overall.relevant).nnz == 0
        rows = prepared.customer_rows(context.customer_ids)
        c = CONTEXTS.index(pair.context)
        np.testing.assert_array_equal(context.users.mix, prepared.mixes.by_context[rows, c])
        np.testing.assert_array_equal(context.users.base_mix, prepared.mixes.overall[rows])
        np.testing.assert_array_equal(overall.users.mix, prepared.mixes.overall[rows])
        assert pair.distinct_mix.sum() > 0.5 * len(pair.distinct_mix)
    # every held-out positive of a warm customer is in exactly one context's segment
    everyone = evaluation_segments(prepared)[0]
    total = sum(int(p.with_overall_mix.relevant.sum()) for p in pairs)
    assert total >= int(everyone.relevant.sum())


def test_context_evaluation_scores_each_mix_as_its_segment_says(
    prepared: PreparedData, models: dict[str, Recommender]
) -> None:
    pairs = context_segments(prepared)
    results = evaluate_context_mixes(models, pairs, 10, resamples=200)
    assert {(r.model, r.context) for r in results} == {(m, c) for m in models for c in CONTEXTS}
    for result in results:
        pair = next(p for p in pairs if p.context == result.context)
        model = models[result.model]
        for segment, figure in (
            (pair.with_context_mix, result.ndcg_context_mix),
            (pair.with_overall_mix, result.ndcg_overall_mix),
        ):
            ndcg = ranking_metrics(recommend_in_chunks(model, segment, 10), segment.relevant).ndcg
            assert figure == pytest.approx(float(ndcg.mean()))
        assert result.difference.mean == pytest.approx(result.ndcg_context_mix - result.ndcg_overall_mix)
        assert result.difference.low <= result.difference.mean <= result.difference.high
    popularity = [r for r in results if r.model == "popularity"]
    assert all(r.difference.mean == 0 for r in popularity)  # mixes play no part in it
    persona_aware = [r for r in results if r.model == "persona_popularity"]
    assert any(r.ndcg_context_mix != r.ndcg_overall_mix for r in persona_aware)


def test_context_evaluation_reusing_the_warm_lists_gives_the_same_figures(
    prepared: PreparedData, models: dict[str, Recommender]
) -> None:
    pairs = context_segments(prepared)
    scored: dict[str, ScoredLists] = {}
    evaluate_models(models, evaluation_segments(prepared), 10, scored_lists=scored)
    assert set(scored) == set(models) and all(lists[0][0].name == "all" for lists in scored.values())
    # small chunks as well: a list must not depend on the rows scored with it
    reused = evaluate_context_mixes(models, pairs, 10, resamples=200, scored_lists=scored)
    chunked = evaluate_context_mixes(models, pairs, 10, resamples=200, score_cells_per_chunk=300 * 7)
    assert [r.to_dict() for r in reused] == [r.to_dict() for r in chunked]


def test_steering_meets_the_target_at_the_default_and_costs_the_own_list_nothing(
    prepared: PreparedData, models: dict[str, Recommender]
) -> None:
    segment = evaluation_segments(prepared)[0]
    settings = (0.0, DEFAULT_STEERING, 1.0)
    results = evaluate_steering(models, segment, prepared.catalog, prepared.item_frame, 10, settings=settings)
    assert {r.model for r in results} == {"als"}  # the others have no history to override
    by_setting = {r.steering: r for r in results}
    default = by_setting[DEFAULT_STEERING]
    assert default.steered_share >= 0.6
    assert default.steered_share >= by_setting[0.0].steered_share
    assert default.steered_share > default.own_share + 0.2
    for result in results:
        assert result.ndcg_own_mix_requested == result.ndcg_own  # the own mix requested: the own list
    assert by_setting[1.0].ndcg_steered <= by_setting[0.0].ndcg_steered  # more steering, less own taste


def test_a_blend_of_members_without_personas_and_without_a_prior_still_steers(
    prepared: PreparedData,
) -> None:
    """As ``tune`` and ``compare`` build a blend whose validation kept no prior: the members trade the
    customer's persona for the requested one and turn towards it, so the blended list follows."""
    members = [
        {"kind": "als", "factors": 16, "iterations": 5, "num_threads": 1},
        {"kind": "linear_autoencoder", "num_threads": 1},
    ]
    blend_config = ModelBlend.without_personas({"members": members, "weights": [0.4, 0.6]})
    assert blend_config.get("prior_weights") is None  # no prior: the gate kept none
    config = parse_config({"data": {"path": "."}, "models": {"blend": blend_config}})
    fitted, _ = fit_models(prepared, config, show_progress=False)
    segment = evaluation_segments(prepared)[0]
    results = evaluate_steering(
        fitted, segment, prepared.catalog, prepared.item_frame, 10, settings=(0.0, DEFAULT_STEERING)
    )
    by_setting = {r.steering: r for r in results}
    assert set(by_setting) == {0.0, DEFAULT_STEERING}  # measured: the blend's lists depend on the customer
    default = by_setting[DEFAULT_STEERING]
    assert default.steered_share >= 0.6
    assert default.steered_share > default.own_share + 0.2
    assert default.steered_share >= by_setting[0.0].steered_share
    assert default.ndcg_own_mix_requested == default.ndcg_own
