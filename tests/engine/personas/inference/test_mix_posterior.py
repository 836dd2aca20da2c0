"""The compiled variational step against the formulas written out per group with numpy."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.personas.inference.e_step import e_step
from engine.personas.inference.fold_in import fold_in_mixture
from engine.personas.inference.mix_posterior import MixPosterior
from engine.personas.inference.mix_prior import MixPrior
from tests.engine.personas.inference.variational_reference import variational_step


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(2, 5),
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=6),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_compiled_step_matches_the_formulas(k: int, lengths: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = int(indptr[-1])
    likelihoods = rng.random((k, n)) + 1e-3
    # half the events weigh what repeats and merges weigh (the step sums their logs per kind of weight)
    kinds = rng.choice([1.0, 0.5, 1.0 / 3.0, 0.25, 2.0, 3.0], n)
    weight = np.where(rng.random(n) < 0.5, kinds, rng.random(n) * 3.0 + 0.1)
    prior = MixPrior.mostly_one(np.full(k, 1.0 / k), 4.0, 0.6)
    gamma = prior.starting_posterior(weight, indptr) + rng.random((len(prior.alphas), k, len(lengths)))
    log_weights = prior.log_weights()
    updated, component, evidence, responsibilities = variational_step(
        likelihoods, weight, indptr, gamma, prior, log_weights
    )
    # one step of fold-in is one step of the posterior
    step = fold_in_mixture(likelihoods, weight, indptr, prior, log_weights, 1, gamma)
    assert np.allclose(step.gamma, updated, rtol=1e-10, atol=1e-12)
    assert np.allclose(step.component, component, rtol=1e-9, atol=1e-12)
    assert np.allclose(step.log_evidence, evidence, rtol=1e-10, atol=1e-9)
    # with one event signature per event, the E-step's signature counts are the events' responsibilities
    signatures = np.arange(n, dtype=np.int64)
    one_item = np.zeros(n, dtype=np.int64)
    _, statistics = e_step(
        np.log(likelihoods), np.zeros((k, 1)), signatures, one_item, weight, indptr, gamma, prior
    )
    assert np.allclose(statistics.event_signature_counts, responsibilities, rtol=1e-9, atol=1e-12)
    assert np.allclose(statistics.event_signature_counts.sum(axis=0), weight)  # each weight shared out


def test_the_posterior_mean_mixes_the_components_means() -> None:
    gamma = np.array([[[3.0], [1.0]], [[1.0], [1.0]]])  # component 0: (0.75, 0.25); 1: (0.5, 0.5)
    posterior = MixPosterior(gamma, np.array([[0.5], [0.5]]), np.zeros(1))
    assert np.allclose(posterior.mean, [[0.625, 0.375]])


# Repeated same-day events weigh 1/2, 1/3 or 1/4, merged repeats a whole number: the step sums their
# logs per kind of weight, so every kind (and a weight of no kind) must give the formulas' figures.
_EVENT_WEIGHTS = st.sampled_from([1.0, 0.5, 1.0 / 3.0, 0.25, 2.0, 3.0, 0.7, 1.6])


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(2, 5),
    lengths=st.lists(st.integers(1, 8), min_size=1, max_size=5),
    weights=st.lists(_EVENT_WEIGHTS, min_size=40, max_size=40),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_converged_fold_in_is_a_fixed_point_of_the_formulas(
    k: int, lengths: list[int], weights: list[float], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = int(indptr[-1])
    likelihoods = rng.random((k, n)) + 1e-3
    weight = np.array(weights[:n])
    prior = MixPrior.mostly_one(np.full(k, 1.0 / k), 4.0, 0.6)
    log_weights = prior.log_weights()
    # many steps (SQUAREM's extrapolations, the totals carried from step to step) to the fixed point,
    # with a tolerance far below the default's (which stops 1e-4 from it)
    folded = fold_in_mixture(likelihoods, weight, indptr, prior, log_weights, 500, tolerance=1e-7)
    updated, component, evidence, _ = variational_step(
        likelihoods, weight, indptr, folded.gamma, prior, log_weights
    )
    # it stops when the mixes stop moving (the shares of unlikely components settle later)
    assert np.allclose(MixPosterior(updated, component, evidence).mean, folded.mean, atol=1e-4)
    assert np.allclose(evidence, folded.log_evidence, rtol=1e-4, atol=1e-4)
    # and the totals every step keeps: the prior's plus the group's event weight
    sizes = np.add.reduceat(weight, indptr[:-1])
    assert np.allclose(folded.gamma.sum(axis=1), prior.alphas.sum(axis=1)[:, None] + sizes[None, :])
