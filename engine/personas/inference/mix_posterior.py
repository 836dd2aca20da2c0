"""Variational Bayes for customers' mixes under a ``MixPrior``: one coordinate-ascent step at a time.

Mixes are posterior means under the mixture-of-Dirichlets prior rather than point estimates, which
shrinks customers with three events towards the personas' typical shapes rather than towards one
average shopper. The EM fit runs one step per iteration; fold-in repeats steps until mixes settle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np
from numpy.typing import NDArray
from scipy.special import digamma, gammaln

from engine.personas.inference.mix_prior import MixPrior
from engine.personas.inference.segments import sum_segments


@dataclass(frozen=True)
class MixPosterior:
    """Variational posterior of groups' mixes (customers) under a MixPrior, one Dirichlet per component.

    gamma:        (components x personas x groups) variational Dirichlet parameters.
    component:    (components x groups) posterior probability of each component.
    log_evidence: (groups,) the variational bound on log p(events | prior), events' scales excluded.
    """

    gamma: NDArray[np.float64]
    component: NDArray[np.float64]
    log_evidence: NDArray[np.float64]
    # (components x personas x groups) exp(E[log theta] - its max) under the gamma the step started
    # from, kept on request for ``event_responsibilities`` (saves recomputing the digammas).
    tilts: NDArray[np.float64] | None = field(default=None, repr=False)

    @property
    def mean(self) -> NDArray[np.float64]:
        """(groups x personas) posterior mean mixes."""
        means = self.gamma / self.gamma.sum(axis=1, keepdims=True)
        return np.ascontiguousarray(np.einsum("cn,ckn->nk", self.component, means), dtype=np.float64)


def mix_posterior_step(
    likelihoods: NDArray[np.float64],
    weight: NDArray[np.float64],
    indptr: NDArray[np.int64],
    gamma: NDArray[np.float64],
    prior: MixPrior,
    log_weights: NDArray[np.float64],
    *,
    keep_tilts: bool = False,
) -> MixPosterior:
    """One coordinate-ascent update of every group's posterior, per prior component.

    ``likelihoods`` is (personas x events), each event's scaled by a constant, events of a group
    contiguous (``indptr``). Per component the events' persona posteriors follow from the current
    ``gamma`` (LDA-style variational Bayes with the per-event weights as counts), the bound is
    evaluated there, and gamma becomes prior plus expected persona counts. Component probabilities
    are ``log_weights`` (components x groups, or x 1) plus each component's bound, normalised.
    """
    n_groups = indptr.size - 1
    sizes = sum_segments(weight[None, :], indptr)[0]
    n_components = gamma.shape[0]
    bounds = np.empty((n_components, n_groups))
    updated = np.empty_like(gamma)
    tilts = np.empty_like(gamma) if keep_tilts else None
    fit = np.empty(n_groups)
    likelihoods = np.ascontiguousarray(likelihoods, dtype=np.float64)
    weight = np.ascontiguousarray(weight, dtype=np.float64)
    for c in range(n_components):
        alpha = prior.alphas[c][:, None]
        expected_log, top, tilt = _expected_log_mix(gamma[c])
        if tilts is not None:
            tilts[c] = tilt
        _expected_counts(likelihoods, weight, indptr, np.ascontiguousarray(tilt), updated[c], fit)
        updated[c] += alpha
        fit += top * sizes
        bounds[c] = (
            gammaln(alpha.sum())
            - gammaln(alpha).sum()
            - gammaln(gamma[c].sum(axis=0))
            + gammaln(gamma[c]).sum(axis=0)
            + ((alpha - gamma[c]) * expected_log).sum(axis=0)
            + fit
        )
    scores = log_weights + bounds
    best = scores.max(axis=0)
    component = np.exp(scores - best)
    normaliser = component.sum(axis=0)
    component /= normaliser
    return MixPosterior(updated, component, np.log(normaliser) + best, tilts)


def _expected_log_mix(
    gamma: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """E[log theta] under Dir(gamma) (personas x groups), its per-group maximum, and exp of the difference."""
    expected_log = digamma(gamma) - digamma(gamma.sum(axis=0))
    top = expected_log.max(axis=0)
    return expected_log, top, np.exp(expected_log - top)


def event_responsibilities(
    likelihoods: NDArray[np.float64],
    weight: NDArray[np.float64],
    indptr: NDArray[np.int64],
    posterior: MixPosterior,
) -> NDArray[np.float64]:
    """(personas x events) each event's persona posterior, averaged over components, times its weight.

    The per-component event posteriors are those the ``mix_posterior_step`` that made ``posterior``
    used (its kept tilts); they are recomputed one component at a time rather than kept, so memory
    stays a few (personas x events) arrays whatever the number of components.
    """
    if posterior.tilts is None:
        raise ValueError("responsibilities need a posterior step run with keep_tilts=True")
    responsibilities = np.zeros(likelihoods.shape)
    _add_responsibilities(
        np.ascontiguousarray(likelihoods, dtype=np.float64),
        np.ascontiguousarray(weight, dtype=np.float64),
        indptr,
        np.ascontiguousarray(posterior.tilts),
        np.ascontiguousarray(posterior.component),
        responsibilities,
    )
    return responsibilities


# The two loops below are the E-step's inner work, compiled: as numpy expressions each pass gathered a
# (personas x events) copy of the groups' tilts and swept it four or five times (on MovieLens 100K the
# gathers alone were a third of persona inference); as loops each event is read once per component.


@numba.njit(cache=True, nogil=True)
def _expected_counts(
    likelihoods: NDArray[np.float64],
    weight: NDArray[np.float64],
    indptr: NDArray[np.int64],
    tilt: NDArray[np.float64],
    counts: NDArray[np.float64],
    fit: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled; tested through ``mix_posterior_step``
    """Per group: expected persona counts of its events under ``tilt`` (into ``counts``, personas x
    groups) and the weighted log of each event's normaliser (into ``fit``)."""
    n_personas = likelihoods.shape[0]
    joint = np.empty(n_personas)
    for g in range(indptr.size - 1):
        for p in range(n_personas):
            counts[p, g] = 0.0
        log_total = 0.0
        for e in range(indptr[g], indptr[g + 1]):
            total = 0.0
            for p in range(n_personas):
                joint[p] = tilt[p, g] * likelihoods[p, e]
                total += joint[p]
            scale = weight[e] / total
            for p in range(n_personas):
                counts[p, g] += joint[p] * scale
            log_total += weight[e] * np.log(total)
        fit[g] = log_total


@numba.njit(cache=True, nogil=True)
def _add_responsibilities(
    likelihoods: NDArray[np.float64],
    weight: NDArray[np.float64],
    indptr: NDArray[np.int64],
    tilts: NDArray[np.float64],
    component: NDArray[np.float64],
    out: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled; tested through ``event_responsibilities``
    """Add each event's persona posterior per component, times the component's probability and the
    event's weight, into ``out`` (personas x events)."""
    n_personas = likelihoods.shape[0]
    joint = np.empty(n_personas)
    for c in range(tilts.shape[0]):
        for g in range(indptr.size - 1):
            share = component[c, g]
            for e in range(indptr[g], indptr[g + 1]):
                total = 0.0
                for p in range(n_personas):
                    joint[p] = tilts[c, p, g] * likelihoods[p, e]
                    total += joint[p]
                scale = share * weight[e] / total
                for p in range(n_personas):
                    out[p, e] += joint[p] * scale
