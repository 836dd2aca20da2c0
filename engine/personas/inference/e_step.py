"""The E-step of the persona EM, compiled: one pass per customer, no (personas x events) arrays.

For each customer the step reads the customer's events once to build their likelihoods from the
per-signature tables, runs one variational update of the customer's mix posterior (``mix_posterior``
documents the formulas), and reads them once more to add each event's persona responsibilities to the
signature counts the M-step needs. Everything per customer (digammas, log-gammas, the component
posterior) happens inside the loop, so the step costs a small constant per event and per customer,
and its memory is a few arrays of the longest customer's length: nothing grows with the shop.

As numpy expressions over all events this step gathered and swept several (personas x events) arrays
per iteration (on MovieLens 100K, 37 ms an iteration and 7.4 of the fit's 8.4 seconds; on 10 million
events, 400 MB an array). It is one compiled loop here, and the fit runs it on chunks of customers,
adding the chunks' statistics as a distributed fit adds its partitions'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import NDArray

from engine.personas.inference.mix_prior import MixPrior, MixPriorStatistics

# A customer's event likelihoods are rescaled when the largest falls below this (the product of two
# per-signature tables, each with maximum 1, is far from it unless personas disagree by 340 nats).
_RESCALE_BELOW = 1e-150
_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class EStepStatistics:
    """What one E-step over a set of customers hands the M-step: sums that add up across customers.

    The local fit computes them per chunk of customers and a distributed fit per partition, then adds
    them (``+``), so both run the same M-step on the same sums.
    """

    log_likelihood: float
    event_signature_counts: NDArray[np.float64]  # (personas x event signatures)
    item_signature_counts: NDArray[np.float64]  # (personas x item signatures)
    prior: MixPriorStatistics

    def __add__(self, other: EStepStatistics) -> EStepStatistics:
        return EStepStatistics(
            self.log_likelihood + other.log_likelihood,
            self.event_signature_counts + other.event_signature_counts,
            self.item_signature_counts + other.item_signature_counts,
            self.prior + other.prior,
        )


def merged_events(
    event_signature: NDArray[np.int64],
    item_signature: NDArray[np.int64],
    weight: NDArray[np.float64],
    indptr: NDArray[np.int64],
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], NDArray[np.int64]]:
    """Each customer's events with the same event and item signature merged into one, weights added.

    Such events have the same likelihoods, and every sum of the E-step is linear in an event's
    weight, so the step gives the same result (up to rounding) on fewer events: a third fewer on
    MovieLens 100K, where people rate several films of the same genres.
    """
    n = indptr.size - 1
    owner = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    n_events = int(event_signature.max(initial=-1)) + 1
    n_items = int(item_signature.max(initial=-1)) + 1
    key = (owner * n_events + event_signature) * n_items + item_signature
    distinct, inverse = np.unique(key, return_inverse=True)
    merged_weight = np.bincount(inverse.ravel(), weights=weight, minlength=distinct.size).astype(np.float64)
    item = distinct % max(n_items, 1)
    rest = distinct // max(n_items, 1)
    merged_owner = rest // max(n_events, 1)
    merged_indptr = np.searchsorted(merged_owner, np.arange(n + 1)).astype(np.int64)
    merged_event = np.asarray(rest % max(n_events, 1), dtype=np.int64)
    return merged_event, np.asarray(item, dtype=np.int64), merged_weight, merged_indptr


def signature_likelihoods(
    log_likelihoods: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(signatures x personas) likelihoods, each signature's divided by its maximum, and the log of that.

    An event's likelihood under persona p is the product of its event signature's and its item
    signature's; scaling each table by its own maximum keeps both in (0, 1] without a per-event exp.
    """
    scale = log_likelihoods.max(axis=0) if log_likelihoods.shape[1] else np.zeros(0)
    scaled = np.ascontiguousarray((log_likelihoods - scale).T)
    np.exp(scaled, out=scaled)
    return scaled, np.ascontiguousarray(scale, dtype=np.float64)


@dataclass(frozen=True)
class SignatureTables:
    """One iteration's event-signature and item-signature likelihood tables (``signature_likelihoods``).

    Built once per iteration and shared, read-only, by the E-steps of every chunk of customers.
    """

    event_lik: NDArray[np.float64]  # (event signatures x personas)
    event_scale: NDArray[np.float64]
    item_lik: NDArray[np.float64]  # (item signatures x personas)
    item_scale: NDArray[np.float64]

    @classmethod
    def of(cls, log_event: NDArray[np.float64], log_item: NDArray[np.float64]) -> SignatureTables:
        return cls(*signature_likelihoods(log_event), *signature_likelihoods(log_item))


