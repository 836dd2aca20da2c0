"""Persona popularity fitted with Spark: the engine's ``persona_popularity`` model from a Spark aggregation.

``pop_k(i) = sum_c theta_ck [x_ci > 0]`` is a sum over customers, computed by ``TrainingFrames`` on
the cluster; the attribution steps and the smoothing towards global popularity are the local model's,
on the driver (a pass over the interaction matrix the driver holds already, a fraction of a second per
step at 10M interactions), so the saved model is the local one's and serving loads it unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.models.base import TrainingSet
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
        weighted, customers = TrainingFrames.of(self._session, data, self._partitions).persona_item_counts()
        self._fit_from_counts(data, weighted.T, customers)
