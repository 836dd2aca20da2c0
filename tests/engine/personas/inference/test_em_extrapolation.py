"""The extrapolated EM (em_extrapolation, driven by em_fit.run_em): the plain fixed point in fewer E-steps."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from engine.personas.catalog import PersonaCatalog
from engine.personas.event_encoding import build_event_features
from engine.personas.inference.config import PersonaInferenceConfig
from engine.personas.inference.e_step import EStepStatistics
from engine.personas.inference.em_extrapolation import (
    PosteriorJump,
    count_products,
    jumped_state,
    state_coordinates,
    step_length,
)
from engine.personas.inference.em_fit import (
    EmSetup,
    EmState,
    LocalPosteriors,
    PriorAlphas,
    fit_behaviour,
    run_em,
)
from engine.personas.inference.mix_prior import MixPrior
from engine.personas.traits import EventFeatures, GroupKind
from tests.engine.personas.inference.variational_reference import reference_e_step
from tests.engine.personas.planted_shop import planted_shop


@pytest.fixture(scope="module")
def features() -> EventFeatures:
    shop = planted_shop(n_customers=60, events_per_customer=(5, 30), n_items=120, seed=4)
    return build_event_features(shop.shop.events, shop.shop.items)


def test_the_extrapolated_fit_reaches_the_plain_fixed_point_in_fewer_e_steps(
    features: EventFeatures, catalog: PersonaCatalog
) -> None:
    """Both run to a tight tolerance: same objective, behaviour, prior and posteriors; a third the E-steps.

    (Measured: 125 plain steps, 41 extrapolated; the planted shop of the package fixture 87 and 27.)
    """
    cfg = PersonaInferenceConfig(max_iterations=2_000, tolerance=1e-11)
    plain = fit_behaviour(features, catalog, replace(cfg, accelerate=False))
    fast = fit_behaviour(features, catalog, cfg)
    assert plain.converged and fast.converged
    assert fast.iterations < plain.iterations / 2
    assert fast.objective_per_event == pytest.approx(plain.objective_per_event, abs=1e-9)
    assert np.allclose(fast.behaviour.parameters, plain.behaviour.parameters, atol=2e-4)
    assert np.allclose(fast.behaviour.mix_prior.alphas, plain.behaviour.mix_prior.alphas, rtol=1e-3)
    means = [fit.gamma / fit.gamma.sum(axis=1, keepdims=True) for fit in (plain, fast)]
    assert np.allclose(means[0], means[1], atol=2e-4)


class _Recording(LocalPosteriors):
    """The local posteriors, noting the objective of every state an E-step runs on, and how it began."""

    def __init__(self, setup: EmSetup, features: EventFeatures, cfg: PersonaInferenceConfig, k: int) -> None:
        super().__init__(setup, features, cfg, k)
        self.objectives: list[tuple[str, float]] = []

    def e_step(
        self, state: EmState, source: int | PosteriorJump, target: int, products: PriorAlphas | None
    ) -> tuple[EStepStatistics, NDArray[np.float64] | None]:
        statistics, counted = super().e_step(state, source, target, products)
        kind = "jump" if isinstance(source, PosteriorJump) else f"from {source}"
        objective = (
            statistics.log_likelihood + self.setup.log_prior(state.parameters)
        ) / self.setup.total_weight
        self.objectives.append((kind, objective))
        return statistics, counted


def test_the_objective_never_falls_from_one_kept_state_to_the_next(
    features: EventFeatures, catalog: PersonaCatalog
) -> None:
    """Every cycle starts from a kept state (E-step "from 0"): their objectives never decrease.

    The jumps must be real for this to say anything: some are taken, and the run is not plain EM.
    """
    cfg = PersonaInferenceConfig(max_iterations=120, tolerance=0.0)
    setup = EmSetup.build(features, catalog, cfg)
    posteriors = _Recording(setup, features, cfg, len(catalog))
    run_em(setup, cfg, posteriors, EmState.start(setup, len(catalog), cfg))
    starts = [objective for kind, objective in posteriors.objectives if kind == "from 0"]
    assert len(starts) > 10 and sum(kind == "jump" for kind, _ in posteriors.objectives) > 5
    assert np.all(np.diff(starts) >= -1e-12), np.diff(starts).min()


class _Reference:
    """Posteriors in one array, stepped by the numpy reference E-step on every event, in one piece."""

    def __init__(self, setup: EmSetup, features: EventFeatures, gamma: NDArray[np.float64]) -> None:
        self.setup, self.features = setup, features
        self.slots: list[NDArray[np.float64]] = [gamma, gamma.copy(), gamma.copy()]
        indptr = features.customer_indptr
        self.sizes = np.add.reduceat(features.weight, indptr[:-1]) * (np.diff(indptr) > 0)

    def e_step(
        self, state: EmState, source: int | PosteriorJump, target: int, products: PriorAlphas | None
    ) -> tuple[EStepStatistics, NDArray[np.float64] | None]:
        if isinstance(source, PosteriorJump):
            gamma = source.posteriors((self.slots[0], self.slots[1], self.slots[2]), self.sizes)
        else:
            gamma = self.slots[source]
        log_event, log_item = self.setup.signature_log_likelihoods(state.parameters, state.offsets)
        features = self.features
        updated, statistics = reference_e_step(
            log_event,
            log_item,
            self.setup.event_signatures.index,
            self.setup.item_signature,
            features.weight,
            features.customer_indptr,
            gamma,
            state.mix_prior,
        )
        counted = None
        if products is not None:
            counted = count_products((self.slots[0], gamma, updated), products, self.sizes)
        self.slots[target] = updated
        return statistics, counted

    def keep(self, slot: int) -> None:
        self.slots[0], self.slots[slot] = self.slots[slot], self.slots[0]


def test_the_chunked_threaded_extrapolated_fit_equals_the_reference_one(
    features: EventFeatures, catalog: PersonaCatalog
) -> None:
    """Jumps built per chunk of customers, on threads, from merged events: as from the whole, unmerged."""
    cfg = PersonaInferenceConfig(max_iterations=20, tolerance=0.0, chunk_customers=7, threads=2)
    fitted = fit_behaviour(features, catalog, cfg)
    setup = EmSetup.build(features, catalog, cfg)
    state = EmState.start(setup, len(catalog), cfg)
    reference = _Reference(
        setup, features, state.mix_prior.starting_posterior(features.weight, features.customer_indptr)
    )
    run = run_em(setup, cfg, reference, state)
    assert fitted.iterations == run.iterations == cfg.max_iterations
    assert fitted.objective_per_event == pytest.approx(run.objective_per_event, rel=1e-9)
    assert np.allclose(fitted.behaviour.parameters, run.state.parameters, rtol=1e-7, atol=1e-8)
    assert np.allclose(fitted.gamma, reference.slots[0], rtol=1e-7, atol=1e-7)
    assert np.allclose(fitted.behaviour.mix_prior.alphas, run.state.mix_prior.alphas, rtol=1e-7)


def _cycle_posteriors(
    rng: np.random.Generator, sizes: NDArray[np.float64], k: int
) -> tuple[tuple[NDArray[np.float64], ...], tuple[NDArray[np.float64], ...]]:
    """Three posteriors as the E-step writes them: prior alphas plus counts summing to each size."""
    gammas, built_on = [], []
    for _ in range(3):
        alphas = rng.uniform(0.05, 3.0, (k, k))
        shares = rng.dirichlet(np.ones(k), (k, sizes.size)).transpose(0, 2, 1)
        gammas.append(alphas[:, :, None] + shares * sizes[None, None, :])
        built_on.append(alphas)
    return tuple(gammas), tuple(built_on)


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 5), n=st.integers(1, 8), step=st.floats(1.0, 50.0), seed=st.integers(0, 2**32 - 1))
def test_jumped_posteriors_are_posteriors_of_the_customers_events(
    k: int, n: int, step: float, seed: int
) -> None:
    """Counts stay >= 0 and sum to the customer's weight per component; a step of 1 lands on gamma2."""
    rng = np.random.default_rng(seed)
    sizes = rng.choice([0.0, 1.0, 2.5, 40.0], n)
    gammas, built_on = _cycle_posteriors(rng, sizes, k)
    alphas = rng.uniform(0.05, 3.0, (k, k))
    jump = PosteriorJump(step, (built_on[0], built_on[1], built_on[2]), alphas)
    counts = jump.posteriors((gammas[0], gammas[1], gammas[2]), sizes) - alphas[:, :, None]
    assert (counts >= 0).all()
    assert np.allclose(counts.sum(axis=1), np.broadcast_to(sizes, (k, n)))
    landed = PosteriorJump(1.0, jump.built_on, built_on[2]).posteriors(
        (gammas[0], gammas[1], gammas[2]), sizes
    )
    assert np.allclose(landed, gammas[2])


