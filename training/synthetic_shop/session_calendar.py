"""The simulated period day by day: each day's shopping context and how many sessions fall on it.

Contexts come from the engine's own weekday/weekend-holiday rule, so the planted context shifts are
exactly the ones the engine will later try to recover; holiday-driven customers (the hidden segment)
get their own day distribution that peaks around holidays.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from engine.personas.shopping_context import (
    CONTEXTS,
    DEFAULT_HOLIDAYS,
    WEEKEND_HOLIDAY,
    context_index,
    context_of,
)
from training.synthetic_shop.sampling import FloatArray, IntArray

WEEKEND_SESSION_FACTOR = 1.3  # weekend and holiday days get this many times the sessions of a weekday
HOLIDAY_REACH_DAYS = 10  # holiday-driven activity starts this many days away from a holiday


@dataclass(frozen=True)
class ShopCalendar:
    """Per-day context and session intensity; contexts come from the engine's own rule."""

    context: IntArray  # index into CONTEXTS per day
    day_start_seconds: IntArray  # Unix seconds of each day's 00:00 UTC
    session_cdf: FloatArray  # day distribution of ordinary customers' sessions
    holiday_session_cdf: FloatArray  # day distribution of holiday-driven customers' sessions

    @classmethod
    def build(cls, start: dt.date, days: int, holiday_activity: float) -> ShopCalendar:
        dates = tuple(start + dt.timedelta(days=i) for i in range(days))
        holidays = set(DEFAULT_HOLIDAYS)
        context = context_index(
            context_of(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC), DEFAULT_HOLIDAYS) for d in dates
        )
        epoch = dt.date(1970, 1, 1)
        day_start = np.array([(d - epoch).days * 86_400 for d in dates], dtype=np.int64)
        weight = np.where(context == CONTEXTS.index(WEEKEND_HOLIDAY), WEEKEND_SESSION_FACTOR, 1.0)
        distance = np.array(
            [
                min(
                    (
                        abs(offset)
                        for offset in range(-HOLIDAY_REACH_DAYS, HOLIDAY_REACH_DAYS + 1)
                        if ((d + dt.timedelta(days=offset)).month, (d + dt.timedelta(days=offset)).day)
                        in holidays
                    ),
                    default=HOLIDAY_REACH_DAYS + 1,
                )
                for d in dates
            ],
            dtype=np.float64,
        )
        near = np.where(distance <= HOLIDAY_REACH_DAYS, np.exp(-distance / 3.0), 0.0)
        holiday_weight = weight * (1.0 + holiday_activity * near)
        return cls(
            context=context,
            day_start_seconds=day_start,
            session_cdf=np.cumsum(weight) / weight.sum(),
            holiday_session_cdf=np.cumsum(holiday_weight) / holiday_weight.sum(),
        )
