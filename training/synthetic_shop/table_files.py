"""The output files: Arrow schemas of the contract tables and an appending Parquet/CSV writer.

Schemas are derived from the data contract, so the generated files match it by construction; each
chunk of customers is appended as its own Parquet row group (or CSV batch), which keeps memory bounded
by the chunk size.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from engine.data.contract import LIST_SEPARATOR, TABLES, ColumnKind
from training.synthetic_shop.sampling import IntArray

_ARROW_TYPES: dict[ColumnKind, pa.DataType] = {
    ColumnKind.STRING: pa.string(),
    ColumnKind.FLOAT: pa.float64(),
    ColumnKind.INT: pa.int64(),
    ColumnKind.BOOL: pa.bool_(),
    ColumnKind.TIMESTAMP: pa.timestamp("us", tz="UTC"),
    ColumnKind.DATE: pa.date32(),
    ColumnKind.STRING_LIST: pa.list_(pa.string()),
}


UNSIMULATED_COLUMNS: frozenset[tuple[str, str]] = frozenset(
    {("events", "quantity"), ("decisions", "position")}
)
"""Optional contract columns the simulation plants nothing for; left out of the files (loaders add them
empty), as a shop without that data would."""


def arrow_schema(table_name: str) -> pa.Schema:
    """The Arrow schema of a contract table, so the files match the contract by construction."""
    return pa.schema(
        [
            pa.field(c.name, _ARROW_TYPES[c.kind], nullable=c.nullable)
            for c in TABLES[table_name].columns
            if (table_name, c.name) not in UNSIMULATED_COLUMNS
        ]
    )


class TableFile:
    """Appends Arrow tables to one Parquet file (each write adds its own row groups) or one CSV file.

    CSV has no list or zoned-timestamp types, so list cells are joined with the contract's separator
    and timestamps are written as ISO 8601 with a ``Z`` suffix.
    """

    def __init__(self, path: Path, schema: pa.Schema, file_format: str) -> None:
        self.path = path
        self.schema = schema
        self.file_format = file_format
        self._writer: Any = None

    def __enter__(self) -> TableFile:
        if self.file_format == "parquet":
            self._writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        else:
            self._writer = pa_csv.CSVWriter(self.path, _csv_schema(self.schema))
        return self

    def write(self, table: pa.Table) -> None:
        if not table.schema.equals(self.schema):
            raise ValueError(
                f"{self.path}: chunk schema {table.schema} does not match file schema {self.schema}"
            )
        if self.file_format == "parquet":
            self._writer.write_table(table)
        else:
            self._writer.write_table(_to_csv_table(table))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._writer is not None:
            self._writer.close()


def _csv_type(data_type: pa.DataType) -> pa.DataType:
    if pa.types.is_list(data_type) or pa.types.is_timestamp(data_type):
        return pa.string()
    return data_type


def _csv_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, _csv_type(f.type), nullable=True) for f in schema])


def _to_csv_table(table: pa.Table) -> pa.Table:
    columns: list[pa.Array | pa.ChunkedArray] = []
    for column, schema_field in zip(table.columns, table.schema, strict=True):
        if pa.types.is_list(schema_field.type):
            columns.append(pc.binary_join(column, LIST_SEPARATOR))
        elif pa.types.is_timestamp(schema_field.type):
            seconds = pc.cast(column, pa.timestamp("s", tz="UTC"))  # safe cast: timestamps are whole seconds
            columns.append(pc.strftime(seconds, format="%Y-%m-%dT%H:%M:%SZ"))
        else:
            columns.append(column)
    return pa.table(columns, schema=_csv_schema(table.schema))


def prefixed_ids(prefix: str, numbers: IntArray, width: int) -> pa.Array:
    """Ids like ``c000123``: zero-padded so lexical order is numeric order."""
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers, pa.int64()), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")
