"""Which models the Spark engine trains, and the refusal of the others before any work starts.

ALS has a distributed implementation (MLlib) and the popularity models are sums over customers, so
those three train on Spark. LightFM and implicit's BPR exist only as single-machine libraries (their
SGD shares one set of vectors in one process's memory); the Spark engine refuses them by name rather
than quietly fitting them on the driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.models.base import Recommender
from engine.models.registry import create_model
from training.config import ConfigError, TrainConfig
from training.spark.als import SparkALSModel
from training.spark.persona_popularity import SparkPersonaPopularityModel

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SPARK_MODELS: tuple[str, ...] = ("als", "persona_popularity", "popularity")
SINGLE_MACHINE_MODELS: dict[str, str] = {"lightfm_hybrid": "LightFM", "bpr": "implicit's BPR"}


def check_spark_models(config: TrainConfig) -> None:
    """Raise ConfigError naming each configured model the Spark engine cannot train and the choices."""
    refused = [kind for kind in config.models if kind not in SPARK_MODELS]
    if refused:
        names = ", ".join(f"{kind} ({SINGLE_MACHINE_MODELS.get(kind, kind)})" for kind in refused)
        raise ConfigError(
            f"{config.source}: [models] {names} train on one machine only; the Spark engine trains "
            f"{', '.join(SPARK_MODELS)}. Remove {', '.join(f'[models.{kind}]' for kind in refused)} from "
            "the config, or train with --engine local"
        )


def spark_model(session: SparkSession, partitions: int, kind: str, settings: dict[str, Any]) -> Recommender:
    """An unfitted model of ``kind`` whose fit runs on Spark (popularity: a column sum on the driver)."""
    if kind == "als":
        return SparkALSModel(session, partitions, **settings)
    if kind == "persona_popularity":
        return SparkPersonaPopularityModel(session, partitions, **settings)
    if kind == "popularity":
        return create_model(kind, **settings)
    raise ConfigError(
        f"model {kind!r} cannot be trained on Spark; the Spark engine trains {', '.join(SPARK_MODELS)}"
    )