def e_step(
    log_event: NDArray[np.float64],
    log_item: NDArray[np.float64],
    event_signature: NDArray[np.int64],
    item_signature: NDArray[np.int64],
    weight: NDArray[np.float64],
    indptr: NDArray[np.int64],
    gamma: NDArray[np.float64],
    mix_prior: MixPrior,
) -> tuple[NDArray[np.float64], EStepStatistics]:
    """One E-step over a set of whole customers (events contiguous per customer, ``indptr``).

    ``log_event`` (personas x event signatures) and ``log_item`` (personas x item signatures) are
    the two parts of every event's log-likelihood; ``gamma`` (components x personas x customers) the
    customers' variational posteriors to start from. Returns their updated posteriors and the sums.
    """
    tables = SignatureTables.of(log_event, log_item)
    return tabled_e_step(tables, event_signature, item_signature, weight, indptr, gamma, mix_prior)


def tabled_e_step(
    tables: SignatureTables,
    event_signature: NDArray[np.int64],
    item_signature: NDArray[np.int64],
    weight: NDArray[np.float64],
    indptr: NDArray[np.int64],
    gamma: NDArray[np.float64],
    mix_prior: MixPrior,
) -> tuple[NDArray[np.float64], EStepStatistics]:
    """``e_step`` with the iteration's tables already built; releases the GIL while it computes."""
    k = tables.event_lik.shape[1]
    n_components = mix_prior.alphas.shape[0]
    event_counts = np.zeros((tables.event_lik.shape[0], k))
    item_counts = np.zeros((tables.item_lik.shape[0], k))
    component_sums = np.zeros(n_components)
    sums = np.zeros(5)  # log-likelihood, customers, mass, on dominant, on minors
    updated = np.empty(gamma.shape, dtype=np.float64)
    _em_e_step(
        tables.event_lik,
        tables.event_scale,
        tables.item_lik,
        tables.item_scale,
        np.ascontiguousarray(event_signature, dtype=np.int64),
        np.ascontiguousarray(item_signature, dtype=np.int64),
        np.ascontiguousarray(weight, dtype=np.float64),
        np.ascontiguousarray(indptr, dtype=np.int64),
        np.asarray(gamma, dtype=np.float64),
        np.ascontiguousarray(mix_prior.alphas, dtype=np.float64),
        np.ascontiguousarray(mix_prior.log_weights(), dtype=np.float64),
        updated,
        event_counts,
        item_counts,
        component_sums,
        sums,
    )
    on_dominant, on_minors = (float(sums[3]), float(sums[4])) if k > 1 else (0.0, 0.0)
    prior = MixPriorStatistics(int(sums[1]), component_sums, float(sums[2]), on_dominant, on_minors)
    return updated, EStepStatistics(float(sums[0]), event_counts.T.copy(), item_counts.T.copy(), prior)


@numba.njit(cache=True, nogil=True)
def digamma(x: float) -> float:  # pragma: no cover - compiled; tested against scipy in test_e_step
    """The digamma function for x > 0 (within 3e-15 of scipy); see ``log_gamma_and_digamma``."""
    return log_gamma_and_digamma(x)[1]


@numba.njit(cache=True, nogil=True)
def log_gamma_and_digamma(x: float) -> tuple[float, float]:  # pragma: no cover - compiled; tested vs scipy
    """lnG(x) and digamma(x) for x > 0 together: one recurrence up to 8 and one log of x serve both.

    The customer step needs both of every Dirichlet parameter (a few dozen per customer and step,
    most of a million-customer fold-in); apart they cost two recurrences and three logs. Stirling's
    series for lnG and the asymptotic series for digamma are within 1e-14 of scipy from 8 on.
    """
    log_gamma, digamma_value, shift = shifted_log_gamma_and_digamma(x)
    if shift != 1.0:
        log_gamma -= math.log(shift)
    return log_gamma, digamma_value


