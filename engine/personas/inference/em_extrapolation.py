"""Extrapolated EM steps for the persona fit (SQUAREM, Varadhan & Roland 2008): the jump and its coordinates.

On some shops the EM creeps. On MovieLens 100K the objective per event still rose by 2-5e-5 a step at
step 200 and the fit took thousands of steps to settle: persona behaviour, the mix prior's
concentration and heavy customers' mixes drift together along a flat ridge, each step a small move in
the same direction. SQUAREM takes two plain steps from x0 (x1 = F(x0), x2 = F(x1)), measures
r = x1 - x0 and v = x2 - 2 x1 + x0, and jumps to x0 + 2 a r + a^2 v with a >= 1 (a = 1 lands on x2),
then takes one plain step from there. ``em_fit.run_em`` drives the cycle and keeps a jump only when
the objective did not fall; this module says where a jump lands.

The jump is a straight line, so each part of the state moves in coordinates where a straight line
stays a valid state after a simple repair:

- event-level distributions as log probabilities, normalised per group after the jump;
- item-choice tilts as they are (any tilt is valid);
- the mix prior as log component weights (normalised) and log Dirichlet parameters (clipped);
- each customer's posterior (gamma, components x personas) as its expected persona counts, gamma
  minus the prior parameters it was updated with. They sum to the customer's event weight in every
  component, so after the jump negative counts are clipped and the rest rescaled to that weight.

The counts are the coordinates that worked on MovieLens 100K: jumping gamma itself (floored above
zero) needed two to four times the E-steps for the same objective, and jumping log gamma made
1e23-sized Dirichlet parameters whose variational bound is all rounding error, which the safeguard
cannot see. Clipping lets a jump take a minor persona's share of a customer's events to zero at
once instead of a little each step. In products each customer's counts are divided by their weight,
so shares, not heavy customers' raw counts, set the step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from engine.personas.inference.mix_prior import MixPrior
from engine.personas.traits import EventFeatureSpace, GroupKind

STEP_GROWTH = 4.0  # the step's bound grows (shrinks) by this after a jump at the bound is kept (refused)
_SHAPE_RANGE = (1e-3, 1e4)  # a jumped prior's Dirichlet parameters: the range its refit keeps them in

Coordinates = tuple[NDArray[np.float64], ...]


def step_length(products: NDArray[np.float64], bound: float) -> float:
    """The SqS2 step, r.r / -(r.v), in [1, ``bound``]; 1 (land on x2) when the steps do not contract.

    Of Varadhan and Roland's three step lengths this is the longest; on MovieLens 100K it reached a
    given objective in about two thirds of the E-steps of the more cautious -|r| / |v| (SqS3).
    ``products`` is (r.r, r.v, v.v) summed over every coordinate.
    """
    rr, rv = float(products[0]), float(products[1])
    if not (rv < 0.0 and np.isfinite(rr) and np.isfinite(rv)):
        return 1.0
    return min(max(rr / -rv, 1.0), bound)


def jumped(
    q0: NDArray[np.float64], q1: NDArray[np.float64], q2: NDArray[np.float64], step: float
) -> NDArray[np.float64]:
    """x0 + 2 a r + a^2 v in one coordinate block."""
    return np.asarray(q0 + 2.0 * step * (q1 - q0) + step * step * (q2 - 2.0 * q1 + q0))


def products_of(
    q0: NDArray[np.float64], q1: NDArray[np.float64], q2: NDArray[np.float64]
) -> NDArray[np.float64]:
    """(r.r, r.v, v.v) of one coordinate block."""
    r = q1 - q0
    v = q2 - 2.0 * q1 + q0
    return np.array([float((r * r).sum()), float((r * v).sum()), float((v * v).sum())])


def state_coordinates(parameters: NDArray[np.float64], mix_prior: MixPrior) -> Coordinates:
    """The driver's part of an EM state as coordinates: parameters, log weights, log Dirichlet shape."""
    k = mix_prior.weights.size
    shape = mix_prior.alphas[0, : min(k, 2)]  # dominant and minor (the shape is tied across components)
    return parameters, np.log(mix_prior.weights), np.log(shape)


