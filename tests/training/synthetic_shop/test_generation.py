"""Generation as a whole: determinism, the data contract, both file formats and config validation."""

import dataclasses
import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.data.contract import TABLES, ColumnKind
from engine.data.loading import load_shop
from tests.training.synthetic_shop.small_shop import SMALL, read
from training.synthetic_shop import GenerationSummary, ShopConfig, generate_shop
from training.synthetic_shop.planted_personas import CATEGORIES, CHANNELS, DEVICES, TAGS
from training.synthetic_shop.table_files import UNSIMULATED_COLUMNS

POLARS_TYPES: dict[ColumnKind, pl.DataType] = {
    ColumnKind.STRING: pl.String(),
    ColumnKind.FLOAT: pl.Float64(),
    ColumnKind.INT: pl.Int64(),
    ColumnKind.BOOL: pl.Boolean(),
    ColumnKind.TIMESTAMP: pl.Datetime("us", "UTC"),
    ColumnKind.DATE: pl.Date(),
    ColumnKind.STRING_LIST: pl.List(pl.String),
}


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
        "truth/event_personas.parquet",
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
