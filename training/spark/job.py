"""``persona-engine train --engine spark``: the training run with its heavy steps on Spark.

The run is ``training.train_job.run_training`` with a Spark ``TrainingEngine``: tables read and
checked by Spark (``tables``), the persona EM's E-step on Spark (``persona_em``), ALS and persona
popularity on Spark (``models``). The split, the evaluation (on the driver, every held-out customer,
the local engine's metrics) and the artifact writer are the local engine's, so the artifact lands
where ``[output] root`` says (a local or mounted folder of the driver) and ``serve`` loads it
unchanged. The manifest's ``engine`` key records the master, the partitions, MLlib's ALS settings
and how evaluation ran.
"""

from __future__ import annotations

import contextlib
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from engine.artifact import ArtifactSigner
from engine.data.shop_data import ShopData
from training.config import TrainConfig
from training.spark.als import ALS_PARAMETER_MAP
from training.spark.models import check_spark_models, spark_model
from training.spark.persona_em import spark_behaviour_fit
from training.spark.session import partitions_of, training_session
from training.spark.tables import load_shop_with_spark
from training.train_job import TrainResult, run_training
from training.training_engine import TrainingEngine

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

EVALUATION_NOTE = "on the driver, every held-out customer, the local engine's metrics"


def spark_training_engine(session: SparkSession, config: TrainConfig) -> TrainingEngine:
    """The Spark ``TrainingEngine`` on ``session``, with the manifest record of how it ran."""
    import pyspark

    partitions = partitions_of(session, config.engine)

    def load(path: Path, skip_invalid: bool) -> ShopData:
        # A URI (s3a://bucket/shop) does not survive pathlib (s3a:/bucket/shop): take the config's text.
        root = config.data.path if Path(config.data.path) == path else str(path)
        return load_shop_with_spark(session, root, skip_invalid=skip_invalid)

    return TrainingEngine(
        name="spark",
        load_shop=load,
        behaviour_fit=spark_behaviour_fit(session, partitions),
        create_model=partial(spark_model, session, partitions),
        record={
            "master": session.sparkContext.master,
            "spark_version": pyspark.__version__,
            "partitions": partitions,
            "als_parameter_map": ALS_PARAMETER_MAP,
            "evaluation": EVALUATION_NOTE,
        },
    )


def run_spark_training(
    config: TrainConfig,
    *,
    show_progress: bool = True,
    data_path: Path | None = None,
    signer: ArtifactSigner | None = None,
    session: SparkSession | None = None,
) -> TrainResult:
    """Check the models, start Spark from ``[engine]``, train, stop Spark (also on failure).

    With ``session`` (a notebook's, a test suite's) that session is used and left running."""
    check_spark_models(config)
    with contextlib.ExitStack() as stack:
        if session is None:
            session = stack.enter_context(training_session(config.engine))
        return run_training(
            config,
            show_progress=show_progress,
            data_path=data_path,
            signer=signer,
            engine=spark_training_engine(session, config),
        )
