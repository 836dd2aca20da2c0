"""The compiled E-step against the numpy one it replaced, chunked against whole, merged against per event."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import scipy.special
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from engine.personas.catalog import PersonaCatalog
from engine.personas.event_encoding import build_event_features
from engine.personas.inference.config import PersonaInferenceConfig
from engine.personas.inference.e_step import (
    EStepStatistics,
    digamma,
    e_step,
    log_gamma_and_digamma,
    merged_events,
    shifted_log_gamma_and_digamma,
)
from engine.personas.inference.em_fit import (
    EmSetup,
    customer_chunks,
    fit_behaviour,
    m_step,
    starting_mix_prior,
)
from engine.personas.inference.item_choice import ItemChoice
from engine.personas.inference.mix_prior import MixPrior
from engine.personas.inference.segments import sum_segments
from engine.personas.traits import EventFeatures
from tests.engine.personas.inference.variational_reference import reference_e_step
from tests.engine.personas.planted_shop import PlantedShop, planted_shop


def _assert_same(
    got: tuple[NDArray[np.float64], EStepStatistics],
    want: tuple[NDArray[np.float64], EStepStatistics],
    rtol: float = 1e-9,
) -> None:
    (gamma, stats), (gamma_want, stats_want) = got, want
    assert np.allclose(gamma, gamma_want, rtol=rtol, atol=1e-10)
    assert stats.log_likelihood == pytest.approx(stats_want.log_likelihood, rel=rtol, abs=1e-8)
    assert np.allclose(stats.event_signature_counts, stats_want.event_signature_counts, rtol=rtol, atol=1e-9)
    assert np.allclose(stats.item_signature_counts, stats_want.item_signature_counts, rtol=rtol, atol=1e-9)
    prior, prior_want = stats.prior, stats_want.prior
    assert prior.customers == prior_want.customers
    assert np.allclose(prior.component_sums, prior_want.component_sums, rtol=rtol, atol=1e-10)
    for name in ("mass", "on_dominant", "on_minors"):
        assert getattr(prior, name) == pytest.approx(getattr(prior_want, name), rel=rtol, abs=1e-8)


def _random_customers(seed: int, k: int, lengths: list[int]) -> tuple[Any, ...]:
    """Two signature tables, events over them (some weightless, some customers without any), a prior."""
    rng = np.random.default_rng(seed)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = int(indptr[-1])
    log_event, log_item = rng.normal(0, 2, (k, 3)), rng.normal(0, 3, (k, 5))
    event_signature = rng.integers(0, 3, n).astype(np.int64)
    item_signature = rng.integers(0, 5, n).astype(np.int64)
    weight = rng.choice([1.0, 1.0, 2.0, 0.25, 0.0], n)
    prior = MixPrior.mostly_one(rng.dirichlet(np.ones(k)), 4.0, 0.6 if k > 1 else 0.5)
    gamma = prior.starting_posterior(weight, indptr) + rng.random((k, k, len(lengths)))
    return (log_event, log_item), event_signature, item_signature, weight, indptr, gamma, prior


@settings(max_examples=60, deadline=None)
@given(st.floats(1e-3, 1e4))
def test_digamma_matches_scipy(x: float) -> None:
    assert digamma(x) == pytest.approx(float(scipy.special.digamma(x)), rel=1e-13, abs=1e-13)


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.floats(1e-8, 1e-2), st.floats(1e-2, 20.0), st.floats(20.0, 1e8)))
def test_log_gamma_and_digamma_match_scipy(x: float) -> None:
    log_gamma, digamma_value = log_gamma_and_digamma(x)
    assert log_gamma == pytest.approx(float(scipy.special.gammaln(x)), rel=1e-13, abs=1e-13)
    assert digamma_value == pytest.approx(float(scipy.special.digamma(x)), rel=1e-13, abs=1e-13)


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.floats(1e-8, 1e-2), st.floats(1e-2, 20.0), st.floats(20.0, 1e8)))
def test_the_shifted_log_gamma_is_log_gamma_plus_the_log_of_its_shift(x: float) -> None:
    shifted, digamma_value, shift = shifted_log_gamma_and_digamma(x)
    assert shift == pytest.approx(float(np.prod(np.arange(x, 8.0))) if x < 8 else 1.0, rel=1e-13)
    assert shifted - np.log(shift) == pytest.approx(float(scipy.special.gammaln(x)), rel=1e-13, abs=1e-13)
    assert digamma_value == log_gamma_and_digamma(x)[1]


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(2, 12),
    minor=st.sampled_from([1e-200, 1e-60, 1e-20, 1e-3]),
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_compiled_step_keeps_its_digits_with_tiny_parameters(
    k: int, minor: float, lengths: list[int], seed: int
) -> None:
    """The step multiplies the parameters' recurrence shifts before one log; tiny Dirichlet parameters
    (or many of them) must not underflow that product (the numpy step takes each log apart)."""
    (log_event, log_item), es, items, weight, indptr, _, _ = _random_customers(seed, k, lengths)
    weights = np.random.default_rng(seed).dirichlet(np.ones(k))
    prior = MixPrior(weights, np.full((k, k), minor) + np.eye(k) * (2.0 - minor))
    gamma = np.repeat(prior.alphas[:, :, None], len(lengths), axis=2)  # the step from the prior itself
    got = e_step(log_event, log_item, es, items, weight, indptr, gamma, prior)
    assert np.isfinite(got[1].log_likelihood)
    _assert_same(got, reference_e_step(log_event, log_item, es, items, weight, indptr, gamma, prior), 1e-7)


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(1, 5),
    lengths=st.lists(st.integers(0, 12), min_size=1, max_size=8),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_compiled_step_equals_the_numpy_step(k: int, lengths: list[int], seed: int) -> None:
    (log_event, log_item), es, items, weight, indptr, gamma, prior = _random_customers(seed, k, lengths)
    got = e_step(log_event, log_item, es, items, weight, indptr, gamma, prior)
    _assert_same(got, reference_e_step(log_event, log_item, es, items, weight, indptr, gamma, prior))


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(1, 5),
    lengths=st.lists(st.integers(0, 15), min_size=1, max_size=8),
    seed=st.integers(0, 2**32 - 1),
)
def test_merging_repeated_events_changes_nothing(k: int, lengths: list[int], seed: int) -> None:
    (log_event, log_item), es, items, weight, indptr, gamma, prior = _random_customers(seed, k, lengths)
    merged = merged_events(es, items, weight, indptr)
    assert merged[3][-1] <= indptr[-1] and np.array_equal(
        sum_segments(merged[2][None, :], merged[3]), sum_segments(weight[None, :], indptr)
    )
    got = e_step(log_event, log_item, merged[0], merged[1], merged[2], merged[3], gamma, prior)
    _assert_same(got, e_step(log_event, log_item, es, items, weight, indptr, gamma, prior))


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 10), min_size=1, max_size=12),
    chunk=st.integers(1, 13),
    seed=st.integers(0, 2**32 - 1),
)
def test_chunks_of_customers_add_up_to_the_whole(lengths: list[int], chunk: int, seed: int) -> None:
    (log_event, log_item), es, items, weight, indptr, gamma, prior = _random_customers(seed, 4, lengths)
    whole = e_step(log_event, log_item, es, items, weight, indptr, gamma, prior)
    parts = []
    for first, last in customer_chunks(indptr, chunk):
        start, stop = int(indptr[first]), int(indptr[last])
        parts.append(
            e_step(
                log_event,
                log_item,
                es[start:stop],
                items[start:stop],
                weight[start:stop],
                indptr[first : last + 1] - start,
                gamma[:, :, first:last],
                prior,
            )
        )
    statistics = parts[0][1]
    for _, part in parts[1:]:
        statistics = statistics + part
    _assert_same((np.concatenate([g for g, _ in parts], axis=2), statistics), whole, rtol=1e-12)


def _reference_fit_tilts(
    choice: ItemChoice,
    signature_counts: NDArray[np.float64],
    tilts: NDArray[np.float64],
    seed_tilts: NDArray[np.float64],
    strength: float,
) -> NDArray[np.float64]:
    """The item-choice Newton steps as they were: a dense second moment and a solve per persona."""
    observed = choice.features.T @ signature_counts
    totals = signature_counts.sum(axis=0)
    tilts = tilts.copy()
    identity = np.eye(tilts.shape[0])
    for _ in range(2):
        scores = choice.features @ tilts
        shares = choice.base[:, None] * np.exp(scores - scores.max(axis=0))
        shares /= shares.sum(axis=0)
        expected = choice.features.T @ shares
        for k in range(tilts.shape[1]):
            second = (choice.features * shares[:, k : k + 1]).T @ choice.features
            covariance = second - np.outer(expected[:, k], expected[:, k])
            gradient = (
                observed[:, k] - totals[k] * expected[:, k] - strength * (tilts[:, k] - seed_tilts[:, k])
            )
            tilts[:, k] += np.linalg.solve(totals[k] * covariance + strength * identity, gradient)
    return tilts


@pytest.fixture(scope="module")
def small_shop() -> tuple[PlantedShop, EventFeatures]:
    planted = planted_shop(n_customers=60, events_per_customer=(5, 30), n_items=120, seed=3)
    return planted, build_event_features(planted.shop.events, planted.shop.items)


def test_the_sparse_newton_step_equals_the_dense_one(
    small_shop: tuple[PlantedShop, EventFeatures], catalog: PersonaCatalog
) -> None:
    _, features = small_shop
    setup = EmSetup.build(features, catalog, PersonaInferenceConfig())
    item_columns = setup.space.item_columns
    rng = np.random.default_rng(5)
    counts = rng.random((setup.item_choice.n_signatures, len(catalog))) * 10
    tilts = setup.seed_tilts[item_columns] + rng.normal(0, 0.3, (int(item_columns.sum()), len(catalog)))
    args = (counts, tilts, setup.seed_tilts[item_columns], setup.strength)
    want = _reference_fit_tilts(setup.item_choice, *args)
    assert np.allclose(setup.item_choice.fit_tilts(*args), want, rtol=1e-9, atol=1e-10)


def test_the_fit_equals_the_numpy_em_it_replaced(
    small_shop: tuple[PlantedShop, EventFeatures], catalog: PersonaCatalog
) -> None:
    """Twelve plain EM steps with the reference E-step on every event, one chunk, one thread.

    (The extrapolated fit runs these same steps from other starting points: test_em_extrapolation.)
    """
    _, features = small_shop
    cfg = PersonaInferenceConfig(
        max_iterations=12, tolerance=0.0, chunk_customers=7, threads=2, accelerate=False
    )
    fitted = fit_behaviour(features, catalog, cfg)
    setup = EmSetup.build(features, catalog, cfg)
    parameters, offsets = setup.starting_parameters()
    mix_prior = starting_mix_prior(len(catalog), cfg)
    gamma = mix_prior.starting_posterior(features.weight, features.customer_indptr)
    for _ in range(cfg.max_iterations):
        log_event, log_item = setup.signature_log_likelihoods(parameters, offsets)
        gamma, statistics = reference_e_step(
            log_event,
            log_item,
            setup.event_signatures.index,
            setup.item_signature,
            features.weight,
            features.customer_indptr,
            gamma,
            mix_prior,
        )
        parameters, offsets, mix_prior, objective = m_step(setup, statistics, parameters, mix_prior)
    assert fitted.iterations == cfg.max_iterations
    assert fitted.objective_per_event == pytest.approx(objective, rel=1e-9)
    assert np.allclose(fitted.behaviour.parameters, parameters, rtol=1e-7, atol=1e-8)
    assert np.allclose(fitted.gamma, gamma, rtol=1e-7, atol=1e-7)
    assert np.allclose(fitted.behaviour.mix_prior.alphas, mix_prior.alphas, rtol=1e-7)


@settings(max_examples=8, deadline=None)
@given(chunk=st.integers(1, 70), threads=st.integers(1, 3))
def test_chunked_and_threaded_fits_give_the_same_mixes(
    small_shop: tuple[PlantedShop, EventFeatures], catalog: PersonaCatalog, chunk: int, threads: int
) -> None:
    from engine.personas.inference.model import PersonaInferenceModel

    planted, _ = small_shop
    base = PersonaInferenceConfig(max_iterations=15, chunk_customers=10_000, threads=1)
    whole = PersonaInferenceModel(base).fit(planted.shop, catalog, customer_ids=planted.customer_ids)
    cfg = replace(base, chunk_customers=chunk, threads=threads)
    chunked = PersonaInferenceModel(cfg).fit(planted.shop, catalog, customer_ids=planted.customer_ids)
    assert np.allclose(chunked.overall, whole.overall, atol=1e-8)
    assert np.allclose(chunked.by_context, whole.by_context, atol=1e-8)