@settings(max_examples=30, deadline=None)
@given(step=st.floats(1.0, 30.0), seed=st.integers(0, 2**32 - 1))
def test_a_jumped_state_is_a_valid_one(
    features: EventFeatures, catalog: PersonaCatalog, step: float, seed: int
) -> None:
    """Event-level distributions sum to 1 per group, the prior is a mix prior; step 1 gives x2 back."""
    rng = np.random.default_rng(seed)
    space = EmSetup.build(features, catalog, PersonaInferenceConfig()).space
    k = len(catalog)
    states = []
    for _ in range(3):
        parameters = rng.normal(0.0, 1.0, (space.n_columns, k))
        for group in space.groups:
            if not group.item_level and group.kind is GroupKind.CATEGORICAL:
                block = parameters[group.start : group.start + len(group.values)]
                block -= np.log(np.exp(block).sum(axis=0))
        prior = MixPrior.mostly_one(rng.dirichlet(np.ones(k)), rng.uniform(0.5, 30.0), rng.uniform(0.2, 0.9))
        states.append(state_coordinates(parameters, prior))
    parameters, prior = jumped_state(space, (states[0], states[1], states[2]), step)
    assert np.isfinite(parameters).all() and np.isclose(prior.weights.sum(), 1.0)
    for group in space.groups:
        if not group.item_level and group.kind is GroupKind.CATEGORICAL:
            block = parameters[group.start : group.start + len(group.values)]
            assert np.allclose(np.exp(block).sum(axis=0), 1.0)
    parameters, prior = jumped_state(space, (states[0], states[1], states[2]), 1.0)
    assert np.allclose(parameters, states[2][0])
    assert np.allclose(np.log(prior.weights), states[2][1]) and np.allclose(
        np.log(prior.alphas[0, :2]), states[2][2]
    )


def test_the_step_is_plain_unless_the_steps_contract_and_stays_within_its_bound() -> None:
    assert step_length(np.array([1.0, 0.5, 1.0]), 16.0) == 1.0  # r and v point the same way
    assert step_length(np.array([1.0, -0.25, 1.0]), 16.0) == 4.0
    assert step_length(np.array([1.0, -0.01, 1.0]), 16.0) == 16.0
    assert step_length(np.array([1.0, -2.0, 9.0]), 16.0) == 1.0  # shorter than a plain step
    assert step_length(np.array([np.nan, -1.0, 1.0]), 16.0) == 1.0
