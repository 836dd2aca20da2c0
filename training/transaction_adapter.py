"""Turning a shop's transaction export into the tables of the data contract, guided by a mapping file.

How it works, and why:

- The export is scanned lazily and only the mapped columns are read (Parquet as stored, CSV as text),
  then every field is parsed in one vectorised polars pass. A cell that is present but does not parse
  ("12,5" as a price, "yesterday" as a timestamp) is an error naming the file, the 1-based data row and
  the export's column: a malformed export must never be half-read into a model. With ``skip_invalid``
  such rows are dropped and counted instead.
- Rows that are valid but are not purchases a recommender should learn from (no customer, a
  cancellation, a return, a non-positive price, a non-product code such as postage, a repeated line)
  are dropped, each counted under the first reason that applies, in a fixed order. Every reason also
  reports how many rows match it on its own, so the counts can be checked against what the data's
  publisher says. Values derived from several cells (the discount fraction from an amount, a price and
  a quantity) are computed after the drop rules and checked only on the lines they keep: a return of
  zero units with a refunded amount is a return, not a malformed discount. A derived value out of
  range names the row and column and shows the formula with the cells it was computed from.
  Dropped rows are written to ``rejected_rows.parquet`` with their row and reason:
  nothing disappears without a trace.
- Items are derived from the kept lines: the title is the latest description, the price the median
  unit price (wholesale exports charge one product at several prices), the category a mapped column
  or the first matching rule, the tags every matching rule plus price band and private label. Rules
  run once per item, not per line, so they cost nothing at ten million lines.
- The output is a folder that ``engine.data.loading.load_shop`` reads unchanged: events, items and,
  when the mapping names customer attributes, customers; plus the adaptation report as JSON.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from engine.data.csv_text import CsvFormatError, csv_header, located_fault
from engine.data.loading import DataIssue, DataValidationError
from training.transaction_cells import (
    MAX_ISSUES_PER_COLUMN,
    BadCells,
    as_flag,
    as_number,
    as_text,
    as_timestamp,
)
from training.transaction_mapping import (
    CustomerFeature,
    DiscountKind,
    ExtraTable,
    FeatureKind,
    Field,
    MappingError,
    PatternRule,
    TransactionMapping,
)

REJECTED_ROWS_FILE = "rejected_rows.parquet"
REPORT_FILE = "adaptation_report.json"
_TEXT_FIELDS: tuple[Field, ...] = (
    Field.INVOICE,
    Field.PRODUCT_CODE,
    Field.DESCRIPTION,
    Field.BRAND,
    Field.CATEGORY,
    Field.CUSTOMER,
    Field.COUNTRY,
    Field.REGION,
    Field.AGE_BAND,
    Field.INCOME_BAND,
    Field.CHANNEL,
    Field.DEVICE,
    Field.COUPON,
)
_NUMBER_FIELDS: tuple[Field, ...] = (Field.QUANTITY, Field.UNIT_PRICE, Field.LINE_TOTAL, Field.DISCOUNT)
_ID_FIELDS: tuple[Field, ...] = (Field.INVOICE, Field.PRODUCT_CODE, Field.CUSTOMER)
_NO_COUPON_WORDS = ("false", "0", "no", "n", "none", "null", "-")
_ROW = "_row"


@dataclass(frozen=True)
class ReasonCount:
    """One reason a row is not kept: rows matching it alone, rows dropped for it first, rows left after."""

    reason: str
    description: str
    matching: int
    dropped: int
    rows_left: int


@dataclass(frozen=True)
class AdaptationReport:
    mapping: str
    source: str
    out_dir: str
    rows_read: int
    reasons: tuple[ReasonCount, ...]
    rows_kept: int
    tables: dict[str, int]
    seconds: float
    files: dict[str, str] = field(default_factory=dict)
    joined_rows_skipped: dict[str, int] = field(default_factory=dict)  # per joined table, --skip-invalid

    @property
    def rows_dropped(self) -> int:
        return self.rows_read - self.rows_kept

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["rows_dropped"] = self.rows_dropped
        return document


def adapt_transactions(
    mapping: TransactionMapping, source: Path, out_dir: Path, *, skip_invalid: bool = False
) -> AdaptationReport:
    """Read ``source`` through ``mapping`` and write the contract tables to ``out_dir``.

    Raises MappingError when the mapping does not fit the file (a mapped column is absent) and
    DataValidationError naming file, row and column for cells that do not parse (unless
    ``skip_invalid``, which drops and counts those rows).
    """
    started = time.perf_counter()
    raw = _read(mapping, source)
    repeated = _repeated_rows(raw) if mapping.drop_duplicate_rows else None
    parsed, bad = _parse(raw, mapping.columns, mapping, source.name, mapping.line_features)
    del raw  # the export's text columns are the biggest thing held; free them before the tables are built
    joined = [_joined_table(mapping, table, source) for table in mapping.tables]
    table_issues = [issue for _, table_bad in joined for issue in table_bad.issues]
    if (bad.issues or table_issues) and not skip_invalid:
        raise DataValidationError(
            [*table_issues, *bad.issues], bad.total + sum(table_bad.total for _, table_bad in joined)
        )
    for (table_frame, _), table in zip(joined, mapping.tables, strict=True):
        parsed = parsed.join(table_frame, on=table.joins.value, how="left", maintain_order="left")
    if mapping.has(Field.LINE_TOTAL):
        # a unit price only where there are units: zero or negative quantities are returns, dropped by
        # their own rule, and never divided by
        quantity = pl.col(Field.QUANTITY.value)
        parsed = parsed.with_columns(
            pl.when(quantity > 0)
            .then(pl.col(Field.LINE_TOTAL.value) / quantity)
            .otherwise(None)
            .alias(Field.UNIT_PRICE.value)
        )
    masks = _drop_reasons(parsed, repeated, mapping, bad.row_mask if skip_invalid else None)
    # Derived values (the discount fraction) are computed from several cells and can only be judged on
    # lines that are purchases: a zero-quantity return has no meaningful per-unit discount. So they are
    # checked on the lines no drop rule removes, and a line a rule removes is counted under that rule.
    dropped = pl.repeat(False, parsed.height, dtype=pl.Boolean, eager=True)
    for reason in masks:
        dropped = dropped | reason.mask
    derived_bad = BadCells(source.name)
    parsed = _with_discount(parsed, mapping, ~dropped, derived_bad)
    if derived_bad.issues and not skip_invalid:
        derived_bad.issues.sort(key=lambda issue: (issue.row or 0, issue.column or ""))
        raise DataValidationError(derived_bad.issues, derived_bad.total)
    if derived_bad.row_mask is not None:
        masks.append(
            _Reason(
                "invalid_derived_value",
                "a value derived from several cells is out of range (--skip-invalid)",
                derived_bad.row_mask,
            )
        )
    reasons, keep, first_reason = _count(parsed, masks)
    # in time order (stable: exports are usually already sorted, which makes this cheap), so that an
    # item's title or a customer's country is simply the last one seen
    kept = parsed.filter(keep).sort(Field.TIMESTAMP.value, maintain_order=True)
    if kept.height == 0:
        summary = ", ".join(f"{r.reason}: {r.dropped}" for r in reasons if r.dropped)
        raise DataValidationError(
            [DataIssue(source.name, None, None, f"no row is left to adapt ({summary})", "empty_file")]
        )

    events = _events(kept, mapping)
    items = _items(kept, mapping)
    customers = _customers(kept, mapping)
    tables = (("events", events), ("items", items), ("customers", customers))
    for name, _ in tables:
        stale = out_dir / f"{name}.csv"
        if stale.exists():
            # load_shop refuses a table given both as CSV and Parquet; say so now, not at training
            raise MappingError(f"{out_dir} already holds {stale.name}; remove it or choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for name, frame in tables:
        path = out_dir / f"{name}.parquet"
        if frame is None:
            path.unlink(missing_ok=True)
            continue
        frame.write_parquet(path)
        files[name] = str(path)
    rejected = parsed.select(_ROW).with_columns(reason=first_reason).filter(~keep)
    rejected.rename({_ROW: "row"}).write_parquet(out_dir / REJECTED_ROWS_FILE)
    files["rejected_rows"] = str(out_dir / REJECTED_ROWS_FILE)

    report = AdaptationReport(
        mapping=mapping.source,
        source=str(source),
        out_dir=str(out_dir),
        rows_read=parsed.height,
        reasons=reasons,
        rows_kept=kept.height,
        tables={
            "events": events.height,
            "items": items.height,
            **({"customers": customers.height} if customers is not None else {}),
        },
        seconds=time.perf_counter() - started,
        files=files,
        joined_rows_skipped={
            table.name: int(table_bad.row_mask.sum())
            for (_, table_bad), table in zip(joined, mapping.tables, strict=True)
            if table_bad.row_mask is not None
        },
    )
    (out_dir / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return report


# --------------------------------------------------------------------------------------------- reading


def _read(mapping: TransactionMapping, source: Path) -> pl.DataFrame:
    """The mapped columns, renamed to their fields, plus the 1-based data row; checks the header first."""
    suffix = source.suffix.lower()
    if not source.is_file():
        raise MappingError(f"{source}: transaction file not found")
    if suffix not in (".csv", ".parquet"):
        raise MappingError(f"{source}: unsupported file type {suffix!r}; use .csv or .parquet")
    try:
        lazy, header = _scan(source)
    except CsvFormatError as fault:
        raise MappingError(fault.located(str(source))) from None
    except (OSError, pl.exceptions.PolarsError) as problem:
        first_line = (str(problem).strip().splitlines() or [type(problem).__name__])[0]
        raise MappingError(f"{source}: cannot read as {suffix.lstrip('.').upper()}: {first_line}") from None
    absent = [(f, c) for f, c in mapping.columns.items() if c not in header]
    if absent:
        shown = "; ".join(f"[columns] {f.value} = {c!r}" for f, c in absent)
        raise MappingError(
            f"{mapping.source}: {shown}: {source} has no such column (its columns: {', '.join(header)})"
        )
    features = mapping.line_features
    missing_features = [f for f in features if f.column not in header]
    if missing_features:
        f = missing_features[0]
        raise MappingError(
            f"{mapping.source}: [customer_features] {f.name} = {f.column!r}: {source} has no such column "
            f"(its columns: {', '.join(header)})"
        )
    selected = [pl.col(column).alias(f.value) for f, column in mapping.columns.items()]
    selected += [pl.col(f.column).alias(f.output_column) for f in features]
    return _collect(lazy, source, selected, str(source))


def _scan(path: Path) -> tuple[pl.LazyFrame, list[str]]:
    """A CSV (all text) or Parquet file to read lazily, and its header; a CSV in another encoding or
    with another separator raises ``CsvFormatError`` saying so."""
    if path.suffix.lower() != ".csv":
        lazy = pl.scan_parquet(path)
        return lazy, lazy.collect_schema().names()
    header = csv_header(path)
    return pl.scan_csv(path, infer_schema=False), header


def _collect(lazy: pl.LazyFrame, path: Path, selected: list[pl.Expr], where: str) -> pl.DataFrame:
    """The selected columns with the 1-based data row; a malformed CSV is named at its first bad record."""
    try:
        return lazy.with_row_index(_ROW, offset=1).select(_ROW, *selected).collect()
    except pl.exceptions.PolarsError as problem:
        if path.suffix.lower() == ".csv":
            raise MappingError(located_fault(path, problem).located(where)) from None
        first_line = (str(problem).strip().splitlines() or [type(problem).__name__])[0]
        raise MappingError(f"{where}: cannot read as PARQUET: {first_line}") from None


# --------------------------------------------------------------------------------------------- parsing


def _joined_table(
    mapping: TransactionMapping, table: ExtraTable, lines: Path
) -> tuple[pl.DataFrame, BadCells]:
    """An extra table parsed like the lines (its own file and rows in messages), keyed by the joined field.

    A key that repeats would multiply the lines it joins to, so it is an error naming both rows; with
    ``skip_invalid`` the table's unparseable rows are left out (their lines keep empty attributes).
    """
    path = table.path(lines)
    where = f"{mapping.source}: [tables.{table.name}]"
    if not path.is_file():
        raise MappingError(f"{where} file {path} not found (relative paths start at the folder of {lines})")
    fields = {table.joins: table.key, **table.columns}
    raw = _read_columns(path, fields, table.features, where)
    parsed, bad = _parse(raw, fields, mapping, path.name, table.features)
    key = parsed[table.joins.value]
    repeated = key.is_duplicated() & key.is_not_null() & ~key.is_first_distinct()
    if repeated.any():
        first_row = {
            value: int(row)
            for value, row in zip(
                parsed.filter(key.is_first_distinct())[table.joins.value].to_list(),
                parsed.filter(key.is_first_distinct())[_ROW].to_list(),
                strict=True,
            )
        }
        for value, row in zip(
            key.filter(repeated).head(MAX_ISSUES_PER_COLUMN).to_list(),
            parsed[_ROW].filter(repeated).head(MAX_ISSUES_PER_COLUMN).to_list(),
            strict=True,
        ):
            bad.issues.append(
                DataIssue(
                    path.name,
                    int(row),
                    table.key,
                    f"{value!r} repeats the key of row {first_row[value]}; each {table.joins.value} may "
                    f"have one row in the {table.name} table",
                    "duplicate_id",
                )
            )
        bad.total += int(repeated.sum())
        bad.row_mask = repeated if bad.row_mask is None else (bad.row_mask | repeated)
    keep = ~bad.row_mask if bad.row_mask is not None else None
    frame = parsed.filter(keep) if keep is not None else parsed
    return frame.drop(_ROW).filter(pl.col(table.joins.value).is_not_null()), bad


def _read_columns(
    path: Path, fields: dict[Field, str], features: Sequence[CustomerFeature], where: str
) -> pl.DataFrame:
    """The mapped columns of an extra table, renamed to their fields, plus the 1-based data row."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise MappingError(f"{where} file {path}: unsupported file type {suffix!r}; use .csv or .parquet")
    try:
        lazy, header = _scan(path)
    except CsvFormatError as fault:
        raise MappingError(f"{where} file {fault.located(str(path))}") from None
    except (OSError, pl.exceptions.PolarsError) as problem:
        first_line = (str(problem).strip().splitlines() or [type(problem).__name__])[0]
        raise MappingError(f"{where} file {path}: cannot read: {first_line}") from None
    wanted = [(f"columns {f.value}", column) for f, column in fields.items()]
    wanted += [(f"[customer_features] {f.name}", f.column) for f in features]
    absent = [(key, column) for key, column in wanted if column not in header]
    if absent:
        key, column = absent[0]
        shown = f"{where} {key}" if key.startswith("columns") else f"{where.split(': ')[0]}: {key}"
        raise MappingError(
            f"{shown} = {column!r}: {path} has no such column (its columns: {', '.join(header)})"
        )
    selected = [pl.col(column).alias(f.value) for f, column in fields.items()]
    selected += [pl.col(f.column).alias(f.output_column) for f in features]
    return _collect(lazy, path, selected, f"{where} file {path}")


