"""Event features and customer traits on small hand-built shops whose right answers can be worked out."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.data.id_map import IdMap, UnknownIdError
from engine.personas.event_encoding import build_event_features, item_price_levels
from engine.personas.shopping_context import CONTEXTS
from engine.personas.traits import (
    EventFeatureSpace,
    customer_traits,
    describe_feature,
    describe_trait,
)

ITEMS = pl.DataFrame(
    {
        "item_id": ["tv1", "tv2", "tv3", "soap1", "soap2", "soap3"],
        "category": ["electronics"] * 3 + ["beauty"] * 3,
        "brand": ["acme", "acme", "zen", "lux", "lux", None],
        "price": [300.0, 500.0, 900.0, 2.0, 5.0, 9.0],
        "tags": [["new-tech"], ["new-tech", "premium"], [], None, ["organic"], ["organic", "eco"]],
    }
)


def _events(rows: list[tuple[str, str, dt.datetime, float | None, str | None, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "customer_id": pl.Utf8,
            "item_id": pl.Utf8,
            "timestamp": pl.Datetime("us", "UTC"),
            "discount": pl.Float64,
            "channel": pl.Utf8,
            "device": pl.Utf8,
        },
        orient="row",
    )


MONDAY = dt.datetime(2024, 3, 4, 10, tzinfo=dt.UTC)
SATURDAY = dt.datetime(2024, 3, 9, 10, tzinfo=dt.UTC)
EVENTS = _events(
    [
        ("ann", "tv1", MONDAY, 0.2, "email", "mobile"),
        ("ann", "tv2", MONDAY + dt.timedelta(days=1), 0.0, "search", "mobile"),
        ("ann", "tv1", MONDAY + dt.timedelta(days=2), 0.1, None, "desktop"),
        (
            "ann",
            "tv1",
            MONDAY + dt.timedelta(days=2, minutes=5),
            0.1,
            None,
            "desktop",
        ),  # cart of the same view
        ("bob", "soap3", SATURDAY, None, "social", None),
        ("bob", "soap1", MONDAY, 0.0, "social", "tablet"),
    ]
)


def test_price_levels_are_tertiles_within_each_category() -> None:
    levels = dict(item_price_levels(ITEMS).select("item_id", "price_level").iter_rows())
    assert levels == {
        "tv1": "low",
        "tv2": "mid",
        "tv3": "high",
        "soap1": "low",
        "soap2": "mid",
        "soap3": "high",
    }


def test_each_event_gets_one_value_per_group_and_its_item_tags() -> None:
    features = build_event_features(EVENTS, ITEMS)
    names = features.space.column_names
    assert features.customer_ids.ids.tolist() == ["ann", "bob"]
    dense = features.matrix.toarray()

    def row_features(row: int) -> set[str]:
        return {names[j] for j in np.flatnonzero(dense[row])}

    ann_first = row_features(0)  # rows are sorted by customer then time
    assert {
        "discounted=yes",
        "channel=email",
        "device=mobile",
        "category=electronics",
        "price_level=low",
    } <= ann_first
    assert "tag:new-tech" in ann_first and "tag:premium" not in ann_first
    assert "brand_repeat=yes" in ann_first  # acme: ann's most frequent brand, 4 events
    bob_soap1, bob_soap3 = row_features(4), row_features(5)  # Monday before Saturday
    assert "device=tablet" in bob_soap1 and not any(n.startswith("device=") for n in bob_soap3)
    assert not any(n.startswith("discounted=") for n in bob_soap3)  # unknown discount stays missing
    assert {"tag:organic", "tag:eco"} <= bob_soap3
    assert not any(n.startswith("brand_repeat=") for n in bob_soap3)  # no brand
    assert "brand_repeat=no" in bob_soap1  # lux once: not a habit
    for group in features.space.groups:
        if group.kind.value == "categorical":
            assert (dense[:, group.start : group.stop].sum(axis=1) <= 1).all()
    assert features.context_index.tolist() == [0, 0, 0, 0, 0, CONTEXTS.index("weekend_holiday")]
    np.testing.assert_allclose(features.weight, [1, 1, 0.5, 0.5, 1, 1])  # same customer, item and day
    assert features.customer_indptr.tolist() == [0, 4, 6]


def test_unknown_ids_are_named() -> None:
    stray = EVENTS.with_columns(
        pl.when(pl.col("item_id") == "soap1").then(pl.lit("ghost")).otherwise("item_id").alias("item_id")
    )
    with pytest.raises(ValueError, match="ghost"):
        build_event_features(stray, ITEMS)
    with pytest.raises(UnknownIdError, match="bob"):
        build_event_features(EVENTS, ITEMS, customer_ids=IdMap(["ann"], kind="customer"))


def test_a_fixed_space_drops_unknown_values_and_round_trips() -> None:
    space = build_event_features(EVENTS, ITEMS).space
    assert EventFeatureSpace.from_json(space.to_json()) == space
    novel = EVENTS.with_columns(pl.lit("carrier_pigeon").alias("channel"))
    features = build_event_features(novel, ITEMS, space=space)
    channel = space.group("channel")
    assert channel is not None
    assert features.matrix[:, channel.start : channel.stop].nnz == 0


def test_customer_traits_match_hand_computation() -> None:
    customers = IdMap(["ann", "bob", "cat"], kind="customer")
    features = build_event_features(EVENTS, ITEMS, customer_ids=customers)
    reference = SATURDAY + dt.timedelta(days=1)
    traits = customer_traits(features, reference_time=reference)
    ann, bob, cat = traits.row(0, named=True), traits.row(1, named=True), traits.row(2, named=True)
    assert ann["n_events"] == 4 and ann["active_days"] == 3
    assert ann["discount_share"] == pytest.approx(0.75)
    assert ann["brand_herfindahl"] == pytest.approx(1.0)  # all acme
    assert ann["category_count"] == 1 and ann["category_entropy"] == pytest.approx(0.0)
    assert ann["recency_days"] == pytest.approx(
        (reference - (MONDAY + dt.timedelta(days=2, minutes=5))).total_seconds() / 86400
    )
    assert ann["tag:new-tech"] == pytest.approx(1.0) and ann["tag:premium"] == pytest.approx(0.25)
    assert ann["price_percentile"] == pytest.approx((1 / 6 * 3 + 0.5) / 4)
    assert bob["discount_share"] == pytest.approx(0.0)  # one known discount, zero
    assert bob["device:tablet"] == pytest.approx(1.0)
    assert bob["weekend_share"] == pytest.approx(0.5)
    assert bob["brand_herfindahl"] == pytest.approx(1.0)  # one branded event
    assert cat["n_events"] == 0 and cat["recency_days"] is None and cat["discount_share"] is None


def test_descriptions_are_readable() -> None:
    assert describe_feature("discounted=yes") == "discount share"
    assert "toys" in describe_feature("category=toys")
    assert "organic" in describe_trait("tag:organic")
    assert "tablet" in describe_trait("device:tablet")
    assert describe_trait("brand_herfindahl").startswith("brand concentration")


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from(ITEMS["item_id"].to_list()),
            st.integers(min_value=0, max_value=30),
            st.one_of(st.none(), st.sampled_from([0.0, 0.25])),
            st.one_of(st.none(), st.sampled_from(["email", "social"])),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_traits_are_shares_for_any_events(rows: list[tuple[str, str, int, float | None, str | None]]) -> None:
    events = _events(
        [(c, i, MONDAY + dt.timedelta(days=d), disc, ch, "mobile") for c, i, d, disc, ch in rows]
    )
    features = build_event_features(events, ITEMS)
    assert features.matrix.shape[0] == len(rows)
    assert np.all(features.weight > 0) and np.all(features.weight <= 1)
    traits = customer_traits(features)
    shares = [c for c in traits.columns if ":" in c or c.endswith("_share") or c == "brand_herfindahl"]
    values = traits.select(shares).to_numpy().astype(float)
    finite = values[np.isfinite(values)]
    assert ((finite >= 0) & (finite <= 1 + 1e-12)).all()
    assert traits["n_events"].sum() == len(rows)
