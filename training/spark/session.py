"""The SparkSession a training run uses: built from ``[engine]``, stopped when the run ends.

The session is configured for what training does: UTC timestamps (the data contract's), Arrow for
moving tables and arrays between the JVM and Python, the Python workers run by this interpreter
(so they import the same engine), no web UI or console progress bars (the CLI draws its own), and
shuffle partitions from ``[engine] partitions``. Under ``spark-submit`` an empty ``master`` leaves
the master to spark-submit.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from engine.errors import PersonaEngineError
from training.config import EngineSection

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

APP_NAME = "persona-engine train"


class SparkStartError(PersonaEngineError):
    """Spark could not start (no Java, a master that cannot be reached); the CLI prints it, exit 2."""


def build_session(section: EngineSection) -> SparkSession:
    """A new (or spark-submit's) SparkSession configured for training."""
    from pyspark.sql import SparkSession

    # pyspark starts its workers with $PYSPARK_PYTHON (default: python3 on the PATH, which lacks the
    # engine's dependencies); this interpreter has them. A cluster sets its own in its environment.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(APP_NAME)
    if section.master:
        builder = builder.master(section.master)
    elif "PYSPARK_GATEWAY_PORT" not in os.environ:  # under spark-submit its JVM (and master) is ours
        builder = builder.master("local[*]")
    settings = {
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.driver.memory": section.driver_memory,
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
    }
    if section.partitions:
        settings["spark.sql.shuffle.partitions"] = str(section.partitions)
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as error:  # py4j and the JVM raise their own types; all mean "no Spark"
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SparkStartError(
            f"cannot start Spark (master {section.master or 'from spark-submit'}): {first}; "
            "is Java 17 installed (scripts/install-java.sh)?"
        ) from None
    session.sparkContext.setLogLevel("ERROR")
    return session


def partitions_of(session: SparkSession, section: EngineSection) -> int:
    """``[engine] partitions``, or twice the cluster's default parallelism when it is 0."""
    return section.partitions or 2 * int(session.sparkContext.defaultParallelism)


class SparkDriverLostError(PersonaEngineError):
    """Spark's driver JVM died mid-run; the CLI prints it (exit 2) instead of py4j's socket errors."""


@contextmanager
def training_session(section: EngineSection) -> Iterator[SparkSession]:
    """A session for one training run, stopped afterwards so the JVM does not idle on the machine.

    When the driver JVM dies under the run (in local mode almost always a Java ``OutOfMemoryError``,
    which the JVM prints itself), py4j reports only refused connections and an exception it cannot
    describe; that becomes one ``SparkDriverLostError`` naming the memory setting to raise.
    """
    from py4j.protocol import Py4JError

    session = build_session(section)
    try:
        yield session
    except (Py4JError, ConnectionError) as error:
        if driver_alive(session):
            raise
        raise SparkDriverLostError(
            f"Spark's driver stopped answering during training ({type(error).__name__}); in local mode "
            f"this is most often the driver's Java heap running out (see the java.lang.OutOfMemoryError "
            f"above): [engine] driver_memory is {section.driver_memory}, raise it"
        ) from None
    finally:
        if driver_alive(session):
            session.stop()


def driver_alive(session: SparkSession) -> bool:
    """Whether the session's JVM still answers (a call over py4j succeeds)."""
    try:
        session.sparkContext._jsc.sc().isStopped()  # a call into the JVM: the one liveness probe there is
    except Exception:  # py4j and socket errors alike: no answer is the answer
        return False
    return True
