import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.data.contract import TABLES, ColumnKind
from engine.data.loading import load_shop
from engine.personas.catalog import load_catalog
from engine.personas.shopping_context import context_expr
from training.synthetic_personas import (
    CATEGORIES,
    CHANNELS,
    DEVICES,
    HEALTH_CATEGORIES,
    HIDDEN_PERSONA_ID,
    LUXURY_CATEGORIES,
    PLANTED_PERSONAS,
    SIGNALLED_MASS,
    TAGS,
    TECH_CATEGORIES,
    PlantedPersona,
    planted_persona,
)
from training.synthetic_shop import (
    CART_RATE,
    IN_STOCK_RATE,
    PURCHASE_GIVEN_CART,
    TRUTH_MIX_PREFIXES,
    UNSIMULATED_COLUMNS,
    GenerationSummary,
    ShopConfig,
    _build_items,
    _SegmentedSampler,
    _ShopModel,
    generate_shop,
    mix_columns,
)

# Small enough to build in a fraction of a second, large enough that planted effects beat sampling noise.
SMALL = ShopConfig(customers=600, items=300, events=24_000, seed=11, drift_share=0.2, chunk_customers=256)
CATALOG_IDS = load_catalog().ids
ALL_IDS = (*CATALOG_IDS, HIDDEN_PERSONA_ID)

POLARS_TYPES: dict[ColumnKind, pl.DataType] = {
    ColumnKind.STRING: pl.String(),
    ColumnKind.FLOAT: pl.Float64(),
    ColumnKind.INT: pl.Int64(),
    ColumnKind.BOOL: pl.Boolean(),
    ColumnKind.TIMESTAMP: pl.Datetime("us", "UTC"),
    ColumnKind.DATE: pl.Date(),
    ColumnKind.STRING_LIST: pl.List(pl.String),
}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> GenerationSummary:
    return generate_shop(tmp_path_factory.mktemp("shop"), SMALL)


@pytest.fixture(scope="module")
def csv_shop(tmp_path_factory: pytest.TempPathFactory) -> GenerationSummary:
    return generate_shop(tmp_path_factory.mktemp("csv_shop"), dataclasses.replace(SMALL, file_format="csv"))


def read(shop: GenerationSummary, table: str) -> pl.DataFrame:
    return pl.read_parquet(shop.out_dir / f"{table}.parquet")


def truth(shop: GenerationSummary) -> pl.DataFrame:
    return pl.read_parquet(shop.out_dir / "truth" / "customer_mixes.parquet")


def weights(frame: pl.DataFrame, prefix: str) -> np.ndarray:
    return frame.select(mix_columns(prefix, ALL_IDS)).to_numpy()


def events_with_dominant(shop: GenerationSummary) -> pl.DataFrame:
    """Events joined with their items and the customer's dominant (pre-drift weekday) persona."""
    mixes = truth(shop)
    dominant = np.array(ALL_IDS)[weights(mixes, "weekday").argmax(axis=1)]
    customers = pl.DataFrame({"customer_id": mixes["customer_id"], "dominant": dominant})
    return read(shop, "events").join(read(shop, "items"), on="item_id").join(customers, on="customer_id")


# --- determinism and the data contract ---------------------------------------------------------------


def test_same_config_writes_byte_identical_files(tmp_path: Path, shop: GenerationSummary) -> None:
    again = generate_shop(tmp_path / "again", SMALL)
    assert again.counts == shop.counts
    for first, second in zip(shop.files, again.files, strict=True):
        assert first.relative_to(shop.out_dir) == second.relative_to(again.out_dir)
        assert first.read_bytes() == second.read_bytes(), f"{first.name} differs between two runs"
    other_seed = generate_shop(tmp_path / "other", dataclasses.replace(SMALL, seed=12))
    assert (other_seed.out_dir / "events.parquet").read_bytes() != (
        shop.out_dir / "events.parquet"
    ).read_bytes()


