"""Explanations first, then the encoded events are let go: what train and the serving build do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.personas.explanations import MixExplanations
from training.config import parse_config
from training.prepared_data import PreparedData, prepare
from training.synthetic_shop import ShopConfig, generate_shop
from training.train_job import explained_without_evidence, fit_decisions


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    out = tmp_path_factory.mktemp("shop")
    generate_shop(out, ShopConfig(customers=400, items=200, events=12_000, seed=9))
    config = parse_config({"data": {"path": str(out)}, "models": {"popularity": {}}})
    return prepare(config, data_path=Path(out))


def test_the_explanations_are_those_of_the_evidence_and_the_evidence_is_gone(prepared: PreparedData) -> None:
    assert prepared.mixes.evidence is not None
    released, explanations = explained_without_evidence(prepared)
    assert released.mixes.evidence is None
    assert prepared.mixes.evidence is not None  # the caller's data is not changed in place
    expected = MixExplanations.build(prepared.inference, prepared.mixes)
    assert explanations.features == expected.features
    assert np.array_equal(explanations.feature, expected.feature)
    for name, values in expected.values.items():
        assert np.array_equal(explanations.values[name], values), name
    assert np.array_equal(released.mixes.overall, prepared.mixes.overall)
    assert np.array_equal(released.mixes.by_context, prepared.mixes.by_context)


def test_the_offer_and_layout_estimates_do_not_need_the_evidence(prepared: PreparedData) -> None:
    released, _ = explained_without_evidence(prepared)
    with_evidence, without = fit_decisions(prepared), fit_decisions(released)
    assert sorted(with_evidence) == sorted(without) and with_evidence
    for kind, estimate in with_evidence.items():
        assert np.array_equal(estimate.alpha, without[kind].alpha)
        assert np.array_equal(estimate.beta, without[kind].beta)
