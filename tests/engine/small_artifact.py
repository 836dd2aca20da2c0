"""A small but real trained artifact for the serving-side tests (about two seconds to build).

Models are the fastest that still exercise every serving path: ALS (scores known customers from
their own history), persona popularity (the backfill) and global popularity (the training job's
baseline).
"""

from __future__ import annotations

from pathlib import Path

from training.config import parse_config
from training.synthetic_shop import ShopConfig, generate_shop
from training.train_job import run_training

SMALL_MODELS = {
    "popularity": {},
    "persona_popularity": {},
    "als": {"factors": 8, "iterations": 3},
}


def train_small_artifact(folder: Path, *, refit: bool = False) -> Path:
    """Generate a small synthetic shop under ``folder`` and train it; returns the artifact folder.

    By default the models are the split's only (``refit=False``): the cold-start hold-out stays out
    of them, so serving tests have known customers (mix, history) without a model row. ``refit=True``
    trains as ``persona-engine train`` does by default, refitting on all events."""
    shop = folder / "shop"
    generate_shop(shop, ShopConfig(customers=600, items=300, events=24_000, seed=5))
    config = parse_config(
        {
            "data": {"path": str(shop)},
            "split": {"test_days": 28, "cold_start_share": 0.15},
            "models": SMALL_MODELS,
            "output": {"root": str(folder / "artifacts"), "refit_on_all_events": refit},
        }
    )
    return run_training(config, show_progress=False).artifact_path