def test_summary_counts_and_files(shop: GenerationSummary) -> None:
    names = {p.relative_to(shop.out_dir).as_posix() for p in shop.files}
    assert names == {f"{t}.parquet" for t in TABLES} | {
        "truth/customer_mixes.parquet",
        "truth/response_rates.json",
        "truth/generator.json",
    }
    for table in TABLES:
        assert read(shop, table).height == shop.counts[table]
    assert shop.counts["customers"] == SMALL.customers
    assert shop.counts["items"] == SMALL.items
    assert abs(shop.counts["events"] - SMALL.events) < 0.1 * SMALL.events
    assert 1.5 * SMALL.customers < shop.counts["decisions"] / 2 < 2.5 * SMALL.customers


# Contract columns the generator leaves empty: its planted personas do not depend on them.
NOT_SIMULATED = {("customers", "gender"), ("customers", "occupation")}


@pytest.mark.parametrize("table", list(TABLES))
def test_tables_follow_the_contract(shop: GenerationSummary, table: str) -> None:
    schema = TABLES[table]
    frame = read(shop, table)
    simulated = [c for c in schema.columns if (table, c.name) not in UNSIMULATED_COLUMNS]
    assert frame.columns == [c.name for c in simulated]
    for column in simulated:
        values = frame[column.name]
        assert values.dtype == POLARS_TYPES[column.kind], f"{table}.{column.name}"
        if (table, column.name) in NOT_SIMULATED:
            assert values.null_count() == frame.height, f"{table}.{column.name} is not simulated"
            continue
        assert values.null_count() == 0, f"{table}.{column.name} has nulls"
        if column.allowed is not None:
            assert set(values.unique()) <= set(column.allowed), f"{table}.{column.name}"
        if column.min_value is not None:
            assert values.min() >= column.min_value, f"{table}.{column.name}"
        if column.max_value is not None:
            assert values.max() <= column.max_value, f"{table}.{column.name}"
        if column.unique:
            assert values.n_unique() == frame.height, f"{table}.{column.name} repeats"


def test_references_and_vocabulary(shop: GenerationSummary) -> None:
    events, items, decisions = read(shop, "events"), read(shop, "items"), read(shop, "decisions")
    assert set(events["item_id"]) <= set(items["item_id"])
    assert set(events["customer_id"]) == set(read(shop, "customers")["customer_id"])
    assert set(items["category"]) == set(CATEGORIES)
    assert set(items["tags"].explode().drop_nulls()) <= set(TAGS)
    assert set(events["channel"]) == set(CHANNELS)
    assert set(events["device"]) == set(DEVICES)
    offers = set(read(shop, "offers")["offer_id"])
    layouts = set(read(shop, "layouts")["variant_id"])
    by_type = decisions.group_by("decision_type").agg(pl.col("arm_id").unique())
    arms = dict(zip(by_type["decision_type"], by_type["arm_id"].to_list(), strict=True))
    assert set(arms["offer"]) <= offers
    assert set(arms["layout"]) <= layouts
    brands = set(items["brand"])
    assert set(read(shop, "offers")["eligible_brands"].explode().drop_nulls()) <= brands


def test_load_shop_accepts_both_formats_and_csv_round_trips(
    shop: GenerationSummary, csv_shop: GenerationSummary
) -> None:
    from_parquet = load_shop(shop.out_dir)
    from_csv = load_shop(csv_shop.out_dir)
    assert from_parquet.report.total_skipped == 0
    for table in TABLES:
        parquet_frame = getattr(from_parquet, table)
        csv_frame = getattr(from_csv, table)
        assert parquet_frame.height == shop.counts[table]
        assert csv_frame.equals(parquet_frame), f"{table} differs between CSV and Parquet"
    raw_items = pl.read_csv(csv_shop.out_dir / "items.csv")
    multi_tag = read(shop, "items").filter(pl.col("tags").list.len() >= 2).row(0, named=True)
    raw_tags = raw_items.filter(pl.col("item_id") == multi_tag["item_id"])["tags"].item()
    assert raw_tags == "|".join(multi_tag["tags"])


