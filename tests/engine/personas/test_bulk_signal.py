"""The bulk-quantity signal: events with quantities, the catalog key, and inference that uses it."""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl
import pytest

from engine.data.shop_data import ShopData
from engine.personas.catalog import CatalogError, catalog_to_toml, parse_catalog
from engine.personas.event_encoding import build_event_features
from engine.personas.inference.model import PersonaInferenceModel
from engine.personas.traits import BULK, BULK_QUANTITY, NO, YES, customer_traits

ITEMS = pl.DataFrame(
    {
        "item_id": [f"i{n}" for n in range(6)],
        "category": ["gifts"] * 6,
        "price": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    }
)


def events(quantities: Mapping[str, Sequence[float | None]]) -> pl.DataFrame:
    rows = []
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    for customer, amounts in quantities.items():
        for n, quantity in enumerate(amounts):
            rows.append((customer, f"i{n % 6}", start + dt.timedelta(days=n), quantity))
    return pl.DataFrame(
        rows,
        schema={
            "customer_id": pl.String,
            "item_id": pl.String,
            "timestamp": pl.Datetime("us", "UTC"),
            "quantity": pl.Float64,
        },
        orient="row",
    ).with_columns(pl.lit("purchase").alias("event_type"))


CATALOG = {
    "personas": [
        {
            "id": "wholesaler",
            "name": "Wholesaler",
            "description": "Restocks a shop by the case.",
            "signals": {"bulk_share": "high"},
        },
        {
            "id": "gift_buyer",
            "name": "Gift Buyer",
            "description": "Buys one of a thing, as a present.",
            "signals": {"bulk_share": "low"},
        },
    ]
}


def test_quantities_become_a_bulk_group_per_event() -> None:
    features = build_event_features(events({"a": [24, 1, None], "b": [BULK_QUANTITY, 11.5]}), ITEMS)
    group = features.space.group(BULK)
    assert group is not None and group.values == (YES, NO) and not group.item_level
    yes, no = features.space.column(BULK, YES), features.space.column(BULK, NO)
    dense = features.matrix.toarray()
    assert dense[:, yes].tolist() == [1, 0, 0, 1, 0]  # rows sorted by customer, then time
    assert dense[:, no].tolist() == [0, 1, 0, 0, 1]  # the line without a quantity is unknown, not "no"
    traits = customer_traits(features)
    assert traits.filter(pl.col("customer_id") == "a")[f"{BULK}:{YES}"].item() == pytest.approx(0.5)


def test_no_quantity_column_means_no_bulk_group() -> None:
    without = events({"a": [1, 2]}).drop("quantity")
    assert build_event_features(without, ITEMS).space.group(BULK) is None
    all_empty = events({"a": [None, None]})
    assert build_event_features(all_empty, ITEMS).space.group(BULK) is None


def test_catalog_accepts_bulk_share_and_round_trips() -> None:
    catalog = parse_catalog(CATALOG, "bulk.toml")
    assert catalog.get("wholesaler").signals.bulk_share == "high"
    again = parse_catalog(tomllib.loads(catalog_to_toml(catalog)), "again")
    assert again.get("gift_buyer").signals.bulk_share == "low"
    bad = {
        "personas": [{**CATALOG["personas"][0], "signals": {"bulk_share": "lots"}}, CATALOG["personas"][1]]
    }
    with pytest.raises(CatalogError, match="bulk_share must be one of high, low"):
        parse_catalog(bad, "bad.toml")


def test_inference_gives_bulk_buyers_the_bulk_persona() -> None:
    rng = np.random.default_rng(3)
    bulk_buyers = {
        f"w{n}": rng.choice([12.0, 24.0, 48.0, 2.0], size=12, p=[0.3, 0.3, 0.3, 0.1]) for n in range(20)
    }
    single_buyers = {f"g{n}": rng.choice([1.0, 2.0, 12.0], size=12, p=[0.6, 0.3, 0.1]) for n in range(20)}
    quantities = {c: [float(q) for q in v] for c, v in {**bulk_buyers, **single_buyers}.items()}
    frame = events(quantities)
    shop = ShopData(events=frame.with_row_index("event_id").cast({"event_id": pl.String}), items=ITEMS)
    mixes = PersonaInferenceModel().fit(shop, parse_catalog(CATALOG, "bulk.toml"))
    wholesaler = mixes.persona_ids.index("wholesaler")
    weight = {c: mixes.overall[mixes.customer_ids.index(c), wholesaler] for c in quantities}
    assert np.mean([weight[c] for c in bulk_buyers]) > 0.7
    assert np.mean([weight[c] for c in single_buyers]) < 0.3
