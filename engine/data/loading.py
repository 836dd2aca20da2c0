"""Loading a shop's files into typed, validated frames: the only way data enters the engine.

How it works, and why:

- CSV cells are read as text and Parquet columns as stored; each column is then parsed in one vectorised
  polars pass. A cell that cannot be parsed comes out null, so "present before, null after" finds every bad
  cell of a column at once, without a Python loop over rows (a 10M-event file must load in seconds).
- Nothing is dropped silently. Without ``skip_invalid`` every problem raises a DataValidationError whose
  issues name the file, row, column and offending value. With ``skip_invalid`` bad rows (and events naming
  unknown items, and repeats of an id after its first valid occurrence) are dropped and counted per table
  and reason in ``ShopData.report``; a row with several problems is counted once, under the first found.
- Problems that are not about one row (a missing file or column, a Parquet column of an unusable type, an
  empty or unreadable file, a table given both as CSV and as Parquet, a CSV in another encoding or with
  another separator) stay fatal with ``skip_invalid``, because dropping rows cannot repair them. A
  malformed CSV record (engine.data.csv_text) is one row's problem, except a quote that never closes.
- Per-table checks run before cross-table checks (events.item_id in items, decisions.arm_id in offers or
  layouts), so a reference check never reports noise caused by a table that is itself broken.

Row numbers: ``row`` is the 1-based data row, the header not counted. For CSV an issue also gives the line of
the file (the header is line 1, so row r is line r + 1), but only when every record of the file sits on one
line; when a quoted cell spans lines the line would be wrong, so only the row is given.

Optional columns absent from a file are added, chunked like the read ones. Most are filled with nulls; those
whose contract description gives an explicit "none" value get it, and a null cell in them means the same
thing, so downstream code never handles two spellings of "nothing": discount 0.0, min_basket 0.0, in_stock
true, tags and eligible_* [].
Columns not in the contract are dropped (exports carry extra columns), except the customers table's extra
features, named ``feature__<name>`` (engine/data/contract.py).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import polars as pl

from engine.data.chunk_layout import chunk_lengths, chunked_as
from engine.data.contract import LIST_SEPARATOR, REQUIRED_TABLES, TABLES, Column, ColumnKind, TableSchema
from engine.data.csv_text import CsvFormatError, csv_header, read_csv_text, read_csv_text_skipping
from engine.data.data_issues import DataIssue, DataValidationError, IssueReason
from engine.data.id_cells import malformed_id_problem, malformed_ids
from engine.data.shop_data import LoadReport, ShopData
from engine.data.timestamp_text import (
    EARLIEST_TIMESTAMP,
    first_success,
    parse_date,
    timestamp_parsers,
    to_utc_timestamp,
)

MAX_ISSUES_KEPT_PER_CHECK = 50
"""Issues materialised per (column, check); the rest are only counted (millions of bad cells cost no more)."""

TIMESTAMP_TYPE = pl.Datetime("us", "UTC")
STRING_LIST_TYPE = pl.List(pl.String)

_DTYPES: dict[ColumnKind, pl.DataType] = {
    ColumnKind.STRING: pl.String(),
    ColumnKind.FLOAT: pl.Float64(),
    ColumnKind.INT: pl.Int64(),
    ColumnKind.BOOL: pl.Boolean(),
    ColumnKind.TIMESTAMP: TIMESTAMP_TYPE,
    ColumnKind.DATE: pl.Date(),
    ColumnKind.STRING_LIST: STRING_LIST_TYPE,
}

_DEFAULTS: dict[tuple[str, str], object] = {
    ("events", "discount"): 0.0,
    ("items", "tags"): [],
    ("items", "in_stock"): True,
    ("offers", "eligible_categories"): [],
    ("offers", "eligible_brands"): [],
    ("offers", "min_basket"): 0.0,
}

_BOOL_WORDS: dict[str, bool] = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def load_table(
    path: Path, schema: TableSchema, *, skip_invalid: bool = False
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Load one ``.csv`` or ``.parquet`` file as ``schema``; returns the typed frame and skips per reason.

    Raises DataValidationError naming every problem found in the file (unless ``skip_invalid`` drops the bad
    rows; file- and column-level problems are raised either way).
    """
    table = _load_table(Path(path), schema, skip_invalid)
    if table.log.total or table.frame is None:
        raise table.log.error()
    return table.frame, dict(table.skipped)