def test_generation_is_independent_of_the_file_format(
    shop: GenerationSummary, csv_shop: GenerationSummary
) -> None:
    parquet_truth = (shop.out_dir / "truth" / "customer_mixes.parquet").read_bytes()
    assert (csv_shop.out_dir / "truth" / "customer_mixes.parquet").read_bytes() == parquet_truth


def test_switching_format_in_the_same_directory_leaves_one_file_per_table(tmp_path: Path) -> None:
    tiny = ShopConfig(customers=40, items=80, events=600, seed=3)
    generate_shop(tmp_path, tiny)
    summary = generate_shop(tmp_path, dataclasses.replace(tiny, file_format="csv"), show_progress=True)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted(f"{t}.csv" for t in TABLES)
    assert load_shop(tmp_path).events.height == summary.counts["events"]


# --- planted ground truth ----------------------------------------------------------------------------


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
        context_expr().alias("context"),
        (after.fill_null(False) & honour_drift).alias("post"),
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


# --- planted persona signals -------------------------------------------------------------------------


def test_catalog_signals_are_true_of_the_generated_events(shop: GenerationSummary) -> None:
    events = events_with_dominant(shop)
    catalog = load_catalog()
    for persona in catalog.personas:
        own = events.filter(pl.col("dominant") == persona.id)
        rest = events.filter(pl.col("dominant") != persona.id)
        signals = persona.signals
        for column, favoured in (("channel", signals.channels), ("device", signals.devices)):
            for value in favoured:
                mine, others = (own[column] == value).mean(), (rest[column] == value).mean()
                assert mine > others * 1.1, f"{persona.id} {column}={value}: {mine:.3f} vs {others:.3f}"
        # Categories and tags are checked as a set: one category's share also depends on which of its
        # few items the popularity draw made hits.
        if signals.categories:
            in_favoured = pl.col("category").is_in(list(signals.categories)).mean()
            mine, others = own.select(in_favoured).item(), rest.select(in_favoured).item()
            assert mine > others * 1.5, f"{persona.id} categories: {mine:.3f} vs {others:.3f}"
        if signals.tags:
            tagged = (pl.col("tags").list.set_intersection(list(signals.tags)).list.len() > 0).mean()
            mine, others = own.select(tagged).item(), rest.select(tagged).item()
            assert mine > others * 1.15, f"{persona.id} tags: {mine:.3f} vs {others:.3f}"


def test_planted_price_discount_and_brand_behaviour(shop: GenerationSummary) -> None:
    events = events_with_dominant(shop).with_columns(
        (pl.col("price").rank() / pl.len()).over("category").alias("price_rank")
    )
    per_persona = events.group_by("dominant").agg(
        (pl.col("discount") > 0).mean().alias("discounted"),
        pl.col("price_rank").mean(),
        pl.col("category").is_in(TECH_CATEGORIES).mean().alias("tech"),
    )
    stats = {row["dominant"]: row for row in per_persona.iter_rows(named=True)}
    overall_discount = (events["discount"] > 0).mean()
    assert stats["bargain_hunter"]["discounted"] > 1.8 * stats["luxury_enthusiast"]["discounted"]
    assert stats["bargain_hunter"]["discounted"] > overall_discount > stats["brand_loyalist"]["discounted"]
    assert stats["bargain_hunter"]["price_rank"] < 0.45 < 0.55 < stats["luxury_enthusiast"]["price_rank"]
    assert stats["tech_savvy"]["tech"] > 0.5
    assert stats["tech_savvy"]["tech"] > 1.4 * max(v["tech"] for k, v in stats.items() if k != "tech_savvy")

    top_two_brands = (
        events.group_by("customer_id", "dominant", "brand")
        .len()
        .sort("len", descending=True)
        .group_by("customer_id", "dominant")
        .agg((pl.col("len").head(2).sum() / pl.col("len").sum()).alias("top2"))
        .group_by("dominant")
        .agg(pl.col("top2").mean())
    )
    concentration = dict(zip(top_two_brands["dominant"], top_two_brands["top2"], strict=True))
    others = [v for k, v in concentration.items() if k != "brand_loyalist"]
    assert concentration["brand_loyalist"] > sum(others) / len(others) + 0.1


