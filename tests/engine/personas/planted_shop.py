"""A planted shop: customers with known persona mixes whose events follow known persona habits.

It is the ground truth of the persona inference and discovery tests: every event is drawn
from one persona picked from the customer's (context) mix, and each persona shops the way the default
catalog's signals say (bargain hunters on discount and cheap items, loyalists on their favourite brand,
...), so recovering the mixes is possible but not trivial: personas overlap on every single feature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from numpy.typing import NDArray

from engine.data.id_map import IdMap
from engine.data.shop_data import ShopData
from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.mix import total_variation_rows

CATEGORIES = (
    "electronics", "computers", "phones", "smart_home", "groceries", "health_food", "supplements",
    "fitness", "beauty", "fashion", "jewelry", "home", "toys", "books",
)  # fmt: skip
TAGS = (
    "organic",
    "sustainable",
    "new-tech",
    "premium",
    "budget",
    "bestseller",
    "gluten-free",
    "limited-edition",
    "eco",
)
CHANNELS = ("direct", "search", "email", "social", "app_push")
DEVICES = ("desktop", "mobile", "tablet", "app")
PERSONAS = ("bargain_hunter", "brand_loyalist", "health_enthusiast", "tech_savvy", "luxury_enthusiast")
GIFT = "gift_shopper"


@dataclass(frozen=True)
class Habits:
    """How one planted persona shops: discount rate, preferences over items, channels and devices."""

    discount_rate: float
    price_level: int | None  # preferred price tertile (0 low .. 2 high), None for no preference
    favourite_brand_rate: float  # chance an event goes to the customer's favourite brand
    categories: tuple[str, ...]
    tags: tuple[str, ...]
    channels: dict[str, float]
    devices: dict[str, float]


HABITS: dict[str, Habits] = {
    "bargain_hunter": Habits(0.75, 0, 0.0, (), ("budget", "bestseller"), {"email": 3, "search": 3}, {}),
    "brand_loyalist": Habits(0.05, 1, 0.8, (), (), {"direct": 3, "app_push": 3}, {"app": 4}),
    "health_enthusiast": Habits(
        0.2,
        None,
        0.0,
        ("health_food", "supplements", "fitness", "groceries"),
        ("organic", "eco"),
        {"social": 4},
        {},
    ),
    "tech_savvy": Habits(
        0.2,
        None,
        0.0,
        ("electronics", "computers", "phones", "smart_home"),
        ("new-tech",),
        {"app_push": 3},
        {"mobile": 4},
    ),
    "luxury_enthusiast": Habits(
        0.03,
        2,
        0.2,
        ("fashion", "jewelry", "beauty"),
        ("premium", "limited-edition"),
        {"direct": 3},
        {"desktop": 2, "tablet": 2},
    ),
    GIFT: Habits(0.2, None, 0.0, ("toys", "books"), (), {"social": 8}, {"tablet": 8}),
}


@dataclass(frozen=True)
class PlantedShop:
    shop: ShopData
    customer_ids: IdMap
    mixes: NDArray[np.float64]  # (customers, contexts, personas) planted context mixes
    expected: NDArray[np.float64]  # (customers, personas) planted mixes averaged over each customer's events
    realized: NDArray[np.float64]  # (customers, personas) share of each customer's events drawn per persona
    hidden: NDArray[np.bool_]  # customers of the hidden gift-shopper segment
    event_persona: NDArray[np.int64]  # per events row, the planted persona (len(PERSONAS) = gift shopper)


def _items(rng: np.random.Generator, n_items: int) -> pl.DataFrame:
    categories = rng.choice(np.array(CATEGORIES), size=n_items)
    brands = [f"{c}_brand_{b}" for c, b in zip(categories, rng.integers(0, 6, size=n_items), strict=True)]
    prices = np.round(rng.lognormal(3.5, 0.8, size=n_items), 2)
    affinity = {
        ("groceries", "health_food", "supplements"): ("organic", "sustainable", "gluten-free", "eco"),
        ("electronics", "computers", "phones", "smart_home"): ("new-tech",),
        ("fashion", "jewelry", "beauty"): ("premium", "limited-edition"),
    }
    tags = []
    for category in categories:
        weights = np.ones(len(TAGS))
        for shelf, favoured in affinity.items():
            if category in shelf:
                weights[[TAGS.index(t) for t in favoured]] = 8.0
        drawn = rng.choice(np.array(TAGS), size=int(rng.integers(0, 3)), p=weights / weights.sum())
        tags.append(sorted(set(drawn.tolist())))
    return pl.DataFrame(
        {"item_id": [f"i{i}" for i in range(n_items)], "category": categories.tolist(), "brand": brands},
    ).with_columns(pl.Series("price", prices), pl.Series("tags", tags, dtype=pl.List(pl.Utf8)))


def _item_weights(items: pl.DataFrame, habits: Habits) -> NDArray[np.float64]:
    """How strongly a persona is drawn to each item (category, price tertile, tags)."""
    categories = items["category"].to_numpy()
    percentile = items.select(
        ((pl.col("price").rank("average").over("category") - 0.5) / pl.len().over("category")).alias("p")
    )["p"].to_numpy()
    tertile = np.minimum((percentile * 3).astype(int), 2)
    weights = np.ones(items.height)
    if habits.categories:
        weights *= np.where(np.isin(categories, habits.categories), 12.0, 1.0)
    if habits.price_level is not None:
        weights *= np.where(tertile == habits.price_level, 6.0, 1.0)
    if habits.tags:
        has_tag = np.array([bool(set(tags) & set(habits.tags)) for tags in items["tags"].to_list()])
        weights *= np.where(has_tag, 5.0, 1.0)
    return weights / weights.sum()


def _draw(rng: np.random.Generator, probabilities: NDArray[np.float64]) -> NDArray[np.int64]:
    """One categorical draw per row of a (rows x values) probability matrix."""
    cumulative = np.cumsum(probabilities, axis=1)
    drawn = (rng.random(len(probabilities))[:, None] * cumulative[:, -1:] < cumulative).argmax(axis=1)
    return np.asarray(drawn, dtype=np.int64)


def _preferences(preferences: dict[str, float], values: tuple[str, ...]) -> NDArray[np.float64]:
    weights = np.array([1.0 + preferences.get(v, 0.0) for v in values])
    return weights / weights.sum()


def planted_shop(
    n_customers: int = 400,
    events_per_customer: tuple[int, int] = (25, 60),
    seed: int = 7,
    hidden_share: float = 0.0,
    weekend_shift: str = "luxury_enthusiast",
    n_items: int = 600,
    mix_concentration: tuple[float, float] = (0.3, 2.0),
) -> PlantedShop:
    """A small shop with planted persona mixes; weekend mixes lean towards ``weekend_shift``.

    Weekday mixes are Dirichlet with ``mix_concentration[0]`` on every persona plus
    ``mix_concentration[1]`` on a random dominant one (by default: mostly one persona, about 2/3).
    Hidden customers shop three times in four as the gift shopper (toys and books, from social, on
    tablets), a behaviour no catalog persona describes.
    """
    rng = np.random.default_rng(seed)
    items = _items(rng, n_items)
    personas = (*PERSONAS, GIFT)
    habits = [HABITS[p] for p in personas]
    k = len(PERSONAS)
    concentration = np.full((n_customers, k), mix_concentration[0])
    concentration[np.arange(n_customers), rng.integers(0, k, size=n_customers)] += mix_concentration[1]
    weekday = np.vstack([rng.dirichlet(c) for c in concentration])
    weekend = 0.6 * weekday + 0.4 * np.eye(k)[PERSONAS.index(weekend_shift)]
    mixes = np.stack([weekday, weekend], axis=1)
    hidden = rng.random(n_customers) < hidden_share

    n_events = rng.integers(*events_per_customer, size=n_customers)
    customer = np.repeat(np.arange(n_customers), n_events)
    day = rng.integers(0, 90, size=customer.size)
    context = (day % 7 >= 5).astype(np.int64)  # day 0 is a Monday
    event_mix = mixes[customer, context]
    gift = hidden[customer] & (
        rng.random(customer.size) < 0.75
    )  # hidden customers mostly shop as gift shoppers
    persona = np.where(gift, len(PERSONAS), _draw(rng, event_mix))
    expected = np.zeros((n_customers, k))
    np.add.at(expected, customer, event_mix)
    expected /= n_events[:, None]
    realized = np.zeros((n_customers, k))
    planted_events = persona < k
    np.add.at(realized, (customer[planted_events], persona[planted_events]), 1.0)
    realized /= n_events[:, None]

    item = np.zeros(customer.size, dtype=np.int64)
    for p, h in enumerate(habits):
        chosen = persona == p
        item[chosen] = rng.choice(n_items, size=int(chosen.sum()), p=_item_weights(items, h))
    brands = items["brand"].to_numpy()
    brand_names = np.unique(brands)
    favourite = rng.integers(0, brand_names.size, size=n_customers)
    loyal_rate = np.array([h.favourite_brand_rate for h in habits])
    loyal = rng.random(customer.size) < loyal_rate[persona]
    for b, name in enumerate(brand_names):
        members = np.flatnonzero(brands == name)
        chosen = loyal & (favourite[customer] == b)
        item[chosen] = rng.choice(members, size=int(chosen.sum()))
    discount_rate = np.array([h.discount_rate for h in habits])
    discounted = rng.random(customer.size) < discount_rate[persona]
    discount = np.where(discounted, rng.choice([0.1, 0.2, 0.3], size=customer.size), 0.0)
    channel = _draw(rng, np.vstack([_preferences(h.channels, CHANNELS) for h in habits])[persona])
    device = _draw(rng, np.vstack([_preferences(h.devices, DEVICES) for h in habits])[persona])
    start = np.datetime64("2024-03-04T00:00:00", "us")  # a Monday, no default holiday within 90 days
    hours = rng.integers(8, 22, size=customer.size)
    timestamp = start + day.astype("timedelta64[D]") + hours.astype("timedelta64[h]")
    events = pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(customer.size)],
            "customer_id": [f"c{c}" for c in customer],
            "item_id": [f"i{i}" for i in item],
            "event_type": ["view"] * customer.size,
            "timestamp": pl.Series(timestamp).dt.replace_time_zone("UTC"),
            "discount": discount,
            "channel": np.array(CHANNELS)[channel],
            "device": np.array(DEVICES)[device],
        }
    )
    customer_ids = IdMap([f"c{c}" for c in range(n_customers)], kind="customer")
    dominant = weekday.argmax(axis=1)
    customers = pl.DataFrame(
        {
            "customer_id": customer_ids.ids.tolist(),
            "age_band": np.where(dominant == PERSONAS.index("tech_savvy"), "18-24", "45-54"),
            "region": ["north"] * n_customers,
            "income_band": np.where(dominant == PERSONAS.index("luxury_enthusiast"), "high", "middle"),
        }
    )
    shop = ShopData(events=events, items=items, customers=customers)
    return PlantedShop(shop, customer_ids, mixes, expected, realized, hidden, persona)


def non_hidden_tv(mixes: InferredMixes, planted: PlantedShop) -> float:
    """Mean total variation between inferred and planted mixes, over customers outside the hidden segment."""
    keep = ~planted.hidden
    return float(total_variation_rows(mixes.overall[keep], planted.expected[keep]).mean())