def _parse(
    raw: pl.DataFrame,
    fields: dict[Field, str],
    mapping: TransactionMapping,
    file_name: str,
    features: Sequence[CustomerFeature] = (),
) -> tuple[pl.DataFrame, BadCells]:
    """Every mapped field in its type: text stripped (blank = missing), numbers, UTC timestamps, flags.

    ``fields`` names the export column of each field in ``raw`` (for messages); extra customer
    features are numbers or text as their kind says."""
    bad = BadCells(file_name)
    rows = raw[_ROW]
    columns: list[pl.Series] = [rows]
    for f in Field:
        if f.value not in raw.columns:
            continue
        values = raw[f.value]
        column = fields[f]
        if f in _TEXT_FIELDS:
            columns.append(as_text(values, strip=mapping.id_strip_chars or f not in _ID_FIELDS))
        elif f in _NUMBER_FIELDS:
            number, failed = as_number(values)
            bad.add(rows, values, failed, column, f"a number ({f.value})")
            columns.append(number)
        elif f is Field.TIMESTAMP:
            stamp, failed = as_timestamp(values, mapping.timestamp_format, mapping.timezone)
            fmt = f" in format {mapping.timestamp_format!r}" if mapping.timestamp_format else ""
            bad.add(rows, values, failed, column, f"a timestamp{fmt} (timestamp)")
            columns.append(stamp)
        elif f is Field.PRIVATE_LABEL:
            flag, failed = as_flag(values)
            bad.add(rows, values, failed, column, "true/false (private_label)")
            columns.append(flag)
    for feature in features:
        values = raw[feature.output_column]
        if feature.kind is FeatureKind.NUMERIC:
            number, failed = as_number(values)
            bad.add(rows, values, failed, feature.column, f"a number (customer feature {feature.name})")
            columns.append(number.alias(feature.output_column))
        else:
            columns.append(as_text(values, strip=True))
    parsed = pl.DataFrame(columns)
    bad.issues.sort(key=lambda issue: (issue.row or 0, issue.column or ""))
    return parsed, bad


