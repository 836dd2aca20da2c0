"""Catalog fit measures: dominated share on known mixes; held-out likelihood prefers the planted catalog."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import polars as pl
import pytest

from engine.data.id_map import IdMap
from engine.personas.catalog import load_catalog
from engine.personas.catalog_fit import (
    catalog_fit,
    dominated_share,
    held_out_log_likelihood,
    held_out_ranking,
)
from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.inference.model import PersonaInferenceModel
from engine.personas.shopping_context import CONTEXTS
from tests.engine.personas.planted_shop import PlantedShop, planted_shop


def _mixes(overall: np.ndarray, n_events: list[int]) -> InferredMixes:
    n, k = overall.shape
    return InferredMixes(
        customer_ids=IdMap([f"c{i}" for i in range(n)], kind="customer"),
        persona_ids=tuple(f"p{j}" for j in range(k)),
        overall=overall,
        by_context=np.repeat(overall[:, None, :], len(CONTEXTS), axis=1),
        n_events=np.asarray(n_events, dtype=np.int64),
        n_events_by_context=np.zeros((n, len(CONTEXTS)), dtype=np.int64),
    )


def test_dominated_share_counts_customers_with_events_led_by_half_or_more() -> None:
    overall = np.array([[0.6, 0.4], [0.5, 0.5], [0.3, 0.7], [0.9, 0.1]])
    mixes = _mixes(np.column_stack([overall, np.zeros(4)]), [3, 3, 0, 2])
    assert dominated_share(mixes) == pytest.approx(1.0)  # 0.6 and 0.5 and 0.9; the eventless one left out
    assert dominated_share(mixes, threshold=0.55) == pytest.approx(2 / 3)
    assert math.isnan(dominated_share(_mixes(overall, [0, 0, 0, 0])))


@pytest.fixture(scope="module")
def shop() -> PlantedShop:
    return planted_shop(n_customers=600, seed=11)


def test_held_out_events_are_likelier_under_the_customers_own_mixes(shop: PlantedShop) -> None:
    events = shop.shop.events
    cutoff = events["timestamp"].quantile(0.8)
    earlier = dataclasses.replace(shop.shop, events=events.filter(pl.col("timestamp") <= cutoff))
    later = events.filter(pl.col("timestamp") > cutoff)
    model = PersonaInferenceModel()
    mixes = model.fit(earlier, load_catalog("default"))
    own, n = held_out_log_likelihood(model, mixes, later, shop.shop.items)
    assert n > 0 and np.isfinite(own)
    shuffled = dataclasses.replace(
        mixes, overall=mixes.overall[np.random.default_rng(0).permutation(len(mixes.overall))]
    )
    other, _ = held_out_log_likelihood(model, shuffled, later, shop.shop.items)
    assert own > other + 0.05  # someone else's mix predicts a customer's next events worse
    fit = catalog_fit(model, mixes, earlier.events, later, shop.shop.items)
    assert fit.held_out_log_likelihood == own and fit.held_out_events == n
    assert fit.dominated_share > 0.5 and fit.personas == 5


def test_customers_next_items_rank_higher_under_their_own_mixes(shop: PlantedShop) -> None:
    events = shop.shop.events
    cutoff = events["timestamp"].quantile(0.8)
    earlier = events.filter(pl.col("timestamp") <= cutoff)
    later = events.filter(pl.col("timestamp") > cutoff)
    model = PersonaInferenceModel()
    mixes = model.fit(dataclasses.replace(shop.shop, events=earlier), load_catalog("default"))
    own, ranked = held_out_ranking(mixes, earlier, later, shop.shop.items)
    assert ranked > 100 and 0 < own < 1
    shuffled = dataclasses.replace(
        mixes, overall=mixes.overall[np.random.default_rng(0).permutation(len(mixes.overall))]
    )
    other, ranked_again = held_out_ranking(shuffled, earlier, later, shop.shop.items)
    assert ranked_again == ranked
    assert own > 1.2 * other  # the personas carry what each customer picks next
    fit = catalog_fit(model, mixes, earlier, later, shop.shop.items)
    assert fit.held_out_ndcg_at_10 == own and fit.held_out_customers == ranked


def test_nothing_new_later_leaves_the_ranking_unmeasured(shop: PlantedShop) -> None:
    events = shop.shop.events
    model = PersonaInferenceModel()
    mixes = model.fit(shop.shop, load_catalog("default"))
    ndcg, ranked = held_out_ranking(mixes, events, events.head(50), shop.shop.items)
    assert ranked == 0 and math.isnan(ndcg)
