"""The confidence matrix against a naive sum per pair; the edges: empty input, unknown types and ids."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.data.id_map import IdMap, UnknownIdError
from engine.data.interactions import (
    DEFAULT_EVENT_WEIGHTS,
    empty_csr_matrix,
    event_indices,
    interaction_ages,
    interaction_matrix,
    relevant_matrix,
)

CUSTOMERS = IdMap(["a", "b", "c"], kind="customer")
ITEMS = IdMap(["x", "y"])
SCHEMA = {"customer_id": pl.Utf8, "item_id": pl.Utf8, "event_type": pl.Utf8}


def frame(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


def test_empty_csr_matrix_has_the_shape_and_no_entries() -> None:
    m = empty_csr_matrix(4, 7)
    assert (m.shape, m.nnz, m.dtype) == ((4, 7), 0, np.float32)


def test_no_events_give_an_all_zero_matrix_of_the_full_shape() -> None:
    for build in (interaction_matrix, relevant_matrix):
        m = build(frame([]), CUSTOMERS, ITEMS)
        assert (m.shape, m.nnz, m.dtype) == ((3, 2), 0, np.float32)


def test_an_event_type_without_a_weight_is_refused_by_name() -> None:
    events = frame([("a", "x", "view"), ("a", "x", "wishlist"), ("zz", "y", "click")])
    with pytest.raises(ValueError, match=r"\['click', 'wishlist'\]"):
        interaction_matrix(events, CUSTOMERS, ITEMS)


def test_an_unknown_item_is_an_error_but_an_unknown_customer_is_skipped() -> None:
    with pytest.raises(UnknownIdError, match="'z'"):
        interaction_matrix(frame([("a", "z", "view")]), CUSTOMERS, ITEMS)
    with pytest.raises(UnknownIdError, match="'z'"):
        relevant_matrix(frame([("a", "z", "view")]), CUSTOMERS, ITEMS)
    only_strangers = interaction_matrix(frame([("zz", "x", "purchase")]), CUSTOMERS, ITEMS)
    assert only_strangers.shape == (3, 2) and only_strangers.nnz == 0


def test_custom_weights_replace_the_defaults() -> None:
    events = frame([("b", "y", "like"), ("b", "y", "like"), ("c", "x", "view")])
    m = interaction_matrix(events, CUSTOMERS, ITEMS, event_weights={"like": 0.5, "view": 9.0})
    expected = [[0.0, 0.0], [0.0, math.log1p(1.0)], [math.log1p(9.0), 0.0]]
    np.testing.assert_allclose(m.toarray(), expected, rtol=1e-6)


# a customer (one of them unknown to the map), an item and an event type per event
CUSTOMER_ITEM_TYPE = (
    st.sampled_from(["a", "b", "c", "ghost"]),
    st.sampled_from(["x", "y"]),
    st.sampled_from(list(DEFAULT_EVENT_WEIGHTS)),
)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(*CUSTOMER_ITEM_TYPE), max_size=25))
def test_interaction_matrix_is_log1p_of_summed_weights_per_pair(rows: list[tuple[str, str, str]]) -> None:
    totals: dict[tuple[str, str], float] = {}
    for customer, item, kind in rows:
        if customer in CUSTOMERS:
            totals[customer, item] = totals.get((customer, item), 0.0) + DEFAULT_EVENT_WEIGHTS[kind]
    m = interaction_matrix(frame(rows), CUSTOMERS, ITEMS)
    given = interaction_matrix(
        frame(rows), CUSTOMERS, ITEMS, indices=event_indices(frame(rows), CUSTOMERS, ITEMS)
    )
    assert (given != m).nnz == 0  # the indices training looked up once give the same matrix
    assert m.dtype == np.float32 and m.nnz == len(totals)  # one stored entry per pair
    expected = np.zeros((3, 2))
    for (customer, item), total in totals.items():
        expected[CUSTOMERS.index(customer), ITEMS.index(item)] = math.log1p(total)
    np.testing.assert_allclose(m.toarray(), expected, rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c", "ghost"]), st.sampled_from(["x", "y"])), max_size=15),
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["x", "y"])), max_size=6),
)
def test_relevant_matrix_is_the_binary_pairs_not_seen_in_training(
    later: list[tuple[str, str]], seen: list[tuple[str, str]]
) -> None:
    training = interaction_matrix(frame([(c, i, "purchase") for c, i in seen]), CUSTOMERS, ITEMS)
    rel = relevant_matrix(frame([(c, i, "view") for c, i in later]), CUSTOMERS, ITEMS, exclude=training)
    assert rel.dtype == np.float32
    expected = np.zeros((3, 2))
    for customer, item in set(later) - set(seen):
        if customer in CUSTOMERS:
            expected[CUSTOMERS.index(customer), ITEMS.index(item)] = 1.0
    assert rel.toarray().tolist() == expected.tolist()
    assert rel.nnz == int(expected.sum())  # excluded pairs are dropped, not stored as zeros
    without = relevant_matrix(frame([(c, i, "view") for c, i in later]), CUSTOMERS, ITEMS)
    assert set(zip(*without.nonzero(), strict=True)) == {
        (CUSTOMERS.index(c), ITEMS.index(i)) for c, i in later if c in CUSTOMERS
    }
    assert set(without.data.tolist()) <= {1.0}


def test_given_indices_must_cover_the_events_and_fit_the_maps() -> None:
    events = frame([("a", "x", "view"), ("b", "y", "cart")])
    with pytest.raises(ValueError, match="two arrays of 2 event rows"):
        interaction_matrix(events, CUSTOMERS, ITEMS, indices=(np.array([0]), np.array([0, 1])))
    with pytest.raises(ValueError, match="rows of the customers"):
        interaction_matrix(events, CUSTOMERS, ITEMS, indices=(np.array([0, 3]), np.array([0, 1])))


@given(
    st.lists(st.sampled_from(["c0", "c1", "c2", "c3", "x"]), max_size=30),
    st.permutations(["c0", "c1", "c2", "c3"]),
    st.booleans(),
)
def test_event_indices_number_grouped_customers_as_a_look_up_would(
    customer_column: list[str], map_order: list[str], grouped: bool
) -> None:
    """Events in runs of one customer, in the map's order, are numbered by run; any other order (a
    customer coming back, runs out of the map's order, an unknown customer) is looked up; both agree."""
    if grouped:  # runs in order of first appearance, and the map in that order too
        firsts = list(dict.fromkeys(customer_column))
        customer_column = sorted(customer_column, key=firsts.index)
        map_order = [*firsts, *(c for c in map_order if c not in firsts)]
    customers = IdMap([c for c in map_order if c != "x"], kind="customer")
    items = IdMap(["i0", "i1"])
    events = pl.DataFrame(
        {"customer_id": customer_column, "item_id": [f"i{n % 2}" for n in range(len(customer_column))]},
        schema={"customer_id": pl.String, "item_id": pl.String},
    )
    rows, columns = event_indices(events, customers, items)
    np.testing.assert_array_equal(rows, customers.to_internal(events["customer_id"], strict=False))
    np.testing.assert_array_equal(columns, items.to_internal(events["item_id"]))
    assert rows.dtype == np.int64 and columns.dtype == np.int64


