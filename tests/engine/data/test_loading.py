"""Tests for engine.data.loading: typed frames from CSV and Parquet, and errors that point at the bad cell."""

from __future__ import annotations

import datetime as dt
import io
import tempfile
from collections.abc import Mapping
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from engine.data.contract import EVENTS, ITEMS
from engine.data.data_issues import MAX_ISSUES_SHOWN, DataIssue, DataValidationError
from engine.data.loading import MAX_ISSUES_KEPT_PER_CHECK, load_shop, load_table

UTC = dt.UTC

ITEMS_CSV = "item_id,category,price\ni1,food,2.5\ni2,tech,10\ni3,tech,99.99\n"
EVENTS_CSV = (
    "event_id,customer_id,item_id,event_type,timestamp\n"
    "e1,c1,i1,view,2026-01-05T10:00:00\n"
    "e2,c2,i2,cart,2026-01-05T11:00:00\n"
    "e3,c1,i3,purchase,2026-01-06T12:00:00\n"
)


def write_files(directory: Path, files: Mapping[str, str | pl.DataFrame]) -> Path:
    """Write each file: text as-is (CSV), frames as Parquet."""
    for name, content in files.items():
        if isinstance(content, str):
            (directory / name).write_text(content)
        else:
            content.write_parquet(directory / name)
    return directory


def shop_dir(tmp_path: Path, **overrides: str | pl.DataFrame) -> Path:
    """A valid two-table CSV shop; ``overrides`` (file stem -> text or frame) replace or add files."""
    files: dict[str, str | pl.DataFrame] = {"items.csv": ITEMS_CSV, "events.csv": EVENTS_CSV}
    for stem, content in overrides.items():
        files.pop(f"{stem}.csv", None)
        files[f"{stem}.csv" if isinstance(content, str) else f"{stem}.parquet"] = content
    return write_files(tmp_path, files)


def only_issue(error: pytest.ExceptionInfo[DataValidationError]) -> DataIssue:
    assert len(error.value.issues) == 1, str(error.value)
    return error.value.issues[0]


# ------------------------------------------------------------------------------------------ happy paths


def test_csv_shop_loads_with_contract_types_defaults_and_extra_columns_dropped(tmp_path: Path) -> None:
    events = (
        "event_id,customer_id,item_id,event_type,timestamp,discount,referrer\n"
        "e1,c1,i1,view,2026-01-05T10:00:00,,google\n"
        "e2,c2,i2,purchase,2026-01-06T11:30:00+02:00,0.25,\n"
    )
    shop = load_shop(shop_dir(tmp_path, events=events))

    assert dict(shop.events.schema) == (
        {
            "event_id": pl.String,
            "customer_id": pl.String,
            "item_id": pl.String,
            "event_type": pl.String,
            "timestamp": pl.Datetime("us", "UTC"),
            "price_paid": pl.Float64,
            "quantity": pl.Float64,
            "discount": pl.Float64,
            "channel": pl.String,
            "device": pl.String,
        }
    )
    assert shop.events["timestamp"].to_list() == [
        dt.datetime(2026, 1, 5, 10, tzinfo=UTC),
        dt.datetime(2026, 1, 6, 9, 30, tzinfo=UTC),
    ]
    assert shop.events["discount"].to_list() == [0.0, 0.25]  # an empty discount means none
    assert shop.events["price_paid"].to_list() == [None, None]
    assert shop.items.columns == [c.name for c in ITEMS.columns]
    assert shop.items["tags"].to_list() == [[], [], []]
    assert shop.items["in_stock"].to_list() == [True, True, True]
    assert shop.customers is None and shop.offers is None and shop.decisions is None
    assert shop.report.rows_read == {"events": 2, "items": 3}
    assert shop.report.rows_skipped == {}


def test_columns_absent_from_the_file_are_chunked_like_the_read_ones(tmp_path: Path) -> None:
    """A table chunked alike is split without copying; one odd column would make polars copy them all."""
    events = pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(10)],
            "customer_id": ["c1", "c2"] * 5,
            "item_id": ["i1", "i2", "i3", "i1", "i2"] * 2,
            "event_type": ["view"] * 10,
            "timestamp": [dt.datetime(2026, 1, 5, i) for i in range(10)],
        }
    )
    events.write_parquet(tmp_path / "events.parquet", row_group_size=4)  # 4 + 4 + 2 rows
    (tmp_path / "items.csv").write_text(ITEMS_CSV)
    loaded = load_shop(tmp_path).events
    read = [len(chunk) for chunk in loaded["event_id"].get_chunks()]
    assert sum(read) == 10 and len(read) > 1  # the reader kept the row groups as chunks
    for name in ("price_paid", "quantity", "discount", "channel", "device"):  # absent, added
        assert [len(chunk) for chunk in loaded[name].get_chunks()] == read, name
    assert loaded["discount"].to_list() == [0.0] * 10 and loaded["quantity"].null_count() == 10


