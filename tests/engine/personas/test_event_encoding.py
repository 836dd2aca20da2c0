"""The compiled event encoding equals the whole-table polars pipeline it replaced, on any small shop."""

from __future__ import annotations

import datetime as dt
from unittest import mock

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.data.id_map import MISSING, IdMap, UnknownIdError
from engine.data.interactions import event_indices
from engine.personas import event_encoding
from engine.personas.event_encoding import build_event_features
from engine.personas.shopping_context import CONTEXTS, DEFAULT_HOLIDAYS, context_expr
from engine.personas.traits import EventFeatureSpace
from tests.engine.personas.event_encoding_reference import assert_same_features, reference_event_features

START = dt.datetime(2025, 12, 20, 18, 0)  # days around Christmas: weekdays, weekends and holidays


@st.composite
def shops(draw: st.DrawFn) -> tuple[pl.DataFrame, pl.DataFrame, IdMap, EventFeatureSpace | None]:
    n_items = draw(st.integers(1, 8))
    items = pl.DataFrame(
        {
            "item_id": [f"i{n}" for n in range(n_items)],
            "category": draw(
                st.lists(st.sampled_from(["tv", "soap", "tea"]), min_size=n_items, max_size=n_items)
            ),
            "brand": draw(
                st.lists(st.sampled_from(["acme", "zen", "lux", None]), min_size=n_items, max_size=n_items)
            ),
            "price": draw(st.lists(st.floats(1, 500), min_size=n_items, max_size=n_items)),
            "tags": draw(
                st.lists(
                    st.one_of(
                        st.none(), st.lists(st.sampled_from(["eco", "new-tech", "premium"]), max_size=2)
                    ),
                    min_size=n_items,
                    max_size=n_items,
                )
            ),
        },
        schema_overrides={"tags": pl.List(pl.Utf8)},
    )
    n = draw(st.integers(0, 60))

    def column(values: st.SearchStrategy[object]) -> list[object]:
        return draw(st.lists(values, min_size=n, max_size=n))

    data: dict[str, list[object]] = {
        "customer_id": column(st.sampled_from(["a", "b", "c", "d"])),
        "item_id": column(st.sampled_from(items["item_id"].to_list())),
        # minutes over ten days: several events of a customer on one day, and days either side of midnight
        "timestamp": [START + dt.timedelta(minutes=m) for m in column(st.integers(0, 14_400))],
    }
    optional = {
        "discount": st.one_of(st.none(), st.sampled_from([0.0, 0.2, float("nan")])),
        "quantity": st.one_of(st.none(), st.sampled_from([1.0, 11.5, 12.0, 24.0])),
        "channel": st.one_of(st.none(), st.sampled_from(["web", "app", "email"])),
        "device": st.one_of(st.none(), st.sampled_from(["mobile", "desktop"])),
    }
    for name, values in optional.items():
        if draw(st.booleans()):
            data[name] = column(values)
    types = {"timestamp": pl.Datetime("us"), "discount": pl.Float64, "quantity": pl.Float64}
    types |= {"channel": pl.Utf8, "device": pl.Utf8}
    events = pl.DataFrame(data, schema_overrides={k: v for k, v in types.items() if k in data})
    zone = draw(st.sampled_from([None, "UTC", "America/New_York"]))
    if zone is not None:
        events = events.with_columns(pl.col("timestamp").dt.replace_time_zone(zone))
    known = sorted(set(data["customer_id"]))  # type: ignore[arg-type]
    ids = IdMap([*draw(st.permutations(known)), "quiet"], kind="customer")
    space = None
    if draw(st.booleans()):  # a fitted space that lacks some of this batch's values
        space = EventFeatureSpace.build(
            ["tv", "soap"], ["eco"], ["web"], ["mobile"], quantities=draw(st.booleans())
        )
    return items, events, ids, space


@settings(max_examples=150, deadline=None)
@given(shops())
def test_encoding_equals_the_reference_pipeline(
    shop: tuple[pl.DataFrame, pl.DataFrame, IdMap, EventFeatureSpace | None],
) -> None:
    items, events, ids, space = shop
    actual = build_event_features(events, items, customer_ids=ids, space=space)
    assert_same_features(actual, reference_event_features(events, items, ids, space))


@settings(max_examples=60, deadline=None)
@given(shops())
def test_rows_built_on_two_threads_equal_the_reference(
    shop: tuple[pl.DataFrame, pl.DataFrame, IdMap, EventFeatureSpace | None],
) -> None:
    """Shops past 200,000 events build their rows in two halves; here every shop does."""
    items, events, ids, space = shop
    with mock.patch.object(event_encoding, "_PARALLEL_ROWS_FROM", 1):
        actual = build_event_features(events, items, customer_ids=ids, space=space)
    assert_same_features(actual, reference_event_features(events, items, ids, space))


