"""The data contract's tables read as Parquet through Spark, checked with the contract's rules there.

A Spark run reads ``<data path>/<table>.parquet`` (a file or a folder of part files) from any path
Spark reads: local, ``hdfs://``, ``s3a://``. Every rule of ``engine.data.contract`` is checked with
one aggregation per table on the cluster (required columns, types, nulls, allowed values, bounds,
unique keys, events naming unknown items), and each broken rule is reported as the local loader
reports it, a ``DataValidationError`` whose issues name the file and the column, with the number of
offending rows and a few of them, so a bad export stops before an hour of training.

Valid tables are then brought to the driver as Arrow and typed by the local loader
(``engine.data.loading.load_shop``), so both engines train on identically typed frames (UTC
timestamps, optional columns filled the same way). With ``[data] skip_invalid`` the row-level
problems are left for that loader to drop and count, exactly as a local run does.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from engine.data.contract import TABLES, Column, ColumnKind, TableSchema
from engine.data.loading import DataIssue, DataValidationError, IssueReason, load_shop
from engine.data.shop_data import ShopData

if TYPE_CHECKING:
    from pyspark.sql import Column as SparkColumn
    from pyspark.sql import DataFrame, SparkSession

EXAMPLES = 3  # offending rows shown per broken rule
# Rows brought to the driver per Spark job (a few hundred MB of Arrow for an events table), and the
# column that numbers them meanwhile; ``monotonically_increasing_id`` puts the partition in bit 33 up.
ROWS_PER_COLLECT = 1_000_000
_POSITION = "__persona_engine_position"
_PARTITION_SHIFT = 33
_NUMERIC = {ColumnKind.FLOAT: "double", ColumnKind.INT: "bigint"}
_ROW_LEVEL = {
    IssueReason.WRONG_TYPE,
    IssueReason.BAD_TIMESTAMP,
    IssueReason.BAD_DATE,
    IssueReason.NULL_VALUE,
    IssueReason.NOT_ALLOWED,
    IssueReason.OUT_OF_RANGE,
    IssueReason.DUPLICATE_ID,
    IssueReason.UNKNOWN_ITEM,
    IssueReason.MALFORMED_ID,
}
# engine/data/id_cells.py's rule in Java's regex dialect: (?U) makes \s Unicode whitespace, as in polars.
_MALFORMED_ID = r"(?U)[\x00-\x1F\x7F-\x9F]|^\s|\s$"


def table_path(root: str, table: str) -> str:
    return f"{root.rstrip('/')}/{table}.parquet"


def read_tables(session: SparkSession, root: str) -> tuple[dict[str, DataFrame], list[DataIssue]]:
    """Every contract table found under ``root``; a missing required table is an issue."""
    from pyspark.errors import AnalysisException

    frames: dict[str, DataFrame] = {}
    issues: list[DataIssue] = []
    for name in TABLES:
        path = table_path(root, name)
        try:
            frames[name] = session.read.parquet(path)
        except AnalysisException as error:
            if name in ("events", "items"):
                issues.append(
                    DataIssue(
                        path,
                        None,
                        None,
                        f"required table {name!r} cannot be read: {str(error).splitlines()[0]}",
                        IssueReason.MISSING_TABLE,
                    )
                )
    return frames, issues


def _rule(column: Column, dtype: str) -> list[tuple[IssueReason, str, SparkColumn]]:
    """(reason, what is wrong, condition true on an offending row) for each row rule of one column."""
    from pyspark.sql import functions as sf

    cell = sf.col(f"`{column.name}`")
    rules: list[tuple[IssueReason, str, SparkColumn]] = []
    typed = cell
    if column.kind in _NUMERIC and dtype in ("string", "binary"):
        typed = cell.cast(_NUMERIC[column.kind])
        rules.append((IssueReason.WRONG_TYPE, "not a number", cell.isNotNull() & typed.isNull()))
    elif column.kind is ColumnKind.TIMESTAMP and dtype == "string":
        typed = sf.try_to_timestamp(cell)
        rules.append((IssueReason.BAD_TIMESTAMP, "not a timestamp", cell.isNotNull() & typed.isNull()))
    elif column.kind is ColumnKind.DATE and dtype == "string":
        typed = sf.try_to_date(cell)
        rules.append((IssueReason.BAD_DATE, "not a date", cell.isNotNull() & typed.isNull()))
    if not column.nullable:
        rules.append((IssueReason.NULL_VALUE, "empty", cell.isNull()))
    if column.identifier and dtype == "string":
        text = "hold a control character or leading or trailing whitespace"
        rules.append((IssueReason.MALFORMED_ID, text, cell.rlike(_MALFORMED_ID)))
    if column.allowed is not None:
        allowed = ", ".join(column.allowed)
        rules.append(
            (IssueReason.NOT_ALLOWED, f"not one of {allowed}", cell.isNotNull() & ~cell.isin(*column.allowed))
        )
    if column.kind in _NUMERIC:
        if column.min_value is not None:
            rules.append((IssueReason.OUT_OF_RANGE, f"below {column.min_value:g}", typed < column.min_value))
        if column.max_value is not None:
            rules.append((IssueReason.OUT_OF_RANGE, f"above {column.max_value:g}", typed > column.max_value))
    return rules


def _type_issue(path: str, column: Column, dtype: str) -> DataIssue | None:
    """A column whose Parquet type no cell of the contract's kind could have (list vs scalar)."""
    is_list = dtype.startswith("array")
    if (column.kind is ColumnKind.STRING_LIST) != is_list:
        return DataIssue(
            path,
            None,
            column.name,
            f"stored as {dtype}; the contract's {column.kind} column needs "
            + ("a list<string>" if column.kind is ColumnKind.STRING_LIST else "a scalar"),
            IssueReason.WRONG_TYPE,
        )
    return None


