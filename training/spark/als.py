"""ALS fitted by Spark MLlib, saved as the engine's ``als`` model so serving cannot tell it apart.

``SparkALSModel`` is an ``ImplicitALSModel`` (same hyperparameters, scoring, persona blending and saved
form) whose fit runs MLlib's implicit-feedback ALS on the cluster, and whose persona vectors and
persona popularity are Spark aggregations (``TrainingFrames``). The factors come back to the driver
streamed in partitions (``toLocalIterator``); demographic vectors and activity levels, a handful of
rows, are computed on the driver as locally.

Hyperparameter mapping (engine / implicit -> MLlib ``pyspark.ml.recommendation.ALS``):

- ``factors`` -> ``rank``; ``iterations`` -> ``maxIter``; ``random_state`` -> ``seed``;
- ``regularization`` -> ``regParam = regularization`` with the default ``penalty = "per_interaction"``:
  the local model then fits MLlib's own objective (``engine.models.interaction_weighted_als``, the same
  per-vector penalty and confidence ``1 + alpha * r``), so both engines train the same model and only
  the solvers differ (MLlib's exact solves, the local conjugate-gradient steps; NDCG@10 equal to 0.3%
  on the shops measured); ``alpha`` -> ``alpha``;
- with ``penalty = "constant"`` (implicit's ALS, an observed pair weighed ``alpha * r``):
  ``regParam = regularization x (customers + items) / (2 x interactions)`` (customers and items with
  interactions). MLlib scales the penalty of each customer's and each item's vector by its number of
  interactions (ALS-WR), implicit does not: summed over both sides, MLlib's penalty weighs ``2 x
  interactions`` vectors' worth, implicit's ``customers + items``, so this regParam gives the same
  total penalty when every vector has the same length. No regParam makes the two forms one model
  (NDCG@10 from 6% below to 32% above local ALS on the shops measured);
- ``num_threads`` has no MLlib counterpart (the cluster's cores are used); ``implicitPrefs`` is on and
  ``nonnegative`` off, as in implicit.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.models.base import TrainingSet
from engine.models.fitted_shape import FittedShape, require_finite
from engine.models.implicit_factors import ImplicitALSModel, member_means
from engine.models.persona_prior import PRIOR_STRENGTH, activity_edges, interaction_counts
from training.spark.training_frames import TrainingFrames, collect_factors

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

ALS_PARAMETER_MAP: dict[str, str] = {
    "factors": "rank",
    "iterations": "maxIter",
    "alpha": "alpha",
    "regularization": (
        "regParam = regularization with penalty = per_interaction (the same objective); with the "
        "constant penalty regParam = regularization x (customers + items) / (2 x interactions)"
    ),
    "random_state": "seed",
    "num_threads": "(none: the cluster's cores)",
}


def mllib_settings(model: ImplicitALSModel, data: TrainingSet) -> dict[str, Any]:
    """MLlib ALS parameters for ``model``'s hyperparameters on ``data`` (see the module docstring)."""
    matrix = data.interactions.tocsr()
    customers = int((np.diff(matrix.indptr) > 0).sum())
    items = int((np.bincount(matrix.indices, minlength=matrix.shape[1]) > 0).sum())
    return {
        "rank": model.factors,
        "maxIter": model.iterations,
        "alpha": model.alpha,
        "regParam": (
            model.regularization
            if model.penalty == "per_interaction"
            else model.regularization * (customers + items) / max(2 * matrix.nnz, 1)
        ),
        "seed": model.random_state,
        "implicitPrefs": True,
        "nonnegative": False,
    }


class SparkALSModel(ImplicitALSModel):
    """The ``als`` model fitted with Spark MLlib (``kind`` stays ``als``: the artifact is the same)."""

    def __init__(self, session: SparkSession, partitions: int, **settings: Any) -> None:
        super().__init__(**settings)
        self._session = session
        self._partitions = partitions
        self.mllib_settings: dict[str, Any] = {}

    def fit(self, data: TrainingSet, *, show_progress: bool = False) -> None:
        from pyspark.ml.recommendation import ALS

        shape = FittedShape.of(data)
        shape.check_training_set(data, self.kind)
        frames = TrainingFrames.of(self._session, data, self._partitions)
        self.mllib_settings = mllib_settings(self, data)
        blocks = max(1, self._partitions)
        estimator = ALS(
            userCol="user",
            itemCol="item",
            ratingCol="rating",
            numUserBlocks=blocks,
            numItemBlocks=blocks,
            **self.mllib_settings,
        )
        started = time.perf_counter()
        fitted = estimator.fit(frames.ratings)
        self.library_fit_seconds = time.perf_counter() - started
        user_factors = collect_factors(fitted.userFactors, shape.n_users, self.factors)
        item_factors = collect_factors(fitted.itemFactors, shape.n_items, self.factors)
        require_finite(self.kind, user_factors=user_factors, item_factors=item_factors)
        persona_factors = frames.persona_vectors(fitted.userFactors, self.factors)
        weighted, customers = frames.persona_item_counts(self.prior_half_life_days)
        counts = interaction_counts(data.interactions)
        _, demographic_factors = member_means(user_factors, data)  # persona vectors: the cluster's
        self._state = {
            "user_factors": user_factors,
            "item_factors": item_factors,
            "persona_factors": persona_factors,
            "demographic_factors": demographic_factors,
            "activity_counts": counts.astype(np.float32),
            "activity_edges": activity_edges(counts, self.activity_levels).astype(np.float32),
            "persona_item_scores": self._spark_prior_item_scores(weighted, customers),
        }
        self._shape = shape
        self._item_vectors = None

    def _spark_prior_item_scores(
        self,
        weighted: np.ndarray[Any, np.dtype[np.float64]],
        customers: np.ndarray[Any, np.dtype[np.float64]],
    ) -> np.ndarray[Any, np.dtype[np.float32]]:
        """``persona_prior.prior_item_scores`` from the cluster's sums."""
        if self.prior_scope != "population":
            return persona_item_scores_from(weighted, customers)
        population = persona_item_scores_from(customers[:, None], customers)
        return np.ascontiguousarray(np.repeat(population, weighted.shape[1], axis=1))


def persona_item_scores_from(
    weighted: np.ndarray[Any, np.dtype[np.float64]],
    customers: np.ndarray[Any, np.dtype[np.float64]],
    prior_strength: float = PRIOR_STRENGTH,
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """``engine.models.persona_prior.persona_item_scores`` from the Spark sums: (items x personas)
    ``n_items`` x each persona's popularity smoothed towards the share of customers per item."""
    n_items = weighted.shape[0]
    global_share = customers / max(customers.sum(), 1.0)
    mass = weighted.sum(axis=0, keepdims=True)
    smoothed = (weighted + prior_strength * global_share[:, None]) / (mass + prior_strength)
    return np.asarray(n_items * smoothed, dtype=np.float32)
