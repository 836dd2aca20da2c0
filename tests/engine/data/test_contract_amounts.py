"""The contract's bound on amounts (engine.data.contract.MAX_AMOUNT), through loading: a price, amount,
quantity or outcome near float64's maximum is out of range, in CSV and Parquet, and skipped when asked."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from engine.data.contract import MAX_AMOUNT, TABLES
from engine.data.loading import DataValidationError, IssueReason, load_table
from tests.engine.data.contract_rows import table_with

BOUNDED = [
    (table.name, column.name)
    for table in TABLES.values()
    for column in table.columns
    if column.max_value == MAX_AMOUNT
]


def test_every_money_amount_quantity_and_outcome_column_is_bounded() -> None:
    assert sorted(BOUNDED) == [
        ("decisions", "outcome"),
        ("events", "price_paid"),
        ("events", "quantity"),
        ("items", "price"),
        ("offers", "cost"),
        ("offers", "min_basket"),
    ]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize(("table", "column"), BOUNDED)
def test_an_amount_near_the_float_maximum_is_out_of_range_and_the_bound_itself_is_not(
    tmp_path: Path, fmt: str, table: str, column: str
) -> None:
    """1e308 passed: two such list prices in a cart summed to inf and RankOffers failed with INTERNAL."""
    schema = TABLES[table]
    path = tmp_path / f"{table}.{fmt}"
    getattr(table_with(schema, column, ["1", "1e15", "1e308"]), f"write_{fmt}")(path)
    with pytest.raises(DataValidationError) as error:
        load_table(path, schema)
    [issue] = error.value.issues
    assert (issue.row, issue.column, issue.reason) == (3, column, IssueReason.OUT_OF_RANGE)
    assert issue.message == "'1e308' is out of range: must be between 0 and 1e+15"
    frame, skipped = load_table(path, schema, skip_invalid=True)
    assert frame[column].to_list() == [1.0, MAX_AMOUNT] and skipped == {"out_of_range": 1}


def test_a_parquet_float_column_shows_the_number_it_holds(tmp_path: Path) -> None:
    items = pl.DataFrame({"item_id": ["i1", "i2"], "category": ["a", "a"], "price": [2.5, 1e308]})
    items.write_parquet(tmp_path / "items.parquet")
    with pytest.raises(DataValidationError) as error:
        load_table(tmp_path / "items.parquet", TABLES["items"])
    assert str(error.value.issues[0]) == (
        "items.parquet, row 2, column 'price': 1e+308 is out of range: must be between 0 and 1e+15"
    )