def test_integer_ids_load_as_their_decimal_text(tmp_path: Path) -> None:
    items = pl.DataFrame({"item_id": [7, 123], "category": ["food", "tech"], "price": [1, 2]})
    events = pl.DataFrame(
        {
            "event_id": [1, 2],
            "customer_id": [123, 4567],
            "item_id": [123, 7],
            "event_type": ["view", "cart"],
            "timestamp": [dt.datetime(2026, 1, 5), dt.datetime(2026, 1, 6)],
        }
    )
    shop = load_shop(shop_dir(tmp_path, items=items, events=events))

    assert shop.events["customer_id"].to_list() == ["123", "4567"]
    assert shop.events["item_id"].to_list() == ["123", "7"]
    assert shop.items["item_id"].dtype == pl.String
    assert shop.items["price"].to_list() == [1.0, 2.0]  # integer prices become floats


def test_parquet_timestamps_with_any_zone_or_unit_and_dates_become_utc_microseconds(tmp_path: Path) -> None:
    naive_ns = pl.Series([dt.datetime(2026, 1, 5, 10, 0, 0, 123456)]).dt.cast_time_unit("ns")
    berlin = pl.Series([dt.datetime(2026, 7, 1, 12)]).dt.replace_time_zone("Europe/Berlin")
    for name, column in {
        "naive": naive_ns,
        "berlin": berlin,
        "date": pl.Series([dt.date(2026, 2, 1)]),
    }.items():
        events = pl.DataFrame(
            {"event_id": ["e1"], "customer_id": ["c"], "item_id": ["i1"], "event_type": ["view"]}
        ).with_columns(timestamp=column)
        events.write_parquet(tmp_path / f"{name}.parquet")

    loaded = {
        name: load_table(tmp_path / f"{name}.parquet", EVENTS)[0]["timestamp"]
        for name in ("naive", "berlin", "date")
    }

    assert all(series.dtype == pl.Datetime("us", "UTC") for series in loaded.values())
    assert loaded["naive"].item() == dt.datetime(2026, 1, 5, 10, 0, 0, 123456, tzinfo=UTC)
    assert loaded["berlin"].item() == dt.datetime(2026, 7, 1, 10, tzinfo=UTC)  # CEST is UTC+2
    assert loaded["date"].item() == dt.datetime(2026, 2, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-05", dt.datetime(2026, 1, 5, tzinfo=UTC)),
        ("2026-01-05T10:00:00", dt.datetime(2026, 1, 5, 10, tzinfo=UTC)),
        ("2026-01-05 10:00:00", dt.datetime(2026, 1, 5, 10, tzinfo=UTC)),
        ("2026-01-05T10:00:00Z", dt.datetime(2026, 1, 5, 10, tzinfo=UTC)),
        ("2026-01-05T10:00:00.250-05:00", dt.datetime(2026, 1, 5, 15, 0, 0, 250000, tzinfo=UTC)),
        ("2026-01-05T10:00+0100", dt.datetime(2026, 1, 5, 9, tzinfo=UTC)),
        (" 2026-01-05T10:00:00 ", dt.datetime(2026, 1, 5, 10, tzinfo=UTC)),
    ],
)
def test_timestamp_text_spellings(tmp_path: Path, text: str, expected: dt.datetime) -> None:
    csv = f'event_id,customer_id,item_id,event_type,timestamp\ne1,c,i1,view,"{text}"\n'
    (tmp_path / "events.csv").write_text(csv)
    frame, _ = load_table(tmp_path / "events.csv", EVENTS)
    assert frame["timestamp"].item() == expected


def test_mixed_timestamp_spellings_in_one_column_all_parse(tmp_path: Path) -> None:
    rows = ["2026-01-05T10:00:00+00:00", "2026-01-05", "2026-01-05 10:00:00", "2026-01-05T10:00:00.5Z"]
    csv = "event_id,customer_id,item_id,event_type,timestamp\n" + "".join(
        f"e{i},c,i1,view,{text}\n" for i, text in enumerate(rows)
    )
    (tmp_path / "events.csv").write_text(csv)
    frame, _ = load_table(tmp_path / "events.csv", EVENTS)
    assert frame["timestamp"].to_list() == [
        dt.datetime(2026, 1, 5, 10, tzinfo=UTC),
        dt.datetime(2026, 1, 5, tzinfo=UTC),
        dt.datetime(2026, 1, 5, 10, tzinfo=UTC),
        dt.datetime(2026, 1, 5, 10, 0, 0, 500000, tzinfo=UTC),
    ]


