"""Empirical-Bayes rates for many small cells: each cell's rate shrunk towards the overall rate.

A reward model for doubly robust off-policy evaluation predicts a conversion rate per cell (context x
arm, or persona x arm). With rare outcomes most cells have a few dozen trials and no success, and the
textbook Beta(1, 1) smoothing, (successes + 1) / (trials + 2), then predicts 1/32 = 3% for a cell of 30
trials when the shop converts 0.4%: the model is biased upwards by an order of magnitude and DR's
correction term becomes noise, not a control variate.

Here the prior is fitted to the cells themselves (empirical Bayes, beta-binomial): its mean is the
pooled rate of all cells, and its strength kappa = alpha + beta (how many pseudo-trials of the overall
rate each cell starts with) maximises the beta-binomial marginal likelihood of the cells' counts. Cells
that truly differ get a small kappa and keep their own rates; cells that differ only by chance get a
large kappa and are pulled to the overall rate. A cell's rate is then (s + alpha) / (t + alpha + beta).
Outcomes may be fractional (clipped rewards); the likelihood uses the Beta function, defined for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize_scalar
from scipy.special import betaln

MIN_STRENGTH = 1e-3
MAX_STRENGTH = 1e9
"""Bounds of the fitted strength: from no pooling at all to complete pooling at any realistic count."""


@dataclass(frozen=True)
class BetaPrior:
    """A Beta(alpha, beta) prior over cell rates; ``mean`` is alpha / (alpha + beta)."""

    alpha: float
    beta: float

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    @property
    def strength(self) -> float:
        """alpha + beta: the pseudo-trials at the mean each cell starts from."""
        return self.alpha + self.beta

    def rates(self, successes: ArrayLike, trials: ArrayLike) -> NDArray[np.float64]:
        """Posterior mean rate of each cell: (s + alpha) / (t + alpha + beta)."""
        s = np.asarray(successes, dtype=np.float64)
        t = np.asarray(trials, dtype=np.float64)
        return np.asarray((s + self.alpha) / (t + self.strength), dtype=np.float64)


def fit_beta_prior(successes: ArrayLike, trials: ArrayLike) -> BetaPrior:
    """The prior centred on the pooled rate whose strength maximises the cells' marginal likelihood.

    Cells without trials carry no information and are ignored. With no trials at all, or no successes
    (or no failures) anywhere, the pooled rate is moved half a trial off 0 (or 1) so the prior exists.
    """
    s = np.asarray(successes, dtype=np.float64).ravel()
    t = np.asarray(trials, dtype=np.float64).ravel()
    if s.shape != t.shape:
        raise ValueError(f"successes {s.shape} and trials {t.shape} must have the same shape")
    if (t < 0).any() or (s < 0).any() or (s > t + 1e-9).any() or not np.isfinite(s + t).all():
        raise ValueError("every cell needs finite 0 <= successes <= trials")
    used = t > 0
    s, t = np.minimum(s[used], t[used]), t[used]
    total = float(t.sum())
    mean = float(np.clip((s.sum() + 0.5) / (total + 1.0), 1e-12, 1 - 1e-12))
    if len(t) < 2:
        return BetaPrior(mean * 1.0, (1.0 - mean) * 1.0)  # nothing to learn a spread from: one pseudo-trial

    def negative_log_likelihood(log_strength: float) -> float:
        kappa = float(np.exp(log_strength))
        a, b = mean * kappa, (1.0 - mean) * kappa
        return -float(np.sum(betaln(s + a, t - s + b) - betaln(a, b)))

    best = minimize_scalar(
        negative_log_likelihood,
        bounds=(np.log(MIN_STRENGTH), np.log(MAX_STRENGTH)),
        method="bounded",
        options={"xatol": 1e-3},
    )
    kappa = float(np.exp(best.x))
    return BetaPrior(mean * kappa, (1.0 - mean) * kappa)