def _shown(value: Any) -> str:
    return "empty" if value is None else repr(value if isinstance(value, str) else str(value))


def check_table(frame: DataFrame, schema: TableSchema, path: str) -> list[DataIssue]:
    """Every contract rule of one table, counted in one pass, with a few offending rows per broken rule."""
    from pyspark.sql import functions as sf

    dtypes = dict(frame.dtypes)
    issues: list[DataIssue] = []
    rules: list[tuple[Column, IssueReason, str, SparkColumn]] = []
    for column in schema.columns:
        if column.name not in dtypes:
            if column.required:
                issues.append(
                    DataIssue(
                        path, None, column.name, "required column is missing", IssueReason.MISSING_COLUMN
                    )
                )
            continue
        problem = _type_issue(path, column, dtypes[column.name])
        if problem is not None:
            issues.append(problem)
            continue
        rules += [(column, reason, text, test) for reason, text, test in _rule(column, dtypes[column.name])]
    if not rules and schema.key is None:
        return issues
    counts = [sf.sum(sf.when(test, 1).otherwise(0)).alias(f"r{i}") for i, (_, _, _, test) in enumerate(rules)]
    key = schema.key if schema.key is not None and schema.key.name in dtypes else None
    if key is not None:
        counts.append(sf.count(sf.col(f"`{key.name}`")).alias("keys"))
        counts.append(sf.countDistinct(sf.col(f"`{key.name}`")).alias("distinct_keys"))
    totals = frame.agg(*counts).first()
    assert totals is not None
    for i, (column, reason, text, test) in enumerate(rules):
        bad = int(totals[f"r{i}"] or 0)
        if bad:
            label = sf.col(f"`{key.name}`") if key is not None and key is not column else sf.lit(None)
            shown = [
                (f"{key.name} {_shown(row[0])}: " if row[0] is not None and key is not None else "")
                + _shown(row[1])
                for row in frame.filter(test)
                .select(label, sf.col(f"`{column.name}`"))
                .limit(EXAMPLES)
                .collect()
            ]
            issues.append(
                DataIssue(path, None, column.name, f"{bad:,} row(s) {text}, e.g. {'; '.join(shown)}", reason)
            )
    if key is not None and totals["keys"] != totals["distinct_keys"]:
        repeated = (
            frame.groupBy(sf.col(f"`{key.name}`").alias("key")).count().filter("count > 1").orderBy("key")
        )
        extra = int(totals["keys"]) - int(totals["distinct_keys"])
        shown = [f"{_shown(r['key'])} x{r['count']}" for r in repeated.limit(EXAMPLES).collect()]
        issues.append(
            DataIssue(
                path,
                None,
                key.name,
                f"{extra:,} row(s) repeat an id already used, e.g. {'; '.join(shown)}",
                IssueReason.DUPLICATE_ID,
            )
        )
    return issues


def check_references(frames: dict[str, DataFrame], root: str) -> list[DataIssue]:
    """Events naming items the items table does not list, counted with a few of them."""
    events, items = frames.get("events"), frames.get("items")
    if events is None or items is None:
        return []
    unknown = events.join(items.select("item_id"), on="item_id", how="left_anti")
    bad = unknown.count()
    if not bad:
        return []
    shown = [
        f"event_id {_shown(r[0])}: {_shown(r[1])}"
        for r in unknown.select("event_id", "item_id").limit(EXAMPLES).collect()
    ]
    return [
        DataIssue(
            table_path(root, "events"),
            None,
            "item_id",
            f"{bad:,} row(s) name an item the items table does not list, e.g. {'; '.join(shown)}",
            IssueReason.UNKNOWN_ITEM,
        )
    ]