@numba.njit(cache=True, nogil=True)
def shifted_log_gamma_and_digamma(x: float) -> tuple[float, float, float]:  # pragma: no cover - compiled
    """(lnG(x) + log(shift), digamma(x), shift): ``log_gamma_and_digamma`` without lnG's last log.

    shift is x (x + 1) ... up to 8, the recurrence's product. A caller that adds up the lnG of several
    parameters (a Dirichlet's normaliser) subtracts one log of the product of their shifts instead of
    one log each: a fifth of the transcendental calls of the customer step, 15-30% of its time.
    """
    numerator = 0.0
    denominator = 1.0
    while x < 8.0:
        numerator = numerator * x + denominator
        denominator *= x
        x += 1.0
    log_x = math.log(x)
    inverse = 1.0 / x
    inv2 = inverse * inverse
    digamma_series = inv2 * (
        1.0 / 12.0
        - inv2
        * (
            1.0 / 120.0
            - inv2
            * (
                1.0 / 252.0
                - inv2
                * (
                    1.0 / 240.0
                    - inv2
                    * (1.0 / 132.0 - inv2 * (691.0 / 32760.0 - inv2 * (1.0 / 12.0 - inv2 * 3617.0 / 8160.0)))
                )
            )
        )
    )
    stirling = inverse * (
        1.0 / 12.0
        - inv2
        * (
            1.0 / 360.0
            - inv2
            * (
                1.0 / 1260.0
                - inv2 * (1.0 / 1680.0 - inv2 * (1.0 / 1188.0 - inv2 * (691.0 / 360360.0 - inv2 / 156.0)))
            )
        )
    )
    log_gamma = (x - 0.5) * log_x - x + _HALF_LOG_TWO_PI + stirling
    return log_gamma, log_x - 0.5 * inverse - digamma_series - numerator / denominator, denominator


@numba.njit(cache=True, nogil=True)
def prior_constants(alphas: NDArray[np.float64]) -> NDArray[np.float64]:  # pragma: no cover - compiled
    """(components,) log of each prior Dirichlet's normaliser: lnG(sum alpha) - sum lnG(alpha)."""
    out = np.empty(alphas.shape[0])
    for c in range(alphas.shape[0]):
        total = 0.0
        value = 0.0
        for p in range(alphas.shape[1]):
            total += alphas[c, p]
            value -= math.lgamma(alphas[c, p])
        out[c] = value + math.lgamma(total)
    return out


@numba.njit(cache=True, nogil=True)
def gamma_totals(
    gamma: NDArray[np.float64], total_log_gamma: NDArray[np.float64], total_digamma: NDArray[np.float64]
) -> None:  # pragma: no cover - compiled; tested through ``e_step`` and the fold-in
    """lnG and digamma of each component's total of ``gamma`` (components x personas): ``customer_step``'s."""
    for c in range(gamma.shape[0]):
        total = 0.0
        for p in range(gamma.shape[1]):
            total += gamma[c, p]
        total_log_gamma[c], total_digamma[c] = log_gamma_and_digamma(total)