def test_only_runs_in_the_maps_order_are_numbered_without_a_look_up() -> None:
    from engine.data.interactions import _grouped_customer_rows

    customers = IdMap(["b", "a", "c"], kind="customer")
    numbered = _grouped_customer_rows(pl.Series(["b", "b", "a", "a", "a"]), customers)
    assert numbered is not None and numbered.tolist() == [0, 0, 1, 1, 1]
    assert _grouped_customer_rows(pl.Series(["b", "a", "b"]), customers) is None  # b comes back
    assert _grouped_customer_rows(pl.Series(["a", "b"]), customers) is None  # not the map's order
    assert _grouped_customer_rows(pl.Series(["b", None]), customers) is None  # a missing id


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        # and the hours into the period
        st.tuples(*CUSTOMER_ITEM_TYPE, st.integers(min_value=0, max_value=90 * 24)),
        max_size=25,
    )
)
def test_interaction_ages_hold_the_matrix_pairs_and_the_days_since_each_pairs_latest_event(
    rows: list[tuple[str, str, str, int]],
) -> None:
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    events = pl.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "event_type": [r[2] for r in rows],
            "timestamp": [start + dt.timedelta(hours=r[3]) for r in rows],
        },
        schema={**SCHEMA, "timestamp": pl.Datetime("us", "UTC")},
    )
    looked_up = event_indices(events, CUSTOMERS, ITEMS)
    matrix = interaction_matrix(events, CUSTOMERS, ITEMS, indices=looked_up)
    ages = interaction_ages(events, matrix, looked_up)
    # the same pairs in the same order: the two read side by side (TrainingSet.interaction_age_days)
    assert ages.dtype == np.float32 and ages.shape == matrix.shape
    np.testing.assert_array_equal(ages.indptr, matrix.indptr)
    np.testing.assert_array_equal(ages.indices, matrix.indices)
    newest = max((r[3] for r in rows), default=0)
    latest: dict[tuple[str, str], int] = {}
    for customer, item, _kind, hour in rows:
        if customer in CUSTOMERS:
            latest[customer, item] = max(latest.get((customer, item), hour), hour)
    for (customer, item), hour in latest.items():
        row, column = CUSTOMERS.index(customer), ITEMS.index(item)
        assert ages[row, column] == pytest.approx((newest - hour) / 24.0, abs=1e-4)


def test_ages_refuse_a_matrix_of_other_events() -> None:
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    events = pl.DataFrame(
        {"customer_id": ["a"], "item_id": ["x"], "event_type": ["view"], "timestamp": [start]},
        schema={**SCHEMA, "timestamp": pl.Datetime("us", "UTC")},
    )
    other = interaction_matrix(frame([("b", "y", "view")]), CUSTOMERS, ITEMS)
    with pytest.raises(ValueError, match="not the interaction matrix of these events"):
        interaction_ages(events, other, event_indices(events, CUSTOMERS, ITEMS))
