"""Persona popularity fitted with Spark: the engine's ``persona_popularity`` model from a Spark aggregation.

``pop_k(i) = sum_c theta_ck [x_ci > 0]`` is a sum over customers, computed by ``TrainingFrames`` on
the cluster; the smoothing towards global popularity is the local model's, on the driver, so the
saved model is the local one's and serving loads it unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from engine.models.base import TrainingSet
from engine.models.fitted_shape import FittedShape
from engine.models.popularity import PersonaPopularityModel
from training.spark.training_frames import TrainingFrames

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


class SparkPersonaPopularityModel(PersonaPopularityModel):
    """``persona_popularity`` with its counts computed on Spark (``kind`` unchanged)."""

    def __init__(self, session: SparkSession, partitions: int, **settings: Any) -> None:
        super().__init__(**settings)
        self._session = session
        self._partitions = partitions

    def fit(self, data: TrainingSet, *, show_progress: bool = False) -> None:
        shape = FittedShape.of(data)
        shape.check_training_set(data, self.kind)
        weighted, customers = TrainingFrames.of(self._session, data, self._partitions).persona_item_counts()
        global_share = customers / customers.sum()
        weighted_counts = weighted.T  # (personas, items)
        mass = weighted_counts.sum(axis=1, keepdims=True)
        smoothed = (weighted_counts + self.prior_strength * global_share) / (mass + self.prior_strength)
        self._persona_popularity = smoothed.astype(np.float32)
        self._shape = shape
