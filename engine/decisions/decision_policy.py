"""Choosing and ranking arms (offers, layout variants) for a persona mix, with exact propensities.

Every decision the engine makes is later logged and used to learn the next estimates and to evaluate
other policies offline. Both need the probability with which the logged arm was chosen, and both break
if some eligible arm could never be chosen. So the policy is explicit and randomised, and it reports
the exact probability of what it did:

    pi(a) = (1 - epsilon) * base(a) + epsilon / |E|   for a in the eligible set E, 0 otherwise

- ``epsilon_greedy``: base is a point mass on the eligible arm with the best expected score under the
  posterior means mixed by the customer's mix (ties go to the earliest arm in ``arm_ids``, so the
  choice is reproducible). pi is exact.
- ``thompson``: base(a) is the probability that arm a has the best score when rates are drawn from the
  Beta posteriors. It is estimated from ``thompson_draws`` (default 2000) posterior draws, and the
  arm is then drawn from that estimate, so the reported propensity is exactly the probability with
  which this call chose the arm. It is an unbiased estimate of the ideal Thompson probability, with
  standard error sqrt(base (1 - base) / draws) * (1 - epsilon) <= 0.5 / sqrt(2000) ~= 0.011.

Either way every eligible arm has propensity at least epsilon / |E| (the exploration floor), which
bounds importance weights in off-policy evaluation by |E| / epsilon.

The score of an arm is its expected response (mix @ posterior means). For offers with a configured
value per redemption, it is the expected net value response * (value - cost), since the shop earns the
value and pays the offer's cost only when the offer is redeemed.

A ranking of n arms applies the same policy position by position to the arms not yet placed; the
propensity of each entry is the probability of choosing it at that position given the entries above
it (so the first entry's propensity is that of a single choice, and their product is the probability
of the whole ranking). Results depend only on the inputs and the given draws: a numpy generator, or a
decision's own ``DecisionDraws`` (``engine.decisions.decision_draws``), which epsilon-greedy reads
two numbers per position from (explore or not, and which arm when exploring).

Scores of a mix are summed persona by persona in a fixed order (``mixed_scores``), not with a BLAS
product, whose rounding depends on how many mixes it multiplies at once: a page scored alone and the
same page scored in a batch must get the same scores to the last bit, or a near-tie between two arms
could go either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from engine.decisions.arm_estimates import ArmEstimates
from engine.decisions.decision_draws import DecisionDraws
from engine.errors import PersonaEngineError
from engine.personas.mix import PersonaMix

DEFAULT_EPSILON = 0.1
DEFAULT_THOMPSON_DRAWS = 2000


# What a policy draws from: a numpy generator (tests, simulations) or one decision's draws.
Draws = np.random.Generator | DecisionDraws


def mixed_scores(mixes: NDArray[np.float64], per_persona: NDArray[np.float64]) -> NDArray[np.float64]:
    """(n, A) = mixes (n, K) combined with per-persona values (K, A), persona by persona in order.

    Each row is computed on its own, the same way whatever the number of rows: the reduction runs
    over the persona axis, which numpy adds term by term in order (pairwise summation only applies to
    the innermost axis). A BLAS product would round differently for one row and for many.
    """
    return np.asarray((mixes[:, :, None] * per_persona[None, :, :]).sum(axis=1), dtype=np.float64)


class PolicyMode(StrEnum):
    EPSILON_GREEDY = "epsilon_greedy"
    THOMPSON = "thompson"


class ArmKind(StrEnum):
    OFFER = "offer"
    LAYOUT = "layout"


class DecisionPolicyError(PersonaEngineError, ValueError):
    """A policy that cannot be built or a request it cannot answer; the message names the field or arm."""


class NoEligibleArmError(DecisionPolicyError):
    """Every arm was excluded; the caller decides what to show instead (e.g. no offer at all)."""


@dataclass(slots=True)  # not frozen: built per position per decision, where frozen construction costs 5x
class RankedArm:
    """One chosen arm: its id, expected score, the probability it was chosen at its position, and why."""

    arm_id: str
    score: float
    propensity: float
    reason: str


class DecisionPolicy:
    """Epsilon-greedy or Thompson choice over one set of arms (offers or layouts), see the module doc."""

    def __init__(
        self,
        estimates: ArmEstimates,
        *,
        kind: ArmKind,
        mode: PolicyMode = PolicyMode.EPSILON_GREEDY,
        epsilon: float = DEFAULT_EPSILON,
        conversion_value: float | None = None,
        costs: Mapping[str, float] | None = None,
        persona_names: Sequence[str] | None = None,
        thompson_draws: int = DEFAULT_THOMPSON_DRAWS,
    ) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise DecisionPolicyError(f"epsilon must be in [0, 1], got {epsilon}")
        if thompson_draws <= 0:
            raise DecisionPolicyError(f"thompson_draws must be positive, got {thompson_draws}")
        self.estimates = estimates
        self.kind = ArmKind(kind)
        self.mode = PolicyMode(mode)
        self.epsilon = float(epsilon)
        self.thompson_draws = int(thompson_draws)
        self.persona_names = tuple(persona_names) if persona_names is not None else estimates.persona_ids
        if len(self.persona_names) != estimates.n_personas:
            raise DecisionPolicyError(
                f"{len(self.persona_names)} persona names for the estimates' {estimates.n_personas} personas"
            )
        self.conversion_value = conversion_value
        # Posterior means, computed once: a policy decides under fixed estimates (new estimates make a
        # new policy), and every decision needs them.
        self._mean = estimates.mean()
        # Score per unit of response: 1 (plain response) or value - cost of each arm.
        self._unit_value = np.ones(estimates.n_arms)
        if conversion_value is not None:
            if self.kind is not ArmKind.OFFER:
                raise DecisionPolicyError(
                    "conversion_value applies to offers only; layouts are scored by response"
                )
            if not np.isfinite(conversion_value):
                raise DecisionPolicyError(f"conversion_value must be finite, got {conversion_value}")
            known = costs or {}
            missing = [arm for arm in estimates.arm_ids if arm not in known]
            if missing:
                raise DecisionPolicyError(f"no cost for offer(s) {', '.join(map(repr, missing))}")
            self._unit_value = conversion_value - np.array(
                [known[arm] for arm in estimates.arm_ids], dtype=float
            )
        # The same numbers as Python lists, for the reasons (see ``_reason``).
        self._rates_by_arm: list[list[float]] = self._mean.T.tolist()
        self._unit_values: list[float] = self._unit_value.tolist()
        # The parts of a reason fixed by its arm and driving persona, formatted once: ", driven by
        # <name> (" and " of mix, <rate> as that persona)" for every (arm, persona).
        self._driver_texts: list[list[tuple[str, str]]] = [
            [
                (f", driven by {name} (", f" of mix, {rate:.0%} as that persona)")
                for name, rate in zip(self.persona_names, rates, strict=True)
            ]
            for rates in self._rates_by_arm
        ]

    @classmethod
    def for_offers(
        cls,
        estimates: ArmEstimates,
        *,
        mode: PolicyMode = PolicyMode.EPSILON_GREEDY,
        epsilon: float = DEFAULT_EPSILON,
        conversion_value: float | None = None,
        costs: Mapping[str, float] | None = None,
        persona_names: Sequence[str] | None = None,
        thompson_draws: int = DEFAULT_THOMPSON_DRAWS,
    ) -> DecisionPolicy:
        """An offer policy; with ``conversion_value`` (and ``costs`` per offer id) it maximises net value."""
        return cls(
            estimates,
            kind=ArmKind.OFFER,
            mode=mode,
            epsilon=epsilon,
            conversion_value=conversion_value,
            costs=costs,
            persona_names=persona_names,
            thompson_draws=thompson_draws,
        )

    @classmethod
    def for_layouts(
        cls,
        estimates: ArmEstimates,
        *,
        mode: PolicyMode = PolicyMode.EPSILON_GREEDY,
        epsilon: float = DEFAULT_EPSILON,
        persona_names: Sequence[str] | None = None,
        thompson_draws: int = DEFAULT_THOMPSON_DRAWS,
    ) -> DecisionPolicy:
        return cls(
            estimates,
            kind=ArmKind.LAYOUT,
            mode=mode,
            epsilon=epsilon,
            persona_names=persona_names,
            thompson_draws=thompson_draws,
        )

    @property
    def arm_ids(self) -> tuple[str, ...]:
        return self.estimates.arm_ids

    @property
    def scored_by_value(self) -> bool:
        return self.conversion_value is not None

    def _mix(self, mix: PersonaMix | NDArray[np.floating]) -> NDArray[np.float64]:
        if isinstance(mix, PersonaMix):
            if mix.personas != self.estimates.persona_ids:
                raise DecisionPolicyError(
                    f"mix is over personas {mix.personas}, the estimates over {self.estimates.persona_ids}"
                )
            return mix.weights
        vector = np.asarray(mix, dtype=np.float64)
        if vector.shape != (self.estimates.n_personas,):
            raise DecisionPolicyError(
                f"mix must have shape ({self.estimates.n_personas},) for one customer, got {vector.shape}"
            )
        return vector

    def _eligible(self, eligible_mask: NDArray[np.bool_] | None) -> NDArray[np.bool_]:
        if eligible_mask is None:
            return np.ones(self.estimates.n_arms, dtype=bool)
        mask = np.asarray(eligible_mask)
        if mask.shape != (self.estimates.n_arms,) or mask.dtype != np.bool_:
            raise DecisionPolicyError(
                f"eligible_mask must be a boolean array of shape ({self.estimates.n_arms},) "
                f"in arm_ids order, got {mask.dtype} {mask.shape}"
            )
        if not mask.any():
            raise NoEligibleArmError(f"no eligible {self.kind.value} among {self.estimates.n_arms} arms")
        return mask

    def expected_scores(self, mix: PersonaMix | NDArray[np.floating]) -> NDArray[np.float64]:
        """(A,) expected response, or expected net value per decision for valued offers."""
        if not isinstance(mix, PersonaMix):  # a PersonaMix was validated on construction
            self.estimates.expected_response(self._mix(mix))  # the simplex checks
        return self.expected_scores_many(self._mix(mix)[None, :])[0]

    def expected_scores_many(self, mixes: NDArray[np.float64]) -> NDArray[np.float64]:
        """(n, A) expected scores of n validated mixes (rows of PersonaMix weights); row i is exactly
        ``expected_scores`` of mix i, however many rows there are (see ``mixed_scores``)."""
        return mixed_scores(mixes, self._mean) * self._unit_value

    def _thompson_draws(self, mix: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.float64]:
        return self.estimates.sample(rng, mix, n_draws=self.thompson_draws) * self._unit_value

    def _base(
        self,
        scores: NDArray[np.float64],
        draws: NDArray[np.float64] | None,
        remaining: NDArray[np.bool_],
    ) -> NDArray[np.float64]:
        """The exploitation distribution over arms, restricted to ``remaining``."""
        base = np.zeros(len(scores))
        if draws is None:
            base[int(np.argmax(np.where(remaining, scores, -np.inf)))] = 1.0
        else:
            winners = np.argmax(np.where(remaining, draws, -np.inf), axis=1)
            base = np.bincount(winners, minlength=len(scores)) / len(draws)
        return base

    def _mixed(self, base: NDArray[np.float64], remaining: NDArray[np.bool_]) -> NDArray[np.float64]:
        return (1.0 - self.epsilon) * base + np.where(remaining, self.epsilon / remaining.sum(), 0.0)

    def propensities(
        self,
        mix: PersonaMix | NDArray[np.floating],
        eligible_mask: NDArray[np.bool_] | None = None,
        rng: np.random.Generator | None = None,
    ) -> NDArray[np.float64]:
        """(A,) probability of choosing each arm for the first position; 0 for ineligible arms.

        Thompson mode estimates its base probabilities from posterior draws and needs ``rng``.
        """
        weights = self._mix(mix)
        remaining = self._eligible(eligible_mask)
        draws = None
        if self.mode is PolicyMode.THOMPSON:
            if rng is None:
                raise DecisionPolicyError("thompson mode needs a random generator to estimate propensities")
            draws = self._thompson_draws(weights, rng)
        return self._mixed(self._base(self.expected_scores(weights), draws, remaining), remaining)

    def _rank(
        self,
        mix: PersonaMix | NDArray[np.floating],
        eligible_mask: NDArray[np.bool_] | None,
        n: int,
        rng: Draws,
        scores: NDArray[np.float64] | None = None,
    ) -> list[RankedArm]:
        """``scores``: the mix's expected scores when the caller has them (a batch computes them for
        every row at once)."""
        if n <= 0:
            raise DecisionPolicyError(f"n must be positive, got {n}")
        weights = self._mix(mix)
        remaining = self._eligible(eligible_mask)
        if scores is None:
            scores = self.expected_scores(mix)
        if self.mode is PolicyMode.EPSILON_GREEDY:
            return self._greedy(weights.tolist(), scores.tolist(), remaining.tolist(), n, rng)
        remaining = remaining.copy()  # the Thompson loop takes placed arms out of it
        if isinstance(rng, DecisionDraws):
            rng = rng.generator()
        draws = self._thompson_draws(weights, rng)
        mix_list = weights.tolist()
        ranked: list[RankedArm] = []
        for position in range(min(n, int(remaining.sum()))):
            base = self._base(scores, draws, remaining)
            propensity = self._mixed(base, remaining)
            explore = rng.random() < self.epsilon
            if explore:
                arm = int(rng.choice(np.flatnonzero(remaining)))
            else:
                arm = int(rng.choice(len(base), p=base))
            reason = self._reason(mix_list, arm, position, explore, float(base[arm]), int(remaining.sum()))
            ranked.append(RankedArm(self.arm_ids[arm], float(scores[arm]), float(propensity[arm]), reason))
            remaining[arm] = False
        return ranked

    def _greedy(
        self, mix: list[float], values: list[float], remaining: list[bool], n: int, rng: Draws
    ) -> list[RankedArm]:
        """Epsilon-greedy ranking with plain Python numbers per position (the request path's hot spot).

        The same choices and propensities as the general loop in ``_rank``: the greedy arm is the best
        remaining (ties to the earliest), its base probability is 1 and every other arm's 0, so
        ``_mixed`` reduces to ``(1 - epsilon) [arm is greedy] + epsilon / |remaining|``. Each position
        takes two draws: a uniform number (explore when below epsilon), then a uniform index into the
        remaining arms, used only when exploring (taken anyway, so position p always reads draws 2p and
        2p + 1 and a replay does not depend on earlier positions' outcomes).
        """
        left = [arm for arm, ok in enumerate(remaining) if ok]
        # Best first, ties to the earliest arm: the order np.argmax picks greedy arms in.
        greedy_order = sorted(left, key=values.__getitem__, reverse=True)  # stable: ties keep arm order
        epsilon = self.epsilon
        arm_ids = self.arm_ids
        ranked: list[RankedArm] = []
        for position in range(min(n, len(left))):
            greedy = next(arm for arm in greedy_order if arm in left)
            n_left = len(left)
            explore = rng.random() < epsilon
            pick = left[int(rng.integers(n_left))]
            arm = pick if explore else greedy
            base = 1.0 if arm == greedy else 0.0
            propensity = (1.0 - epsilon) * base + epsilon / n_left
            reason = self._reason(mix, arm, position, explore, base, n_left)
            ranked.append(RankedArm(arm_ids[arm], values[arm], propensity, reason))
            left.remove(arm)
        return ranked

    def rank_many(
        self,
        mixes: NDArray[np.float64],
        eligible: NDArray[np.bool_] | None,
        ns: Sequence[int],
        draws: Sequence[Draws],
    ) -> list[list[RankedArm]]:
        """Row i ranked as ``_rank`` ranks mix ``mixes[i]`` (validated PersonaMix weights) alone with
        ``draws[i]``: the same arms, scores, propensities and reasons; an empty list where no arm of
        ``eligible[i]`` is eligible (where ``_rank`` raises NoEligibleArmError).

        Why a batch entry point: a page render ranks offers and chooses a layout, and the per-call
        checks and array conversions of ``_rank`` cost more than the choice itself; here they are made
        once for the batch, and epsilon-greedy rows go straight to the plain-Python loop.
        """
        rows = len(ns)
        if mixes.shape != (rows, self.estimates.n_personas):
            raise DecisionPolicyError(
                f"mixes must have shape ({rows}, {self.estimates.n_personas}), got {mixes.shape}"
            )
        scores = self.expected_scores_many(mixes)
        if eligible is None:
            eligible = np.ones((rows, self.estimates.n_arms), dtype=bool)
        elif eligible.shape != (rows, self.estimates.n_arms) or eligible.dtype != np.bool_:
            raise DecisionPolicyError(
                f"eligible must be a boolean array of shape ({rows}, {self.estimates.n_arms}) in arm_ids "
                f"order, got {eligible.dtype} {eligible.shape}"
            )
        for n in ns:
            if n <= 0:
                raise DecisionPolicyError(f"n must be positive, got {n}")
        if self.mode is not PolicyMode.EPSILON_GREEDY:
            ranked: list[list[RankedArm]] = []
            for mix, mask, n, rng, row in zip(mixes, eligible, ns, draws, scores, strict=True):
                try:
                    ranked.append(self._rank(mix, mask, n, rng, row))
                except NoEligibleArmError:
                    ranked.append([])
            return ranked
        return [
            self._greedy(mix, values, mask, n, rng) if any(mask) else []
            for mix, values, mask, n, rng in zip(
                mixes.tolist(), scores.tolist(), eligible.tolist(), ns, draws, strict=True
            )
        ]

    def rank_offers(
        self,
        mix: PersonaMix | NDArray[np.floating],
        eligible_mask: NDArray[np.bool_],
        n: int,
        rng: Draws,
    ) -> list[RankedArm]:
        """Up to n eligible offers (fewer if fewer are eligible), in the order the policy chose them.

        ``eligible_mask`` is in ``arm_ids`` order, for example
        ``OfferRules.eligible(context, order=policy.arm_ids)``.
        """
        if self.kind is not ArmKind.OFFER:
            raise DecisionPolicyError(
                f"rank_offers needs an offer policy; this one chooses {self.kind.value}s"
            )
        return self._rank(mix, eligible_mask, n, rng)

    def choose_layout(
        self,
        mix: PersonaMix | NDArray[np.floating],
        rng: Draws,
        eligible_mask: NDArray[np.bool_] | None = None,
    ) -> RankedArm:
        """One layout variant; the caller looks up its slots by ``arm_id``."""
        if self.kind is not ArmKind.LAYOUT:
            raise DecisionPolicyError(
                f"choose_layout needs a layout policy; this one chooses {self.kind.value}s"
            )
        return self._rank(mix, eligible_mask, 1, rng)[0]

    def _reason(
        self, mix: list[float], arm: int, position: int, explored: bool, base: float, n_remaining: int
    ) -> str:
        """A sentence a marketer can read: why this arm, and which persona of the mix drives it.

        The driver is the persona contributing most to the arm's mixed response (weight x rate), which
        is not always the dominant persona: a 0.3 share of an enthusiastic persona can outweigh 0.7 of an
        indifferent one. Plain Python over the few personas: every served offer and layout has a
        reason, and numpy's per-call overhead on a handful of numbers would dominate the page.
        """
        contributions = [m * r for m, r in zip(mix, self._rates_by_arm[arm], strict=True)]
        response = sum(contributions)
        driver = max(range(len(contributions)), key=contributions.__getitem__)
        if self.scored_by_value:
            value = response * self._unit_values[arm]
            outcome = f"expected net value for this mix: {value:.2f} per decision at {response:.0%} response"
        else:
            outcome = f"expected response for this mix: {response:.0%}"
        head, tail = self._driver_texts[arm][driver]
        summary = f"{outcome}{head}{mix[driver]:.2f}{tail}"
        if explored:
            return f"exploration (epsilon {self.epsilon:.2f} over {n_remaining} eligible arms); {summary}"
        best = "best" if position == 0 else "best remaining"
        if self.mode is PolicyMode.THOMPSON:
            return f"Thompson sampling: {best} in {base:.0%} of posterior draws; {summary}"
        return f"{best} {summary}"