def _with_discount(
    parsed: pl.DataFrame, mapping: TransactionMapping, judged: pl.Series, bad: BadCells
) -> pl.DataFrame:
    """The contract's discount fraction from the mapped discount (in its unit) and coupon columns.

    Only lines in ``judged`` (those no drop rule removes) are checked; a fraction outside [0, 1] there
    is reported with the formula and the cells it came from.
    """
    fraction: pl.Expr | None = None
    if mapping.has(Field.DISCOUNT):
        d, price = pl.col(Field.DISCOUNT.value), pl.col(Field.UNIT_PRICE.value)
        kind = mapping.discount_kind
        if kind is DiscountKind.FRACTION:
            fraction = d
        elif kind is DiscountKind.PERCENT:
            fraction = d / 100.0
        elif kind is DiscountKind.AMOUNT_PER_UNIT:
            fraction = pl.when(d == 0).then(0.0).otherwise(d / (price + d))
        else:
            # amount a off q units at unit price p (after the discount): a / (p * q + a) off the list price
            line_value = price * pl.col(Field.QUANTITY.value).abs()
            fraction = pl.when(d == 0).then(0.0).otherwise(d / (line_value + d))
        values = parsed.select(fraction.cast(pl.Float64).alias("discount"))["discount"]
        outside = ((values < 0) | (values > 1) | ~values.is_finite()).fill_null(False)
        bad.add_derived(
            parsed[_ROW],
            outside & values.is_not_null() & judged,
            mapping.column(Field.DISCOUNT),
            _discount_explanations(parsed, kind, values),
        )
        fraction = pl.when(pl.Series(outside)).then(None).otherwise(fraction)
    if mapping.has(Field.COUPON):
        coupon = pl.col(Field.COUPON.value)
        has_coupon = coupon.is_not_null() & ~coupon.str.to_lowercase().is_in(list(_NO_COUPON_WORDS))
        base = fraction if fraction is not None else pl.lit(0.0)
        if mapping.coupon_fraction is not None:
            fraction = (
                pl.when(has_coupon & (base.fill_null(0.0) <= 0))
                .then(pl.lit(mapping.coupon_fraction))
                .otherwise(base)
            )
        else:
            fraction = base
    if fraction is None:
        return parsed
    return parsed.with_columns(fraction.cast(pl.Float64).alias("discount_fraction"))