@pytest.mark.parametrize("time_zone", [None, "UTC", "Europe/Berlin"])
def test_contexts_of_events_centuries_apart_and_before_1970(time_zone: str | None) -> None:
    """Both ways of finding each event's day (a table of the span, or of the distinct days when the span
    is huge) give the context polars' calendar gives each timestamp, before the epoch too."""
    stamps = [  # days around the epoch: a span short enough for the table of every day
        dt.datetime(1969, 12, 27, 12),  # a Saturday
        dt.datetime(1969, 12, 31, 23, 59),  # a Wednesday, the last day before the epoch
        dt.datetime(1970, 1, 1, 9),  # New Year's Day
        dt.datetime(1970, 1, 2, 9),  # a Friday
    ]
    for spread in (False, True):
        far = [dt.datetime(1700, 6, 5), dt.datetime(2026, 12, 25, 9), dt.datetime(2300, 6, 7)]
        times = stamps + (far if spread else [])
        series = pl.Series("timestamp", times, dtype=pl.Datetime("us")).dt.replace_time_zone(time_zone)
        timestamp_us = series.dt.convert_time_zone("UTC").dt.epoch("us").to_numpy()
        got = event_encoding._contexts(timestamp_us, DEFAULT_HOLIDAYS, time_zone)
        local = series if time_zone is None else series.dt.replace_time_zone(None)
        want = (
            pl.DataFrame({"timestamp": local})
            .select(context_expr("timestamp", DEFAULT_HOLIDAYS))
            .to_series()
            .to_list()
        )
        assert [CONTEXTS[i] for i in got] == want


@settings(max_examples=60, deadline=None)
@given(shops())
def test_indices_looked_up_by_the_caller_give_the_same_features(
    shop: tuple[pl.DataFrame, pl.DataFrame, IdMap, EventFeatureSpace | None],
) -> None:
    """Training looks the events' ids up once for these features and its interaction matrix."""
    items, events, ids, space = shop
    given_indices = event_indices(events, ids, IdMap(items["item_id"].to_list()))
    actual = build_event_features(events, items, customer_ids=ids, space=space, indices=given_indices)
    assert_same_features(actual, build_event_features(events, items, customer_ids=ids, space=space))


def test_given_indices_are_checked_like_looked_up_ones() -> None:
    items = pl.DataFrame({"item_id": ["i", "j"], "category": ["tv", "tea"], "price": [1.0, 2.0]})
    events = pl.DataFrame(
        {"customer_id": ["a", "b"], "item_id": ["i", "j"], "timestamp": [START, START]},
        schema_overrides={"timestamp": pl.Datetime("us", "UTC")},
    )
    ids = IdMap(["a", "b"], kind="customer")
    rows, columns = np.array([0, 1]), np.array([0, 1])
    with pytest.raises(ValueError, match="indices must be two arrays of 2 event rows"):
        build_event_features(events, items, customer_ids=ids, indices=(rows[:1], columns))
    with pytest.raises(UnknownIdError, match=r"unknown customer id.*'b'"):
        build_event_features(events, items, customer_ids=ids, indices=(np.array([0, MISSING]), columns))
    with pytest.raises(ValueError, match=r"item id.*missing from items: 'j'"):
        build_event_features(events, items, customer_ids=ids, indices=(rows, np.array([0, 7])))
    with pytest.raises(ValueError, match=r"item id.*missing from items: 'j'"):
        build_event_features(events, items, customer_ids=ids, indices=(rows, np.array([0, -5])))
    with pytest.raises(UnknownIdError, match=r"unknown customer id.*'a'"):
        build_event_features(events, items, customer_ids=ids, indices=(np.array([2, 1], np.int32), columns))
    with pytest.raises(ValueError, match="indices need the customer_ids"):
        build_event_features(events, items, indices=(rows, columns))


def test_events_without_a_timestamp_are_refused_by_row() -> None:
    items = pl.DataFrame({"item_id": ["i"], "category": ["tv"], "price": [1.0]})
    events = pl.DataFrame(
        {"customer_id": ["a", "a"], "item_id": ["i", "i"], "timestamp": [START, None]},
        schema_overrides={"timestamp": pl.Datetime("us", "UTC")},
    )
    with pytest.raises(ValueError, match=r"no timestamp in row\(s\) 1"):
        build_event_features(events, items)
