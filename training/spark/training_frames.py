"""A training set's interactions and mixes as Spark DataFrames, and the persona sums computed from them.

The models of the Spark engine are fitted on the same ``TrainingSet`` as locally (same id maps, same
confidence weights, same mixes), moved to the cluster once per fit as Arrow. Persona popularity (the
membership-weighted count of customers per item) and persona vectors (membership-weighted means of
customer vectors) are sums over customers, so they are Spark aggregations here, collected as small
(items x personas) and (personas x factors) arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.models.base import TrainingSet

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


@dataclass(frozen=True)
class TrainingFrames:
    """``ratings`` (user, item, rating): the training matrix's non-zeros; ``mixes`` (user, mix): each
    customer's persona mix as an array column."""

    ratings: DataFrame
    mixes: DataFrame
    n_users: int
    n_items: int
    n_personas: int

    @classmethod
    def of(cls, session: SparkSession, data: TrainingSet, partitions: int) -> TrainingFrames:
        coo = sp.coo_matrix(data.interactions)
        columns = {
            "user": pa.array(coo.row.astype(np.int32)),
            "item": pa.array(coo.col.astype(np.int32)),
            "rating": pa.array(coo.data.astype(np.float32)),
        }
        if data.interaction_age_days is not None:  # the same pairs in the same order (TrainingSet)
            columns["age_days"] = pa.array(np.asarray(data.interaction_age_days.data, dtype=np.float32))
        ratings = pa.table(columns)
        mix = np.asarray(data.user_mix, dtype=np.float64)
        mixes = pa.table(
            {
                "user": pa.array(np.arange(mix.shape[0], dtype=np.int32)),
                "mix": pa.FixedSizeListArray.from_arrays(pa.array(mix.ravel()), mix.shape[1]).cast(
                    pa.list_(pa.float64())
                ),
            }
        )
        return cls(
            ratings=session.createDataFrame(ratings).repartition(partitions, "user"),
            mixes=session.createDataFrame(mixes).repartition(partitions, "user"),
            n_users=int(data.interactions.shape[0]),
            n_items=int(data.interactions.shape[1]),
            n_personas=int(mix.shape[1]),
        )

    def persona_item_counts(
        self, half_life_days: float | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(items x personas) sum of the mixes of the customers who interacted with each item, and
        (items,) the number of those customers: ``seen.T @ user_mix`` and ``seen.sum(axis=0)``.

        With ``half_life_days`` each pair counts ``0.5 ** (age / half_life)``, as
        ``engine.models.persona_prior.recency_weights``."""
        from pyspark.sql import functions as sf

        k = self.n_personas
        pairs = self.ratings.filter(sf.col("rating") > 0)
        if half_life_days is None:
            weight = sf.lit(1.0)
        elif "age_days" in self.ratings.columns:
            weight = sf.pow(sf.lit(2.0), -sf.col("age_days").cast("double") / sf.lit(float(half_life_days)))
        else:
            raise ValueError("a recency half-life needs the training set's interaction ages")
        pairs = pairs.withColumn("weight", weight)
        sums = [sf.sum(sf.col("mix")[p] * sf.col("weight")).alias(f"p{p}") for p in range(k)]
        counted = (
            pairs.join(self.mixes, on="user").groupBy("item").agg(sf.sum("weight").alias("customers"), *sums)
        )
        weighted = np.zeros((self.n_items, k))
        customers = np.zeros(self.n_items)
        for row in counted.toLocalIterator():
            weighted[row["item"]] = [row[f"p{p}"] for p in range(k)]
            customers[row["item"]] = row["customers"]
        return weighted, customers

    def persona_vectors(self, user_factors: DataFrame, width: int) -> NDArray[np.float32]:
        """(personas x width) membership-weighted means of the vectors of customers with interactions.

        ``user_factors`` is MLlib's (id, features): it holds exactly the customers with interactions.
        A persona no such customer belongs to gets their overall mean, as ``membership_weighted_means``.
        """
        from pyspark.sql import functions as sf

        k = self.n_personas
        joined = user_factors.join(self.mixes, user_factors["id"] == self.mixes["user"])
        exploded = joined.select("mix", sf.posexplode("features").alias("position", "value"))
        sums = (
            exploded.groupBy("position")
            .agg(
                sf.sum("value").alias("total"),
                sf.count(sf.lit(1)).alias("customers"),
                *[sf.sum(sf.col("mix")[p] * sf.col("value")).alias(f"p{p}") for p in range(k)],
            )
            .collect()
        )
        mass_row = joined.agg(*[sf.sum(sf.col("mix")[p]).alias(f"p{p}") for p in range(k)]).first()
        weighted = np.zeros((k, width))
        overall = np.zeros(width)
        for row in sums:
            weighted[:, row["position"]] = [row[f"p{p}"] for p in range(k)]
            overall[row["position"]] = row["total"] / max(row["customers"], 1)
        mass = np.array([float((mass_row[f"p{p}"] if mass_row else 0.0) or 0.0) for p in range(k)])
        means = np.where(
            mass[:, None] > 0, weighted / np.where(mass > 0, mass, 1.0)[:, None], overall[None, :]
        )
        return means.astype(np.float32)


def collect_factors(factors: DataFrame, rows: int, width: int) -> NDArray[np.float32]:
    """MLlib's (id, features) as a (rows x width) array, streamed to the driver partition by partition
    (``toLocalIterator``); rows MLlib has no vector for (no interactions) stay zero, as in implicit."""
    out = np.zeros((rows, width), dtype=np.float32)
    for row in factors.toLocalIterator():
        out[row["id"]] = row["features"]
    return out