def _discount_explanations(parsed: pl.DataFrame, kind: DiscountKind, values: pl.Series) -> pl.Series:
    """Per line: ``discount fraction = amount 2.0 / (unit price 0.0 × quantity 0 + amount 2.0) = NaN ...``."""

    def number(name: str) -> pl.Expr:
        return pl.col(name).cast(pl.String)

    d = number(Field.DISCOUNT.value)
    formula: list[pl.Expr | str]
    if kind is DiscountKind.FRACTION:
        formula = ["discount fraction = ", d, " as given"]
    elif kind is DiscountKind.PERCENT:
        formula = ["discount fraction = percent ", d, " / 100"]
    elif kind is DiscountKind.AMOUNT_PER_UNIT:
        formula = ["discount fraction = amount ", d, " / (unit price ", number(Field.UNIT_PRICE.value)]
        formula += [" + amount ", d, ")"]
    else:
        quantity = pl.col(Field.QUANTITY.value)
        quantity_text = (
            pl.when(quantity == quantity.round(0))
            .then(quantity.cast(pl.Int64, strict=False).cast(pl.String))
            .otherwise(quantity.cast(pl.String))
        )
        formula = ["discount fraction = amount ", d, " / (unit price ", number(Field.UNIT_PRICE.value)]
        formula += [" × quantity ", quantity_text, " + amount ", d, ")"]
    result = (
        pl.when(pl.col("_fraction").is_nan())
        .then(pl.lit("NaN (0 / 0)"))
        .when(pl.col("_fraction").is_infinite())
        .then(pl.lit("infinite (division by 0)"))
        .otherwise(pl.col("_fraction").round_sig_figs(4).cast(pl.String))
    )
    parts = [pl.lit(p) if isinstance(p, str) else p for p in formula]
    parts += [
        pl.lit(" = "),
        result,
        pl.lit(f", which is not a discount ({kind.value}) between 0% and 100% off"),
    ]
    return parsed.with_columns(values.alias("_fraction")).select(pl.concat_str(parts).alias("why"))["why"]


