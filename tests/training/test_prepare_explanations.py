"""Explanations right after persona inference, then the encoded events are let go: what train and the
serving build ask ``prepare`` for, so that the encoded events are never held with the interaction
matrices."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from engine.personas.explanations import MixExplanations
from engine.personas.traits import FEATURE_MATRIX_DTYPE
from training.config import TrainConfig, parse_config
from training.prepared_data import PreparedData, prepare
from training.stage_timings import StageTimings
from training.synthetic_shop import ShopConfig, generate_shop
from training.train_job import fit_decisions


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> TrainConfig:
    out = tmp_path_factory.mktemp("shop")
    generate_shop(out, ShopConfig(customers=400, items=200, events=12_000, seed=9))
    return parse_config({"data": {"path": str(out)}, "models": {"popularity": {}}})


@pytest.fixture(scope="module")
def kept(config: TrainConfig) -> PreparedData:
    return prepare(config)


@pytest.fixture(scope="module")
def explained(config: TrainConfig) -> PreparedData:
    return prepare(config, explain=True)


def test_without_explain_the_evidence_is_kept_and_nothing_is_explained(kept: PreparedData) -> None:
    assert kept.mixes.evidence is not None
    assert kept.explanations is None


def test_the_explanations_are_those_of_the_evidence_and_the_evidence_is_gone(
    kept: PreparedData, explained: PreparedData
) -> None:
    assert explained.mixes.evidence is None
    assert explained.explanations is not None
    expected = MixExplanations.build(kept.inference, kept.mixes)
    assert explained.explanations.features == expected.features
    assert np.array_equal(explained.explanations.feature, expected.feature)
    for name, values in expected.values.items():
        assert np.array_equal(explained.explanations.values[name], values), name
    assert np.array_equal(explained.explanations.population_value, expected.population_value)
    assert np.array_equal(explained.explanations.persona_value, expected.persona_value)
    assert np.array_equal(explained.mixes.overall, kept.mixes.overall)
    assert np.array_equal(explained.mixes.by_context, kept.mixes.by_context)
    assert (explained.history != kept.history).nnz == 0
    assert (explained.training_set.interactions != kept.training_set.interactions).nnz == 0
    assert explained.demographic_prior.to_json() == kept.demographic_prior.to_json()


def test_explaining_is_a_step_of_prepare_after_persona_inference(config: TrainConfig) -> None:
    timings = StageTimings()
    prepare(config, timings=timings, explain=True)
    assert [part["stage"] for part in timings.to_json()] == [
        "load",
        "split",
        "item_features",
        "customer_features",
        "event_indices",
        "persona_inference",
        "explanations",
        "demographic_prior",
        "interaction_matrices",
    ]


def test_the_offer_and_layout_estimates_do_not_need_the_evidence(
    kept: PreparedData, explained: PreparedData
) -> None:
    with_evidence, without = fit_decisions(kept), fit_decisions(explained)
    assert sorted(with_evidence) == sorted(without) and with_evidence
    for kind, estimate in with_evidence.items():
        assert np.array_equal(estimate.alpha, without[kind].alpha)
        assert np.array_equal(estimate.beta, without[kind].beta)


def test_the_encoded_events_hold_zeros_and_ones_in_one_byte(kept: PreparedData) -> None:
    # One byte stores 0 and 1 exactly at an eighth of float64's memory; the likelihoods are float64 and
    # the same to the last bit as with a float64 matrix.
    evidence = kept.mixes.evidence
    assert evidence is not None
    matrix = evidence.matrix
    assert isinstance(matrix, sp.csr_matrix) and matrix.dtype == FEATURE_MATRIX_DTYPE == np.int8
    assert set(np.unique(matrix.data).tolist()) <= {1}
    likelihoods = kept.inference.event_log_likelihoods(evidence)
    as_float64 = dataclasses.replace(evidence, matrix=matrix.astype(np.float64))
    assert likelihoods.dtype == np.float64
    assert np.array_equal(likelihoods, kept.inference.event_log_likelihoods(as_float64))
