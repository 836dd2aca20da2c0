"""Typed values from the cells of a transaction export, and the cells that do not parse.

Every parser takes one column as read (CSV text, or Parquet as stored) and returns the typed column with
a mask of the cells that were present but did not parse; ``BadCells`` turns those masks into issues
naming the file, the 1-based data row and the export's column, keeping at most
``MAX_ISSUES_PER_COLUMN`` per column so a broken file of millions of rows reports in constant time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from engine.data.loading import DataIssue

MAX_ISSUES_PER_COLUMN = 20
"""Bad cells listed per export column in an error; the rest are counted."""

_TRUE_WORDS = ("true", "1", "yes", "y", "t")
_FALSE_WORDS = ("false", "0", "no", "n", "f")
_TIMESTAMP_FORMATS: tuple[str, ...] = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%#z",
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%m/%d/%Y %H:%M",
    "%Y-%m-%d",
    "%d/%m/%Y",
)
_SNIFF_SAMPLE = 200


@dataclass
class BadCells:
    """Cells present in the export that do not parse; ``row_mask`` marks their rows."""

    file: str
    issues: list[DataIssue] = field(default_factory=list)
    total: int = 0
    row_mask: pl.Series | None = None

    def add(self, rows: pl.Series, values: pl.Series, mask: pl.Series, column: str, expected: str) -> None:
        mask = mask.fill_null(False)
        count = int(mask.sum())
        if count == 0:
            return
        self.total += count
        self.row_mask = mask if self.row_mask is None else (self.row_mask | mask)
        shown_rows = rows.filter(mask).head(MAX_ISSUES_PER_COLUMN).to_list()
        shown_values = values.filter(mask).head(MAX_ISSUES_PER_COLUMN).to_list()
        for row, value in zip(shown_rows, shown_values, strict=True):
            self.issues.append(
                DataIssue(self.file, int(row), column, f"cannot parse {value!r} as {expected}", "bad_value")
            )

    def add_derived(self, rows: pl.Series, mask: pl.Series, column: str, explanations: pl.Series) -> None:
        """Rows whose derived value is unusable; ``explanations`` say what was computed from what."""
        mask = mask.fill_null(False)
        count = int(mask.sum())
        if count == 0:
            return
        self.total += count
        self.row_mask = mask if self.row_mask is None else (self.row_mask | mask)
        shown_rows = rows.filter(mask).head(MAX_ISSUES_PER_COLUMN).to_list()
        shown = explanations.filter(mask).head(MAX_ISSUES_PER_COLUMN).to_list()
        for row, explanation in zip(shown_rows, shown, strict=True):
            self.issues.append(DataIssue(self.file, int(row), column, explanation, "bad_value"))


def as_text(values: pl.Series, *, strip: bool) -> pl.Series:
    """Text, with integral float ids written as integers (pandas stores an id column with gaps as float)."""
    dtype = values.dtype
    if dtype.is_float():
        values = values.fill_nan(None)  # pandas writes a missing id as NaN
        integral = (values == values.round(0)).fill_null(True).all()
        text = values.cast(pl.Int64).cast(pl.String) if integral else values.cast(pl.String)
    else:
        text = values.cast(pl.String)
    if strip:
        text = text.str.strip_chars()
    return pl.select(pl.when(text == "").then(None).otherwise(text)).to_series().alias(values.name)


def as_number(values: pl.Series) -> tuple[pl.Series, pl.Series]:
    if values.dtype.is_numeric():
        number = values.cast(pl.Float64).fill_nan(None)  # NaN is how pandas writes an empty cell
        return number, ~number.is_finite()
    text = as_text(values, strip=True)
    number = text.cast(pl.Float64, strict=False)
    failed = (number.is_null() & text.is_not_null()) | ~number.is_finite()
    return number.alias(values.name), failed


def as_flag(values: pl.Series) -> tuple[pl.Series, pl.Series]:
    if values.dtype == pl.Boolean:
        return values, pl.repeat(False, values.len(), eager=True)
    text = as_text(values, strip=True).str.to_lowercase()
    words = {**dict.fromkeys(_TRUE_WORDS, True), **dict.fromkeys(_FALSE_WORDS, False)}
    flag = text.replace_strict(words, default=None, return_dtype=pl.Boolean)
    return flag.alias(values.name), flag.is_null() & text.is_not_null()


def as_timestamp(
    values: pl.Series, timestamp_format: str | None, timezone: str
) -> tuple[pl.Series, pl.Series]:
    """UTC timestamps; naive values are in ``timezone``, text in ``timestamp_format`` or a sniffed one."""
    dtype = values.dtype
    if isinstance(dtype, pl.Datetime | pl.Date):
        stamp = values.cast(pl.Datetime("us")) if dtype == pl.Date else values.dt.cast_time_unit("us")
        return _to_utc(stamp, timezone), pl.repeat(False, values.len(), eager=True)
    text = as_text(values, strip=True)
    formats: Sequence[str]
    if timestamp_format is not None:
        formats = [timestamp_format]
    else:
        sample = text.drop_nulls().head(_SNIFF_SAMPLE)
        fit = {fmt: int(_parse_with(sample, fmt).is_not_null().sum()) for fmt in _TIMESTAMP_FORMATS}
        formats = sorted((fmt for fmt in _TIMESTAMP_FORMATS if fit[fmt]), key=lambda fmt: -fit[fmt])
    stamp = pl.Series(values.name, [None] * values.len(), dtype=pl.Datetime("us", "UTC"))
    for i, fmt in enumerate(formats):
        if i == 0:
            stamp = _to_utc(_parse_with(text, fmt), timezone)
            continue
        failed = stamp.is_null() & text.is_not_null()
        if not failed.any():
            break
        indices = failed.arg_true()
        stamp = stamp.scatter(indices, _to_utc(_parse_with(text.gather(indices), fmt), timezone))
    return stamp.alias(values.name), stamp.is_null() & text.is_not_null()


def _parse_with(text: pl.Series, fmt: str) -> pl.Series:
    return text.str.to_datetime(fmt, time_unit="us", strict=False)


def _to_utc(stamp: pl.Series, timezone: str) -> pl.Series:
    dtype = stamp.dtype
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        return stamp.dt.convert_time_zone("UTC")
    return stamp.dt.replace_time_zone(
        timezone, ambiguous="earliest", non_existent="null"
    ).dt.convert_time_zone("UTC")
