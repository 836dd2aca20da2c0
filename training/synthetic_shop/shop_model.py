"""The shop model: everything shared by all chunks of customers, built once per shop.

Items, per-persona sampling tables, the calendar, planted response rates and logging propensities do
not depend on which customers are simulated; building them once keeps every chunk a pure function of
(model, chunk index), which is what makes a config's files byte-identical from run to run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from engine.personas.catalog import PersonaCatalog
from training.synthetic_shop.activity import CART_RATE, PURCHASE_GIVEN_CART, interaction_scale
from training.synthetic_shop.config import ShopConfig
from training.synthetic_shop.items import IN_STOCK_RATE, Items, build_items
from training.synthetic_shop.offers_and_layouts import (
    LAYOUT_SPECS,
    OFFER_SPECS,
    layout_propensities,
    offer_propensities,
)
from training.synthetic_shop.persona_tables import PersonaTables, build_persona_tables
from training.synthetic_shop.planted_personas import CATEGORIES, TAGS
from training.synthetic_shop.sampling import FloatArray, SegmentedSampler
from training.synthetic_shop.session_calendar import ShopCalendar
from training.synthetic_shop.table_files import arrow_schema, prefixed_ids


@dataclass(frozen=True)
class ShopModel:
    """The per-shop state every chunk reads; also writes the tables that do not depend on customers."""

    config: ShopConfig
    calendar: ShopCalendar
    items: Items
    item_ids: pa.Array
    personas: PersonaTables
    popularity_sampler: SegmentedSampler  # all items as one segment, popularity-weighted
    offer_top_brands: tuple[str, ...]
    offer_rates: FloatArray  # (personas, offers)
    layout_rates: FloatArray  # (personas, layouts)
    offer_propensity: FloatArray  # (contexts, income bands, offers)
    layout_propensity: FloatArray  # (contexts, layouts)
    interaction_scale: float

    @classmethod
    def build(cls, config: ShopConfig, catalog: PersonaCatalog) -> ShopModel:
        items = build_items(config.items, np.random.default_rng(np.random.SeedSequence([config.seed, 0])))
        personas = build_persona_tables(catalog, items)
        if config.personal_taste != 1.0:  # scaled only when asked: a default shop keeps every byte
            personas = dataclasses.replace(
                personas,
                favourite_cluster_rate=personas.favourite_cluster_rate * config.personal_taste,
                favourite_brand_rate=personas.favourite_brand_rate * config.personal_taste,
            )
        calendar = ShopCalendar.build(
            config.start, config.days, personas.planted[personas.hidden_index].holiday_activity
        )
        brand_popularity = np.bincount(
            items.brand, weights=items.popularity, minlength=len(items.brand_names)
        )
        top_brands = tuple(items.brand_names[b] for b in np.argsort(-brand_popularity, kind="stable")[:3])
        offers = [(spec, top_brands[: spec.top_brands]) for spec in OFFER_SPECS]
        offer_rates = np.array(
            [
                [p.offer_rate(spec.kind, spec.eligible_categories, brands) for spec, brands in offers]
                for p in personas.planted
            ]
        )
        layout_rates = np.array(
            [[p.layout_rate(spec.variant_id) for spec in LAYOUT_SPECS] for p in personas.planted]
        )
        rows_per_interaction = 1.0 + CART_RATE * IN_STOCK_RATE * (1.0 + PURCHASE_GIVEN_CART)
        return cls(
            config=config,
            calendar=calendar,
            items=items,
            item_ids=prefixed_ids("i", np.arange(1, config.items + 1), len(str(config.items))),
            personas=personas,
            popularity_sampler=SegmentedSampler.build(
                np.zeros(len(items), dtype=np.int64), items.popularity, 1
            ),
            offer_top_brands=top_brands,
            offer_rates=offer_rates,
            layout_rates=layout_rates,
            offer_propensity=offer_propensities(),
            layout_propensity=layout_propensities(),
            interaction_scale=interaction_scale(config.events / config.customers / rows_per_interaction),
        )

    def items_table(self) -> pa.Table:
        items = self.items
        tag_names = np.array(TAGS, dtype=object)
        tag_lists = [tag_names[row].tolist() for row in items.tags]
        return pa.table(
            {
                "item_id": self.item_ids,
                "title": pa.array(items.titles, pa.string()),
                "category": pa.array(np.array(CATEGORIES, dtype=object)[items.category], pa.string()),
                "brand": pa.array(np.array(items.brand_names, dtype=object)[items.brand], pa.string()),
                "price": pa.array(items.price, pa.float64()),
                "tags": pa.array(tag_lists, pa.list_(pa.string())),
                "in_stock": pa.array(items.in_stock, pa.bool_()),
            },
            schema=arrow_schema("items"),
        )

    def offers_table(self) -> pa.Table:
        return pa.table(
            {
                "offer_id": [s.offer_id for s in OFFER_SPECS],
                "kind": [s.kind for s in OFFER_SPECS],
                "description": [s.description for s in OFFER_SPECS],
                "eligible_categories": [list(s.eligible_categories) for s in OFFER_SPECS],
                "eligible_brands": [list(self.offer_top_brands[: s.top_brands]) for s in OFFER_SPECS],
                "min_basket": [s.min_basket for s in OFFER_SPECS],
                "cost": [s.cost for s in OFFER_SPECS],
            },
            schema=arrow_schema("offers"),
        )

    def layouts_table(self) -> pa.Table:
        return pa.table(
            {
                "variant_id": [s.variant_id for s in LAYOUT_SPECS],
                "description": [s.description for s in LAYOUT_SPECS],
                "slots": [list(s.slots) for s in LAYOUT_SPECS],
            },
            schema=arrow_schema("layouts"),
        )
