"""The small synthetic shop most generator tests read, and helpers to read its tables and truth."""

import numpy as np
import polars as pl

from engine.personas.catalog import load_catalog
from training.synthetic_shop import GenerationSummary, ShopConfig, mix_columns
from training.synthetic_shop.planted_personas import HIDDEN_PERSONA_ID

# Small enough to build in a fraction of a second, large enough that planted effects beat sampling noise.
SMALL = ShopConfig(customers=600, items=300, events=24_000, seed=11, drift_share=0.2, chunk_customers=256)
CATALOG_IDS = load_catalog().ids
ALL_IDS = (*CATALOG_IDS, HIDDEN_PERSONA_ID)


def read(shop: GenerationSummary, table: str) -> pl.DataFrame:
    return pl.read_parquet(shop.out_dir / f"{table}.parquet")


def truth(shop: GenerationSummary) -> pl.DataFrame:
    return pl.read_parquet(shop.out_dir / "truth" / "customer_mixes.parquet")


def weights(frame: pl.DataFrame, prefix: str) -> np.ndarray:
    return frame.select(mix_columns(prefix, ALL_IDS)).to_numpy()


def events_with_dominant(shop: GenerationSummary) -> pl.DataFrame:
    """Events joined with their items and the customer's dominant (pre-drift weekday) persona."""
    mixes = truth(shop)
    dominant = np.array(ALL_IDS)[weights(mixes, "weekday").argmax(axis=1)]
    customers = pl.DataFrame({"customer_id": mixes["customer_id"], "dominant": dominant})
    return read(shop, "events").join(read(shop, "items"), on="item_id").join(customers, on="customer_id")
