"""The compiled variational step against the formulas written out per group with numpy."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import digamma, gammaln

from engine.personas.inference.mix_posterior import event_responsibilities, mix_posterior_step
from engine.personas.inference.mix_prior import MixPrior


def _reference(likelihoods, weight, indptr, gamma, prior, log_weights):  # type: ignore[no-untyped-def]
    """Per component and group: LDA-style expected counts, the bound, component probabilities, and
    each event's persona posterior averaged over components."""
    n_components, k, n_groups = gamma.shape
    updated = np.empty_like(gamma)
    bounds = np.empty((n_components, n_groups))
    posteriors = np.empty((n_components, k, likelihoods.shape[1]))
    for c in range(n_components):
        alpha = prior.alphas[c]
        for g in range(n_groups):
            lo, hi = indptr[g], indptr[g + 1]
            expected_log = digamma(gamma[c, :, g]) - digamma(gamma[c, :, g].sum())
            joint = np.exp(expected_log)[:, None] * likelihoods[:, lo:hi]
            total = joint.sum(axis=0)
            posteriors[c, :, lo:hi] = joint / total
            updated[c, :, g] = alpha + (joint / total * weight[lo:hi]).sum(axis=1)
            bounds[c, g] = (
                gammaln(alpha.sum()) - gammaln(alpha).sum() - gammaln(gamma[c, :, g].sum())
                + gammaln(gamma[c, :, g]).sum() + ((alpha - gamma[c, :, g]) * expected_log).sum()
                + (weight[lo:hi] * np.log(total)).sum()
            )  # fmt: skip
    scores = log_weights + bounds
    component = np.exp(scores - scores.max(axis=0))
    component /= component.sum(axis=0)
    owner = np.repeat(np.arange(n_groups), np.diff(indptr))
    responsibilities = (posteriors * component[:, None, owner]).sum(axis=0) * weight
    return updated, component, responsibilities


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
    weight = rng.random(n) * 3.0 + 0.1
    prior = MixPrior.mostly_one(np.full(k, 1.0 / k), 4.0, 0.6)
    gamma = prior.starting_posterior(weight, indptr) + rng.random((len(prior.alphas), k, len(lengths)))
    log_weights = prior.log_weights()
    step = mix_posterior_step(likelihoods, weight, indptr, gamma, prior, log_weights, keep_tilts=True)
    updated, component, responsibilities = _reference(likelihoods, weight, indptr, gamma, prior, log_weights)
    assert np.allclose(step.gamma, updated, rtol=1e-10, atol=1e-12)
    assert np.allclose(step.component, component, rtol=1e-9, atol=1e-12)
    got = event_responsibilities(likelihoods, weight, indptr, step)
    assert np.allclose(got, responsibilities, rtol=1e-9, atol=1e-12)
    assert np.allclose(got.sum(axis=0), weight)  # each event's weight is shared out, nothing lost
