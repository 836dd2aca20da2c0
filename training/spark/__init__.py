"""Training on Apache Spark: the same pipeline and artifact as the local engine, the heavy steps distributed.

``persona-engine train --engine spark`` (or ``[engine] name = "spark"``) reads the data contract's
tables as Parquet through Spark (``tables``), fits the persona EM with the E-step spread over
partitions of customers (``persona_em``), fits ALS with Spark MLlib and computes its persona vectors
and persona popularity with Spark (``als``), and writes the artifact with the one artifact writer
(``training.train_job.write_artifact``), so ``persona-engine serve`` loads it unchanged. Models that
exist only on one machine are refused before any work starts (``spark_models``).
"""
