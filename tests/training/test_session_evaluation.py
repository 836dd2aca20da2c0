"""A known customer's first held-out day played as a live session, folded into their vector or not."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from engine.models.base import Recommender
from training.config import parse_config
from training.prepared_data import EvaluationSegment, PreparedData, evaluation_segments, prepare
from training.session_evaluation import (
    SessionCustomers,
    evaluate_session_fold_in,
    session_customers,
    session_evaluation,
    session_table,
)
from training.synthetic_shop import ShopConfig, generate_shop
from training.train_job import fit_models

MODELS = {
    "popularity": {},
    "persona_popularity": {},
    "als": {"factors": 16, "iterations": 8, "num_threads": 1},
    "bpr": {"factors": 16, "iterations": 20, "num_threads": 1, "random_state": 3},
}
WEIGHTS = {"view": 1.0, "cart": 3.0, "purchase": 5.0}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    shop = tmp_path_factory.mktemp("shop")
    generate_shop(shop, ShopConfig(customers=800, items=300, events=40_000, seed=17))
    return prepare(parse_config({"data": {"path": str(shop)}, "models": MODELS}), data_path=shop)


@pytest.fixture(scope="module")
def warm(prepared: PreparedData) -> EvaluationSegment:
    return evaluation_segments(prepared)[0]


@pytest.fixture(scope="module")
def pair(prepared: PreparedData, warm: EvaluationSegment) -> SessionCustomers:
    found = session_customers(prepared, warm, WEIGHTS)
    assert found is not None
    return found


@pytest.fixture(scope="module")
def models(prepared: PreparedData) -> dict[str, Recommender]:
    fitted, _ = fit_models(
        prepared, parse_config({"data": {"path": "."}, "models": MODELS}), show_progress=False
    )
    return fitted


def _test_days(prepared: PreparedData, customer: str) -> pl.DataFrame:
    return (
        prepared.split.test_events.with_columns(
            pl.col("customer_id").cast(pl.Utf8), pl.col("item_id").cast(pl.Utf8)
        )
        .filter(pl.col("customer_id") == customer)
        .with_columns(pl.col("timestamp").dt.date().alias("day"))
    )


def test_the_first_held_out_day_is_the_session_and_later_new_items_are_held_out(
    prepared: PreparedData, pair: SessionCustomers
) -> None:
    """Checked customer by customer against the events themselves: the events row is history plus the
    first day's weighted events (summed before the log, as serving sums them), the lists leave out
    both, and what is held out is what came later and is new to them."""
    items = prepared.items
    for n in range(0, len(pair.fitted.customer_ids), 97):
        customer = str(pair.fitted.customer_ids[n])
        days = _test_days(prepared, customer)
        first = days["day"].min()
        session, later = days.filter(pl.col("day") == first), days.filter(pl.col("day") > first)
        history = prepared.history[int(prepared.customer_rows([customer])[0])].toarray()[0]
        expected = np.expm1(history.astype(np.float64))
        for item, kind in zip(session["item_id"].to_list(), session["event_type"].to_list(), strict=True):
            expected[int(items.to_internal([item])[0])] += WEIGHTS[kind]
        events = pair.folded_in.users.events
        assert events is not None
        np.testing.assert_allclose(events[n].toarray()[0], np.log1p(expected), rtol=1e-6)
        seen = set(np.flatnonzero(expected))
        assert set(pair.fitted.exclude[n].indices) == seen
        held_out = {int(items.to_internal([i])[0]) for i in later["item_id"].to_list()} - seen
        assert set(pair.fitted.relevant[n].indices) == held_out and held_out


def test_both_sides_score_the_same_customers_alike_but_for_the_events(pair: SessionCustomers) -> None:
    fitted, folded = pair.fitted, pair.folded_in
    assert fitted.users.events is None
    assert np.array_equal(fitted.customer_ids, folded.customer_ids)
    assert (
        np.array_equal(fitted.users.user_index, folded.users.user_index)
        and (fitted.users.user_index >= 0).all()
    )
    assert np.array_equal(fitted.users.mix, folded.users.mix)
    assert abs(fitted.exclude - folded.exclude).nnz == 0 and abs(fitted.relevant - folded.relevant).nnz == 0
    assert pair.to_dict()["customers"] == len(fitted.customer_ids)


def test_only_models_that_fold_events_in_are_scored_and_their_figures_are_the_two_lists(
    pair: SessionCustomers, models: dict[str, Recommender]
) -> None:
    from engine.evaluation.ranking_metrics import ranking_metrics
    from training.evaluation import recommend_in_chunks

    results = evaluate_session_fold_in(models, pair, 10)
    assert [r.model for r in results] == ["als"]
    als = results[0]
    folded = ranking_metrics(recommend_in_chunks(models["als"], pair.folded_in, 10), pair.folded_in.relevant)
    fitted = ranking_metrics(recommend_in_chunks(models["als"], pair.fitted, 10), pair.fitted.relevant)
    assert als.ndcg_folded_in == pytest.approx(folded.ndcg.mean())
    assert als.ndcg_fitted == pytest.approx(fitted.ndcg.mean())
    assert als.difference.mean == pytest.approx(folded.ndcg.mean() - fitted.ndcg.mean())
    assert als.difference.low <= als.difference.mean <= als.difference.high
    assert als.ndcg_folded_in != als.ndcg_fitted, "the session moves the lists"


def test_the_record_and_its_table(
    prepared: PreparedData, warm: EvaluationSegment, models: dict[str, Recommender]
) -> None:
    config = parse_config({"data": {"path": "."}, "models": MODELS})
    record = session_evaluation(prepared, models, [warm], config)
    assert record is not None and record["customers"] > 0 and record["session_events"] > 0
    title, columns, rows = session_table(record, 10)
    assert "known customers" in title and columns[2] == "NDCG@10 folded in"
    assert [row[0] for row in rows] == ["als"]
    assert session_evaluation(prepared, models, [], config) is None


def test_no_session_customers_without_two_held_out_days(
    prepared: PreparedData, warm: EvaluationSegment
) -> None:
    """A test period of one day each has no later day to hold out."""
    one_day = prepared.split.test_events.filter(
        pl.col("timestamp").dt.date() == pl.col("timestamp").dt.date().min()
    )
    split = dataclasses.replace(prepared.split, test_events=one_day)
    assert session_customers(dataclasses.replace(prepared, split=split), warm, WEIGHTS) is None