def test_csv_booleans_accept_words_and_digits_in_any_case(tmp_path: Path) -> None:
    words = ["true", "FALSE", "1", "0", "Yes", "no", ""]
    csv = "item_id,category,price,in_stock\n" + "".join(f"i{i},c,1,{w}\n" for i, w in enumerate(words))
    (tmp_path / "items.csv").write_text(csv)
    frame, _ = load_table(tmp_path / "items.csv", ITEMS)
    assert frame["in_stock"].to_list() == [True, False, True, False, True, False, True]  # empty -> default


def test_list_columns_from_csv_and_parquet(tmp_path: Path) -> None:
    (tmp_path / "items.csv").write_text(
        "item_id,category,price,tags\ni1,c,1,organic| premium\ni2,c,1,\ni3,c,1,sustainable\n"
    )
    pl.DataFrame(
        {
            "item_id": ["i1", "i2", "i3"],
            "category": ["c"] * 3,
            "price": [1.0] * 3,
            "tags": [["organic", "premium"], None, ["sustainable"]],
        }
    ).write_parquet(tmp_path / "items.parquet")

    from_csv, _ = load_table(tmp_path / "items.csv", ITEMS)
    from_parquet, _ = load_table(tmp_path / "items.parquet", ITEMS)

    assert from_csv["tags"].dtype == pl.List(pl.String)
    assert from_csv["tags"].to_list() == [["organic", "premium"], [], ["sustainable"]]
    assert_frame_equal(from_csv, from_parquet)


def test_offers_layouts_and_decisions_load_and_arms_resolve(tmp_path: Path) -> None:
    directory = shop_dir(
        tmp_path,
        offers="offer_id,kind,cost,eligible_categories\no1,percent_off,0.5,food|tech\no2,bundle,1,\n",
        layouts="variant_id,slots\nv1,hero_deals|recommended\n",
        decisions=(
            "decision_id,customer_id,timestamp,context,decision_type,arm_id,propensity,outcome\n"
            "d1,c1,2026-01-05T10:00:00,weekday,offer,o2,0.5,1\n"
            "d2,c2,2026-01-06T10:00:00,weekend_holiday,layout,v1,1,0\n"
        ),
    )
    shop = load_shop(directory)
    assert shop.offers is not None and shop.layouts is not None and shop.decisions is not None
    assert shop.offers["eligible_categories"].to_list() == [["food", "tech"], []]
    assert shop.offers["min_basket"].to_list() == [0.0, 0.0]
    assert shop.layouts["slots"].to_list() == [["hero_deals", "recommended"]]
    assert shop.decisions["arm_id"].to_list() == ["o2", "v1"]


def test_explicit_mapping_of_tables_to_paths(tmp_path: Path) -> None:
    (tmp_path / "catalog_export.csv").write_text(ITEMS_CSV)
    (tmp_path / "clicks.csv").write_text(EVENTS_CSV)
    shop = load_shop({"items": tmp_path / "catalog_export.csv", "events": tmp_path / "clicks.csv"})
    assert shop.events.height == 3
    with pytest.raises(ValueError, match="'clickstream'"):
        load_shop({"items": tmp_path / "catalog_export.csv", "clickstream": tmp_path / "clicks.csv"})


# ------------------------------------------------------------------------------------------ each error


def test_missing_required_column_names_file_and_column_and_is_fatal_even_when_skipping(
    tmp_path: Path,
) -> None:
    directory = shop_dir(tmp_path, items="item_id,category\ni1,food\n")
    for skip_invalid in (False, True):
        with pytest.raises(DataValidationError) as error:
            load_shop(directory, skip_invalid=skip_invalid)
        issue = only_issue(error)
        assert (issue.file, issue.row, issue.column, issue.reason) == (
            "items.csv",
            None,
            "price",
            "missing_column",
        )
        assert "items.csv, column 'price': required column 'price' is missing" in str(error.value)


def test_unparsable_number_names_row_line_column_and_value(tmp_path: Path) -> None:
    items = "item_id,category,price\ni1,food,2.5\ni2,tech,abc\n"
    with pytest.raises(DataValidationError) as error:
        load_shop(shop_dir(tmp_path, items=items))
    issue = only_issue(error)
    assert (issue.file, issue.row, issue.line, issue.column, issue.reason) == (
        "items.csv",
        2,
        3,
        "price",
        "wrong_type",
    )
    assert "items.csv, row 2 (line 3), column 'price': cannot parse 'abc' as a finite number" in str(
        error.value
    )


