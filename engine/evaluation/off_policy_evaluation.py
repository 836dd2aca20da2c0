"""What a candidate policy would have earned on logged decisions, estimated without deploying it.

Each logged decision i has a context x_i, the arm a_i the logging policy chose with probability
mu_i = mu(a_i | x_i) (the ``propensity`` column), and the reward r_i. A candidate policy pi gives every
arm a probability pi(a | x_i). With importance weights w_i = pi(a_i | x_i) / mu_i:

- IPS (inverse propensity scoring): V = mean(w_i r_i). Unbiased whenever mu > 0 wherever pi > 0, but
  its variance grows with the weights.
- SNIPS (self-normalised IPS): V = sum(w_i r_i) / sum(w_i). Slightly biased, usually far less variable,
  and always inside the range of the rewards.
- DR (doubly robust): V = mean(q_pi(x_i) + w_i (r_i - q(x_i, a_i))) with a reward model q and
  q_pi(x) = sum_a pi(a | x) q(x, a). Unbiased if either the propensities or the reward model are
  right, and lower-variance than IPS when the model is good. The reward model must not have seen the
  decision it corrects (cross-fitting), or the correction term is shrunk towards zero by overfitting.

Confidence intervals are normal (CLT) intervals: for IPS and DR the estimate is a mean of independent
per-decision terms; for SNIPS, a ratio of means, the delta method gives the standard error of
mean(w (r - V)) / mean(w). The effective sample size (sum w)^2 / sum w^2 says how many decisions the
estimate is really worth: far below n means the candidate rarely agrees with the log and the interval
(whatever its nominal level) should be read with care.

Pure numpy on purpose: the estimators are a few lines each, and the same functions serve the CLI
(training/policy_evaluation_job.py) and tests against closed-form values.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm

from engine.errors import PersonaEngineError

DEFAULT_LEVEL = 0.95


class OffPolicyEvaluationError(PersonaEngineError, ValueError):
    """Inputs the estimators cannot use; the message names the array and the first bad row."""


class Estimator(StrEnum):
    IPS = "ips"
    SNIPS = "snips"
    DR = "dr"


@dataclass(frozen=True)
class PolicyValueEstimate:
    """One estimator's value of one policy, with its standard error and a confidence interval."""

    estimator: Estimator
    value: float
    std_error: float
    ci_low: float
    ci_high: float
    level: float

    def covers(self, truth: float) -> bool:
        return self.ci_low <= truth <= self.ci_high

    def as_json(self) -> dict[str, float | str]:
        return {
            "estimator": self.estimator.value,
            "value": self.value,
            "std_error": self.std_error,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "level": self.level,
        }


def _vector(values: ArrayLike, name: str, n: int | None = None) -> NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise OffPolicyEvaluationError(f"{name} must be one-dimensional, got shape {array.shape}")
    if n is not None and len(array) != n:
        raise OffPolicyEvaluationError(f"{name} has {len(array)} entries, expected {n}")
    bad = ~np.isfinite(array)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise OffPolicyEvaluationError(f"{name}[{row}] is not a finite number: {array[row]}")
    return array