@numba.njit(cache=True, nogil=True)
def posterior_totals(
    alphas: NDArray[np.float64],
    weight: NDArray[np.float64],
    total_log_gamma: NDArray[np.float64],
    total_digamma: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled; tested through the fold-in
    """lnG and digamma of each component's posterior total, the same at every step of a fold-in.

    A step's update adds exactly the customer's event weight to each component's prior total (the
    responsibilities of an event sum to its weight), and the starting posterior and SQUAREM's
    extrapolations keep that total, so a fold-in computes these once per customer instead of once
    per step (a sixth of the step's special functions). The EM's steps cannot: the prior is refitted
    between them.
    """
    size = 0.0
    for e in range(weight.size):
        size += weight[e]
    for c in range(alphas.shape[0]):
        total = size
        for p in range(alphas.shape[1]):
            total += alphas[c, p]
        total_log_gamma[c], total_digamma[c] = log_gamma_and_digamma(total)


@numba.njit(cache=True, nogil=True)
def customer_step(
    likelihoods: NDArray[np.float64],
    weight: NDArray[np.float64],
    gamma: NDArray[np.float64],
    alphas: NDArray[np.float64],
    constants: NDArray[np.float64],
    log_weights: NDArray[np.float64],
    total_log_gamma: NDArray[np.float64],
    total_digamma: NDArray[np.float64],
    tilt: NDArray[np.float64],
    inverse_totals: NDArray[np.float64],
    updated: NDArray[np.float64],
    component: NDArray[np.float64],
) -> float:  # pragma: no cover - compiled; tested through ``e_step`` and the fold-in
    """One variational update of one customer's mix posterior; returns the customer's log evidence.

    ``likelihoods`` (personas x events) and ``weight`` are the customer's events, ``gamma``
    (components x personas) where the posterior starts, ``total_log_gamma`` and ``total_digamma``
    lnG and digamma of each component's total of it (``gamma_totals``; within a fold-in they stay
    ``posterior_totals``). Writes ``updated`` (the new gamma),
    ``component`` (the posterior component probabilities), ``tilt`` (exp of E[log theta] minus its
    maximum, per component) and ``inverse_totals`` (components x events: each event's weight over its
    normaliser), which responsibilities need. The formulas are those of
    ``mix_posterior.mix_posterior_step`` for a single group; loops run over events innermost so that
    they vectorise, and the logs of the events' normalisers are taken of running products.
    """
    n_components, n_personas = gamma.shape
    n_events = weight.size
    size = 0.0
    for e in range(n_events):
        size += weight[e]
    best = -np.inf
    for c in range(n_components):
        shared = total_digamma[c]
        top = -np.inf
        bound = constants[c] - total_log_gamma[c]
        shifts = 1.0  # the parameters' recurrence shifts, multiplied: one log for all (see above)
        for p in range(n_personas):
            log_gamma, digamma_value, shift = shifted_log_gamma_and_digamma(gamma[c, p])
            shifts *= shift
            if not 1e-150 < shifts < 1e150:  # tiny or many parameters: take the log before it under/overflows
                bound -= math.log(shifts)
                shifts = 1.0
            expected_log = digamma_value - shared
            tilt[c, p] = expected_log
            top = max(top, expected_log)
            bound += log_gamma + (alphas[c, p] - gamma[c, p]) * expected_log
        if shifts != 1.0:
            bound -= math.log(shifts)
        for p in range(n_personas):
            tilt[c, p] = math.exp(tilt[c, p] - top)
        totals = inverse_totals[c]
        for e in range(n_events):
            totals[e] = 0.0
        for p in range(n_personas):
            factor = tilt[c, p]
            row = likelihoods[p]
            for e in range(n_events):
                totals[e] += factor * row[e]
        fit = top * size + _weighted_log_sum(totals, weight)
        for e in range(n_events):
            totals[e] = weight[e] / totals[e]
        for p in range(n_personas):
            row = likelihoods[p]
            expected = 0.0
            for e in range(n_events):
                expected += row[e] * totals[e]
            updated[c, p] = alphas[c, p] + tilt[c, p] * expected
        component[c] = log_weights[c] + bound + fit
        best = max(best, component[c])
    normaliser = 0.0
    for c in range(n_components):
        component[c] = math.exp(component[c] - best)
        normaliser += component[c]
    for c in range(n_components):
        component[c] /= normaliser
    return math.log(normaliser) + best


@numba.njit(cache=True, nogil=True, inline="always")
def _weighted_log_sum(values: NDArray[np.float64], weight: NDArray[np.float64]) -> float:  # pragma: no cover
    """sum(weight * log(values)), one log per kind of weight rather than one per event.

    Most events weigh 1, merged repeats a small whole number, and an event repeated the same day
    1/2, 1/3 or 1/4 (``_repeat_weights``): each kind keeps a running product whose log, times the
    weight, joins the sum once. A log per event per component was the step's largest cost, and a
    quarter of a generated shop's events weigh a fraction. Products are folded into the sum before
    they can over- or underflow.
    """
    result = 0.0
    product = 1.0  # weights 1 and small whole numbers
    halves = 1.0
    thirds = 1.0
    quarters = 1.0
    for e in range(values.size):
        w = weight[e]
        value = values[e]
        if w == 1.0:
            product *= value
        elif w == 0.5:
            halves *= value
        elif w == 1.0 / 3.0:
            thirds *= value
        elif w == 0.25:
            quarters *= value
        elif w <= 8.0 and w == math.floor(w):
            for _ in range(int(w)):
                product *= value
        else:
            result += w * math.log(value)
        if not 1e-150 < product < 1e150:
            result += math.log(product)
            product = 1.0
        if not 1e-150 < halves * thirds * quarters < 1e150:
            result += 0.5 * math.log(halves) + math.log(thirds) / 3.0 + 0.25 * math.log(quarters)
            halves = thirds = quarters = 1.0
    result += math.log(product)
    if halves != 1.0:
        result += 0.5 * math.log(halves)
    if thirds != 1.0:
        result += math.log(thirds) / 3.0
    if quarters != 1.0:
        result += 0.25 * math.log(quarters)
    return result


@numba.njit(cache=True, nogil=True)
def _em_e_step(
    event_lik: NDArray[np.float64],
    event_scale: NDArray[np.float64],
    item_lik: NDArray[np.float64],
    item_scale: NDArray[np.float64],
    event_signature: NDArray[np.int64],
    item_signature: NDArray[np.int64],
    weight: NDArray[np.float64],
    indptr: NDArray[np.int64],
    gamma: NDArray[np.float64],
    alphas: NDArray[np.float64],
    log_weights: NDArray[np.float64],
    updated: NDArray[np.float64],
    event_counts: NDArray[np.float64],
    item_counts: NDArray[np.float64],
    component_sums: NDArray[np.float64],
    sums: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled; tested through ``e_step``
    """The E-step over customers ``indptr``; adds into the counts, ``component_sums`` and ``sums``."""
    n_components, n_personas = alphas.shape
    constants = prior_constants(alphas)
    longest = 0
    for g in range(indptr.size - 1):
        longest = max(longest, indptr[g + 1] - indptr[g])
    # flat buffers, viewed per customer as C-contiguous (rows x events): strided views do not vectorise
    likelihood_buffer = np.empty(n_personas * longest)
    inverse_buffer = np.empty(n_components * longest)
    responsibility = np.empty(longest)
    tilt = np.empty((n_components, n_personas))
    start_gamma = np.empty((n_components, n_personas))
    new_gamma = np.empty((n_components, n_personas))
    component = np.empty(n_components)
    total_log_gamma = np.empty(n_components)
    total_digamma = np.empty(n_components)
    per_customer_weights = log_weights.shape[1] > 1
    for g in range(indptr.size - 1):
        start, stop = indptr[g], indptr[g + 1]
        n_events = stop - start
        likelihoods = likelihood_buffer[: n_personas * n_events].reshape((n_personas, n_events))
        inverse_totals = inverse_buffer[: n_components * n_events].reshape((n_components, n_events))
        size = 0.0
        scale_total = 0.0
        for i in range(n_events):
            e = start + i
            event, item = event_signature[e], item_signature[e]
            top = 0.0
            for p in range(n_personas):
                value = event_lik[event, p] * item_lik[item, p]
                likelihoods[p, i] = value
                top = max(top, value)
            scale = event_scale[event] + item_scale[item]
            if top < _RESCALE_BELOW:
                for p in range(n_personas):
                    likelihoods[p, i] /= top
                scale += math.log(top)
            scale_total += weight[e] * scale
            size += weight[e]
        for c in range(n_components):
            for p in range(n_personas):
                start_gamma[c, p] = gamma[c, p, g]
        gamma_totals(start_gamma, total_log_gamma, total_digamma)
        log_evidence = customer_step(
            likelihoods,
            weight[start:stop],
            start_gamma,
            alphas,
            constants,
            log_weights[:, g if per_customer_weights else 0],
            total_log_gamma,
            total_digamma,
            tilt,
            inverse_totals,
            new_gamma,
            component,
        )
        for c in range(n_components):
            for p in range(n_personas):
                updated[c, p, g] = new_gamma[c, p]
        if size <= 0:
            continue
        sums[0] += log_evidence + scale_total
        sums[1] += 1.0
        for c in range(n_components):
            share = component[c]
            component_sums[c] += share
            sums[2] += share
            total = 0.0
            for p in range(n_personas):
                total += new_gamma[c, p]
            shared = digamma(total)
            on_all = 0.0
            for p in range(n_personas):
                on_all += digamma(new_gamma[c, p]) - shared
            on_dominant = digamma(new_gamma[c, c]) - shared if c < n_personas else 0.0
            sums[3] += share * on_dominant
            sums[4] += share * (on_all - on_dominant)
        for p in range(n_personas):
            for i in range(n_events):
                responsibility[i] = 0.0
            for c in range(n_components):
                factor = component[c] * tilt[c, p]
                inverse = inverse_totals[c]
                for i in range(n_events):
                    responsibility[i] += factor * inverse[i]
            row = likelihoods[p]
            for i in range(n_events):
                value = responsibility[i] * row[i]
                event_counts[event_signature[start + i], p] += value
                item_counts[item_signature[start + i], p] += value