def test_a_malformed_csv_record_is_named_by_row_and_line_and_skipped_when_skipping(tmp_path: Path) -> None:
    """polars' own message names no row; the loader's does, and ``skip_invalid`` drops just that record
    (engine.data.csv_text has the cases)."""
    events = EVENTS_CSV.replace("e2,c2,i2,cart,2026-01-05T11:00:00", "e2,c2,i2,cart,2026-01-05T11:00:00,x")
    with pytest.raises(DataValidationError) as error:
        load_shop(shop_dir(tmp_path, events=events))
    issue = only_issue(error)
    assert (issue.file, issue.row, issue.line, issue.reason) == ("events.csv", 2, 3, "malformed_csv")
    assert "events.csv, row 2 (line 3): 6 cells where the header has 5" in str(error.value)

    shop = load_shop(shop_dir(tmp_path, events=events), skip_invalid=True)
    assert shop.events["event_id"].to_list() == ["e1", "e3"]
    assert shop.report.rows_read["events"] == 3
    assert shop.report.rows_skipped == {"events": {"malformed_csv": 1}}


def test_a_csv_with_semicolons_says_so_instead_of_missing_columns(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError) as error:
        load_shop(shop_dir(tmp_path, events=EVENTS_CSV.replace(",", ";")), skip_invalid=True)
    issue = only_issue(error)
    assert (issue.file, issue.reason) == ("events.csv", "malformed_csv")
    assert "the file looks ';'-separated" in issue.message


def test_unparsable_timestamp(tmp_path: Path) -> None:
    events = EVENTS_CSV.replace("2026-01-05T11:00:00", "2026-13-01")
    with pytest.raises(DataValidationError) as error:
        load_shop(shop_dir(tmp_path, events=events))
    issue = only_issue(error)
    assert (issue.row, issue.column, issue.reason) == (2, "timestamp", "bad_timestamp")
    assert "events.csv, row 2 (line 3), column 'timestamp': cannot parse '2026-13-01' as a timestamp" in str(
        error.value
    )


def test_a_timestamp_before_1970_is_out_of_range_in_text_and_in_parquet(tmp_path: Path) -> None:
    """A year-1 timestamp (a broken export's default) crashed ``discover`` (fuzz pass); it is refused."""
    events = EVENTS_CSV.replace("2026-01-05T11:00:00", "0001-01-01T00:00:00")
    with pytest.raises(DataValidationError) as error:
        load_shop(shop_dir(tmp_path, events=events))
    issue = only_issue(error)
    assert (issue.row, issue.column, issue.reason) == (2, "timestamp", "out_of_range")
    assert (
        "events.csv, row 2 (line 3), column 'timestamp': '0001-01-01T00:00:00' is before 1970-01-01"
        in str(error.value)
    )
    frame = pl.read_csv(io.StringIO(EVENTS_CSV)).with_columns(
        pl.col("timestamp").str.to_datetime(time_zone="UTC")
    )
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.lit(dt.datetime(1, 1, 1, tzinfo=dt.UTC)))
        .otherwise(pl.col("timestamp"))
        .alias("timestamp")
    )
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    with pytest.raises(DataValidationError) as error:
        load_shop(shop_dir(parquet, events=frame))
    assert "events.parquet, row 1, column 'timestamp': 0001-01-01T00:00:00+00:00 is before 1970-01-01" in str(
        error.value
    )


def test_a_csv_header_naming_a_column_twice_is_refused_and_missing_columns_list_the_whole_header(
    tmp_path: Path,
) -> None:
    """A second ``item_id`` header was read as ``item_id_duplicated_0`` and its column dropped without a
    word; "columns found" listed only the contract's columns, hiding a misspelt one (fuzz pass)."""
    twice = EVENTS_CSV.replace("event_type,timestamp\n", "event_type,timestamp,item_id\n", 1)
    twice = "\n".join(line + ",x" if n else line for n, line in enumerate(twice.splitlines())) + "\n"
    with pytest.raises(DataValidationError) as error:
        load_shop(shop_dir(tmp_path, events=twice))
    issue = only_issue(error)
    assert (issue.column, issue.reason) == ("item_id", "duplicate_column")
    assert "events.csv, column 'item_id': column 'item_id' appears more than once in the header" in str(
        error.value
    )
    misspelt = EVENTS_CSV.replace("event_id,", "Event_ID,", 1)
    with pytest.raises(DataValidationError) as error:
        load_shop(shop_dir(tmp_path, events=misspelt))
    assert "(columns found: Event_ID, customer_id, item_id, event_type, timestamp)" in str(error.value)


def test_duplicate_id_names_the_id_and_both_rows(tmp_path: Path) -> None:
    items = ITEMS_CSV + "i2,food,3\n"
    with pytest.raises(DataValidationError) as error:
        load_shop(shop_dir(tmp_path, items=items))
    issue = only_issue(error)
    assert (issue.row, issue.column, issue.reason) == (4, "item_id", "duplicate_id")
    assert issue.message == "duplicate item_id 'i2': already in row 2"


