"""Fold-in: mixes of new groups of events with the persona behaviour held fixed, without refitting.

Two kinds, both needed by serving, cold start and drift: under the fitted mix prior (a customer's
overall mix, ``fold_in_mixture``), and a MAP mix around a given centre (a context's mix around the
customer's overall mix, or recent events around the long-term mix, ``fold_in``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.personas.inference.mix_posterior import MixPosterior, mix_posterior_step
from engine.personas.inference.mix_prior import MixPrior
from engine.personas.inference.segments import owners, select_groups, sum_segments

_FOLD_IN_TOLERANCE = 1e-6
# Mixture fold-in stops when no mix moves by more than this: each step costs one pass per persona over
# all events, and the last digits of a posterior mean change nothing downstream (1e-6 took 30 steps
# on the default shop, this 20, for mixes within 2e-5 of each other).
_MIX_FOLD_IN_TOLERANCE = 1e-5


def scaled_likelihoods(
    matrix: sp.csr_matrix, parameters: NDArray[np.float64], offsets: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(personas x events) likelihoods, each event's divided by its maximum, and the log of that maximum.

    Personas-by-events layout keeps the per-event reductions over a handful of personas vectorised.
    """
    scaled = np.ascontiguousarray(np.asarray(matrix @ parameters).T)
    scaled += offsets[:, None]
    scale = scaled.max(axis=0)
    scaled -= scale
    np.exp(scaled, out=scaled)
    return scaled, scale


def fold_in(
    likelihoods: NDArray[np.float64],
    weight: NDArray[np.float64],
    group_of_event: NDArray[np.int64],
    centre: NDArray[np.float64],
    strength: float,
    iterations: int,
    tolerance: float = _FOLD_IN_TOLERANCE,
) -> NDArray[np.float64]:
    """MAP (groups x personas) mixes of groups of events with the persona behaviour held fixed.

    ``likelihoods`` is (personas x events). Each group's mix has a Dirichlet prior centred on its row
    of ``centre`` worth ``strength`` pseudo-events, so a group without events keeps its centre and a
    group with few moves only a little.
    """
    n_groups = centre.shape[0]
    order = np.argsort(group_of_event, kind="stable")  # groups contiguous: gathers and sums become segments
    likelihoods, weight = likelihoods[:, order], weight[order]
    lengths = np.bincount(group_of_event, minlength=n_groups)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    sizes = sum_segments(weight[None, :], indptr)[0]
    prior = strength * np.ascontiguousarray(centre.T)
    theta_all = np.array(centre.T, dtype=np.float64, order="C")  # a copy: filled in place below
    # Groups without events keep their centre; the others iterate until their own mix settles (each
    # group's update depends only on its own events, so settled groups drop out of later passes).
    moving = np.flatnonzero(lengths > 0)
    indptr = np.concatenate([[0], np.cumsum(lengths[moving])]).astype(np.int64)  # every event stays
    prior, sizes, theta = prior[:, moving], sizes[moving], theta_all[:, moving]
    for _ in range(iterations):
        if moving.size == 0:
            break
        joint = np.take(theta, owners(indptr), axis=1)
        joint *= likelihoods
        joint *= weight / joint.sum(axis=0)
        updated = (sum_segments(joint, indptr) + prior) / (sizes + strength)
        still = np.abs(updated - theta).max(axis=0) >= tolerance
        theta_all[:, moving] = updated
        theta = updated
        if not still.all():
            moving = moving[still]
            likelihoods, weight, indptr = select_groups(likelihoods, weight, indptr, still)
            prior, sizes, theta = prior[:, still], sizes[still], theta[:, still]
    return np.ascontiguousarray(theta_all.T, dtype=np.float64)


def fold_in_mixture(
    likelihoods: NDArray[np.float64],
    weight: NDArray[np.float64],
    indptr: NDArray[np.int64],
    prior: MixPrior,
    log_weights: NDArray[np.float64],
    iterations: int,
    gamma: NDArray[np.float64] | None = None,
) -> MixPosterior:
    """Posterior mixes of groups of contiguous events with the persona behaviour held fixed.

    Iterates ``mix_posterior_step`` per group until its mix moves by less than
    ``_MIX_FOLD_IN_TOLERANCE`` (or ``iterations`` steps); a group without events keeps the prior
    mean of its component weights. Groups are independent given the persona behaviour, so each stops
    on its own and later steps cover only the groups still moving: a single slow customer used to keep
    all the others iterating (on 200,000 customers, 95 steps over every customer where most converge
    in a few). It also makes a customer's mix independent of who else is in the batch.
    """
    state = prior.starting_posterior(weight, indptr) if gamma is None else gamma
    posterior = mix_posterior_step(likelihoods, weight, indptr, state, prior, log_weights)
    gamma_all, component, evidence = posterior.gamma, posterior.component, posterior.log_evidence
    mean = posterior.mean
    moving = np.arange(mean.shape[0])
    for _ in range(iterations - 1):
        if moving.size == 0:
            break
        step = mix_posterior_step(likelihoods, weight, indptr, gamma_all[:, :, moving], prior, log_weights)
        step_mean = step.mean
        moved = np.abs(step_mean - mean[moving]).max(axis=1)
        gamma_all[:, :, moving] = step.gamma
        component[:, moving] = step.component
        evidence[moving] = step.log_evidence
        mean[moving] = step_mean
        still = moved >= _MIX_FOLD_IN_TOLERANCE
        if not still.all():
            moving = moving[still]
            likelihoods, weight, indptr = select_groups(likelihoods, weight, indptr, still)
            if log_weights.shape[1] > 1:
                log_weights = log_weights[:, still]
    return MixPosterior(gamma_all, component, evidence)