# --------------------------------------------------------------------------------------------- reasons


@dataclass(frozen=True)
class _Reason:
    code: str
    description: str
    mask: pl.Series


def _drop_reasons(
    parsed: pl.DataFrame,
    repeated: pl.Series | None,
    mapping: TransactionMapping,
    unparseable: pl.Series | None,
) -> list[_Reason]:
    """Each reason's mask over all rows, in the order rows are attributed to reasons."""
    reasons: list[_Reason] = []

    def add(code: str, description: str, expr: pl.Expr) -> None:
        reasons.append(_Reason(code, description, parsed.select(expr.fill_null(False))[:, 0]))

    if unparseable is not None:
        reasons.append(_Reason("unparseable", "a cell does not parse (--skip-invalid)", unparseable))
    col = pl.col
    add("missing_customer", "no customer id (guest checkout)", col(Field.CUSTOMER.value).is_null())
    price = Field.LINE_TOTAL if mapping.has(Field.LINE_TOTAL) else Field.UNIT_PRICE
    required = [Field.PRODUCT_CODE, price, Field.TIMESTAMP]
    if mapping.has(Field.QUANTITY):
        required.append(Field.QUANTITY)
    add(
        "missing_value",
        f"empty {'/'.join(f.value for f in required)}",
        pl.any_horizontal(*(col(f.value).is_null() for f in required)),
    )
    if mapping.cancellation_invoice_prefix is not None:
        prefix = mapping.cancellation_invoice_prefix
        add(
            "cancellation",
            f"cancellation invoice (starts with {prefix!r})",
            col(Field.INVOICE.value).str.starts_with(prefix),
        )
    if mapping.has(Field.QUANTITY):
        add("return", "quantity <= 0 (return or correction)", col(Field.QUANTITY.value) <= 0)
    add(
        "non_positive_price",
        "unit price <= 0 (free, adjustment or bad debt)",
        col(Field.UNIT_PRICE.value) <= 0,
    )
    codes = col(Field.PRODUCT_CODE.value)
    excluded: pl.Expr | None = None
    if mapping.excluded_product_codes:
        excluded = codes.is_in(list(mapping.excluded_product_codes))
    if mapping.excluded_product_code_pattern is not None:
        by_pattern = codes.str.contains(mapping.excluded_product_code_pattern.pattern)
        excluded = by_pattern if excluded is None else (excluded | by_pattern)
    if excluded is not None:
        add("not_a_product", "product code is not a product (postage, fees, vouchers, ...)", excluded)
    if mapping.drop_missing_description:
        add("missing_description", "no product description", col(Field.DESCRIPTION.value).is_null())
    if repeated is not None:
        reasons.append(_Reason("duplicate_row", "repeats an earlier line exactly", repeated))
    return reasons