def load_shop(source: Path | Mapping[str, Path], *, skip_invalid: bool = False) -> ShopData:
    """Load every table of a shop from a directory of ``<table>.csv|.parquet`` files or a table -> path map.

    All per-table problems of all files are collected and raised together before references between tables
    are checked.
    """
    paths = _resolve_sources(source)
    tables = {name: _load_table(path, TABLES[name], skip_invalid) for name, path in paths.items()}
    _raise_if_any(tables.values())
    _check_references(tables, skip_invalid)
    _require_rows_left(tables)
    _raise_if_any(tables.values())

    frames: dict[str, pl.DataFrame] = {}
    for name, table in tables.items():
        if table.frame is None:
            raise RuntimeError(f"table {name!r} has neither a frame nor an issue")
        frames[name] = table.frame
    report = LoadReport(
        rows_read={name: table.rows_read for name, table in tables.items()},
        rows_skipped={name: dict(table.skipped) for name, table in tables.items() if table.skipped},
    )
    return ShopData(
        events=frames["events"],
        items=frames["items"],
        customers=frames.get("customers"),
        offers=frames.get("offers"),
        layouts=frames.get("layouts"),
        decisions=frames.get("decisions"),
        report=report,
    )


# --------------------------------------------------------------------------------------------- sources


def _resolve_sources(source: Path | Mapping[str, Path]) -> dict[str, Path]:
    """Find the file of each table, in contract order; ambiguity and missing required tables are fatal."""
    if isinstance(source, Mapping):
        unknown = sorted(set(source) - set(TABLES))
        if unknown:
            raise ValueError(f"unknown table name(s) {unknown}; the data contract has {list(TABLES)}")
        found = {name: Path(source[name]) for name in TABLES if name in source}
        issues = [
            DataIssue(
                "(table mapping)",
                None,
                None,
                f"required table {name!r} is missing from the mapping",
                IssueReason.MISSING_TABLE,
            )
            for name in REQUIRED_TABLES
            if name not in found
        ]
    else:
        found, issues = _find_in_directory(Path(source))
    issues += [
        DataIssue(
            path.name,
            None,
            None,
            f"unsupported file type {path.suffix!r}; use .csv or .parquet",
            IssueReason.UNSUPPORTED_FORMAT,
        )
        for path in found.values()
        if path.suffix.lower() not in (".csv", ".parquet")
    ]
    if issues:
        raise DataValidationError(issues)
    return found


def _find_in_directory(directory: Path) -> tuple[dict[str, Path], list[DataIssue]]:
    """``<table>.csv`` or ``<table>.parquet`` for each table; both at once is an error, not a silent pick."""
    if not directory.is_dir():
        issue = DataIssue(str(directory), None, None, "is not a directory", IssueReason.MISSING_TABLE)
        return {}, [issue]
    found: dict[str, Path] = {}
    issues: list[DataIssue] = []
    for name in TABLES:
        csv, parquet = directory / f"{name}.csv", directory / f"{name}.parquet"
        if csv.exists() and parquet.exists():
            message = (
                f"both {csv.name} and {parquet.name} exist in {directory}; "
                "remove one so it is clear which holds the data"
            )
            issues.append(DataIssue(csv.name, None, None, message, IssueReason.AMBIGUOUS_SOURCE))
        elif csv.exists() or parquet.exists():
            found[name] = csv if csv.exists() else parquet
        elif name in REQUIRED_TABLES:
            message = f"required table {name!r} is missing: no {csv.name} or {parquet.name}"
            issues.append(DataIssue(str(directory), None, None, message, IssueReason.MISSING_TABLE))
    return found, issues


# --------------------------------------------------------------------------------------------- issues