def test_event_naming_an_unknown_item_names_the_item(tmp_path: Path) -> None:
    events = EVENTS_CSV.replace("c2,i2,", "c2,i404,")
    with pytest.raises(DataValidationError) as error:
        load_shop(shop_dir(tmp_path, events=events))
    issue = only_issue(error)
    assert (issue.file, issue.row, issue.column, issue.reason) == ("events.csv", 2, "item_id", "unknown_item")
    assert "'i404'" in issue.message and "items.csv" in issue.message


def test_value_outside_closed_vocabulary(tmp_path: Path) -> None:
    events = EVENTS_CSV.replace(",cart,", ",click,")
    with pytest.raises(DataValidationError) as error:
        load_shop(shop_dir(tmp_path, events=events))
    issue = only_issue(error)
    assert (issue.row, issue.column, issue.reason) == (2, "event_type", "not_allowed")
    assert issue.message == "'click' is not one of: view, cart, purchase"


@pytest.mark.parametrize(
    ("value", "bound"), [("1.5", "must be between 0 and 1"), ("-0.1", "must be between 0 and 1")]
)
def test_number_out_of_range(tmp_path: Path, value: str, bound: str) -> None:
    events = EVENTS_CSV.replace("event_type,timestamp\n", "event_type,timestamp,discount\n").replace(
        "12:00:00\n", f"12:00:00,{value}\n"
    )
    with pytest.raises(DataValidationError) as error:
        load_shop(shop_dir(tmp_path, events=events))
    issue = only_issue(error)
    assert (issue.row, issue.column, issue.reason) == (3, "discount", "out_of_range")
    assert issue.message == f"'{value}' is out of range: {bound}"


def test_empty_cell_in_required_column(tmp_path: Path) -> None:
    events = EVENTS_CSV.replace("e3,c1,", "e3,,")
    with pytest.raises(DataValidationError) as error:
        load_shop(shop_dir(tmp_path, events=events))
    issue = only_issue(error)
    assert (issue.row, issue.line, issue.column, issue.reason) == (3, 4, "customer_id", "null_value")


def test_non_finite_float_in_parquet_is_a_wrong_type_with_parquet_row(tmp_path: Path) -> None:
    items = pl.DataFrame(
        {"item_id": ["i1", "i2", "i3"], "category": ["c"] * 3, "price": [1.0, float("nan"), 2.0]}
    )
    with pytest.raises(DataValidationError) as error:
        load_shop(shop_dir(tmp_path, items=items))
    issue = only_issue(error)
    assert (issue.file, issue.row, issue.line, issue.column, issue.reason) == (
        "items.parquet",
        2,
        None,
        "price",
        "wrong_type",
    )
    assert "items.parquet, row 2, column 'price'" in str(error.value)


def test_parquet_column_of_unusable_type_is_fatal_even_when_skipping(tmp_path: Path) -> None:
    items = pl.DataFrame({"item_id": ["i1"], "category": ["c"], "price": [[1.0]]})
    with pytest.raises(DataValidationError) as error:
        load_shop(shop_dir(tmp_path, items=items), skip_invalid=True)
    issue = only_issue(error)
    assert (issue.row, issue.column, issue.reason) == (None, "price", "wrong_type")
    assert "list" in issue.message.lower()


def test_both_csv_and_parquet_for_one_table_is_ambiguous(tmp_path: Path) -> None:
    directory = shop_dir(tmp_path)
    pl.read_csv(directory / "items.csv").write_parquet(directory / "items.parquet")
    with pytest.raises(DataValidationError) as error:
        load_shop(directory)
    issue = only_issue(error)
    assert issue.reason == "ambiguous_source"
    assert "items.csv" in issue.message and "items.parquet" in issue.message


def test_missing_required_table(tmp_path: Path) -> None:
    (tmp_path / "items.csv").write_text(ITEMS_CSV)
    with pytest.raises(DataValidationError) as error:
        load_shop(tmp_path)
    issue = only_issue(error)
    assert issue.reason == "missing_table"
    assert "events.csv" in issue.message and "events.parquet" in issue.message


@pytest.mark.parametrize(
    ("file", "content", "reason"),
    [
        ("items.parquet", b"", "empty_file"),
        ("items.csv", b"", "empty_file"),
        ("items.csv", b"item_id,category,price\n", "empty_file"),
        ("items.parquet", b"PAR1 garbage", "unreadable_file"),
    ],
)
def test_empty_and_unreadable_files_name_the_file(
    tmp_path: Path, file: str, content: bytes, reason: str
) -> None:
    directory = shop_dir(tmp_path)
    (directory / "items.csv").unlink()
    (directory / file).write_bytes(content)
    with pytest.raises(DataValidationError) as error:
        load_shop(directory)
    issue = only_issue(error)
    assert (issue.file, issue.row, issue.reason) == (file, None, reason)
    assert str(error.value).splitlines()[1].startswith(f"{file}: ")


