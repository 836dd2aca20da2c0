"""Per-persona sampling tables: the planted personas turned into arrays the simulation draws from.

Built once per shop from the catalog and the items, so every chunk draws items, channels, devices
and demographics with a lookup instead of re-deriving each persona's preferences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.personas.catalog import PersonaCatalog
from training.synthetic_shop.items import Items
from training.synthetic_shop.planted_personas import (
    AGE_BANDS,
    CATEGORIES,
    CHANNELS,
    DEVICES,
    HIDDEN_PERSONA_ID,
    INCOME_BANDS,
    REGIONS,
    TAGS,
    PlantedPersona,
    planted_persona,
)
from training.synthetic_shop.sampling import FloatArray, SegmentedSampler

DEMOGRAPHIC_FIDELITY = 0.6  # share of customers whose bands come from their dominant persona's bands


@dataclass(frozen=True)
class PersonaTables:
    """Per-persona sampling tables, rows in ``ids`` order (catalog personas, then the hidden one)."""

    ids: tuple[str, ...]
    planted: tuple[PlantedPersona, ...]
    dominant_shares: FloatArray  # over catalog personas only
    weekend_gain: FloatArray
    item_sampler: SegmentedSampler  # segment = persona, element = persona * n_items + item
    cluster_item_sampler: SegmentedSampler  # segment = persona * n_clusters + cluster, same elements
    brand_item_sampler: SegmentedSampler  # segment = persona * n_brands + brand, same elements
    cluster_mass: FloatArray  # (personas, clusters): share of the persona's item draws in each cluster
    coupon_rate: FloatArray
    favourite_cluster_rate: FloatArray
    favourite_brand_rate: FloatArray
    channel_cdf: FloatArray
    device_cdf: FloatArray
    age_cdf: FloatArray
    income_cdf: FloatArray
    region_cdf: FloatArray

    @property
    def hidden_index(self) -> int:
        return self.ids.index(HIDDEN_PERSONA_ID)


def _persona_item_weights(persona: PlantedPersona, items: Items) -> FloatArray:
    for where, factors in (("category_boost", persona.category_boost), ("tag_boost", persona.tag_boost)):
        bad = {k: v for k, v in factors.items() if v <= 0}
        if bad:
            raise ValueError(f"persona {persona.persona_id!r} {where} factors must be > 0, got {bad}")
        unknown = set(factors) - set(CATEGORIES if where == "category_boost" else TAGS)
        if unknown:
            raise ValueError(
                f"persona {persona.persona_id!r} {where} names unknown value(s) {sorted(unknown)}"
            )
    category_factor = np.array([persona.category_boost.get(c, 1.0) for c in CATEGORIES])[items.category]
    tag_factor = np.array([persona.tag_boost.get(t, 1.0) for t in TAGS])
    favouring = np.where(items.tags, np.maximum(tag_factor, 1.0), 1.0).max(axis=1)
    penalising = np.where(items.tags, np.minimum(tag_factor, 1.0), 1.0).min(axis=1)
    tertile_factor = np.asarray(persona.price_tertile_boost, dtype=np.float64)[items.price_tertile]
    deal_factor = np.where(items.deal, persona.deal_boost, 1.0)
    return items.popularity * category_factor * favouring * penalising * tertile_factor * deal_factor


def _band_cdf(preferred: Sequence[str], vocabulary: Sequence[str], where: str) -> FloatArray:
    unknown = set(preferred) - set(vocabulary)
    if unknown:
        raise ValueError(f"{where} names unknown band(s) {sorted(unknown)}; known: {', '.join(vocabulary)}")
    uniform = np.full(len(vocabulary), 1.0 / len(vocabulary))
    if not preferred:
        return np.cumsum(uniform)
    chosen = np.array([v in preferred for v in vocabulary], dtype=np.float64)
    mixed = (1.0 - DEMOGRAPHIC_FIDELITY) * uniform + DEMOGRAPHIC_FIDELITY * chosen / chosen.sum()
    return np.cumsum(mixed)


def build_persona_tables(catalog: PersonaCatalog, items: Items) -> PersonaTables:
    if HIDDEN_PERSONA_ID in catalog.ids:
        raise ValueError(
            f"persona {HIDDEN_PERSONA_ID!r} is the synthetic shop's hidden segment; rename it in the catalog"
        )
    ids = (*catalog.ids, HIDDEN_PERSONA_ID)
    planted = tuple(planted_persona(p) for p in ids)
    shares = np.array([p.population_share for p in planted[:-1]])
    if (shares <= 0).any():
        raise ValueError("every catalog persona needs a positive planted population_share")
    weights = np.stack([_persona_item_weights(p, items) for p in planted])
    n_items = len(items)
    item_sampler = SegmentedSampler.build(
        np.repeat(np.arange(len(ids), dtype=np.int64), n_items), weights.ravel(), len(ids)
    )
    cluster_item_sampler = SegmentedSampler.build(
        (np.arange(len(ids), dtype=np.int64)[:, None] * items.n_clusters + items.cluster[None, :]).ravel(),
        weights.ravel(),
        len(ids) * items.n_clusters,
    )
    # A loyalist buying their favourite brand still picks like a loyalist (mid-priced staples), so
    # items of a favourite brand are drawn with the shopping persona's weights, not by popularity.
    n_brands = len(items.brand_names)
    brand_item_sampler = SegmentedSampler.build(
        (np.arange(len(ids), dtype=np.int64)[:, None] * n_brands + items.brand[None, :]).ravel(),
        weights.ravel(),
        len(ids) * n_brands,
    )
    cluster_mass = np.stack(
        [np.bincount(items.cluster, weights=w, minlength=items.n_clusters) / w.sum() for w in weights]
    )
    demographics = {p: catalog.get(p).demographics for p in catalog.ids}
    age_cdf, income_cdf, region_cdf = [], [], []
    for persona in planted:
        demo = demographics.get(persona.persona_id)
        where = f"persona {persona.persona_id!r} demographics"
        age_cdf.append(_band_cdf(demo.age_bands if demo else persona.age_bands, AGE_BANDS, where))
        income_cdf.append(_band_cdf(demo.income_bands if demo else persona.income_bands, INCOME_BANDS, where))
        region_cdf.append(_band_cdf(demo.regions if demo else (), REGIONS, where))
    return PersonaTables(
        ids=ids,
        planted=planted,
        dominant_shares=shares / shares.sum(),
        weekend_gain=np.array([p.weekend_gain for p in planted]),
        item_sampler=item_sampler,
        cluster_item_sampler=cluster_item_sampler,
        brand_item_sampler=brand_item_sampler,
        cluster_mass=cluster_mass,
        coupon_rate=np.array([p.coupon_rate for p in planted]),
        favourite_cluster_rate=np.array([p.favourite_cluster_rate for p in planted]),
        favourite_brand_rate=np.array([p.favourite_brand_rate for p in planted]),
        channel_cdf=np.cumsum([[p.channel_shares()[c] for c in CHANNELS] for p in planted], axis=1),
        device_cdf=np.cumsum([[p.device_shares()[d] for d in DEVICES] for p in planted], axis=1),
        age_cdf=np.stack(age_cdf),
        income_cdf=np.stack(income_cdf),
        region_cdf=np.stack(region_cdf),
    )
