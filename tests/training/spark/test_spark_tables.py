"""The data contract checked on Spark: each broken rule names the file, the column, how many rows
break it and a few of them; a valid shop comes back typed exactly as the local loader types it."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyspark.sql import SparkSession

from engine.data.loading import DataValidationError, load_shop
from training.spark.tables import collect_shop, load_shop_with_spark, slice_cuts, validate_tables


def _broken_copy(
    shop: Path, folder: Path, table: str, change: pl.Expr | None = None, **kwargs: object
) -> Path:
    """A copy of ``shop`` whose ``table`` is rewritten by ``change`` (a polars expression)."""
    copy = folder / "shop"
    shutil.copytree(shop, copy)
    frame = pl.read_parquet(copy / f"{table}.parquet")
    if change is not None:
        frame = frame.with_columns(change)
    if "drop" in kwargs:
        frame = frame.drop(str(kwargs["drop"]))
    if "append_first" in kwargs:
        frame = pl.concat([frame, frame.head(int(str(kwargs["append_first"])))])
    frame.write_parquet(copy / f"{table}.parquet")
    return copy


def _problems(spark: SparkSession, shop: Path) -> list[str]:
    with pytest.raises(DataValidationError) as caught:
        validate_tables(spark, str(shop), skip_invalid=False)
    return [str(issue) for issue in caught.value.issues]


def test_a_valid_shop_loads_as_the_local_loader_loads_it(spark: SparkSession, small_shop: Path) -> None:
    through_spark = load_shop_with_spark(spark, str(small_shop), skip_invalid=False)
    local = load_shop(small_shop)
    assert through_spark.events.sort("event_id").equals(local.events.sort("event_id"))
    assert through_spark.items.sort("item_id").equals(local.items.sort("item_id"))


def test_a_shop_collected_in_slices_keeps_every_row_in_file_order(
    spark: SparkSession, small_shop: Path, tmp_path: Path
) -> None:
    """Several partitions (small row groups, small splits) and slices that cross them: the driver
    still gets the events exactly as a local read of the file gives them, row for row."""
    copy = tmp_path / "shop"
    shutil.copytree(small_shop, copy)
    events = pq.read_table(copy / "events.parquet")
    pq.write_table(events, copy / "events.parquet", row_group_size=1_000)
    previous = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(32 * 1024))
    try:
        frames = validate_tables(spark, str(copy), skip_invalid=False)
        assert frames["events"].rdd.getNumPartitions() > 2
        through_spark = collect_shop(frames, skip_invalid=False, rows_per_collect=3_001)
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", str(previous))
    local = load_shop(copy)
    assert through_spark.events.height == events.num_rows
    assert through_spark.events.equals(local.events)
    assert through_spark.items.equals(local.items)


@given(
    sizes=st.lists(st.integers(0, 40), max_size=8),
    rows_per_slice=st.integers(1, 50),
)
def test_slice_cuts_cover_every_row_once_in_full_slices(sizes: list[int], rows_per_slice: int) -> None:
    positions = [(p << 33) + i for p, rows in enumerate(sizes) for i in range(rows)]
    cuts = slice_cuts(list(enumerate(sizes)), rows_per_slice)
    if not positions:
        assert cuts == []
        return
    assert cuts == sorted(set(cuts)) and cuts[0] == positions[0] and cuts[-1] == positions[-1] + 1
    counts = [sum(low <= x < high for x in positions) for low, high in itertools.pairwise(cuts)]
    assert sum(counts) == len(positions)
    assert all(c == rows_per_slice for c in counts[:-1]) and 0 < counts[-1] <= rows_per_slice


def test_an_unknown_event_type_is_counted_with_examples(
    spark: SparkSession, small_shop: Path, tmp_path: Path
) -> None:
    every_tenth = pl.int_range(pl.len()) % 10 == 0
    change = pl.when(every_tenth).then(pl.lit("wishlist")).otherwise(pl.col("event_type")).alias("event_type")
    broken = _broken_copy(small_shop, tmp_path, "events", change)
    expected = (pl.read_parquet(broken / "events.parquet")["event_type"] == "wishlist").sum()
    (problem,) = _problems(spark, broken)
    assert problem.startswith(f"{broken}/events.parquet, column 'event_type': {expected:,} row(s) not one of")
    assert "'wishlist'" in problem and "event_id" in problem


def test_nulls_negative_prices_and_a_missing_column_are_all_reported(
    spark: SparkSession, small_shop: Path, tmp_path: Path
) -> None:
    first_three = pl.int_range(pl.len()) < 3
    change = pl.when(first_three).then(pl.lit(-1.0)).otherwise(pl.col("price")).alias("price")
    broken = _broken_copy(small_shop, tmp_path, "items", change, drop="category")
    problems = _problems(spark, broken)
    assert any("column 'category': required column is missing" in p for p in problems)
    assert any("column 'price': 3 row(s) below 0" in p for p in problems)


def test_repeated_ids_and_unknown_items_are_counted(
    spark: SparkSession, small_shop: Path, tmp_path: Path
) -> None:
    first = pl.int_range(pl.len()) == 0
    change = pl.when(first).then(pl.lit("no-such-item")).otherwise(pl.col("item_id")).alias("item_id")
    broken = _broken_copy(small_shop, tmp_path, "events", change, append_first=2)
    problems = _problems(spark, broken)
    assert any("column 'event_id': 2 row(s) repeat an id already used" in p for p in problems)
    assert any("column 'item_id': 2 row(s) name an item the items table does not list" in p for p in problems)
    assert any("'no-such-item'" in p for p in problems)


def test_ids_with_control_characters_or_surrounding_whitespace_are_counted_and_skipped(
    spark: SparkSession, small_shop: Path, tmp_path: Path
) -> None:
    """The local loader's id rule (engine/data/id_cells.py), on the cluster: a padded id and a tab."""
    row = pl.int_range(pl.len())
    change = (
        pl.when(row == 0)
        .then(pl.lit(" c001"))
        .when(row == 1)
        .then(pl.concat_str(pl.col("customer_id"), pl.lit("\t")))
        .when(row == 2)
        .then(pl.concat_str(pl.col("customer_id"), pl.lit("\u00a0")))
        .otherwise(pl.col("customer_id"))
        .alias("customer_id")
    )
    broken = _broken_copy(small_shop, tmp_path, "events", change)
    (problem,) = _problems(spark, broken)
    assert problem.startswith(
        f"{broken}/events.parquet, column 'customer_id': 3 row(s) hold a control character or leading or "
        "trailing whitespace, e.g. event_id"
    )
    assert "' c001'" in problem
    shop = load_shop_with_spark(spark, str(broken), skip_invalid=True)
    assert shop.report.rows_skipped == {"events": {"malformed_id": 3}}


def test_a_missing_required_table_names_its_path(spark: SparkSession, tmp_path: Path) -> None:
    (problem, *_) = _problems(spark, tmp_path / "nowhere")
    assert f"{tmp_path}/nowhere/events.parquet" in problem and "required table 'events'" in problem


def test_skip_invalid_leaves_bad_rows_to_the_loader_which_drops_and_counts_them(
    spark: SparkSession, small_shop: Path, tmp_path: Path
) -> None:
    first_five = pl.int_range(pl.len()) < 5
    change = pl.when(first_five).then(pl.lit("wishlist")).otherwise(pl.col("event_type")).alias("event_type")
    broken = _broken_copy(small_shop, tmp_path, "events", change)
    shop = load_shop_with_spark(spark, str(broken), skip_invalid=True)
    assert shop.report.rows_skipped == {"events": {"not_allowed": 5}}
    assert shop.events.height == pl.read_parquet(broken / "events.parquet").height - 5