def test_decision_naming_an_unknown_offer_or_variant(tmp_path: Path) -> None:
    decisions = (
        "decision_id,customer_id,timestamp,context,decision_type,arm_id,propensity,outcome\n"
        "d1,c1,2026-01-05,weekday,offer,o1,0.5,1\n"
        "d2,c1,2026-01-05,weekday,offer,v1,0.5,0\n"  # a layout variant is not an offer
        "d3,c1,2026-01-05,weekday,layout,v9,0.5,0\n"
    )
    directory = shop_dir(
        tmp_path,
        offers="offer_id,kind,cost\no1,bundle,1\n",
        layouts="variant_id,slots\nv1,recommended\n",
        decisions=decisions,
    )
    with pytest.raises(DataValidationError) as error:
        load_shop(directory)
    assert [(i.row, i.column, i.reason) for i in error.value.issues] == [
        (2, "arm_id", "unknown_arm"),
        (3, "arm_id", "unknown_arm"),
    ]
    assert "'v1'" in error.value.issues[0].message and "offers.csv" in error.value.issues[0].message
    assert "'v9'" in error.value.issues[1].message and "layouts.csv" in error.value.issues[1].message


def test_arms_are_not_checked_against_tables_the_shop_does_not_have(tmp_path: Path) -> None:
    decisions = (
        "decision_id,customer_id,timestamp,context,decision_type,arm_id,propensity,outcome\n"
        "d1,c1,2026-01-05,weekday,offer,anything,0.5,1\n"
    )
    shop = load_shop(shop_dir(tmp_path, decisions=decisions))
    assert shop.decisions is not None and shop.decisions.height == 1


def test_all_issues_of_all_tables_are_collected_in_row_order(tmp_path: Path) -> None:
    items = "item_id,category,price\ni1,food,-1\ni2,,2\n"
    events = EVENTS_CSV.replace("2026-01-06T12:00:00", "later").replace(",view,", ",peek,")
    with pytest.raises(DataValidationError) as error:
        load_shop(shop_dir(tmp_path, items=items, events=events))
    assert [(i.file, i.row, i.column) for i in error.value.issues] == [
        ("events.csv", 1, "event_type"),
        ("events.csv", 3, "timestamp"),
        ("items.csv", 1, "price"),
        ("items.csv", 2, "category"),
    ]
    assert error.value.total == 4


def test_many_issues_are_counted_but_only_a_few_kept_and_shown(tmp_path: Path) -> None:
    bad_rows = MAX_ISSUES_KEPT_PER_CHECK + 10
    items = "item_id,category,price\n" + "".join(f"i{i},c,not-a-price\n" for i in range(bad_rows))
    with pytest.raises(DataValidationError) as error:
        load_table(write_files(tmp_path, {"items.csv": items}) / "items.csv", ITEMS)
    assert error.value.total == bad_rows
    assert len(error.value.issues) == MAX_ISSUES_KEPT_PER_CHECK
    lines = str(error.value).splitlines()
    assert len(lines) == 1 + MAX_ISSUES_SHOWN + 1
    assert lines[1].startswith("items.csv, row 1 (line 2), column 'price'")
    assert lines[-1] == f"... and {bad_rows - MAX_ISSUES_SHOWN} more"


def test_csv_with_a_multiline_cell_reports_rows_but_not_lines(tmp_path: Path) -> None:
    items = 'item_id,title,category,price\ni1,"two\nlines",c,1\ni2,t,c,oops\n'
    with pytest.raises(DataValidationError) as error:
        load_table(write_files(tmp_path, {"items.csv": items}) / "items.csv", ITEMS)
    issue = only_issue(error)
    assert (issue.row, issue.line, issue.column) == (2, None, "price")  # the file line would be 4, not 3
    assert "items.csv, row 2, column 'price'" in str(error.value)


# ------------------------------------------------------------------------------------------ skip_invalid


def test_skip_invalid_drops_and_counts_bad_rows_once_each(tmp_path: Path) -> None:
    items = "item_id,category,price\ni1,food,2.5\ni2,tech,-3\ni3,tech,abc\ni1,food,4\n"
    events = (
        "event_id,customer_id,item_id,event_type,timestamp\n"
        "e1,c1,i1,view,2026-01-05\n"
        "e2,c1,i2,view,2026-01-05\n"  # i2 is skipped from items, so this event names an unknown item
        "e3,,i1,peek,not-a-time\n"  # three problems, counted once under the first column's
        "e1,c2,i1,cart,2026-01-05\n"  # repeat of e1
        "e4,c2,i404,cart,2026-01-05\n"
        "e5,c2,i1,purchase,2026-01-07\n"
    )
    shop = load_shop(shop_dir(tmp_path, items=items, events=events), skip_invalid=True)

    assert shop.items["item_id"].to_list() == ["i1"]
    assert shop.items["price"].to_list() == [2.5]
    assert shop.events["event_id"].to_list() == ["e1", "e5"]
    assert shop.report.rows_read == {"events": 6, "items": 4}
    assert shop.report.rows_skipped == {
        "items": {"out_of_range": 1, "wrong_type": 1, "duplicate_id": 1},
        "events": {"null_value": 1, "duplicate_id": 1, "unknown_item": 2},
    }
    assert shop.report.total_skipped == 7


