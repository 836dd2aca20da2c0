"""Each customer's favourite taste niches and brands: the per-customer taste beyond the persona mix.

Real shoppers return to a few niches and brands; without favourites every customer of a persona
would look alike and collaborative filtering would have nothing to learn beyond the personas.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from training.synthetic_shop.sampling import FloatArray, IntArray, draw_from_rows
from training.synthetic_shop.shop_model import ShopModel

FAVOURITE_CLUSTERS = 3
FAVOURITE_BRANDS = 2
FIRST_FAVOURITE_BRAND_SHARE = 0.65  # the first favourite brand gets this share of brand-driven events


@dataclass(frozen=True)
class Favourites:
    """Per customer of a chunk: FAVOURITE_CLUSTERS taste clusters and FAVOURITE_BRANDS brands."""

    clusters: IntArray  # (customer, slot): index of a taste cluster
    brands: IntArray  # (customer, slot): index into the model's brand names


def draw_favourites(model: ShopModel, rng: np.random.Generator, weekday_mix: FloatArray) -> Favourites:
    """Clusters with prob. proportional to sum_k mix_k * cluster mass of persona k; brands by popularity."""
    personas, items = model.personas, model.items
    mix_cdf = np.cumsum(weekday_mix, axis=1)
    n = len(weekday_mix)

    def draw_cluster(rows: IntArray) -> IntArray:
        persona = draw_from_rows(mix_cdf[rows], rng.random(len(rows)))
        item = personas.item_sampler.draw(persona, rng.random(len(rows))) % len(items)
        return items.cluster[item]

    favourite_clusters = _distinct_favourites(draw_cluster, n, FAVOURITE_CLUSTERS)

    def draw_popular_brand(rows: IntArray) -> IntArray:
        return items.brand[
            model.popularity_sampler.draw(np.zeros(len(rows), dtype=np.int64), rng.random(len(rows)))
        ]

    favourite_brands = _distinct_favourites(draw_popular_brand, n, FAVOURITE_BRANDS)
    return Favourites(clusters=favourite_clusters, brands=favourite_brands)


def _distinct_favourites(
    draw: Callable[[IntArray], IntArray], n: int, slots: int, rounds: int = 20
) -> IntArray:
    """``slots`` draws per customer; repeats are redrawn a few times, so only a customer whose
    distribution is nearly all on one option keeps a duplicate."""
    favourites = np.empty((n, slots), dtype=np.int64)
    for slot in range(slots):
        favourites[:, slot] = draw(np.arange(n))
        for _ in range(rounds):
            repeated = np.flatnonzero((favourites[:, :slot] == favourites[:, slot : slot + 1]).any(axis=1))
            if len(repeated) == 0:
                break
            favourites[repeated, slot] = draw(repeated)
    return favourites