def _repeated_rows(raw: pl.DataFrame) -> pl.Series:
    """True for every row equal in all mapped columns to an earlier row.

    Comparing whole rows is slow (seconds per million), so rows are hashed first; only rows whose hash
    repeats (the true repeats, plus the rare collision) are compared exactly.
    """
    mapped = raw.select(pl.exclude(_ROW))
    candidates = mapped.hash_rows(seed=0).is_duplicated()
    repeat = pl.repeat(False, raw.height, dtype=pl.Boolean, eager=True)
    if not candidates.any():
        return repeat
    indices = candidates.arg_true()
    exact = ~mapped.filter(candidates).select(pl.struct(pl.all()).is_first_distinct()).to_series()
    return repeat.scatter(indices.filter(exact), True)


def _count(
    parsed: pl.DataFrame, reasons: Sequence[_Reason]
) -> tuple[tuple[ReasonCount, ...], pl.Series, pl.Series]:
    """Per reason: matching rows, rows dropped for it first, rows left; the keep mask; each row's reason."""
    height = parsed.height
    dropped_so_far = pl.repeat(False, height, dtype=pl.Boolean, eager=True)
    first = pl.repeat(None, height, dtype=pl.String, eager=True)
    counts: list[ReasonCount] = []
    for reason in reasons:
        newly = reason.mask & ~dropped_so_far
        dropped_so_far = dropped_so_far | reason.mask
        first = pl.select(pl.when(newly).then(pl.lit(reason.code)).otherwise(first)).to_series()
        counts.append(
            ReasonCount(
                reason=reason.code,
                description=reason.description,
                matching=int(reason.mask.sum()),
                dropped=int(newly.sum()),
                rows_left=height - int(dropped_so_far.sum()),
            )
        )
    return tuple(counts), ~dropped_so_far, first.alias("reason")