def test_skip_invalid_keeps_the_first_valid_occurrence_of_an_id(tmp_path: Path) -> None:
    items = "item_id,category,price\ni1,food,bad\ni1,food,2\ni1,food,3\n"
    frame, skipped = load_table(
        write_files(tmp_path, {"items.csv": items}) / "items.csv", ITEMS, skip_invalid=True
    )
    assert frame["price"].to_list() == [2.0]
    assert skipped == {"wrong_type": 1, "duplicate_id": 1}


def test_skip_invalid_that_leaves_a_required_table_empty_is_an_error(tmp_path: Path) -> None:
    events = (
        EVENTS_CSV.replace(",view,", ",peek,").replace(",cart,", ",peek,").replace(",purchase,", ",peek,")
    )
    with pytest.raises(DataValidationError) as error:
        load_shop(shop_dir(tmp_path, events=events), skip_invalid=True)
    issue = only_issue(error)
    assert (issue.file, issue.row, issue.reason) == ("events.csv", None, "empty_file")
    assert issue.message == "all 3 rows were skipped as invalid (not_allowed: 3)"


# ------------------------------------------------------------------------------------------ properties

ID_CHARS = st.characters(codec="ascii", categories=("L", "Nd"), include_characters="-_.")
TEXT = st.text(
    st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs"), include_characters='\n",'), min_size=1
)
TAG = st.text(ID_CHARS, min_size=1, max_size=8)
ITEM_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String(),
    "title": pl.String(),
    "category": pl.String(),
    "brand": pl.String(),
    "price": pl.Float64(),
    "tags": pl.List(pl.String),
    "in_stock": pl.Boolean(),
}

ITEM_ROW = st.fixed_dictionaries(
    {
        "item_id": st.text(ID_CHARS, min_size=1, max_size=8),
        "title": st.none() | TEXT,
        "category": TEXT,
        "brand": st.none() | TEXT,
        "price": st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False),
        "tags": st.none() | st.lists(TAG, max_size=4),
        "in_stock": st.none() | st.booleans(),
    }
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(ITEM_ROW, min_size=1, max_size=12, unique_by=lambda row: str(row["item_id"])))
def test_valid_items_load_identically_from_csv_and_parquet(rows: list[dict[str, object]]) -> None:
    stored = pl.DataFrame(rows, schema=ITEM_SCHEMA)
    expected = stored.with_columns(pl.col("tags").fill_null([]), pl.col("in_stock").fill_null(True))
    with tempfile.TemporaryDirectory() as directory:
        csv_path, parquet_path = Path(directory) / "items.csv", Path(directory) / "items.parquet"
        stored.with_columns(pl.col("tags").list.join("|")).write_csv(csv_path)
        stored.write_parquet(parquet_path)
        from_csv, _ = load_table(csv_path, ITEMS)
        from_parquet, _ = load_table(parquet_path, ITEMS)
    assert_frame_equal(from_csv, expected)
    assert_frame_equal(from_parquet, expected)


