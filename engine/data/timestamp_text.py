"""How the data contract reads timestamps: the spellings it accepts, tried best fit first, and UTC.

A shop's export writes its timestamps one way throughout, usually; trying the formats in order of how
many of a sample they parse makes a uniform column cost one parse, while a column that mixes
spellings (an export stitched from two systems) still parses cell by cell through the fallbacks.
Everything ends as ``Datetime("us", "UTC")``: naive values are UTC by the contract, others are
converted. ``EARLIEST_TIMESTAMP`` bounds them from below: no shop's event happened before 1970, and
day counts from 1970 must not go negative downstream.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import polars as pl

EARLIEST_TIMESTAMP = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

Parser = Callable[[pl.Series], pl.Series]

# Tried in order of how well they fit a sample of the column, so a uniform column costs one parse;
# `%#z` accepts `Z`, `+02`, `+0200` and `+02:00`. Naive results are taken as UTC.
TIMESTAMP_FORMATS: tuple[str, ...] = (
    "%Y-%m-%dT%H:%M:%S",  # whole seconds first: polars parses these several times faster than `%.f`
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f%#z",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%dT%H:%M%#z",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)
FORMAT_SNIFF_SAMPLE = 200


def first_success(text: pl.Series, parsers: Sequence[Parser]) -> pl.Series:
    """Apply ``parsers`` in turn, each only to the cells every earlier one failed on (loading's numbers
    use it too, falling back to their stripped text).

    All parsers return the same dtype. On clean data only the first runs, so fallbacks are free.
    """
    result = parsers[0](text)
    for parser in parsers[1:]:
        failed = result.is_null() & text.is_not_null()
        if not failed.any():
            break
        indices = failed.arg_true()
        result = result.scatter(indices, parser(text.gather(indices)))
    return result


def timestamp_parsers(text: pl.Series) -> list[Parser]:
    """One parser per accepted format (raw, then stripped), best fit for a sample of the column first."""
    sample = text.drop_nulls().head(FORMAT_SNIFF_SAMPLE)
    fit = {fmt: int(parse_timestamp(sample, fmt).is_not_null().sum()) for fmt in TIMESTAMP_FORMATS}
    ordered = sorted(TIMESTAMP_FORMATS, key=lambda fmt: -fit[fmt])

    def parser(fmt: str, strip: bool) -> Parser:
        return lambda t: parse_timestamp(t.str.strip_chars() if strip else t, fmt)

    return [parser(fmt, strip) for strip in (False, True) for fmt in ordered]


def parse_timestamp(text: pl.Series, fmt: str) -> pl.Series:
    return to_utc_timestamp(text.str.to_datetime(fmt, time_unit="us", strict=False))


def to_utc_timestamp(values: pl.Series) -> pl.Series:
    """Datetime("us", "UTC") from a date or datetime; naive values are UTC by the contract."""
    if values.dtype == pl.Date:
        values = values.cast(pl.Datetime("us"))
    dtype = values.dtype
    if not isinstance(dtype, pl.Datetime):
        raise TypeError(f"expected a date or datetime column, got {dtype}")
    values = values.dt.cast_time_unit("us")
    if dtype.time_zone is None:
        return values.dt.replace_time_zone("UTC")
    return values.dt.convert_time_zone("UTC")


def parse_date(text: pl.Series) -> pl.Series:
    return text.str.to_date("%Y-%m-%d", strict=False)
