"""The truth files and the decisions log: planted response rates, exact propensities, planted outcomes."""

import json

import numpy as np
import polars as pl

from engine.personas.shopping_context import context_expr
from tests.training.synthetic_shop.small_shop import ALL_IDS, SMALL, read, truth
from training.synthetic_shop import GenerationSummary
from training.synthetic_shop.planted_personas import HIDDEN_PERSONA_ID


def test_generator_and_response_rate_truth(shop: GenerationSummary) -> None:
    info = json.loads((shop.out_dir / "truth" / "generator.json").read_text())
    assert info["persona_ids"] == list(ALL_IDS)
    assert info["hidden_persona_ids"] == [HIDDEN_PERSONA_ID]
    assert info["config"]["seed"] == SMALL.seed and info["config"]["start"] == SMALL.start.isoformat()
    rates = json.loads((shop.out_dir / "truth" / "response_rates.json").read_text())
    offers = read(shop, "offers")["offer_id"].to_list()
    layouts = read(shop, "layouts")["variant_id"].to_list()
    for persona in ALL_IDS:
        assert list(rates["offer"][persona]) == offers
        assert list(rates["layout"][persona]) == layouts
    assert rates["offer"]["bargain_hunter"]["offer_pct10_sitewide"] >= 0.2
    assert rates["offer"]["luxury_enthusiast"]["offer_early_collection"] >= 0.2
    assert rates["offer"]["brand_loyalist"]["offer_points_double"] >= 0.2
    assert rates["offer"]["luxury_enthusiast"]["offer_pct10_sitewide"] < 0.05


def test_decisions_log_exact_propensities_and_planted_outcomes(shop: GenerationSummary) -> None:
    decisions = read(shop, "decisions").join(read(shop, "customers"), on="customer_id")
    assert (decisions["context"] == decisions.select(context_expr().alias("context"))["context"]).all()
    # Offers: softmax over a fixed prior given (context, income band): one propensity per arm, summing to 1.
    offer_policy = (
        decisions.filter(pl.col("decision_type") == "offer")
        .group_by("context", "income_band", "arm_id")
        .agg(pl.col("propensity").n_unique().alias("distinct"), pl.col("propensity").first())
    )
    assert (offer_policy["distinct"] == 1).all()
    assert offer_policy["propensity"].n_unique() > 10  # not a uniform policy
    # Layouts: epsilon-greedy, the per-context default gets 0.6 and every other variant 0.1.
    assert set(decisions.filter(pl.col("decision_type") == "layout")["propensity"].round(9)) == {0.6, 0.1}

    rates = json.loads((shop.out_dir / "truth" / "response_rates.json").read_text())
    mixes = truth(shop)
    row_of = {cid: i for i, cid in enumerate(mixes["customer_id"])}
    drift = dict(zip(mixes["customer_id"], mixes["drift_date"], strict=True))
    expected = []
    for d in decisions.iter_rows(named=True):
        post = drift[d["customer_id"]] is not None and d["timestamp"].date() >= drift[d["customer_id"]]
        prefix = ("post_drift_" if post else "") + d["context"]
        mix = mixes.row(row_of[d["customer_id"]], named=True)
        expected.append(
            sum(mix[f"{prefix}__{p}"] * rates[d["decision_type"]][p][d["arm_id"]] for p in ALL_IDS)
        )
    expected_rate = np.array(expected)
    outcome = decisions["outcome"].to_numpy()
    standard_error = np.sqrt((expected_rate * (1 - expected_rate)).sum()) / len(outcome)
    assert abs(outcome.mean() - expected_rate.mean()) < 4 * standard_error
    high = expected_rate > np.median(expected_rate)
    assert outcome[high].mean() > outcome[~high].mean() + 0.03


def test_event_personas_name_the_persona_behind_every_event_row(shop: GenerationSummary) -> None:
    """truth/event_personas.parquet lines up with the events table row for row, and its counts are the
    realised persona shares the mix truth states."""
    events = read(shop, "events")
    labels = pl.read_parquet(shop.out_dir / "truth" / "event_personas.parquet")
    assert labels["event_id"].to_list() == events["event_id"].to_list()
    assert set(labels["persona_id"].unique().to_list()) <= set(ALL_IDS)
    labelled = events.with_columns(labels["persona_id"])
    shares = (
        labelled.group_by("customer_id", "persona_id")
        .len()
        .with_columns((pl.col("len") / pl.col("len").sum().over("customer_id")).alias("share"))
        .pivot("persona_id", index="customer_id", values="share")
        .fill_null(0.0)
    )
    mixes = truth(shop).join(shares, on="customer_id")
    for persona in ALL_IDS:
        stated = mixes[f"realized__{persona}"].to_numpy()
        counted = mixes[persona].to_numpy() if persona in mixes.columns else np.zeros(mixes.height)
        np.testing.assert_allclose(counted, stated, atol=1e-12)