CORRUPTIONS: list[tuple[str, str | None, str]] = [
    ("timestamp", "2026-13-01", "bad_timestamp"),
    ("timestamp", "next tuesday", "bad_timestamp"),
    ("event_type", "click", "not_allowed"),
    ("discount", "ten percent", "wrong_type"),
    ("discount", "1.5", "out_of_range"),
    ("price_paid", "-2", "out_of_range"),
    ("customer_id", None, "null_value"),
    ("item_id", "i404", "unknown_item"),
    ("event_id", "DUPLICATE", "duplicate_id"),
]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), n_rows=st.integers(min_value=2, max_value=15), fmt=st.sampled_from(["csv", "parquet"]))
def test_one_corrupted_cell_is_reported_at_its_row_and_column_and_skipped(
    data: st.DataObject, n_rows: int, fmt: str
) -> None:
    column, bad_value, reason = data.draw(st.sampled_from(CORRUPTIONS))
    row = data.draw(st.integers(min_value=1 if reason == "duplicate_id" else 0, max_value=n_rows - 1))
    events: dict[str, list[str | None]] = {
        "event_id": [f"e{i}" for i in range(n_rows)],
        "customer_id": [f"c{i % 3}" for i in range(n_rows)],
        "item_id": [f"i{1 + i % 3}" for i in range(n_rows)],
        "event_type": ["view"] * n_rows,
        "timestamp": [f"2026-01-{1 + i:02d}T08:00:00" for i in range(n_rows)],
        "price_paid": ["9.5"] * n_rows,
        "discount": ["0.1"] * n_rows,
    }
    if reason == "duplicate_id":
        bad_value = events["event_id"][data.draw(st.integers(0, row - 1))]
    events[column][row] = bad_value
    frame = pl.DataFrame(events, schema=dict.fromkeys(events, pl.String))
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / "items.csv").write_text(ITEMS_CSV)
        getattr(frame, f"write_{fmt}")(root / f"events.{fmt}")

        with pytest.raises(DataValidationError) as error:
            load_shop(root)
        skipped = load_shop(root, skip_invalid=True)

    issue = only_issue(error)
    assert (issue.file, issue.row, issue.column, issue.reason) == (f"events.{fmt}", row + 1, column, reason)
    assert issue.line == (row + 2 if fmt == "csv" else None)
    if bad_value is not None:
        assert repr(bad_value) in issue.message
    assert skipped.events.height == n_rows - 1
    assert skipped.report.rows_skipped == {"events": {reason: 1}}
    assert skipped.report.rows_read == {"events": n_rows, "items": 3}


def spell_timestamp(instant: dt.datetime, offset_minutes: int, spelling: str, with_fraction: bool) -> str:
    """Write a UTC instant the way some exporter might: naive UTC, `Z`, or local time with an offset."""
    if spelling in ("naive-T", "naive-space", "Z"):
        offset_minutes = 0
    local = instant.astimezone(dt.timezone(dt.timedelta(minutes=offset_minutes)))
    separator = " " if spelling == "naive-space" else "T"
    text = f"{local:%Y-%m-%d}{separator}{local:%H:%M:%S}" + (
        f".{local.microsecond:06d}" if with_fraction else ""
    )
    sign, magnitude = ("-" if offset_minutes < 0 else "+"), abs(offset_minutes)
    hours, minutes = divmod(magnitude, 60)
    suffix = {
        "Z": "Z",
        "+hh:mm": f"{sign}{hours:02d}:{minutes:02d}",
        "+hhmm": f"{sign}{hours:02d}{minutes:02d}",
    }
    return text + suffix.get(spelling, "")


TIMESTAMP_CELL = st.tuples(
    st.datetimes(dt.datetime(1971, 1, 2), dt.datetime(2099, 12, 30), timezones=st.just(UTC)),
    st.integers(-12 * 60, 14 * 60).map(lambda m: m - m % 15),
    st.sampled_from(["naive-T", "naive-space", "Z", "+hh:mm", "+hhmm"]),
    st.booleans(),
)


@settings(max_examples=40, deadline=None)
@given(cells=st.lists(TIMESTAMP_CELL, min_size=1, max_size=6))
def test_every_accepted_timestamp_spelling_parses_to_the_same_utc_instant(
    cells: list[tuple[dt.datetime, int, str, bool]],
) -> None:
    expected = [instant if fraction else instant.replace(microsecond=0) for instant, _, _, fraction in cells]
    texts = [spell_timestamp(*cell) for cell in cells]
    csv = "event_id,customer_id,item_id,event_type,timestamp\n" + "".join(
        f"e{i},c,i1,view,{text}\n" for i, text in enumerate(texts)
    )
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "events.csv"
        path.write_text(csv)
        frame, _ = load_table(path, EVENTS)
    assert frame["timestamp"].to_list() == expected, texts


def test_customers_keep_extra_feature_columns_numbers_as_numbers(tmp_path: Path) -> None:
    customers = (
        "customer_id,age_band,feature__household_size,feature__children,feature__home,shoe_size\n"
        "c1,25-34,3,0,own,42\n"
        "c2,,1,2,rent,40\n"
        "c3,35-44,,3+,,38\n"
    )
    shop = load_shop(shop_dir(tmp_path, customers=customers))
    assert shop.customers is not None
    frame = shop.customers
    assert "shoe_size" not in frame.columns  # not prefixed: an export's stray column, dropped as before
    assert frame["feature__household_size"].dtype == pl.Float64
    assert frame["feature__household_size"].to_list() == [3.0, 1.0, None]
    assert frame["feature__children"].to_list() == ["0", "2", "3+"]  # "3+" is no number: categorical
    assert frame["feature__home"].to_list() == ["own", "rent", None]
    parquet = pl.DataFrame({"customer_id": ["c1"], "feature__household_size": [4]})
    folder = tmp_path / "parquet"
    folder.mkdir()
    again = load_shop(shop_dir(folder, customers=parquet))
    assert again.customers is not None and again.customers["feature__household_size"].to_list() == [4.0]
