"""The variational step of the mix posterior written out per component and group with numpy.

Slow and plain on purpose: it is what the compiled steps (``e_step``, ``fold_in_mixture``) are
checked against, and the E-step reference built on it is the numpy E-step the compiled one replaced.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.special import digamma, gammaln

from engine.personas.inference.e_step import EStepStatistics
from engine.personas.inference.mix_prior import MixPrior, MixPriorStatistics


def variational_step(
    likelihoods: NDArray[np.float64],
    weight: NDArray[np.float64],
    indptr: NDArray[np.int64],
    gamma: NDArray[np.float64],
    prior: MixPrior,
    log_weights: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """New gamma, component probabilities, log evidence per group and each event's persona posterior
    averaged over components times its weight (personas x events)."""
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
    best = scores.max(axis=0)
    component = np.exp(scores - best)
    normaliser = component.sum(axis=0)
    component /= normaliser
    owner = np.repeat(np.arange(n_groups), np.diff(indptr))
    responsibilities = (posteriors * component[:, None, owner]).sum(axis=0) * weight
    return updated, component, np.log(normaliser) + best, responsibilities


def prior_statistics(
    gamma: NDArray[np.float64], component: NDArray[np.float64], active: NDArray[np.bool_]
) -> MixPriorStatistics:
    """The mix prior's sums over the active groups' posteriors (``MixPriorStatistics`` documents them)."""
    share = component[:, active]
    k = share.shape[0]
    if share.shape[1] == 0 or k == 1:
        return MixPriorStatistics(int(share.shape[1]), share.sum(axis=1), float(share.sum()), 0.0, 0.0)
    kept = gamma[:, :, active]
    expected_log = digamma(kept) - digamma(kept.sum(axis=1, keepdims=True))
    on_dominant = expected_log[np.arange(k), np.arange(k), :]
    on_minors = expected_log.sum(axis=1) - on_dominant
    return MixPriorStatistics(
        int(share.shape[1]),
        share.sum(axis=1),
        float(share.sum()),
        float((share * on_dominant).sum()),
        float((share * on_minors).sum()),
    )


def reference_e_step(
    log_event: NDArray[np.float64],
    log_item: NDArray[np.float64],
    event_signature: NDArray[np.int64],
    item_signature: NDArray[np.int64],
    weight: NDArray[np.float64],
    indptr: NDArray[np.int64],
    gamma: NDArray[np.float64],
    mix_prior: MixPrior,
) -> tuple[NDArray[np.float64], EStepStatistics]:
    """The E-step over (personas x events) arrays, as the fit ran it before it was compiled."""
    joint = np.take(log_event, event_signature, axis=1) + np.take(log_item, item_signature, axis=1)
    scale = joint.max(axis=0) if joint.shape[1] else np.zeros(0)
    joint = np.exp(joint - scale)
    updated, component, evidence, responsibilities = variational_step(
        joint, weight, indptr, gamma, mix_prior, mix_prior.log_weights()
    )
    sizes = np.array([weight[indptr[g] : indptr[g + 1]].sum() for g in range(indptr.size - 1)])
    active = sizes > 0
    event_counts = np.zeros((log_event.shape[0], log_event.shape[1]))
    item_counts = np.zeros((log_item.shape[0], log_item.shape[1]))
    np.add.at(event_counts.T, event_signature, responsibilities.T)
    np.add.at(item_counts.T, item_signature, responsibilities.T)
    return updated, EStepStatistics(
        float(evidence[active].sum() + weight @ scale),
        event_counts,
        item_counts,
        prior_statistics(updated, component, active),
    )
