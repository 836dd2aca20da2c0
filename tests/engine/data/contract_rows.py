"""Text tables the data contract accepts, with one column's cells given: for tests of one rule at a time."""

from __future__ import annotations

import polars as pl

from engine.data.contract import Column, ColumnKind, TableSchema


def valid_cell(column: Column, row: int) -> str:
    """A cell of ``column`` the contract accepts, distinct per row for ids."""
    if column.allowed is not None:
        return column.allowed[0]
    return {
        ColumnKind.FLOAT: "0.5",
        ColumnKind.INT: "1",
        ColumnKind.BOOL: "true",
        ColumnKind.TIMESTAMP: "2026-01-05T10:00:00",
        ColumnKind.DATE: "2026-01-05",
        ColumnKind.STRING_LIST: "a|b",
        ColumnKind.STRING: f"{column.name}{row}",
    }[column.kind]


def table_with(schema: TableSchema, column: str, values: list[str]) -> pl.DataFrame:
    """The table's required columns (as text), one row per value of ``column``, the others valid."""
    cells = {
        c.name: values if c.name == column else [valid_cell(c, r) for r in range(len(values))]
        for c in schema.columns
        if c.required or c.name == column
    }
    return pl.DataFrame(cells, schema=dict.fromkeys(cells, pl.String))
