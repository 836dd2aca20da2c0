"""Planted persona mixes: on the simplex, shifted on weekends, drifting on time; the hidden segment."""

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl

from engine.personas.shopping_context import context_expr
from tests.training.synthetic_shop.small_shop import (
    ALL_IDS,
    SMALL,
    events_with_dominant,
    read,
    truth,
    weights,
)
from training.synthetic_shop import TRUTH_MIX_PREFIXES, GenerationSummary, generate_shop
from training.synthetic_shop.planted_personas import (
    HEALTH_CATEGORIES,
    HIDDEN_PERSONA_ID,
    LUXURY_CATEGORIES,
    TECH_CATEGORIES,
)


def test_truth_mixes_lie_on_the_simplex(shop: GenerationSummary) -> None:
    mixes = truth(shop)
    assert mixes["customer_id"].to_list() == read(shop, "customers")["customer_id"].to_list()
    for prefix in TRUTH_MIX_PREFIXES:
        block = weights(mixes, prefix)
        assert (block >= 0).all(), prefix
        np.testing.assert_allclose(block.sum(axis=1), 1.0, atol=1e-9, err_msg=prefix)
    hidden = mixes["hidden_segment"].to_numpy()
    gift = mixes[f"weekday__{HIDDEN_PERSONA_ID}"].to_numpy()
    assert ((gift >= 0.6) & (gift <= 0.8))[hidden].all()
    assert (gift[~hidden] == 0).all()
    assert (weights(mixes, "weekday").max(axis=1) >= 0.55 * 0.2).all()


def test_drift_dates_and_post_drift_mixes(shop: GenerationSummary) -> None:
    mixes = truth(shop)
    drifted = mixes["drift_date"].is_not_null().to_numpy()
    assert 0.1 < drifted.mean() < 0.3
    assert not (drifted & mixes["hidden_segment"].to_numpy()).any()
    days = np.array([(d - SMALL.start).days for d in mixes["drift_date"].drop_nulls()])
    assert ((days >= int(0.4 * SMALL.days)) & (days < 0.8 * SMALL.days)).all()
    for context in ("weekday", "weekend_holiday"):
        pre, post = weights(mixes, context), weights(mixes, f"post_drift_{context}")
        np.testing.assert_array_equal(pre[~drifted], post[~drifted])
    before, after = weights(mixes, "weekday")[drifted], weights(mixes, "post_drift_weekday")[drifted]
    assert (before.argmax(axis=1) != after.argmax(axis=1)).all()


def test_weekend_mixes_shift_toward_luxury(shop: GenerationSummary) -> None:
    mixes = truth(shop)
    luxury = "luxury_enthusiast"
    weekday, weekend = mixes[f"weekday__{luxury}"].to_numpy(), mixes[f"weekend_holiday__{luxury}"].to_numpy()
    assert (weekend > weekday).all()
    assert (mixes["weekend_holiday__bargain_hunter"] < mixes["weekday__bargain_hunter"]).all()
    events = events_with_dominant(shop).with_columns(
        context_expr().alias("context"),
        (pl.col("price").rank() / pl.len()).over("category").alias("price_rank"),
    )
    by_context = events.group_by("context").agg(
        pl.col("price_rank").mean(),
        pl.col("tags").list.contains("premium").mean().alias("premium"),
        (pl.col("discount") > 0).mean().alias("discounted"),
    )
    weekday, weekend = (
        by_context.filter(pl.col("context") == c).row(0, named=True) for c in ("weekday", "weekend_holiday")
    )
    assert weekend["price_rank"] > weekday["price_rank"] + 0.01
    assert weekend["premium"] > weekday["premium"] + 0.01
    assert weekend["discounted"] < weekday["discounted"] - 0.01