def importance_weights(logging_propensity: ArrayLike, target_probability: ArrayLike) -> NDArray[np.float64]:
    """w_i = pi(a_i | x_i) / mu(a_i | x_i); propensities must be in (0, 1], target probabilities in [0, 1]."""
    mu = _vector(logging_propensity, "logging_propensity")
    pi = _vector(target_probability, "target_probability", len(mu))
    bad = (mu <= 0) | (mu > 1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise OffPolicyEvaluationError(
            f"logging_propensity[{row}] = {mu[row]} is not in (0, 1]; a zero propensity means the "
            "logging policy could not have chosen the arm it logged"
        )
    bad = (pi < 0) | (pi > 1 + 1e-9)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise OffPolicyEvaluationError(f"target_probability[{row}] = {pi[row]} is not in [0, 1]")
    return pi / mu


def effective_sample_size(weights: ArrayLike) -> float:
    """(sum w)^2 / sum w^2: n for equal weights, 1 when one decision carries all the weight."""
    w = _vector(weights, "weights")
    total_square = float(np.sum(w * w))
    return float(np.sum(w) ** 2 / total_square) if total_square > 0 else 0.0


def _z(level: float) -> float:
    if not 0 < level < 1:
        raise OffPolicyEvaluationError(f"level must be in (0, 1), got {level}")
    return float(norm.ppf(0.5 + level / 2))


def _mean_estimate(terms: NDArray[np.float64], estimator: Estimator, level: float) -> PolicyValueEstimate:
    n = len(terms)
    if n == 0:
        raise OffPolicyEvaluationError("no decisions to evaluate")
    value = float(np.mean(terms))
    std_error = float(np.std(terms, ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    half = _z(level) * std_error
    return PolicyValueEstimate(estimator, value, std_error, value - half, value + half, level)


def ips(rewards: ArrayLike, weights: ArrayLike, *, level: float = DEFAULT_LEVEL) -> PolicyValueEstimate:
    r = _vector(rewards, "rewards")
    w = _vector(weights, "weights", len(r))
    return _mean_estimate(w * r, Estimator.IPS, level)


def snips(rewards: ArrayLike, weights: ArrayLike, *, level: float = DEFAULT_LEVEL) -> PolicyValueEstimate:
    """sum(w r) / sum(w); when the candidate never agrees with the log (all w = 0) there is no estimate."""
    r = _vector(rewards, "rewards")
    w = _vector(weights, "weights", len(r))
    n = len(r)
    if n == 0:
        raise OffPolicyEvaluationError("no decisions to evaluate")
    total = float(np.sum(w))
    if total <= 0:
        nan = float("nan")
        return PolicyValueEstimate(Estimator.SNIPS, nan, nan, nan, nan, level)
    value = float(np.sum(w * r) / total)
    # Delta method: the ratio's influence terms are w_i (r_i - V) / mean(w).
    influence = w * (r - value) / (total / n)
    std_error = float(np.std(influence, ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    half = _z(level) * std_error
    return PolicyValueEstimate(Estimator.SNIPS, value, std_error, value - half, value + half, level)


def doubly_robust(
    rewards: ArrayLike,
    weights: ArrayLike,
    predicted_logged: ArrayLike,
    predicted_target: ArrayLike,
    *,
    level: float = DEFAULT_LEVEL,
) -> PolicyValueEstimate:
    """mean(q_pi(x_i) + w_i (r_i - q(x_i, a_i))).

    ``predicted_logged`` is q(x_i, a_i), the reward model's prediction for the logged arm;
    ``predicted_target`` is q_pi(x_i) = sum_a pi(a | x_i) q(x_i, a), its prediction for the candidate.
    """
    r = _vector(rewards, "rewards")
    n = len(r)
    w = _vector(weights, "weights", n)
    q_logged = _vector(predicted_logged, "predicted_logged", n)
    q_target = _vector(predicted_target, "predicted_target", n)
    return _mean_estimate(q_target + w * (r - q_logged), Estimator.DR, level)


@dataclass(frozen=True)
class PolicyEvaluation:
    """All estimates of one candidate policy on one log."""

    n_decisions: int
    effective_sample_size: float
    mean_weight: float  # 1 in expectation when the propensities are right; far from 1 flags a problem
    estimates: tuple[PolicyValueEstimate, ...]

    def estimate(self, estimator: Estimator) -> PolicyValueEstimate:
        for estimate in self.estimates:
            if estimate.estimator is estimator:
                return estimate
        raise KeyError(f"no {estimator.value} estimate in this evaluation")


def evaluate_policy(
    rewards: ArrayLike,
    logging_propensity: ArrayLike,
    target_probabilities: ArrayLike,
    logged_arm: ArrayLike,
    reward_model: ArrayLike | None = None,
    *,
    level: float = DEFAULT_LEVEL,
) -> PolicyEvaluation:
    """IPS, SNIPS and (with a reward model) DR of a candidate policy.

    ``target_probabilities`` is (n, A): pi(a | x_i) for every arm; ``logged_arm`` the (n,) arm indices
    chosen by the logging policy; ``reward_model`` (n, A) the predicted reward q(x_i, a), cross-fitted
    by the caller.
    """
    r = _vector(rewards, "rewards")
    n = len(r)
    pi = np.asarray(target_probabilities, dtype=np.float64)
    if pi.ndim != 2 or pi.shape[0] != n:
        raise OffPolicyEvaluationError(f"target_probabilities must have shape ({n}, n_arms), got {pi.shape}")
    sums = pi.sum(axis=1)
    bad = ~np.isfinite(sums) | (np.abs(sums - 1.0) > 1e-6)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise OffPolicyEvaluationError(f"target_probabilities row {row} does not sum to 1: {pi[row]}")
    arms = np.asarray(logged_arm)
    if arms.shape != (n,) or (n and not np.issubdtype(arms.dtype, np.integer)):
        raise OffPolicyEvaluationError(f"logged_arm must be ({n},) integers, got {arms.shape} {arms.dtype}")
    out_of_range = (arms < 0) | (arms >= pi.shape[1])
    if out_of_range.any():
        row = int(np.flatnonzero(out_of_range)[0])
        raise OffPolicyEvaluationError(f"logged_arm[{row}] = {arms[row]} is outside [0, {pi.shape[1]})")
    rows = np.arange(n)
    weights = importance_weights(logging_propensity, pi[rows, arms])
    estimates = [ips(r, weights, level=level), snips(r, weights, level=level)]
    if reward_model is not None:
        q = np.asarray(reward_model, dtype=np.float64)
        if q.shape != pi.shape:
            raise OffPolicyEvaluationError(f"reward_model must have shape {pi.shape}, got {q.shape}")
        estimates.append(doubly_robust(r, weights, q[rows, arms], np.sum(pi * q, axis=1), level=level))
    return PolicyEvaluation(
        n_decisions=n,
        effective_sample_size=effective_sample_size(weights),
        mean_weight=float(np.mean(weights)) if n else float("nan"),
        estimates=tuple(estimates),
    )
