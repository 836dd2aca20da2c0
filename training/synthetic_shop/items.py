"""The shop's item catalog: categories, brands, prices, tags, deals, stock, popularity and taste niches.

Items are drawn once per shop from their own random stream (seed, 0), so the catalog does not depend
on how customers are chunked. Brands, price tiers and latent taste niches are planted here because
the personas' item preferences (and hence what the engine can learn) are defined over them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.synthetic_shop.planted_personas import CATEGORIES, TAGS, TECH_CATEGORIES
from training.synthetic_shop.sampling import BoolArray, FloatArray, IntArray

# Latent taste niches ("budget coffee", "premium skincare"): each category splits into 2-6 of them.
# A niche is a style at a price point, so items are grouped by their place on the category's price
# ladder, blurred by this much noise (in price-percentile units) so that neighbouring niches overlap.
# Price-coherent niches make a persona's favourite niches typical of it (bargain hunters' niches
# are the cheap ends of shelves), which is what lets cold-start customers be served from their mix:
# over four seeds, cold-start NDCG went from 1.26x to 1.30x popularity (worst seed 1.10x to 1.26x)
# against niches drawn at random within a category. Niches of 40 rather than 25 items leave a
# customer's niches fresh items to discover in the test weeks (best-model NDCG +0.07x popularity).
TASTE_CLUSTER_SIZE = 40  # items per latent taste cluster, on average
CLUSTER_PRICE_NOISE = 0.15
POPULARITY_EXPONENT = 0.7  # Zipf exponent of base item popularity (rank r gets r ** -exponent)
DEAL_RATE = {False: 0.30, True: 0.08}  # chance an item is a deal item, by premium brand tier
IN_STOCK_RATE = 0.95
PREMIUM_BRAND_SHARE = 0.25
PREMIUM_PRICE_FACTOR = 2.6


@dataclass(frozen=True)
class CategorySpec:
    """How items of one category look: their share of the catalog, typical price and product nouns."""

    name: str
    share: float
    median_price: float
    nouns: tuple[str, ...]


CATEGORY_SPECS: tuple[CategorySpec, ...] = (
    CategorySpec("electronics", 0.09, 180.0, ("Headphones", "Speaker", "Camera", "Monitor", "Soundbar")),
    CategorySpec("computers", 0.06, 650.0, ("Laptop", "Desktop", "Keyboard", "Tablet", "Router")),
    CategorySpec("phones", 0.06, 420.0, ("Smartphone", "Phone Case", "Charger", "Earbuds")),
    CategorySpec("smart_home", 0.06, 70.0, ("Smart Plug", "Thermostat", "Doorbell", "Smart Bulb", "Hub")),
    CategorySpec("groceries", 0.10, 5.0, ("Pasta", "Coffee", "Olive Oil", "Cereal", "Tea")),
    CategorySpec("health_food", 0.07, 8.0, ("Granola", "Protein Bar", "Nut Butter", "Kombucha", "Quinoa")),
    CategorySpec("supplements", 0.06, 24.0, ("Multivitamin", "Omega-3", "Protein Powder", "Vitamin D")),
    CategorySpec("fitness", 0.07, 45.0, ("Yoga Mat", "Dumbbells", "Running Shoes", "Resistance Band")),
    CategorySpec("beauty", 0.08, 28.0, ("Serum", "Moisturiser", "Lipstick", "Fragrance", "Shampoo")),
    CategorySpec("fashion", 0.11, 65.0, ("Jacket", "Sneakers", "Dress", "Scarf", "Handbag")),
    CategorySpec("jewelry", 0.05, 140.0, ("Necklace", "Ring", "Bracelet", "Earrings", "Watch")),
    CategorySpec("home", 0.08, 40.0, ("Candle", "Cushion", "Lamp", "Cookware Set", "Throw")),
    CategorySpec("toys", 0.05, 25.0, ("Puzzle", "Building Set", "Plush Toy", "Board Game", "Doll")),
    CategorySpec("books", 0.06, 16.0, ("Novel", "Cookbook", "Biography", "Comic", "Travel Guide")),
)

# Chance of each tag per category (premium-tier brand, other brand); budget, premium and bestseller
# follow from price, tier and popularity instead and are set in _draw_tags.
_TAG_RATES: dict[str, dict[str, tuple[float, float]]] = {
    "new-tech": dict.fromkeys(TECH_CATEGORIES, (0.55, 0.35)),
    "organic": {"groceries": (0.4, 0.3), "health_food": (0.7, 0.6), "supplements": (0.4, 0.3)},
    "gluten-free": {"groceries": (0.25, 0.2), "health_food": (0.4, 0.3)},
    "sustainable": dict.fromkeys(
        ("fashion", "home", "beauty", "fitness", "groceries", "health_food"), (0.25, 0.15)
    ),
    "eco": dict.fromkeys(("home", "smart_home", "beauty", "groceries", "health_food"), (0.2, 0.15)),
    "limited-edition": dict.fromkeys(("fashion", "jewelry", "beauty", "toys", "books"), (0.35, 0.05)),
}

_BRAND_PREFIXES = (
    "Al", "Bel", "Cor", "Dun", "El", "Fen", "Gal", "Hal", "Ivo", "Jun", "Kel", "Lum",
    "Mor", "Nor", "Ol", "Pax", "Quin", "Ros", "Sol", "Tor", "Ul", "Ver", "Wyn", "Zar",
)  # fmt: skip
_BRAND_SUFFIXES = (
    "ara", "bright", "co", "dale", "era", "field", "gen", "ia", "ix", "lux",
    "mark", "nova", "ora", "peak", "ro", "stone", "tek", "vale", "wave", "za",
)  # fmt: skip


@dataclass(frozen=True)
class Items:
    """Every item as parallel arrays (row i is item ``i + 1``), so the simulation can index them in bulk."""

    category: IntArray  # index into CATEGORIES
    brand: IntArray  # index into brand_names
    brand_names: tuple[str, ...]
    brand_premium: BoolArray
    price: FloatArray
    price_tertile: IntArray  # 0 cheapest third of its category .. 2 dearest third
    tags: BoolArray  # (items, TAGS)
    deal: BoolArray
    in_stock: BoolArray
    popularity: FloatArray  # Zipf-like base popularity, sums to 1
    cluster: IntArray  # latent taste cluster, each inside one category
    n_clusters: int
    titles: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.category)


def _category_counts(n_items: int) -> IntArray:
    """Items per category by share, largest remainder, at least 5 each so every category has brands."""
    shares = np.array([c.share for c in CATEGORY_SPECS])
    shares = shares / shares.sum()
    spare = n_items - 5 * len(shares)
    raw = spare * shares
    counts = np.floor(raw).astype(np.int64)
    remainder_order = np.argsort(-(raw - counts), kind="stable")
    counts[remainder_order[: spare - int(counts.sum())]] += 1
    return counts + 5


def build_items(n_items: int, rng: np.random.Generator) -> Items:
    if tuple(c.name for c in CATEGORY_SPECS) != CATEGORIES:
        raise ValueError("CATEGORY_SPECS must list exactly the shop vocabulary's categories, in order")
    counts = _category_counts(n_items)
    category = rng.permutation(np.repeat(np.arange(len(CATEGORIES)), counts)).astype(np.int64)

    brand_total = 0
    brand_premium_list: list[bool] = []
    brand = np.empty(n_items, dtype=np.int64)
    for c in range(len(CATEGORIES)):
        members = np.flatnonzero(category == c)
        n_brands = min(int(rng.integers(6, 16)), max(2, len(members) // 2))
        n_premium = max(1, round(PREMIUM_BRAND_SHARE * n_brands))
        brand_share = rng.dirichlet(np.full(n_brands, 1.5))
        local = np.concatenate(
            [np.arange(n_brands), rng.choice(n_brands, size=len(members) - n_brands, p=brand_share)]
        )
        brand[members] = brand_total + rng.permutation(local)
        brand_premium_list += [i >= n_brands - n_premium for i in range(n_brands)]
        brand_total += n_brands
    combos = [p + s for p in _BRAND_PREFIXES for s in _BRAND_SUFFIXES]
    if brand_total > len(combos):
        raise ValueError(f"{brand_total} brands needed but only {len(combos)} distinct brand names exist")
    brand_names = tuple(combos[i] for i in rng.choice(len(combos), size=brand_total, replace=False))
    brand_premium = np.array(brand_premium_list, dtype=bool)

    medians = np.array([c.median_price for c in CATEGORY_SPECS])
    brand_factor = np.exp(rng.normal(0.0, 0.15, brand_total)) * np.where(
        brand_premium, PREMIUM_PRICE_FACTOR, 1.0
    )
    price = np.exp(rng.normal(np.log(medians[category] * brand_factor[brand]), 0.35))
    price = np.maximum(np.round(price, 2), 0.5)
    price_rank = np.lexsort((price, category))
    within_rank = np.empty(n_items, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    within_rank[price_rank] = np.arange(n_items) - np.repeat(starts, counts)
    price_tertile = np.minimum(3 * within_rank // counts[category], 2).astype(np.int64)

    popularity = (1.0 + rng.permutation(n_items).astype(np.float64)) ** -POPULARITY_EXPONENT
    popularity /= popularity.sum()
    item_premium = brand_premium[brand]
    deal = rng.random(n_items) < np.where(item_premium, DEAL_RATE[True], DEAL_RATE[False])
    tags = _draw_tags(category, item_premium, price_tertile, popularity, counts, rng)
    in_stock = rng.random(n_items) < IN_STOCK_RATE

    clusters_per_category = np.maximum(1, np.rint(counts / TASTE_CLUSTER_SIZE)).astype(np.int64)
    cluster_offset = np.concatenate([[0], np.cumsum(clusters_per_category)[:-1]])
    ladder = within_rank / counts[category] + rng.normal(0.0, CLUSTER_PRICE_NOISE, n_items)
    ladder_rank = np.empty(n_items, dtype=np.int64)
    ladder_rank[np.lexsort((ladder, category))] = np.arange(n_items) - np.repeat(starts, counts)
    cluster = cluster_offset[category] + ladder_rank * clusters_per_category[category] // counts[category]

    nouns = [CATEGORY_SPECS[c].nouns for c in category]
    noun_pick = rng.random(n_items)
    item_nouns = [n[int(u * len(n))] for n, u in zip(nouns, noun_pick, strict=True)]
    sequence = np.empty(n_items, dtype=np.int64)
    by_brand = np.lexsort((np.arange(n_items), brand))
    brand_starts = np.searchsorted(brand[by_brand], np.arange(brand_total))
    sequence[by_brand] = np.arange(n_items) - brand_starts[brand[by_brand]] + 1
    titles = tuple(
        f"{brand_names[b]} {noun} {s}"
        for b, noun, s in zip(brand.tolist(), item_nouns, sequence.tolist(), strict=True)
    )
    return Items(
        category=category,
        brand=brand,
        brand_names=brand_names,
        brand_premium=brand_premium,
        price=price,
        price_tertile=price_tertile,
        tags=tags,
        deal=deal,
        in_stock=in_stock,
        popularity=popularity,
        cluster=cluster,
        n_clusters=int(clusters_per_category.sum()),
        titles=titles,
    )


def _draw_tags(
    category: IntArray,
    premium: BoolArray,
    price_tertile: IntArray,
    popularity: FloatArray,
    counts: IntArray,
    rng: np.random.Generator,
) -> BoolArray:
    n_items = len(category)
    tags = np.zeros((n_items, len(TAGS)), dtype=bool)
    for tag, rates in _TAG_RATES.items():
        premium_rate = np.zeros(len(CATEGORIES))
        other_rate = np.zeros(len(CATEGORIES))
        for name, (rate_premium, rate_other) in rates.items():
            premium_rate[CATEGORIES.index(name)] = rate_premium
            other_rate[CATEGORIES.index(name)] = rate_other
        chance = np.where(premium, premium_rate[category], other_rate[category])
        tags[:, TAGS.index(tag)] = rng.random(n_items) < chance
    tags[:, TAGS.index("premium")] = premium & (rng.random(n_items) < 0.85)
    tags[:, TAGS.index("budget")] = ~premium & (price_tertile == 0) & (rng.random(n_items) < 0.5)
    popularity_rank = np.lexsort((-popularity, category))
    within = np.empty(n_items, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    within[popularity_rank] = np.arange(n_items) - np.repeat(starts, counts)
    tags[:, TAGS.index("bestseller")] = within < np.maximum(1, np.rint(0.1 * counts[category]))
    return tags
