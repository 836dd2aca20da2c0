"""Shopping contexts: the situations in which a customer's persona mix differs.

A customer who hunts bargains on a Tuesday may buy luxury on a holiday, so mixes are kept per context.
The context of an event follows from its timestamp alone, which keeps it reproducible in training and
serving alike.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import numpy as np
import polars as pl
from numpy.typing import NDArray

WEEKDAY = "weekday"
WEEKEND_HOLIDAY = "weekend_holiday"
CONTEXTS: tuple[str, ...] = (WEEKDAY, WEEKEND_HOLIDAY)

# Fixed-date holidays (month, day) observed by most western shops; shops extend this through config.
DEFAULT_HOLIDAYS: tuple[tuple[int, int], ...] = (
    (1, 1),
    (2, 14),
    (10, 31),
    (12, 24),
    (12, 25),
    (12, 26),
    (12, 31),
)


def context_of(timestamp: dt.datetime, holidays: Iterable[tuple[int, int]] = DEFAULT_HOLIDAYS) -> str:
    """The context of one moment: weekend (Saturday, Sunday) and holidays count as weekend_holiday."""
    if timestamp.weekday() >= 5 or (timestamp.month, timestamp.day) in set(holidays):
        return WEEKEND_HOLIDAY
    return WEEKDAY


def context_expr(
    column: str = "timestamp", holidays: Iterable[tuple[int, int]] = DEFAULT_HOLIDAYS
) -> pl.Expr:
    """A polars expression giving the context of each row's timestamp, for vectorised use on events."""
    ts = pl.col(column)
    month_day = ts.dt.month().cast(pl.Int32) * 100 + ts.dt.day().cast(pl.Int32)
    holiday_codes = [m * 100 + d for m, d in holidays]
    is_off = (ts.dt.weekday() >= 6) | month_day.is_in(holiday_codes)  # polars: Monday=1 .. Sunday=7
    return pl.when(is_off).then(pl.lit(WEEKEND_HOLIDAY)).otherwise(pl.lit(WEEKDAY))


def context_index(contexts: Iterable[str] | pl.Series) -> NDArray[np.int64]:
    """Dense indices (position in CONTEXTS) for context names; unknown names raise ValueError.

    A polars Series (a decisions table's column, millions of rows) maps in one vectorised look-up.
    """
    lookup = {c: i for i, c in enumerate(CONTEXTS)}
    if isinstance(contexts, pl.Series):
        index = contexts.cast(pl.Utf8).replace_strict(lookup, default=-1, return_dtype=pl.Int64).fill_null(-1)
        unknown = np.flatnonzero(index.to_numpy() < 0)
        if unknown.size:
            contexts = [contexts[int(unknown[0])]]  # the first unknown name, reported below
        else:
            return np.asarray(index.to_numpy(), dtype=np.int64)
    out = []
    for name in contexts:
        if name not in lookup:
            raise ValueError(f"unknown context {name!r}; expected one of {', '.join(CONTEXTS)}")
        out.append(lookup[name])
    return np.asarray(out, dtype=np.int64)