def jumped_state(
    space: EventFeatureSpace, states: tuple[Coordinates, Coordinates, Coordinates], step: float
) -> tuple[NDArray[np.float64], MixPrior]:
    """Parameters and mix prior of the jump from three states' coordinates, repaired into valid ones."""
    parameters, log_weights, log_shape = (jumped(*parts, step) for parts in zip(*states, strict=True))
    for group in space.groups:
        if group.item_level:
            continue
        block = parameters[group.start : group.start + len(group.values)]
        if group.kind is GroupKind.BINARY:  # a share of events with the flag: at most 1
            np.minimum(block, 0.0, out=block)
        else:
            top = block.max(axis=0)
            block -= top + np.log(np.exp(block - top).sum(axis=0))
    weights = np.exp(log_weights - log_weights.max())
    weights /= weights.sum()
    shape = np.exp(np.clip(log_shape, *np.log(_SHAPE_RANGE)))
    k = weights.size
    concentration = float(shape.sum()) if k == 1 else float(shape[0] + (k - 1) * shape[1])
    return parameters, MixPrior.mostly_one(weights, concentration, float(shape[0]) / concentration)


@dataclass(frozen=True)
class PosteriorJump:
    """How a jumped state's customer posteriors come from the cycle's three (gamma0, gamma1, gamma2).

    Sent with the E-step to wherever the posteriors live (this process, or each Spark block), which
    builds the jumped posteriors of its customers just before stepping from them.
    """

    step: float
    built_on: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]  # gamma0..2's prior alphas
    alphas: NDArray[np.float64]  # the jumped state's prior alphas (components x personas)

    def posteriors(
        self,
        gammas: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]],
        sizes: NDArray[np.float64],
    ) -> NDArray[np.float64]:
        """(components x personas x customers) the jumped posteriors of customers with these weights."""
        step = self.step
        counts, second = _steps(gammas, self.built_on)
        counts *= 2.0 * step
        second *= step * step
        counts += second
        del second
        counts += gammas[0]
        counts -= self.built_on[0][:, :, None]
        np.maximum(counts, 0.0, out=counts)
        totals = counts.sum(axis=1, keepdims=True)
        # the jump keeps each component's total (every state's counts sum to the customer's weight);
        # clipping the negatives raised it, so scale back down to that weight
        counts *= np.divide(sizes[None, None, :], totals, out=np.zeros_like(totals), where=totals > 0)
        counts += self.alphas[:, :, None]
        return counts


def _steps(
    gammas: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]],
    built_on: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """r and v of the posteriors' expected persona counts (gamma minus the alphas it was built on).

    Two arrays the size of the posteriors and no more: the jump runs on chunks of up to
    ``chunk_customers`` customers on every thread at once.
    """
    (g0, g1, g2), (a0, a1, a2) = gammas, built_on
    r = np.subtract(g1, g0)
    r -= (a1 - a0)[:, :, None]
    v = np.subtract(g2, g1)
    v -= (a2 - a1)[:, :, None]
    v -= r
    return r, v


def count_products(
    gammas: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]],
    built_on: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]],
    sizes: NDArray[np.float64],
) -> NDArray[np.float64]:
    """(r.r, r.v, v.v) of the customers' posterior counts as shares of each customer's event weight."""
    r, v = _steps(gammas, built_on)
    inverse = np.divide(1.0, sizes, out=np.zeros_like(sizes), where=sizes > 0)
    r *= inverse
    v *= inverse
    flat_r, flat_v = r.ravel(), v.ravel()
    return np.array([np.dot(flat_r, flat_r), np.dot(flat_r, flat_v), np.dot(flat_v, flat_v)])
