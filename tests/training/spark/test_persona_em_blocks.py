"""The distributed EM's blocks: every customer in exactly one, whole, in order; stepped, the local fit."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from engine.personas.catalog import load_catalog
from engine.personas.event_encoding import build_event_features
from engine.personas.inference.config import PersonaInferenceConfig
from engine.personas.inference.e_step import EStepStatistics
from engine.personas.inference.em_extrapolation import PosteriorJump
from engine.personas.inference.em_fit import EmSetup, EmState, PriorAlphas, fit_behaviour, run_em
from tests.engine.personas.planted_shop import planted_shop
from training.spark.persona_em import (
    BlockStep,
    CustomerBlock,
    _add_sums,
    _keep_pair,
    _step_pair,
    customer_blocks,
)


class _Setup:
    """The two per-event arrays of ``EmSetup`` that blocks slice."""

    def __init__(self, n_events: int) -> None:
        self.event_signatures = type("Signatures", (), {"index": np.arange(n_events)})()
        self.item_signature = np.arange(n_events) * 10


class _Features:
    def __init__(self, lengths: list[int]) -> None:
        self.customer_indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.weight = np.ones(int(self.customer_indptr[-1]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 12), min_size=1, max_size=40), st.integers(1, 9))
def test_blocks_cover_every_customer_and_event_once(lengths: list[int], n_blocks: int) -> None:
    features = _Features(lengths)
    gamma = np.arange(2 * 3 * len(lengths), dtype=np.float64).reshape(2, 3, len(lengths))
    blocks: list[CustomerBlock] = customer_blocks(_Setup(len(features.weight)), features, gamma, n_blocks)  # type: ignore[arg-type]
    assert 1 <= len(blocks) <= n_blocks
    assert [b.start for b in blocks] == sorted(b.start for b in blocks) and blocks[0].start == 0
    np.testing.assert_array_equal(np.concatenate([b.gamma for b in blocks], axis=2), gamma)
    np.testing.assert_array_equal(
        np.concatenate([b.event_signature for b in blocks]), np.arange(len(features.weight))
    )
    assert sum(len(b.indptr) - 1 for b in blocks) == len(lengths)
    for block in blocks:
        assert block.indptr[0] == 0 and block.indptr[-1] == len(block.weight)


class _Shared:
    """A broadcast variable as executors see it: ``.value``."""

    def __init__(self, value: BlockStep) -> None:
        self.value = value


class _BlocksInProcess:
    """``SparkPosteriors`` without Spark: the same block functions mapped over a list, sums added in order."""

    def __init__(self, setup: EmSetup, blocks: list[CustomerBlock]) -> None:
        self.setup = setup
        self.pairs: list[tuple[CustomerBlock, Any]] = [(block, None) for block in blocks]

    def e_step(
        self, state: EmState, source: int | PosteriorJump, target: int, products: PriorAlphas | None
    ) -> tuple[EStepStatistics, NDArray[np.float64] | None]:
        log_event, log_item = self.setup.signature_log_likelihoods(state.parameters, state.offsets)
        shared = _Shared(BlockStep(log_event, log_item, state.mix_prior, source, target, products))
        self.pairs = [_step_pair(shared, pair) for pair in self.pairs]  # type: ignore[arg-type]
        return functools.reduce(_add_sums, [pair[1] for pair in self.pairs])

    def keep(self, slot: int) -> None:
        self.pairs = [_keep_pair(slot, pair) for pair in self.pairs]


def test_the_blocks_run_the_local_extrapolated_fit() -> None:
    """The distributed EM's block steps, jumps and slot swaps, in process: the local fit's result."""
    planted = planted_shop(n_customers=50, events_per_customer=(5, 30), n_items=120, seed=8)
    features = build_event_features(planted.shop.events, planted.shop.items)
    catalog = load_catalog("default")
    cfg = PersonaInferenceConfig(max_iterations=25, tolerance=0.0)
    local = fit_behaviour(features, catalog, cfg)
    setup = EmSetup.build(features, catalog, cfg)
    start = EmState.start(setup, len(catalog), cfg)
    gamma = start.mix_prior.starting_posterior(features.weight, features.customer_indptr)
    blocks = _BlocksInProcess(setup, customer_blocks(setup, features, gamma, 3))
    run = run_em(setup, cfg, blocks, start)
    assert run.iterations == local.iterations == cfg.max_iterations
    assert run.objective_per_event == pytest.approx(local.objective_per_event, rel=1e-9)
    assert np.allclose(run.state.parameters, local.behaviour.parameters, rtol=1e-7, atol=1e-8)
    gathered = np.concatenate([block.gamma for block, _ in blocks.pairs], axis=2)
    assert np.allclose(gathered, local.gamma, rtol=1e-7, atol=1e-7)
