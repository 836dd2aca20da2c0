"""Planted shopping behaviour: catalog signals, prices and brands, favourites, taste niches, the funnel."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from engine.personas.catalog import load_catalog
from tests.training.synthetic_shop.small_shop import SMALL, events_with_dominant, read
from training.synthetic_shop import GenerationSummary, ShopConfig
from training.synthetic_shop.activity import CART_RATE, PURCHASE_GIVEN_CART
from training.synthetic_shop.items import IN_STOCK_RATE, build_items
from training.synthetic_shop.planted_personas import TECH_CATEGORIES
from training.synthetic_shop.shop_model import ShopModel


def test_catalog_signals_are_true_of_the_generated_events(shop: GenerationSummary) -> None:
    events = events_with_dominant(shop)
    catalog = load_catalog()
    for persona in catalog.personas:
        own = events.filter(pl.col("dominant") == persona.id)
        rest = events.filter(pl.col("dominant") != persona.id)
        signals = persona.signals
        for column, favoured in (("channel", signals.channels), ("device", signals.devices)):
            for value in favoured:
                mine, others = (own[column] == value).mean(), (rest[column] == value).mean()
                assert mine > others * 1.1, f"{persona.id} {column}={value}: {mine:.3f} vs {others:.3f}"
        # Categories and tags are checked as a set: one category's share also depends on which of its
        # few items the popularity draw made hits.
        if signals.categories:
            in_favoured = pl.col("category").is_in(list(signals.categories)).mean()
            mine, others = own.select(in_favoured).item(), rest.select(in_favoured).item()
            assert mine > others * 1.5, f"{persona.id} categories: {mine:.3f} vs {others:.3f}"
        if signals.tags:
            tagged = (pl.col("tags").list.set_intersection(list(signals.tags)).list.len() > 0).mean()
            mine, others = own.select(tagged).item(), rest.select(tagged).item()
            assert mine > others * 1.15, f"{persona.id} tags: {mine:.3f} vs {others:.3f}"


def test_planted_price_discount_and_brand_behaviour(shop: GenerationSummary) -> None:
    events = events_with_dominant(shop).with_columns(
        (pl.col("price").rank() / pl.len()).over("category").alias("price_rank")
    )
    per_persona = events.group_by("dominant").agg(
        (pl.col("discount") > 0).mean().alias("discounted"),
        pl.col("price_rank").mean(),
        pl.col("category").is_in(TECH_CATEGORIES).mean().alias("tech"),
    )
    stats = {row["dominant"]: row for row in per_persona.iter_rows(named=True)}
    overall_discount = (events["discount"] > 0).mean()
    assert stats["bargain_hunter"]["discounted"] > 1.8 * stats["luxury_enthusiast"]["discounted"]
    assert stats["bargain_hunter"]["discounted"] > overall_discount > stats["brand_loyalist"]["discounted"]
    assert stats["bargain_hunter"]["price_rank"] < 0.45 < 0.55 < stats["luxury_enthusiast"]["price_rank"]
    assert stats["tech_savvy"]["tech"] > 0.5
    assert stats["tech_savvy"]["tech"] > 1.4 * max(v["tech"] for k, v in stats.items() if k != "tech_savvy")

    top_two_brands = (
        events.group_by("customer_id", "dominant", "brand")
        .len()
        .sort("len", descending=True)
        .group_by("customer_id", "dominant")
        .agg((pl.col("len").head(2).sum() / pl.col("len").sum()).alias("top2"))
        .group_by("dominant")
        .agg(pl.col("top2").mean())
    )
    concentration = dict(zip(top_two_brands["dominant"], top_two_brands["top2"], strict=True))
    others = [v for k, v in concentration.items() if k != "brand_loyalist"]
    assert concentration["brand_loyalist"] > sum(others) / len(others) + 0.1


def test_favourite_brand_items_are_picked_with_the_shopping_personas_taste() -> None:
    """Within one brand, a luxury enthusiast picks the dear end and a bargain hunter the cheap end."""
    model = ShopModel.build(ShopConfig(items=2_000, seed=3), load_catalog())
    personas, items = model.personas, model.items
    sizes = np.bincount(items.brand, minlength=len(items.brand_names))
    tertile_spread = np.array(
        [np.unique(items.price_tertile[items.brand == b]).size for b in range(sizes.size)]
    )
    brand = int(np.argmax(np.where(tertile_spread == 3, sizes, 0)))
    rng = np.random.default_rng(0)

    def picks(persona_id: str) -> np.ndarray:
        segment = np.full(20_000, personas.ids.index(persona_id) * len(items.brand_names) + brand)
        return personas.brand_item_sampler.draw(segment, rng.random(20_000)) % len(items)

    luxury, bargain = picks("luxury_enthusiast"), picks("bargain_hunter")
    assert (items.brand[luxury] == brand).all() and (items.brand[bargain] == brand).all()
    assert items.price_tertile[luxury].mean() > items.price_tertile[bargain].mean() + 0.5


def test_funnel_rates_are_the_planted_ones(shop: GenerationSummary) -> None:
    """About one in-stock view in ten is carted and a third of carts are bought (tolerances: ~4 sigma)."""
    counts = read(shop, "events")["event_type"].value_counts()
    n = dict(zip(counts["event_type"], counts["count"], strict=True))
    assert n["cart"] / n["view"] == pytest.approx(CART_RATE * IN_STOCK_RATE, abs=0.01)
    assert n["purchase"] / n["cart"] == pytest.approx(PURCHASE_GIVEN_CART, abs=0.045)


@pytest.mark.parametrize("seed", [0, 1])
def test_taste_clusters_are_niches_on_the_price_ladder(seed: int) -> None:
    """Items of a cluster sit close together in their category's price order (std 0.29 if random)."""
    items = build_items(2_000, np.random.default_rng(seed))
    frame = pl.DataFrame({"category": items.category, "price": items.price, "cluster": items.cluster})
    spread = (
        frame.with_columns(((pl.col("price").rank() - 0.5) / pl.len()).over("category").alias("percentile"))
        .group_by("cluster")
        .agg(pl.col("percentile").std(), pl.col("category").n_unique().alias("categories"))
    )
    assert (spread["categories"] == 1).all()
    assert spread["percentile"].mean() < 0.2


def test_customers_have_activity_floor_and_sign_up_before_their_first_event(shop: GenerationSummary) -> None:
    events = read(shop, "events")
    first = events.group_by("customer_id").agg(
        pl.col("timestamp").min().dt.date().alias("first"),
        (pl.col("event_type") == "view").sum().alias("views"),
    )
    customers = read(shop, "customers").join(first, on="customer_id")
    assert (customers["views"] >= 4).all()
    assert (customers["signup_date"] < customers["first"]).all()
    start = dt.datetime.combine(SMALL.start, dt.time(), dt.UTC)
    assert events["timestamp"].min() >= start
    assert events["timestamp"].max() < start + dt.timedelta(days=SMALL.days)
    purchases = events.filter(pl.col("event_type") == "purchase").select(
        "event_id", "customer_id", "item_id", "timestamp"
    )
    carts = events.filter(pl.col("event_type") == "cart").select("customer_id", "item_id", "timestamp")
    with_earlier_cart = purchases.join(carts, on=["customer_id", "item_id"], suffix="_cart").filter(
        pl.col("timestamp_cart") < pl.col("timestamp")
    )
    assert with_earlier_cart["event_id"].n_unique() == purchases.height