class _IssueLog:
    """The issues of one file: all counted, at most MAX_ISSUES_KEPT_PER_CHECK kept per check."""

    def __init__(self, path: Path, schema: TableSchema) -> None:
        self.path = path
        self.file = path.name
        self.is_csv = path.suffix.lower() == ".csv"
        self.column_order = {column.name: i for i, column in enumerate(schema.columns)}
        self.issues: list[DataIssue] = []
        self.total = 0
        self.rows_in_file: int | None = None
        self.header: list[str] = []  # every column of the file, not only the contract's

    def add(self, column: str | None, message: str, reason: IssueReason) -> None:
        self.issues.append(DataIssue(self.file, None, column, message, reason))
        self.total += 1

    def add_rows(self, column: str, reason: IssueReason, indices: pl.Series, messages: Sequence[str]) -> None:
        for index, message in zip(indices.to_list(), messages, strict=True):
            self.issues.append(DataIssue(self.file, index + 1, column, message, reason))

    def error(self) -> DataValidationError:
        return DataValidationError(self.finished_issues(), self.total)

    def finished_issues(self) -> list[DataIssue]:
        """Issues in reading order (file-level first), with CSV lines filled in when they can be trusted."""
        issues = sorted(
            self.issues,
            key=lambda i: (i.row is not None, i.row or 0, self.column_order.get(i.column or "", -1)),
        )
        has_rows = any(issue.row is not None for issue in issues)
        if self.is_csv and has_rows and self.rows_in_file is not None and self._one_record_per_line():
            issues = [replace(i, line=i.row + 1) if i.row is not None else i for i in issues]
        return issues

    def _one_record_per_line(self) -> bool:
        """Whether the file has exactly header + one line per row, so that row r is line r + 1.

        Counting newlines costs one read of the file, paid only when there is an issue to report.
        """
        newlines = 0
        last = b"\n"
        with self.path.open("rb") as handle:
            while chunk := handle.read(1 << 24):
                newlines += chunk.count(b"\n")
                last = chunk[-1:]
        lines = newlines + (0 if last == b"\n" else 1)
        return lines == 1 + (self.rows_in_file or 0)


