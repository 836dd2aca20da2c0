"""Extra customer features through training, the artifact and serving: a cold-start mix follows them.

The generated shop's customers get ``feature__household_size``, planted from their true bargain-hunter
share (big households hunt bargains), plus two customers with no events at all. After ``train``, the
served mix of those two comes from the demographic prior alone, so it can differ only through the
extra feature.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from engine.artifact.contents import load_artifact
from engine.personalizer import Personalizer
from training.config import parse_config
from training.synthetic_shop import ShopConfig, generate_shop
from training.train_job import run_training


def test_a_served_cold_start_mix_follows_an_informative_extra_feature(tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    generate_shop(shop, ShopConfig(customers=600, items=300, events=24_000, seed=5))
    truth = pl.read_parquet(shop / "truth" / "customer_mixes.parquet")
    noise = np.random.default_rng(0).normal(0, 0.3, truth.height)
    sizes = truth.select(
        "customer_id",
        (1.0 + 5.0 * pl.col("weekday__bargain_hunter") + pl.Series(noise)).alias("feature__household_size"),
    )
    customers = pl.read_parquet(shop / "customers.parquet").join(sizes, on="customer_id", how="left")
    newcomers = pl.DataFrame(
        {"customer_id": ["new_big", "new_single"], "feature__household_size": [6.0, 1.0]}
    )
    pl.concat([customers, newcomers], how="diagonal_relaxed").write_parquet(shop / "customers.parquet")
    config = parse_config(
        {
            "data": {"path": str(shop)},
            "split": {"test_days": 28, "cold_start_share": 0.15},
            "models": {"popularity": {}, "persona_popularity": {}},
            "output": {"root": str(tmp_path / "artifacts"), "refit_on_all_events": False},
        }
    )
    artifact = load_artifact(run_training(config, show_progress=False).artifact_path)
    assert "feature__household_size:above_mean" in artifact.demographic_space.names
    prior = artifact.demographic_prior
    assert prior is not None and list(prior.numeric_attributes) == ["feature__household_size"]

    personalizer = Personalizer(artifact)
    (big, big_unknown), (single, single_unknown) = (
        personalizer.mix_for(c) for c in ("new_big", "new_single")
    )
    assert not big_unknown and not single_unknown  # known from the customers table, without events
    bargain = big.personas.index("bargain_hunter")
    assert big.weights[bargain] > single.weights[bargain] + 0.3
