"""Tests for engine.data.id_cells through loading: every id column of the contract refuses control
characters and surrounding whitespace, in CSV and Parquet, and ``skip_invalid`` skips and counts them."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from engine.data.contract import TABLES
from engine.data.loading import DataValidationError, IssueReason, load_shop, load_table
from tests.engine.data.contract_rows import table_with

ID_COLUMNS = [
    (table.name, column.name) for table in TABLES.values() for column in table.columns if column.identifier
]

BAD_IDS: list[tuple[str, str]] = [
    (" x1", "' x1' has leading or trailing whitespace"),
    ("x1 ", "'x1 ' has leading or trailing whitespace"),
    ("\xa0x1", "'\\xa0x1' has leading or trailing whitespace"),  # a no-break space from a spreadsheet
    ("x\x001", "'x\\x001' contains a control character (U+0000)"),
    ("x1\t", "'x1\\t' contains a control character (U+0009)"),
    ("x\x1f1", "'x\\x1f1' contains a control character (U+001F)"),
    ("x1\x7f", "'x1\\x7f' contains a control character (U+007F)"),
    ("x\x851", "'x\\x851' contains a control character (U+0085)"),
]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize(("table", "column"), ID_COLUMNS)
@pytest.mark.parametrize(("bad", "message"), BAD_IDS)
def test_every_id_column_refuses_control_characters_and_surrounding_whitespace(
    tmp_path: Path, fmt: str, table: str, column: str, bad: str, message: str
) -> None:
    schema = TABLES[table]
    path = tmp_path / f"{table}.{fmt}"
    getattr(table_with(schema, column, ["x0", "x1", bad, "x3"]), f"write_{fmt}")(path)
    with pytest.raises(DataValidationError) as error:
        load_table(path, schema)
    [issue] = error.value.issues
    assert (issue.row, issue.column, issue.reason) == (3, column, IssueReason.MALFORMED_ID)
    where = f"{table}.{fmt}, row 3" + (" (line 4)" if fmt == "csv" else "")
    assert str(issue) == f"{where}, column {column!r}: {message}"
    frame, skipped = load_table(path, schema, skip_invalid=True)
    assert frame.height == 3 and skipped == {"malformed_id": 1}
    assert bad not in frame[column].to_list()


def test_a_padded_customer_id_in_events_csv_names_file_row_line_and_column(tmp_path: Path) -> None:
    """ " c0001" loaded as a customer of its own next to c0001, one no serving request would name."""
    lines = ["event_id,customer_id,item_id,event_type,timestamp"]
    lines += [f"e{r},c0001,i1,view,2026-01-05T10:{r:02d}:00" for r in range(1, 21)]
    lines[17] = lines[17].replace(",c0001,", ", c0001,")
    (tmp_path / "events.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "items.csv").write_text("item_id,category,price\ni1,food,2.5\n", encoding="utf-8")
    with pytest.raises(DataValidationError) as error:
        load_shop(tmp_path)
    assert str(error.value).splitlines()[1:] == [
        "events.csv, row 17 (line 18), column 'customer_id': ' c0001' has leading or trailing whitespace"
    ]
    shop = load_shop(tmp_path, skip_invalid=True)
    assert shop.events["customer_id"].unique().to_list() == ["c0001"]
    assert shop.report.rows_skipped == {"events": {"malformed_id": 1}}


def test_spaces_inside_an_id_and_non_ascii_letters_are_ids_like_any_other(tmp_path: Path) -> None:
    items = pl.DataFrame({"item_id": ["gift card 50", "crème-brûlée", "42"], "category": ["a"] * 3})
    items.with_columns(pl.lit(1.0).alias("price")).write_parquet(tmp_path / "items.parquet")
    frame, skipped = load_table(tmp_path / "items.parquet", TABLES["items"])
    assert frame["item_id"].to_list() == ["gift card 50", "crème-brûlée", "42"] and skipped == {}


def test_integer_ids_in_parquet_are_never_malformed(tmp_path: Path) -> None:
    pl.DataFrame({"customer_id": [1, 2, 3]}).write_parquet(tmp_path / "customers.parquet")
    frame, _ = load_table(tmp_path / "customers.parquet", TABLES["customers"])
    assert frame["customer_id"].to_list() == ["1", "2", "3"]
