"""The persona prior's item side summed on the cluster equals the local one, all-time and by recency,
for the personas and for the population (the ablation's scope)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
from pyspark.sql import SparkSession

from engine.models.persona_prior import persona_item_scores
from tests.engine.models.checkerboard import make_checkerboard
from training.spark.als import SparkALSModel, persona_item_scores_from
from training.spark.training_frames import TrainingFrames


@pytest.mark.parametrize("half_life", [None, 5.0])
def test_cluster_sums_give_the_local_prior(spark: SparkSession, half_life: float | None) -> None:
    data = make_checkerboard().data
    ages = sp.csr_matrix(data.interactions, dtype=np.float32, copy=True)
    ages.data = np.random.default_rng(1).uniform(0.0, 40.0, size=ages.nnz).astype(np.float32)
    data = dataclasses.replace(data, interaction_age_days=ages)
    weighted, customers = TrainingFrames.of(spark, data, 2).persona_item_counts(half_life)
    local = persona_item_scores(data.interactions, data.user_mix, ages=ages, half_life_days=half_life)
    np.testing.assert_allclose(persona_item_scores_from(weighted, customers), local, rtol=1e-5)
    population = persona_item_scores(
        data.interactions, np.ones((data.n_users, 1)), ages=ages, half_life_days=half_life
    )
    ablation = SparkALSModel(spark, 2, prior_scope="population")._spark_prior_item_scores(weighted, customers)
    np.testing.assert_allclose(ablation, np.repeat(population, data.user_mix.shape[1], axis=1), rtol=1e-5)


def test_a_half_life_without_ages_is_refused(spark: SparkSession) -> None:
    frames = TrainingFrames.of(spark, make_checkerboard().data, 2)
    with pytest.raises(ValueError, match="needs the training set's interaction ages"):
        frames.persona_item_counts(7.0)