class _RowChecks:
    """Flags bad rows of one frame: logs them (strict mode) and counts each bad row once, by first reason."""

    def __init__(self, log: _IssueLog, height: int, skip_invalid: bool) -> None:
        self.log = log
        self.skip_invalid = skip_invalid
        self.invalid = pl.repeat(False, height, dtype=pl.Boolean, eager=True)
        self.skipped: dict[str, int] = {}

    def report(
        self,
        mask: pl.Series,
        column: str,
        reason: IssueReason,
        describe: Callable[[pl.Series], list[str]],
    ) -> None:
        """Record the rows where ``mask`` is true; ``describe`` turns kept row indices into messages."""
        mask = mask.fill_null(False)
        count = int(mask.sum())
        if count == 0:
            return
        newly_invalid = int((mask & ~self.invalid).sum())
        if newly_invalid:
            self.skipped[str(reason)] = self.skipped.get(str(reason), 0) + newly_invalid
        self.invalid = self.invalid | mask
        if not self.skip_invalid:
            self.log.total += count
            indices = mask.arg_true().head(MAX_ISSUES_KEPT_PER_CHECK)
            self.log.add_rows(column, reason, indices, describe(indices))

    def keep(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The rows to go on with: all in strict mode, so later checks still report file row numbers."""
        return frame.filter(~self.invalid) if self.skip_invalid and self.skipped else frame


# --------------------------------------------------------------------------------------------- one table


@dataclass
class _LoadedTable:
    log: _IssueLog
    frame: pl.DataFrame | None = None  # None when a fatal problem prevented loading
    rows_read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


class _UnusableColumnTypeError(Exception):
    """A Parquet column whose type cannot hold the contract's kind; fatal, as no row can be saved."""


@dataclass(frozen=True)
class _Parsed:
    values: pl.Series  # in the contract dtype; null where the input was null or bad
    bad: pl.Series | None  # true where the input held something that does not parse
    reason: IssueReason
    expected: str  # completes "cannot parse 'x' as ..."


def _load_table(path: Path, schema: TableSchema, skip_invalid: bool) -> _LoadedTable:
    log = _IssueLog(path, schema)
    table = _LoadedTable(log)
    raw, malformed = _read_file(path, schema, log, skip_invalid)
    if raw is None:
        return table
    log.rows_in_file = raw.height
    table.rows_read = raw.height + malformed
    if raw.height == 0 and schema.name in REQUIRED_TABLES:
        log.add(
            None,
            f"has a header but no data rows; a shop needs at least one row of {schema.name}",
            IssueReason.EMPTY_FILE,
        )

    checks = _RowChecks(log, raw.height, skip_invalid)
    if malformed:
        checks.skipped[str(IssueReason.MALFORMED_CSV)] = malformed
    typed: dict[str, pl.Series] = {}
    for column in schema.columns:
        if column.name not in raw.columns:
            if column.required:
                log.add(
                    column.name,
                    f"required column {column.name!r} is missing "
                    f"(columns found: {', '.join(log.header) or 'none'})",
                    IssueReason.MISSING_COLUMN,
                )
            continue
        try:
            typed[column.name] = _check_column(raw[column.name], column, checks).alias(column.name)
        except _UnusableColumnTypeError as problem:
            log.add(column.name, str(problem), IssueReason.WRONG_TYPE)
    for column in schema.columns:
        if column.unique and column.name in typed:
            _check_unique(typed[column.name], column.name, checks)
    if log.total:
        return table

    if schema.extra_prefix is not None:
        for name in raw.columns:
            if name.startswith(schema.extra_prefix) and name not in typed:
                typed[name] = _extra_feature(raw[name])
    frame = checks.keep(pl.DataFrame(list(typed.values())) if typed else pl.DataFrame())
    table.skipped = checks.skipped
    table.frame = _complete(frame, schema, height=raw.height - int(checks.invalid.sum()))
    return table


# polars reads a CSV header that names a column twice as ``name``, ``name_duplicated_0``, ...
_REPEATED_COLUMN = re.compile(r"(.+)_duplicated_\d+")


def _repeated_columns(header: Sequence[str], log: _IssueLog) -> bool:
    """Log every column a CSV header names more than once (polars would keep the first and rename the
    others, and the data of the renamed one would be dropped without a word); whether there was one."""
    names = set(header)
    repeated = {m.group(1) for n in header if (m := _REPEATED_COLUMN.fullmatch(n)) and m.group(1) in names}
    for name in sorted(repeated):
        log.add(name, f"column {name!r} appears more than once in the header", IssueReason.DUPLICATE_COLUMN)
    return bool(repeated)


def _read_file(
    path: Path, schema: TableSchema, log: _IssueLog, skip_invalid: bool
) -> tuple[pl.DataFrame | None, int]:
    """Read the contract's columns of a file (CSV all as text), and how many malformed CSV records were
    skipped (``skip_invalid`` only); None after logging why it cannot be read."""
    if not path.is_file():
        log.add(None, f"cannot read {path}: no such file", IssueReason.UNREADABLE_FILE)
        return None, 0
    if path.stat().st_size == 0:
        log.add(None, "is empty (not even a header)", IssueReason.EMPTY_FILE)
        return None, 0
    wanted = [column.name for column in schema.columns]

    def kept(header: Sequence[str]) -> list[str]:  # the contract's columns, then the extra features
        prefix = schema.extra_prefix
        return [n for n in wanted if n in header] + [n for n in header if prefix and n.startswith(prefix)]

    try:
        if log.is_csv:
            header = csv_header(path)
            log.header = header
            if _repeated_columns(header, log):
                return None, 0
            present = kept(header)
            try:
                frame = read_csv_text(path, present, header=header) if present else pl.DataFrame()
            except CsvFormatError as fault:
                if not (skip_invalid and fault.skippable):
                    raise
                return read_csv_text_skipping(path, present)
        else:
            header = list(pl.read_parquet_schema(path))
            log.header = header
            present = kept(header)
            frame = pl.read_parquet(path, columns=present) if present else pl.DataFrame()
    except CsvFormatError as fault:
        log.issues.append(
            DataIssue(log.file, fault.row, fault.column, fault.message, IssueReason.MALFORMED_CSV, fault.line)
        )
        log.total += 1
        return None, 0
    except (OSError, ValueError, pl.exceptions.PolarsError) as problem:
        first_line = str(problem).strip().splitlines()[0] if str(problem).strip() else type(problem).__name__
        log.add(
            None,
            f"cannot read {path} as {path.suffix.lstrip('.').upper()}: {first_line}",
            IssueReason.UNREADABLE_FILE,
        )
        return None, 0
    return frame, 0


def _check_column(raw: pl.Series, column: Column, checks: _RowChecks) -> pl.Series:
    """Parse one column and flag bad cells, empty required cells, values outside the vocabulary or range."""
    parsed = _parse(raw, column)
    values = parsed.values
    bad = parsed.bad
    if bad is not None:
        expected = parsed.expected
        checks.report(
            bad,
            column.name,
            parsed.reason,
            lambda idx: [f"cannot parse {v!r} as {expected}" for v in raw.gather(idx).to_list()],
        )
    fine = ~bad if bad is not None else None

    if not column.nullable:
        missing = values.is_null() if fine is None else values.is_null() & fine
        checks.report(
            missing,
            column.name,
            IssueReason.NULL_VALUE,
            lambda idx: ["missing value (this column may not be empty)"] * idx.len(),
        )

    if column.identifier:
        checks.report(
            malformed_ids(values),
            column.name,
            IssueReason.MALFORMED_ID,
            lambda idx: [malformed_id_problem(v) for v in values.gather(idx).to_list()],
        )

    if column.allowed is not None:
        allowed = column.allowed
        outside = ~values.is_in(list(allowed)) & values.is_not_null()
        checks.report(
            outside,
            column.name,
            IssueReason.NOT_ALLOWED,
            lambda idx: [f"{v!r} is not one of: {', '.join(allowed)}" for v in values.gather(idx).to_list()],
        )

    if column.min_value is not None or column.max_value is not None:
        low, high = column.min_value, column.max_value
        too_low = values < low if low is not None else pl.repeat(False, values.len(), eager=True)
        too_high = values > high if high is not None else pl.repeat(False, values.len(), eager=True)
        outside = too_low.fill_null(False) | too_high.fill_null(False)
        if fine is not None:
            outside = outside & fine
        bounds = _describe_bounds(low, high)
        checks.report(
            outside,
            column.name,
            IssueReason.OUT_OF_RANGE,
            lambda idx: [f"{v!r} is out of range: {bounds}" for v in raw.gather(idx).to_list()],
        )
    if column.kind is ColumnKind.TIMESTAMP:
        # No shop's event happened before 1970; such a timestamp is a broken export (a year-1 default),
        # and day counts from 1970 must not go negative downstream (``discover`` crashed on one).
        early = (values < EARLIEST_TIMESTAMP).fill_null(False)
        checks.report(
            early if fine is None else early & fine,
            column.name,
            IssueReason.OUT_OF_RANGE,
            lambda idx: [
                f"{v.isoformat() if isinstance(v, dt.datetime | dt.date) else repr(v)} is before 1970-01-01"
                for v in raw.gather(idx).to_list()
            ],
        )
    return values


def _check_unique(values: pl.Series, name: str, checks: _RowChecks) -> None:
    """Flag every repeat of an id after its first occurrence (in skip mode: its first still-valid one)."""
    candidates = values.is_not_null()
    if checks.skip_invalid:
        candidates = candidates & ~checks.invalid
    everyone = bool(candidates.all())
    # Equal ids hash equal, so sorted 64-bit hashes with no neighbours alike prove every id distinct; this is
    # ~10x faster than hashing the strings into a set. A hash collision only costs the exact pass below.
    hashes = (values if everyone else values.filter(candidates)).hash().sort()
    if not (hashes == hashes.shift(1)).any():
        return
    contenders = values if everyone else pl.select(pl.when(candidates).then(values)).to_series()
    repeats = candidates & ~contenders.is_first_distinct()

    def describe(idx: pl.Series) -> list[str]:
        repeated = values.gather(idx)
        firsts = pl.DataFrame(
            {"id": contenders, "row": pl.int_range(1, values.len() + 1, eager=True)}
        ).filter(candidates & contenders.is_first_distinct() & contenders.is_in(repeated.implode()))
        first_row = dict(zip(firsts["id"].to_list(), firsts["row"].to_list(), strict=True))
        return [f"duplicate {name} {v!r}: already in row {first_row[v]}" for v in repeated.to_list()]

    checks.report(repeats, name, IssueReason.DUPLICATE_ID, describe)


def _extra_feature(raw: pl.Series) -> pl.Series:
    """An extra feature column (``TableSchema.extra_prefix``): numbers stay numbers, the rest is text.

    CSV cells are text: a column is numeric when every non-empty cell parses as a finite number."""
    if raw.dtype.is_numeric():
        return raw.cast(pl.Float64).fill_nan(None)
    text = _blank_to_null(raw.cast(pl.String).str.strip_chars())
    number = text.cast(pl.Float64, strict=False)
    filled = text.len() - text.null_count()
    return number if 0 < filled == int(number.is_finite().fill_null(False).sum()) else text


def _complete(frame: pl.DataFrame, schema: TableSchema, height: int) -> pl.DataFrame:
    """Put columns in contract order, add absent optional ones and fill the documented defaults.

    Extra feature columns (the schema's ``extra_prefix``) follow the contract's, in file order."""
    columns: list[pl.Series] = []
    lengths = chunk_lengths(frame) if frame.width else [height]  # an absent column's (chunk_layout)
    for column in schema.columns:
        dtype = _DTYPES[column.kind]
        default = _DEFAULTS.get((schema.name, column.name))
        if column.name in frame.columns:
            series = frame[column.name]
            if default is not None:
                series = series.fill_null(pl.lit(default, dtype=dtype))
        else:
            series = chunked_as(pl.repeat(pl.lit(default, dtype=dtype), height, eager=True), lengths)
        columns.append(series.alias(column.name).cast(dtype))
    if schema.extra_prefix is not None:
        columns += [frame[name] for name in frame.columns if name.startswith(schema.extra_prefix)]
    return pl.DataFrame(columns)


# --------------------------------------------------------------------------------------------- parsing


def _parse(raw: pl.Series, column: Column) -> _Parsed:
    """Bring one column to its contract dtype; a stored type that no cell could fit raises instead."""
    dtype = raw.dtype
    kind = column.kind
    if dtype == pl.Null:
        return _Parsed(raw.cast(_DTYPES[kind]), None, IssueReason.WRONG_TYPE, "")
    if dtype == pl.String:
        text = _blank_to_null(raw)
        return _parse_text(text, kind)
    if kind == ColumnKind.STRING and (dtype.is_integer() or isinstance(dtype, pl.Categorical | pl.Enum)):
        return _Parsed(_blank_to_null(raw.cast(pl.String)), None, IssueReason.WRONG_TYPE, "")
    if kind == ColumnKind.FLOAT and (dtype.is_numeric() and not isinstance(dtype, pl.Boolean)):
        values = raw.cast(pl.Float64)
        return _Parsed(values, _not_finite(values), IssueReason.WRONG_TYPE, "a finite number")
    if kind == ColumnKind.INT and dtype.is_integer():
        values = raw.cast(pl.Int64, strict=False)
        return _Parsed(values, values.is_null() & raw.is_not_null(), IssueReason.WRONG_TYPE, "an integer")
    if kind == ColumnKind.INT and dtype.is_float():
        integral = (raw == raw.round()) & raw.is_finite()
        values = pl.select(pl.when(integral).then(raw)).to_series().cast(pl.Int64, strict=False)
        return _Parsed(values, values.is_null() & raw.is_not_null(), IssueReason.WRONG_TYPE, "an integer")
    if kind == ColumnKind.BOOL and dtype == pl.Boolean:
        return _Parsed(raw, None, IssueReason.WRONG_TYPE, "")
    if kind == ColumnKind.BOOL and dtype.is_integer():
        return _parse_text(raw.cast(pl.String), kind)
    if kind == ColumnKind.TIMESTAMP and isinstance(dtype, pl.Datetime | pl.Date):
        return _Parsed(to_utc_timestamp(raw), None, IssueReason.BAD_TIMESTAMP, "")
    if kind == ColumnKind.DATE and dtype == pl.Date:
        return _Parsed(raw, None, IssueReason.BAD_DATE, "")
    if kind == ColumnKind.DATE and isinstance(dtype, pl.Datetime):
        return _Parsed(to_utc_timestamp(raw).dt.date(), None, IssueReason.BAD_DATE, "")
    if kind == ColumnKind.STRING_LIST and isinstance(dtype, pl.List):
        inner = dtype.inner
        if inner is not None and (
            inner == pl.String or inner == pl.Null or inner.is_integer() or isinstance(inner, pl.Categorical)
        ):
            return _Parsed(raw.cast(STRING_LIST_TYPE), None, IssueReason.WRONG_TYPE, "")
    raise _UnusableColumnTypeError(
        f"column {column.name!r} is stored as {dtype} in the file, which cannot hold {_KIND_NEEDS[kind]}"
    )


_KIND_NEEDS: dict[ColumnKind, str] = {
    ColumnKind.STRING: "ids or text (text, or integers read as their decimal text)",
    ColumnKind.FLOAT: "numbers",
    ColumnKind.INT: "integers",
    ColumnKind.BOOL: "booleans (boolean, 0/1 integers, or true/false/yes/no text)",
    ColumnKind.TIMESTAMP: "timestamps (timestamp, date, or ISO 8601 text)",
    ColumnKind.DATE: "dates (date, or YYYY-MM-DD text)",
    ColumnKind.STRING_LIST: f"lists of text (list<string>, or text joined by {LIST_SEPARATOR!r})",
}


def _parse_text(text: pl.Series, kind: ColumnKind) -> _Parsed:
    """Parse text cells (blank already null); the "bad" mask marks cells present before and null after."""
    if kind == ColumnKind.STRING:
        return _Parsed(text, None, IssueReason.WRONG_TYPE, "")
    if kind == ColumnKind.STRING_LIST:
        items = text.str.split(LIST_SEPARATOR).list.eval(pl.element().str.strip_chars())
        return _Parsed(
            items.list.eval(pl.element().filter(pl.element() != "")), None, IssueReason.WRONG_TYPE, ""
        )
    if kind == ColumnKind.FLOAT:
        values = first_success(text, [_cast_float, lambda t: _cast_float(t.str.strip_chars())])
        bad = (values.is_null() & text.is_not_null()) | _not_finite(values)
        return _Parsed(values, bad, IssueReason.WRONG_TYPE, "a finite number")
    if kind == ColumnKind.INT:
        values = first_success(text, [_cast_int, lambda t: _cast_int(t.str.strip_chars())])
        return _Parsed(values, values.is_null() & text.is_not_null(), IssueReason.WRONG_TYPE, "an integer")
    if kind == ColumnKind.BOOL:
        words = text.str.strip_chars().str.to_lowercase()
        values = words.replace_strict(_BOOL_WORDS, default=None, return_dtype=pl.Boolean)
        bad = values.is_null() & text.is_not_null()
        return _Parsed(values, bad, IssueReason.WRONG_TYPE, "a boolean (true/false, 1/0, yes/no)")
    if kind == ColumnKind.TIMESTAMP:
        values = first_success(text, timestamp_parsers(text))
        bad = values.is_null() & text.is_not_null()
        expected = "a timestamp (ISO 8601, e.g. 2026-01-31T14:05:00+00:00 or 2026-01-31)"
        return _Parsed(values, bad, IssueReason.BAD_TIMESTAMP, expected)
    if kind == ColumnKind.DATE:
        values = first_success(text, [parse_date, lambda t: parse_date(t.str.strip_chars())])
        return _Parsed(
            values, values.is_null() & text.is_not_null(), IssueReason.BAD_DATE, "a date (YYYY-MM-DD)"
        )
    raise AssertionError(f"no text parser for column kind {kind!r}")


def _cast_float(text: pl.Series) -> pl.Series:
    return text.cast(pl.Float64, strict=False)


def _cast_int(text: pl.Series) -> pl.Series:
    return text.cast(pl.Int64, strict=False)


def _not_finite(values: pl.Series) -> pl.Series:
    return (~values.is_finite()).fill_null(False)


def _blank_to_null(text: pl.Series) -> pl.Series:
    """An empty string is an empty cell: CSV writers disagree on whether to quote it, so both mean missing."""
    blank = text == ""
    if not blank.any():
        return text
    return pl.select(pl.when(blank).then(None).otherwise(text)).to_series().alias(text.name)


def _describe_bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"must be between {low:g} and {high:g}"
    if low is not None:
        return f"must be at least {low:g}"
    return f"must be at most {high:g}"


# --------------------------------------------------------------------------------------------- references


def _check_references(tables: Mapping[str, _LoadedTable], skip_invalid: bool) -> None:
    """Events must name known items; decisions must name a known offer or layout variant of their type."""
    _check_reference(tables["events"], "item_id", tables["items"], "item_id", None, skip_invalid)
    if "decisions" not in tables:
        return
    for decision_type, table_name, id_column in (
        ("offer", "offers", "offer_id"),
        ("layout", "layouts", "variant_id"),
    ):
        if table_name in tables:
            _check_reference(
                tables["decisions"], "arm_id", tables[table_name], id_column, decision_type, skip_invalid
            )


def _check_reference(
    table: _LoadedTable,
    column: str,
    target: _LoadedTable,
    target_column: str,
    decision_type: str | None,
    skip_invalid: bool,
) -> None:
    """Flag rows of ``table`` whose ``column`` is not a ``target_column`` of ``target``.

    With ``decision_type`` only decisions of that type are checked: an offer decision names an offer, a layout
    decision a layout variant.
    """
    frame, known = table.frame, target.frame
    if frame is None or known is None:
        raise RuntimeError("references are checked only after every table loaded")
    values = frame[column]
    dangling = ~values.is_in(known[target_column].implode()) & values.is_not_null()
    if decision_type is not None:
        dangling = dangling & (frame["decision_type"] == decision_type)
    of_type = f" (a {decision_type} decision)" if decision_type is not None else ""
    where = f"is not among the {target_column}s of {target.log.file}"
    checks = _RowChecks(table.log, frame.height, skip_invalid)
    checks.report(
        dangling,
        column,
        IssueReason.UNKNOWN_ITEM if decision_type is None else IssueReason.UNKNOWN_ARM,
        lambda idx: [f"{column} {v!r}{of_type} {where}" for v in values.gather(idx).to_list()],
    )
    if skip_invalid:
        table.frame = checks.keep(frame)
        for reason, count in checks.skipped.items():
            table.skipped[reason] = table.skipped.get(reason, 0) + count


def _require_rows_left(tables: Mapping[str, _LoadedTable]) -> None:
    """A required table emptied by ``skip_invalid`` is an error: an empty shop would fail later, vaguely."""
    for name in REQUIRED_TABLES:
        table = tables[name]
        if table.frame is not None and table.frame.height == 0 and table.rows_read > 0:
            reasons = ", ".join(f"{reason}: {count}" for reason, count in table.skipped.items())
            message = f"all {table.rows_read} rows were skipped as invalid ({reasons})"
            table.log.add(None, message, IssueReason.EMPTY_FILE)


def _raise_if_any(tables: Iterable[_LoadedTable]) -> None:
    tables = list(tables)
    total = sum(table.log.total for table in tables)
    if total:
        issues = [issue for table in tables for issue in table.log.finished_issues()]
        raise DataValidationError(issues, total)
