"""Shopping contexts: one moment's context by hand, and the vectorised expression agreeing with it."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.personas.shopping_context import (
    CONTEXTS,
    WEEKDAY,
    WEEKEND_HOLIDAY,
    context_expr,
    context_index,
    context_of,
)

THANKSGIVING_2025 = (11, 27)  # a Thursday; not a default holiday


def at(day: str, hour: int = 12) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(hour=hour, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        ("2026-03-02", WEEKDAY),  # Monday
        ("2026-03-06", WEEKDAY),  # Friday
        ("2026-03-07", WEEKEND_HOLIDAY),  # Saturday
        ("2026-03-08", WEEKEND_HOLIDAY),  # Sunday
        ("2025-12-25", WEEKEND_HOLIDAY),  # Christmas on a Thursday
        ("2025-12-24", WEEKEND_HOLIDAY),  # Christmas Eve on a Wednesday
        ("2026-01-01", WEEKEND_HOLIDAY),  # New Year on a Thursday
        ("2025-11-27", WEEKDAY),  # Thanksgiving is not among the fixed-date defaults
    ],
)
def test_context_of_one_moment(day: str, expected: str) -> None:
    assert context_of(at(day)) == expected
    frame = pl.DataFrame({"timestamp": [at(day, 0), at(day, 23)]})
    assert frame.select(context_expr())["literal"].to_list() == [expected, expected]


def test_a_shops_own_holidays_replace_the_defaults() -> None:
    holidays = [THANKSGIVING_2025]
    assert context_of(at("2025-11-27"), holidays) == WEEKEND_HOLIDAY
    assert context_of(at("2025-12-25"), holidays) == WEEKDAY
    assert context_of(at("2026-03-07"), []) == WEEKEND_HOLIDAY  # weekends stay weekends
    frame = pl.DataFrame({"when": [at("2025-11-27"), at("2025-12-25"), at("2026-03-07")]})
    got = frame.select(context_expr("when", iter(holidays)).alias("c"))["c"].to_list()
    assert got == [WEEKEND_HOLIDAY, WEEKDAY, WEEKEND_HOLIDAY]
    assert frame.select(context_expr("when", []).alias("c"))["c"].to_list() == [
        WEEKDAY,
        WEEKDAY,
        WEEKEND_HOLIDAY,
    ]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2060, 12, 31)),
        min_size=1,
        max_size=30,
    ),
    st.lists(st.tuples(st.integers(1, 12), st.integers(1, 28)), max_size=4),
)
def test_the_expression_agrees_with_a_naive_rule_on_every_row(
    moments: list[dt.datetime], holidays: list[tuple[int, int]]
) -> None:
    moments = [m.replace(tzinfo=dt.UTC) for m in moments]
    expected = [
        WEEKEND_HOLIDAY if m.isoweekday() in (6, 7) or (m.month, m.day) in holidays else WEEKDAY
        for m in moments
    ]
    assert [context_of(m, holidays) for m in moments] == expected
    frame = pl.DataFrame({"timestamp": moments}, schema={"timestamp": pl.Datetime("us", "UTC")})
    assert frame.select(context_expr(holidays=holidays).alias("c"))["c"].to_list() == expected


def test_context_index_is_the_position_in_contexts_and_refuses_unknown_names() -> None:
    assert CONTEXTS == (WEEKDAY, WEEKEND_HOLIDAY)
    got = context_index(iter([WEEKEND_HOLIDAY, WEEKDAY, WEEKEND_HOLIDAY]))
    assert got.tolist() == [1, 0, 1] and got.dtype.name == "int64"
    assert context_index([]).tolist() == []
    with pytest.raises(
        ValueError, match="unknown context 'holiday'; expected one of weekday, weekend_holiday"
    ):
        context_index([WEEKDAY, "holiday"])
