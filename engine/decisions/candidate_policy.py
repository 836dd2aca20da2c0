"""Candidate decision policies for off-policy evaluation, named by a short spec string.

A spec names a policy and its parameter, e.g. ``uniform``, ``always:offer_free_ship``, ``greedy``,
``epsilon-greedy:0.1`` or ``thompson`` (``thompson:500`` for 500 posterior draws). Evaluating a policy
off-policy needs its probability of *every* arm for each logged context, not one sampled choice, so
each policy here maps a batch of persona mixes to an (n, A) matrix of probabilities:

- uniform: 1/A for every arm of the arm set it is given, which callers declare
  (engine/decisions/arm_set.py): the shop's A arms, not the ones a log happens to show.
- always:ARM: probability 1 on ARM.
- greedy: the arm with the highest expected response mix @ mean(rho) (ties shared equally), the
  per persona x arm rates being the artifact's Beta posteriors (engine/decisions/arm_estimates.py).
- epsilon-greedy:EPS: greedy with probability 1 - EPS, uniform with probability EPS.
- thompson[:DRAWS]: the probability that the arm wins under a posterior draw of rho, estimated by
  Monte Carlo. The same draws are shared by every decision of a batch: each decision's estimate is
  still unbiased, and one (draws, K, A) sample serves the whole log.

These match engine/decisions/decision_policy.py (same estimates, same definitions) when every arm is eligible;
the decisions log does not record which arms were eligible, so evaluation assumes all were.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from engine.decisions.arm_estimates import ArmEstimates
from engine.errors import PersonaEngineError

DEFAULT_THOMPSON_DRAWS = 400
# Decisions per block when scoring Thompson draws, bounding the (draws, block, arms) array.
_BLOCK = 2_048


class CandidatePolicyError(PersonaEngineError, ValueError):
    """A spec that names no known policy, or a parameter out of range; the message shows the spec."""


class PolicyKind(StrEnum):
    UNIFORM = "uniform"
    ALWAYS = "always"
    GREEDY = "greedy"
    EPSILON_GREEDY = "epsilon-greedy"
    THOMPSON = "thompson"

    @property
    def needs_estimates(self) -> bool:
        return self in (PolicyKind.GREEDY, PolicyKind.EPSILON_GREEDY, PolicyKind.THOMPSON)


@dataclass(frozen=True)
class CandidatePolicy:
    kind: PolicyKind
    arm: str = ""  # for always
    epsilon: float = 0.0  # for epsilon-greedy
    draws: int = DEFAULT_THOMPSON_DRAWS  # for thompson

    @property
    def spec(self) -> str:
        if self.kind is PolicyKind.ALWAYS:
            return f"always:{self.arm}"
        if self.kind is PolicyKind.EPSILON_GREEDY:
            return f"epsilon-greedy:{self.epsilon:g}"
        if self.kind is PolicyKind.THOMPSON and self.draws != DEFAULT_THOMPSON_DRAWS:
            return f"thompson:{self.draws}"
        return self.kind.value

    @classmethod
    def parse(cls, spec: str) -> CandidatePolicy:
        name, _, parameter = spec.strip().partition(":")
        try:
            kind = PolicyKind(name.strip().lower())
        except ValueError:
            known = ", ".join(["uniform", "always:ARM", "greedy", "epsilon-greedy:EPS", "thompson[:DRAWS]"])
            raise CandidatePolicyError(f"unknown policy {spec!r}; expected one of {known}") from None
        parameter = parameter.strip()
        if kind is PolicyKind.ALWAYS:
            if not parameter:
                raise CandidatePolicyError(f"{spec!r}: always needs an arm, e.g. always:offer_free_ship")
            return cls(kind, arm=parameter)
        if kind is PolicyKind.EPSILON_GREEDY:
            try:
                epsilon = float(parameter)
            except ValueError:
                raise CandidatePolicyError(
                    f"{spec!r}: epsilon-greedy needs a number in [0, 1], e.g. epsilon-greedy:0.1"
                ) from None
            if not 0 <= epsilon <= 1:
                raise CandidatePolicyError(f"{spec!r}: epsilon must be in [0, 1]")
            return cls(kind, epsilon=epsilon)
        if kind is PolicyKind.THOMPSON and parameter:
            if not parameter.isdigit() or int(parameter) < 1:
                raise CandidatePolicyError(f"{spec!r}: the number of draws must be a positive integer")
            return cls(kind, draws=int(parameter))
        if parameter:
            raise CandidatePolicyError(f"{spec!r}: {kind.value} takes no parameter")
        return cls(kind)

    def probabilities(
        self,
        arm_ids: tuple[str, ...],
        mixes: NDArray[np.float64] | None,
        estimates: ArmEstimates | None,
        rng: np.random.Generator | None = None,
        n: int | None = None,
    ) -> NDArray[np.float64]:
        """(n, A) probability of each arm (in ``arm_ids`` order) for each mix row.

        ``mixes`` (n, K) and ``estimates`` are needed by greedy, epsilon-greedy and Thompson; uniform
        and always need only ``n``.
        """
        n_arms = len(arm_ids)
        if n_arms == 0:
            raise CandidatePolicyError("no arms to choose from")
        rows = len(mixes) if mixes is not None else n
        if rows is None:
            raise CandidatePolicyError("give the mixes or the number of decisions")
        if self.kind is PolicyKind.UNIFORM:
            return np.full((rows, n_arms), 1.0 / n_arms)
        if self.kind is PolicyKind.ALWAYS:
            if self.arm not in arm_ids:
                raise CandidatePolicyError(
                    f"{self.spec!r}: unknown arm {self.arm!r}; the arms are {', '.join(arm_ids)}"
                )
            out = np.zeros((rows, n_arms))
            out[:, arm_ids.index(self.arm)] = 1.0
            return out
        if mixes is None or estimates is None:
            raise CandidatePolicyError(
                f"{self.spec!r} needs persona mixes and arm estimates (give --artifact, or mix columns)"
            )
        means = _aligned_means(estimates, arm_ids)
        if self.kind is PolicyKind.THOMPSON:
            return _thompson(estimates, arm_ids, mixes, self.draws, rng or np.random.default_rng(0))
        greedy = _argmax_shares(mixes @ means)
        if self.kind is PolicyKind.GREEDY:
            return greedy
        return (1.0 - self.epsilon) * greedy + self.epsilon / n_arms


def _order(estimates: ArmEstimates, arm_ids: tuple[str, ...]) -> NDArray[np.int64]:
    missing = [arm for arm in arm_ids if arm not in estimates.arm_ids]
    if missing:
        raise CandidatePolicyError(
            f"the arm estimates have no arm {missing[0]!r}; they cover {', '.join(estimates.arm_ids)}"
        )
    return np.array([estimates.arm_ids.index(arm) for arm in arm_ids], dtype=np.int64)


def _aligned_means(estimates: ArmEstimates, arm_ids: tuple[str, ...]) -> NDArray[np.float64]:
    return estimates.mean()[:, _order(estimates, arm_ids)]


def _argmax_shares(scores: NDArray[np.float64]) -> NDArray[np.float64]:
    """Probability 1 on the best arm of each row; exact ties share it equally."""
    best = scores >= scores.max(axis=1, keepdims=True) - 1e-12
    return best / best.sum(axis=1, keepdims=True)


def _thompson(
    estimates: ArmEstimates,
    arm_ids: tuple[str, ...],
    mixes: NDArray[np.float64],
    draws: int,
    rng: np.random.Generator,
) -> NDArray[np.float64]:
    order = _order(estimates, arm_ids)
    alpha, beta = estimates.alpha[:, order], estimates.beta[:, order]
    rho = rng.beta(alpha, beta, size=(draws, *alpha.shape))  # (draws, personas, arms)
    out = np.empty((len(mixes), len(order)))
    for start in range(0, len(mixes), _BLOCK):
        block = mixes[start : start + _BLOCK]
        scores = np.einsum("nk,dka->dna", block, rho)  # (draws, block, arms)
        winners = np.argmax(scores, axis=2)
        counts = np.stack([(winners == a).sum(axis=0) for a in range(len(order))], axis=1)
        out[start : start + _BLOCK] = counts / draws
    return out