def test_favourite_brand_items_are_picked_with_the_shopping_personas_taste() -> None:
    """Within one brand, a luxury enthusiast picks the dear end and a bargain hunter the cheap end."""
    model = _ShopModel.build(ShopConfig(items=2_000, seed=3), load_catalog())
    personas, items = model.personas, model.items
    sizes = np.bincount(items.brand, minlength=len(items.brand_names))
    tertile_spread = np.array(
        [np.unique(items.price_tertile[items.brand == b]).size for b in range(sizes.size)]
    )
    brand = int(np.argmax(np.where(tertile_spread == 3, sizes, 0)))
    rng = np.random.default_rng(0)

    def picks(persona_id: str) -> np.ndarray:
        segment = np.full(20_000, personas.ids.index(persona_id) * len(items.brand_names) + brand)
        return personas.brand_item_sampler.draw(segment, rng.random(20_000)) % len(items)

    luxury, bargain = picks("luxury_enthusiast"), picks("bargain_hunter")
    assert (items.brand[luxury] == brand).all() and (items.brand[bargain] == brand).all()
    assert items.price_tertile[luxury].mean() > items.price_tertile[bargain].mean() + 0.5


def test_funnel_rates_are_the_planted_ones(shop: GenerationSummary) -> None:
    """About one in-stock view in ten is carted and a third of carts are bought (tolerances: ~4 sigma)."""
    counts = read(shop, "events")["event_type"].value_counts()
    n = dict(zip(counts["event_type"], counts["count"], strict=True))
    assert n["cart"] / n["view"] == pytest.approx(CART_RATE * IN_STOCK_RATE, abs=0.01)
    assert n["purchase"] / n["cart"] == pytest.approx(PURCHASE_GIVEN_CART, abs=0.045)


@pytest.mark.parametrize("seed", [0, 1])
def test_taste_clusters_are_niches_on_the_price_ladder(seed: int) -> None:
    """Items of a cluster sit close together in their category's price order (std 0.29 if random)."""
    items = _build_items(2_000, np.random.default_rng(seed))
    frame = pl.DataFrame({"category": items.category, "price": items.price, "cluster": items.cluster})
    spread = (
        frame.with_columns(((pl.col("price").rank() - 0.5) / pl.len()).over("category").alias("percentile"))
        .group_by("cluster")
        .agg(pl.col("percentile").std(), pl.col("category").n_unique().alias("categories"))
    )
    assert (spread["categories"] == 1).all()
    assert spread["percentile"].mean() < 0.2


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


def test_customers_have_activity_floor_and_sign_up_before_their_first_event(shop: GenerationSummary) -> None:
    events = read(shop, "events")
    first = events.group_by("customer_id").agg(
        pl.col("timestamp").min().dt.date().alias("first"),
        (pl.col("event_type") == "view").sum().alias("views"),
    )
    customers = read(shop, "customers").join(first, on="customer_id")
    assert (customers["views"] >= 4).all()
    assert (customers["signup_date"] < customers["first"]).all()
    start = dt.datetime.combine(SMALL.start, dt.time(), dt.UTC)
    assert events["timestamp"].min() >= start
    assert events["timestamp"].max() < start + dt.timedelta(days=SMALL.days)
    purchases = events.filter(pl.col("event_type") == "purchase").select(
        "event_id", "customer_id", "item_id", "timestamp"
    )
    carts = events.filter(pl.col("event_type") == "cart").select("customer_id", "item_id", "timestamp")
    with_earlier_cart = purchases.join(carts, on=["customer_id", "item_id"], suffix="_cart").filter(
        pl.col("timestamp_cart") < pl.col("timestamp")
    )
    assert with_earlier_cart["event_id"].n_unique() == purchases.height