def validate_tables(session: SparkSession, root: str, *, skip_invalid: bool) -> dict[str, DataFrame]:
    """The tables under ``root``, every contract rule checked on the cluster; raises DataValidationError.

    With ``skip_invalid`` row-level problems are let through (the local loader drops and counts them);
    missing tables and columns and unusable column types are fatal either way, as locally.
    """
    frames, issues = read_tables(session, root)
    if not issues:
        for name, frame in frames.items():
            issues += check_table(frame, TABLES[name], table_path(root, name))
        if not any(i.reason in (IssueReason.MISSING_COLUMN, IssueReason.WRONG_TYPE) for i in issues):
            issues += check_references(frames, root)
    fatal = [i for i in issues if not (skip_invalid and i.reason in _ROW_LEVEL)]
    if fatal:
        raise DataValidationError(fatal)
    return frames


def collect_shop(
    frames: dict[str, DataFrame], *, skip_invalid: bool, rows_per_collect: int = ROWS_PER_COLLECT
) -> ShopData:
    """The validated tables on the driver, typed by the local loader.

    Each table is written to a driver-side Parquet file slice by slice (``arrow_slices``), so neither
    the driver's Java heap nor ``spark.driver.maxResultSize`` has to hold a whole events table: ten
    million events collected in one ``toArrow`` ran the default 2 GB heap out of memory.
    """
    with tempfile.TemporaryDirectory(prefix="persona-engine-spark-") as folder:
        for name, frame in frames.items():
            schema = TABLES[name]
            wanted = [c.name for c in schema.columns if c.name in frame.columns]
            prefix = schema.extra_prefix
            wanted += [c for c in frame.columns if prefix and c.startswith(prefix)]
            selected = frame.select(*[f"`{c}`" for c in wanted])
            writer: pq.ParquetWriter | None = None
            try:
                for part in arrow_slices(selected, rows_per_collect):
                    if writer is None:
                        writer = pq.ParquetWriter(Path(folder) / f"{name}.parquet", part.schema)
                    writer.write_table(part)
            finally:
                if writer is not None:
                    writer.close()
        return load_shop(Path(folder), skip_invalid=skip_invalid)


def arrow_slices(frame: DataFrame, rows_per_slice: int) -> Iterator[pa.Table]:
    """``frame``'s rows in their order, as Arrow tables of at most about ``rows_per_slice`` rows.

    One Spark job per slice: rows are numbered by ``monotonically_increasing_id`` (partition index
    in the high bits, position within the partition in the low ones, so the numbers follow the rows'
    order), the partitions' sizes are counted, and each slice is the range of numbers between two
    cut points. The local loader then sees the rows in Spark's read order, which for a single file
    is the file's own order, as a local read gives it: the two engines train on the same frames.
    """
    from pyspark.sql import functions as sf

    numbered = frame.withColumn(_POSITION, sf.monotonically_increasing_id())
    sizes = sorted(
        (int(row[0]), int(row[1])) for row in numbered.groupBy(sf.spark_partition_id()).count().collect()
    )
    cuts = slice_cuts(sizes, rows_per_slice)
    if len(cuts) < 2:  # no rows: one empty table with the frame's schema
        yield frame.limit(0).toArrow()
        return
    position = sf.col(_POSITION)
    for low, high in itertools.pairwise(cuts):
        yield numbered.filter((position >= low) & (position < high)).drop(_POSITION).toArrow()


def slice_cuts(sizes: list[tuple[int, int]], rows_per_slice: int) -> list[int]:
    """Cut points in ``monotonically_increasing_id`` numbers for slices of ``rows_per_slice`` rows.

    ``sizes`` is (partition index, rows) in partition order. The first cut is the first row's number,
    the last one past the last row's (no cuts without rows); a slice may span partitions.
    """
    if rows_per_slice < 1:
        raise ValueError(f"rows_per_slice must be >= 1, got {rows_per_slice}")
    cuts: list[int] = []
    taken = end = 0  # rows since the last cut; the number past the last row seen
    for partition, rows in sizes:
        if rows == 0:
            continue
        base = partition << _PARTITION_SHIFT
        if not cuts:
            cuts.append(base)
        offset = 0
        while taken + (rows - offset) > rows_per_slice:
            offset += rows_per_slice - taken
            cuts.append(base + offset)
            taken = 0
        taken += rows - offset
        end = base + rows
    if cuts:
        cuts.append(end)
    return cuts


def load_shop_with_spark(session: SparkSession, root: str, *, skip_invalid: bool) -> ShopData:
    """Read, check (on the cluster) and collect a shop: the Spark engine's ``load_shop``."""
    return collect_shop(validate_tables(session, root, skip_invalid=skip_invalid), skip_invalid=skip_invalid)