def expected_persona_shares(shop: GenerationSummary, *, honour_drift: bool) -> np.ndarray:
    """Per customer, the average over its event rows of the planted mix for each row's context/phase."""
    mixes = truth(shop)
    events = read(shop, "events").join(
        mixes.select("customer_id", "drift_date"), on="customer_id", how="left"
    )
    after = pl.col("timestamp").dt.date() >= pl.col("drift_date")
    events = events.with_columns(
        context_expr().alias("context"), (after.fill_null(False) & honour_drift).alias("post")
    )
    row_of = {cid: i for i, cid in enumerate(mixes["customer_id"])}
    rows = np.array([row_of[c] for c in events["customer_id"]])
    blocks = {
        (False, "weekday"): weights(mixes, "weekday"),
        (False, "weekend_holiday"): weights(mixes, "weekend_holiday"),
        (True, "weekday"): weights(mixes, "post_drift_weekday"),
        (True, "weekend_holiday"): weights(mixes, "post_drift_weekend_holiday"),
    }
    per_event = np.zeros((events.height, len(ALL_IDS)))
    for (post, context), block in blocks.items():
        mask = ((events["post"] == post) & (events["context"] == context)).to_numpy()
        per_event[mask] = block[rows[mask]]
    totals = np.zeros((mixes.height, len(ALL_IDS)))
    np.add.at(totals, rows, per_event)
    return totals / np.bincount(rows, minlength=mixes.height)[:, None]


def test_realized_shares_follow_the_mix_in_force_including_drift(shop: GenerationSummary) -> None:
    mixes = truth(shop)
    realized = weights(mixes, "realized")
    drifted = mixes["drift_date"].is_not_null().to_numpy()
    with_drift = expected_persona_shares(shop, honour_drift=True)
    without_drift = expected_persona_shares(shop, honour_drift=False)
    error_with = np.abs(realized - with_drift).sum(axis=1)
    error_without = np.abs(realized - without_drift).sum(axis=1)
    assert error_with.mean() < 0.45  # multinomial noise of ~27 rows per customer
    assert np.abs(realized.mean(axis=0) - with_drift.mean(axis=0)).max() < 0.02
    assert error_without[drifted].mean() > error_with[drifted].mean() + 0.25


PERSONA_CATEGORY_GROUP = {
    category: group
    for group, categories in (
        ("tech", TECH_CATEGORIES),
        ("health", HEALTH_CATEGORIES),
        ("luxury", LUXURY_CATEGORIES),
        ("gift", ("toys", "books")),
    )
    for category in categories
}


def test_drifted_customers_change_behaviour_at_the_drift_date(shop: GenerationSummary) -> None:
    """Category-group mix before vs after the drift date moves more for drifted customers than for others
    (split at the median drift date)."""
    mixes = truth(shop)
    median_drift = mixes["drift_date"].drop_nulls().sort()[mixes["drift_date"].drop_nulls().len() // 2]
    split = mixes.select("customer_id", pl.col("drift_date").fill_null(median_drift).alias("split"))
    events = read(shop, "events").join(read(shop, "items"), on="item_id").join(split, on="customer_id")
    histograms = (
        events.with_columns(
            (pl.col("timestamp").dt.date() >= pl.col("split")).alias("after"),
            pl.col("category").replace_strict(PERSONA_CATEGORY_GROUP, default="other").alias("group"),
        )
        .group_by("customer_id", "after", "group")
        .len()
        .with_columns((pl.col("len") / pl.col("len").sum().over("customer_id", "after")).alias("p"))
        .pivot(on="after", index=["customer_id", "group"], values="p")
        .fill_null(0.0)
        .group_by("customer_id")
        .agg(((pl.col("true") - pl.col("false")).abs().sum() / 2).alias("tv"))
        .join(
            mixes.select("customer_id", pl.col("drift_date").is_not_null().alias("drifted")), on="customer_id"
        )
    )
    tv = histograms.group_by("drifted").agg(pl.col("tv").mean())
    by_group = dict(zip(tv["drifted"], tv["tv"], strict=True))
    assert by_group[True] > by_group[False] + 0.05


def test_hidden_segment_shops_gifts_on_social_near_holidays(tmp_path: Path) -> None:
    config = dataclasses.replace(SMALL, seed=5, hidden_segment_share=0.2)
    shop = generate_shop(tmp_path, config)
    events = events_with_dominant(shop)
    hidden = events.filter(pl.col("dominant") == HIDDEN_PERSONA_ID)
    others = events.filter(pl.col("dominant") != HIDDEN_PERSONA_ID)
    assert hidden.select(pl.col("category").is_in(["toys", "books"]).mean()).item() > 0.4
    assert (hidden["channel"] == "social").mean() > (others["channel"] == "social").mean() + 0.15
    near_valentine = pl.col("timestamp").dt.date().is_between(dt.date(2026, 2, 7), dt.date(2026, 2, 21))
    assert hidden.select(near_valentine.mean()).item() > 1.5 * others.select(near_valentine.mean()).item()