# --------------------------------------------------------------------------------------------- tables


def _events(kept: pl.DataFrame, mapping: TransactionMapping) -> pl.DataFrame:
    """One purchase per kept line; the event id is the invoice (when mapped) and the export row."""
    row = pl.col(_ROW).cast(pl.String)
    event_id = (
        pl.concat_str(pl.col(Field.INVOICE.value).fill_null(""), pl.lit("/"), row)
        if mapping.has(Field.INVOICE)
        else pl.concat_str(pl.lit("row/"), row)
    )
    columns = [
        event_id.alias("event_id"),
        pl.col(Field.CUSTOMER.value).alias("customer_id"),
        pl.col(Field.PRODUCT_CODE.value).alias("item_id"),
        pl.lit("purchase").alias("event_type"),
        pl.col(Field.TIMESTAMP.value).alias("timestamp"),
        pl.col(Field.UNIT_PRICE.value).alias("price_paid"),
    ]
    if mapping.has(Field.QUANTITY):
        columns.append(pl.col(Field.QUANTITY.value).alias("quantity"))
    if "discount_fraction" in kept.columns:
        columns.append(pl.col("discount_fraction").alias("discount"))
    for f in (Field.CHANNEL, Field.DEVICE):
        if mapping.has(f):
            columns.append(pl.col(f.value))
    return kept.select(columns)


def _latest(name: str) -> pl.Expr:
    """The value of the item's (or customer's) latest line that has one; lines are in time order."""
    return pl.col(name).drop_nulls().last().alias(name)


