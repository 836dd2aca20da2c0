"""The Spark engine reads a fleet's shared event log (Redis Streams) the way the local engine does:
what the servers acknowledged joins the training data once, on the driver, before the split."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from engine.artifact import open_artifact
from engine.artifact.layout import LAYOUT
from engine.live.events import BehaviorEvent
from engine.live.redis_event_log import RedisEventLog
from tests.serving.redis_server import RedisProcess
from tests.training.spark.conftest import TEST_ENGINE, shop_config
from training.spark.job import run_spark_training

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def test_spark_training_reads_the_fleets_redis_event_log(
    spark: SparkSession, small_shop: Path, tmp_path: Path
) -> None:
    redis = RedisProcess(tmp_path / "log-redis", durable=True)
    redis.folder.mkdir()
    redis.start()
    try:
        events = pl.read_parquet(small_shop / "events.parquet")
        early: dt.datetime = events["timestamp"].min() + dt.timedelta(days=2)  # type: ignore[operator]
        item = str(pl.read_parquet(small_shop / "items.parquet")["item_id"][0])
        with RedisEventLog.open(redis.url) as log:  # as a server of the fleet acknowledged them
            log.append(
                [
                    *(
                        BehaviorEvent(f"live-{n}", "live-customer", item, "purchase", early, price_paid=5.0)
                        for n in range(3)
                    ),
                    BehaviorEvent("live-unknown", "live-customer", "item-not-in-the-shop", "view", early),
                ]
            )
        config = shop_config(
            small_shop, tmp_path / "artifacts", data={"path": str(small_shop), "event_log": redis.url}
        )
        trained = run_spark_training(
            dataclasses.replace(config, engine=TEST_ENGINE), show_progress=False, session=spark
        )
    finally:
        redis.stop()
    assert trained.summary["event_log"] == {
        "path": redis.url,
        "read": 4,
        "added": 3,
        "already_in_shop": 0,
        "unknown_items": 1,
        "malformed_ids": 0,
    }
    customers = [str(c) for c in open_artifact(trained.artifact_path).load_array(LAYOUT.customer_ids.path)]
    assert "live-customer" in customers