# --- configuration and primitives --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"customers": 0}, "customers"),
        ({"items": 10}, "items"),
        ({"days": 3}, "days"),
        ({"drift_share": 1.5}, "drift_share"),
        ({"drift_share": 0.6, "hidden_segment_share": 0.5}, "drift_share"),
        ({"file_format": "json"}, "file_format"),
        ({"chunk_customers": 0}, "chunk_customers"),
        ({"start": dt.datetime(2026, 1, 1)}, "start"),
    ],
)
def test_invalid_configs_name_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"ShopConfig.{field}"):
        ShopConfig(**change)  # type: ignore[arg-type]


def test_every_catalog_persona_has_planted_behaviour_matching_its_signals() -> None:
    catalog = load_catalog()
    for persona in catalog.personas:
        planted = planted_persona(persona.id)
        assert set(planted.channels) == set(persona.signals.channels)
        assert set(planted.devices) == set(persona.signals.devices)
        assert set(planted.favoured_categories) == set(persona.signals.categories)
        assert set(persona.signals.tags) <= {t for t, f in planted.tag_boost.items() if f > 1}
    assert HIDDEN_PERSONA_ID not in catalog.ids
    assert set(PLANTED_PERSONAS) == {*catalog.ids, HIDDEN_PERSONA_ID}
    with pytest.raises(KeyError, match="no planted behaviour for persona 'impulse_buyer'"):
        planted_persona("impulse_buyer")


def test_channel_shares_favour_signalled_values() -> None:
    persona = PlantedPersona(persona_id="x", population_share=0.1, weekend_gain=1.0, channels=("email",))
    shares = persona.channel_shares()
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["email"] == pytest.approx(SIGNALLED_MASS + (1 - SIGNALLED_MASS) * 0.15)
    assert shares["search"] == pytest.approx((1 - SIGNALLED_MASS) * 0.30)
    with pytest.raises(ValueError, match=r"x.devices names unknown value\(s\) \['fax'\]"):
        dataclasses.replace(persona, devices=("fax",)).device_shares()


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=1, max_size=40),
    data=st.data(),
)
def test_segmented_sampler_draws_only_weighted_elements_of_the_segment(
    weights: list[float], data: st.DataObject
) -> None:
    n_segments = data.draw(st.integers(1, 5))
    segment = np.array(
        data.draw(st.lists(st.integers(0, n_segments - 1), min_size=len(weights), max_size=len(weights)))
    )
    weight = np.array(weights)
    totals = np.bincount(segment, weights=weight, minlength=n_segments)
    if (totals[np.bincount(segment, minlength=n_segments) > 0] <= 0).any():
        with pytest.raises(ValueError, match="zero total sampling weight"):
            _SegmentedSampler.build(segment, weight, n_segments)
        return
    sampler = _SegmentedSampler.build(segment, weight, n_segments)
    present = np.flatnonzero(totals > 0)
    wanted = np.repeat(present, 50)
    u = (
        np.concatenate([[0.0, 1.0 - 1e-12], np.random.default_rng(0).random(len(wanted) - 2)])
        if len(wanted) > 2
        else np.zeros(len(wanted))
    )
    drawn = sampler.draw(wanted, u)
    assert (segment[drawn] == wanted).all()
    assert (weight[drawn] > 0).all()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    customers=st.integers(1, 60),
    items=st.integers(70, 150),
    events=st.integers(1, 3_000),
    seed=st.integers(0, 2**32),
    chunk=st.integers(1, 64),
    file_format=st.sampled_from(["parquet", "csv"]),
)
def test_any_small_config_yields_a_loadable_shop(
    tmp_path_factory: pytest.TempPathFactory,
    customers: int,
    items: int,
    events: int,
    seed: int,
    chunk: int,
    file_format: str,
) -> None:
    config = ShopConfig(
        customers=customers,
        items=items,
        events=events,
        seed=seed,
        chunk_customers=chunk,
        file_format=file_format,
    )
    summary = generate_shop(tmp_path_factory.mktemp("any"), config)
    data = load_shop(summary.out_dir)
    assert data.customers is not None and data.customers.height == customers
    assert data.events.height == summary.counts["events"] >= 4 * customers
    assert data.events["event_id"].n_unique() == data.events.height