def _items(kept: pl.DataFrame, mapping: TransactionMapping) -> pl.DataFrame:
    aggregations = [pl.col(Field.UNIT_PRICE.value).median().alias("price")]
    for f in (Field.DESCRIPTION, Field.BRAND, Field.CATEGORY, Field.PRIVATE_LABEL):
        if mapping.has(f):
            aggregations.append(_latest(f.value))
    items = (
        kept.group_by(Field.PRODUCT_CODE.value)
        .agg(aggregations)
        .sort(Field.PRODUCT_CODE.value)
        .rename({Field.PRODUCT_CODE.value: "item_id"})
    )
    items = items.with_columns(pl.col("item_id").alias(Field.PRODUCT_CODE.value))
    category = _category_expr(mapping)
    tags = _tags_expr(mapping)
    title = pl.col(Field.DESCRIPTION.value) if mapping.has(Field.DESCRIPTION) else pl.lit(None, pl.String)
    brand = pl.col(Field.BRAND.value) if mapping.has(Field.BRAND) else pl.lit(None, pl.String)
    return items.select(
        "item_id",
        title.alias("title"),
        category.alias("category"),
        brand.alias("brand"),
        "price",
        tags.alias("tags"),
    )


def _first_match(rules: Sequence[PatternRule], otherwise: pl.Expr) -> pl.Expr:
    expr = otherwise
    for rule in reversed(rules):
        matches = pl.col(rule.field.value).str.contains(rule.pattern.pattern).fill_null(False)
        expr = pl.when(matches).then(pl.lit(rule.value)).otherwise(expr)
    return expr


def _category_expr(mapping: TransactionMapping) -> pl.Expr:
    """The mapped category when the line has one, else the first matching rule, else the default."""
    by_rules = _first_match(mapping.category_rules, pl.lit(mapping.default_category))
    if mapping.has(Field.CATEGORY):
        return pl.coalesce(pl.col(Field.CATEGORY.value), by_rules)
    return by_rules


def _tags_expr(mapping: TransactionMapping) -> pl.Expr:
    """Every matching tag rule, the price band and private versus national brand, as a list."""
    tags: list[pl.Expr] = []
    for rule in mapping.tag_rules:
        matches = pl.col(rule.field.value).str.contains(rule.pattern.pattern).fill_null(False)
        tags.append(pl.when(matches).then(pl.lit(rule.value)))
    if mapping.price_bands is not None:
        bands = mapping.price_bands
        band: pl.Expr = pl.lit(bands.tags[-1])
        for edge, tag in reversed(list(zip(bands.edges, bands.tags, strict=False))):
            band = pl.when(pl.col("price") < edge).then(pl.lit(tag)).otherwise(band)
        tags.append(band)
    own_label: pl.Expr | None = None
    if mapping.has(Field.PRIVATE_LABEL):
        own_label = pl.col(Field.PRIVATE_LABEL.value)
    if mapping.private_label_brands:
        by_brand = (
            pl.when(pl.col(Field.BRAND.value).is_null())
            .then(None)
            .otherwise(pl.col(Field.BRAND.value).is_in(list(mapping.private_label_brands)))
        )
        own_label = by_brand if own_label is None else pl.coalesce(own_label, by_brand)
    if own_label is not None:
        tags.append(
            pl.when(own_label.is_null())
            .then(None)
            .when(own_label)
            .then(pl.lit("private_label"))
            .otherwise(pl.lit("national_brand"))
        )
    if not tags:
        return pl.lit([], dtype=pl.List(pl.String))
    return pl.concat_list([t.cast(pl.String) for t in tags]).list.drop_nulls()


def _customers(kept: pl.DataFrame, mapping: TransactionMapping) -> pl.DataFrame | None:
    """Customer attributes from their latest line; None when the mapping names none."""
    attributes = {
        Field.COUNTRY: "region",
        Field.REGION: "region",
        Field.AGE_BAND: "age_band",
        Field.INCOME_BAND: "income_band",
    }
    mapped = [(f.value, name) for f, name in attributes.items() if mapping.has(f)]
    mapped += [(feature.output_column, feature.output_column) for feature in mapping.features]
    if not mapped:
        return None
    frame = (
        kept.group_by(Field.CUSTOMER.value)
        .agg([_latest(column).alias(name) for column, name in mapped])
        .sort(Field.CUSTOMER.value)
    )
    return frame.rename({Field.CUSTOMER.value: "customer_id"})
