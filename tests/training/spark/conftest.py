"""One local[2] SparkSession for every Spark test, and one small shop trained by both engines.

Starting a JVM costs 10-20 s on a busy two-core machine, so the session is session-scoped and
stopped at the end (an idle JVM must not keep loading the machine). The shop is the serving tests'
small one (600 customers, 24,000 events); both engines train it once with the same config, and the
equivalence, artifact and serving tests read those two runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from training.config import EngineSection, TrainConfig, parse_config
from training.spark.job import run_spark_training
from training.spark.session import build_session
from training.synthetic_shop import ShopConfig, generate_shop
from training.train_job import TrainResult, run_training

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

TEST_ENGINE = EngineSection(name="spark", master="local[2]", partitions=2, driver_memory="2g")
MODELS: dict[str, dict[str, Any]] = {
    "popularity": {},
    "persona_popularity": {},
    "als": {"factors": 16, "iterations": 10},
}


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    session = build_session(TEST_ENGINE)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def small_shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    shop = tmp_path_factory.mktemp("spark-shop") / "shop"
    generate_shop(shop, ShopConfig(customers=600, items=300, events=24_000, seed=5))
    return shop


def shop_config(shop: Path, root: Path, **sections: Any) -> TrainConfig:
    return parse_config(
        {
            "data": {"path": str(shop)},
            "split": {"test_days": 28, "cold_start_share": 0.15},
            "models": MODELS,
            "output": {"root": str(root), "refit_on_all_events": False},
            **sections,
        }
    )


@dataclass(frozen=True)
class BothEngines:
    config: TrainConfig
    local: TrainResult
    spark: TrainResult


@pytest.fixture(scope="session")
def both_engines(
    spark: SparkSession, small_shop: Path, tmp_path_factory: pytest.TempPathFactory
) -> BothEngines:
    root = tmp_path_factory.mktemp("spark-artifacts")
    config = shop_config(small_shop, root)
    local = run_training(config, show_progress=False)
    spark_config = dataclasses.replace(config, engine=TEST_ENGINE)
    trained = run_spark_training(spark_config, show_progress=False, session=spark)
    return BothEngines(config, local, trained)
