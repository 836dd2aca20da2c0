"""Offers and layouts that learn from live outcomes: Thompson sampling per persona x journey stage x arm.

Why Thompson sampling over Beta statistics rather than LinUCB on (mix, stage one-hot) features: the
reward is a conversion probability, the artifact already holds per persona x arm Beta posteriors
fitted offline (engine/decisions/arm_estimates.py) that seed the online statistics with no translation, the
sufficient statistics are plain counters that a StateStore adds to atomically (so Redis-backed
replicas agree without a lock or a matrix to invert), and the model keeps the structure the engine
rests on, P(y | arm, mix) = sum_k mix_k * rho[k, stage, arm], so a never-seen mix is served from
what each of its personas taught. LinUCB would need a shared d x d matrix per arm updated under a lock
and a confidence width that has no propensity of its own.

Statistics. For each decision type and journey stage, rho[k, s, a] ~ Beta(alpha0 + S, beta0 + N - S):
alpha0, beta0 are the artifact's posteriors, shrunk to at most ``seed_strength`` pseudo-decisions per
cell (the artifact's history is older than live traffic and must not drown it), S and N are live
fractional successes and trials. On the synthetic shop (benchmarks/bandit_simulation.py), with the
true rates moved after training, a cap of 100 had won back half the static policies' loss to the
oracle by the last quarter of 20,000 decisions (0.147 against 0.118, oracle 0.176) and a cap of 1,000
a third (0.136); without such a change the cap of 100 cost 0.002 of conversion rate against 1,000
(0.153 against 0.155 over 6,000 decisions). The exploration floor costs about its share of traffic:
0.01 x 12 offers explores 12% of decisions uniformly.

An outcome is attributed to personas as EM does offline:

- exposure (``*_shown``, or the first reward of an unexposed decision): N[k] += mix_k;
- reward (``offer_redeemed`` / ``layout_converted``): the success goes to persona k with
  responsibility r_k = mix_k rho_k / sum_j mix_j rho_j (current posterior means), so
  S[k] += r_k and N[k] += r_k - mix_k: that decision's trials become r_k, all successes.

Each decision's arms, mix and stage are kept in the StateStore under its decision id (for
``decision_ttl_seconds``), so an outcome arriving at any replica updates the right cells; repeated
exposures or rewards of one decision and arm are counted once.

Choice and propensities. ``thompson_draws`` posterior draws of each arm's response for the customer's
mix (normal with the exact posterior mean and variance of mix @ rho, see ``_draw_scores``) give the
share of draws each eligible arm wins: the Thompson probabilities. Mixed with the exploration floor,
p = floor + (1 - n_eligible * floor) * thompson, every eligible arm keeps at least ``exploration_floor``
(so off-policy evaluation of any other policy stays possible). The arm is then drawn from p itself, so
the propensity returned and logged is the exact probability with which this arm was chosen (given the
draws, which are independent of the reward, so importance weights built on it stay unbiased). Offers
ranked below the first are drawn the same way among the remaining ones; their propensities are
conditional on the arms above them.

Budgets. ``budgets`` caps the cost (offers table ``cost`` per redemption) of each offer per period of
``budget_period_seconds``; redemptions add their cost to a StateStore counter of the period, and an
offer whose remaining budget cannot pay one more redemption is ineligible until the next period.
Offers shown just before the cap was reached may still be redeemed, so the overrun is bounded by
the redemptions outstanding, not zero.
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.data.contract import DECISION_TYPES
from engine.decisions.arm_estimates import ArmEstimates
from engine.decisions.journey_stage import JourneyStage
from engine.errors import PersonaEngineError
from engine.live.events import BehaviorEvent, DecisionOutcome, ServedDecision
from engine.live.state_store import StateStore

DEFAULT_EXPLORATION_FLOOR = 0.01  # with 12 offers: 12% of traffic explores uniformly
DEFAULT_THOMPSON_DRAWS = 256
DEFAULT_SEED_STRENGTH = 100.0
DEFAULT_DECISION_TTL_SECONDS = 7 * 24 * 3600.0
DEFAULT_BUDGET_PERIOD_SECONDS = 24 * 3600.0
_PREFIX = "bandit"


class OnlineBanditError(PersonaEngineError, ValueError):
    """A bad bandit configuration or request; the message names the field or arm."""


class NoEligibleArmsError(OnlineBanditError):
    """Every arm is ineligible (rules, candidates or budgets): nothing can be chosen."""


@dataclass(frozen=True)
class BanditConfig:
    exploration_floor: float = DEFAULT_EXPLORATION_FLOOR
    thompson_draws: int = DEFAULT_THOMPSON_DRAWS
    seed_strength: float = DEFAULT_SEED_STRENGTH
    decision_ttl_seconds: float = DEFAULT_DECISION_TTL_SECONDS
    budget_period_seconds: float = DEFAULT_BUDGET_PERIOD_SECONDS
    budgets: Mapping[str, float] = field(default_factory=dict)  # offer id -> cost cap per period

    def __post_init__(self) -> None:
        if not 0 <= self.exploration_floor <= 1:
            raise OnlineBanditError(f"exploration_floor must be in [0, 1], got {self.exploration_floor}")
        if self.thompson_draws < 1:
            raise OnlineBanditError(f"thompson_draws must be at least 1, got {self.thompson_draws}")
        if not self.seed_strength > 0:
            raise OnlineBanditError(f"seed_strength must be positive, got {self.seed_strength}")
        if not self.budget_period_seconds > 0:
            raise OnlineBanditError(
                f"budget_period_seconds must be positive, got {self.budget_period_seconds}"
            )
        for offer_id, cap in self.budgets.items():
            if not (np.isfinite(cap) and cap >= 0):
                raise OnlineBanditError(f"budgets.{offer_id} must be a finite number >= 0, got {cap}")


_BANDIT_KEYS = {
    "exploration_floor": float,
    "thompson_draws": int,
    "seed_strength": float,
    "decision_ttl_hours": float,
    "budget_period_hours": float,
    "budgets": dict,
}


def load_bandit_config(path: Path) -> BanditConfig:
    """The ``[bandit]`` section of a TOML file: exploration, seeding and per-offer cost caps.

    A deployment sets budgets here (``[bandit.budgets] offer_id = cap``, in the offers table's cost
    unit per ``budget_period_hours``) because a cap has to hold from the first request on; unknown keys
    are errors, so a typo'd key never silently leaves an offer uncapped.
    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OnlineBanditError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as error:
        raise OnlineBanditError(f"{path}: not valid TOML ({error})") from None
    section = document.get("bandit")
    if not isinstance(section, dict) or set(document) != {"bandit"}:
        raise OnlineBanditError(f"{path}: expected exactly one [bandit] section")
    values: dict[str, Any] = {}
    for key, value in section.items():
        kind = _BANDIT_KEYS.get(key)
        if kind is None:
            raise OnlineBanditError(f"{path}: bandit.{key}: unknown key (known: {', '.join(_BANDIT_KEYS)})")
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise OnlineBanditError(f"{path}: bandit.{key}: expected {kind.__name__}, got {value!r}")
        values[key] = value
    budgets: dict[str, float] = {}
    for offer_id, cap in values.pop("budgets", {}).items():
        if isinstance(cap, bool) or not isinstance(cap, int | float):
            raise OnlineBanditError(f"{path}: bandit.budgets.{offer_id}: expected a number, got {cap!r}")
        budgets[offer_id] = float(cap)
    hours = {"decision_ttl_hours": "decision_ttl_seconds", "budget_period_hours": "budget_period_seconds"}
    for key, field_name in hours.items():
        if key in values:
            values[field_name] = values.pop(key) * 3600.0
    try:
        return BanditConfig(**values, budgets=budgets)
    except OnlineBanditError as error:
        raise OnlineBanditError(f"{path}: bandit.{error}") from None


@dataclass(frozen=True)
class BanditChoice:
    arm_id: str
    rank: int
    propensity: float  # probability of this arm at this rank, given the arms ranked above it
    expected_response: float  # mix @ posterior mean, for display and reasons


@dataclass(frozen=True)
class BanditDecision:
    choices: tuple[BanditChoice, ...]
    first_probabilities: tuple[tuple[str, float], ...]  # the distribution the first arm was drawn from
    stage: JourneyStage
    served: ServedDecision  # the log record of the first choice


def _counter(persona: str, arm: str, what: str) -> str:
    return f"{persona}|{arm}|{what}"


class OnlineBandit:
    """One decision type's arms (offers or layout variants), learning online; a LiveEventObserver."""

    def __init__(
        self,
        decision_type: str,
        seed: ArmEstimates,
        store: StateStore,
        config: BanditConfig | None = None,
        *,
        costs: Mapping[str, float] | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        if decision_type not in DECISION_TYPES:
            raise OnlineBanditError(f"decision_type must be one of {DECISION_TYPES}, got {decision_type!r}")
        self.decision_type = decision_type
        self.config = config or BanditConfig()
        self.arm_ids = seed.arm_ids
        self.persona_ids = seed.persona_ids
        self._arm_position = {arm: a for a, arm in enumerate(self.arm_ids)}
        unknown = sorted(set(self.config.budgets) - set(self.arm_ids))
        if unknown:
            raise OnlineBanditError(f"budgets name unknown arm(s): {', '.join(unknown)}")
        self._costs = np.array([float((costs or {}).get(arm, 0.0)) for arm in self.arm_ids])
        if self.config.budgets and decision_type != "offer":
            raise OnlineBanditError("budgets apply to offers only")
        self._caps = np.array([self.config.budgets.get(arm, np.inf) for arm in self.arm_ids])
        strength = seed.alpha + seed.beta
        shrink = np.minimum(1.0, self.config.seed_strength / strength)
        self._alpha0 = seed.alpha * shrink
        self._beta0 = seed.beta * shrink
        self._store = store
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        # Counter names in (persona, arm) row-major order, built once: a decision reads them all.
        cells = [(persona, arm) for persona in self.persona_ids for arm in self.arm_ids]
        self._success_keys = [_counter(persona, arm, "s") for persona, arm in cells]
        self._trial_keys = [_counter(persona, arm, "n") for persona, arm in cells]

    # ------------------------------------------------------------------ statistics

    def _stats_key(self, stage: str) -> str:
        return f"{_PREFIX}:{self.decision_type}:stats:{stage}"

    def _decision_key(self, decision_id: str) -> str:
        return f"{_PREFIX}:{self.decision_type}:decision:{decision_id}"

    def posterior(self, stage: JourneyStage) -> ArmEstimates:
        """The current Beta(alpha, beta) per persona x arm of one journey stage."""
        counters = self._store.get_floats(self._stats_key(stage.value))
        successes = np.zeros_like(self._alpha0)
        trials = np.zeros_like(self._alpha0)
        if counters:
            size = successes.size
            successes = np.fromiter((counters.get(k, 0.0) for k in self._success_keys), float, size)
            trials = np.fromiter((counters.get(k, 0.0) for k in self._trial_keys), float, size)
            successes, trials = successes.reshape(self._alpha0.shape), trials.reshape(self._alpha0.shape)
        # Fractional counts can leave a hair of negative failures through float rounding.
        failures = np.maximum(trials - successes, 0.0)
        return ArmEstimates(
            self.arm_ids,
            self.persona_ids,
            self._alpha0 + np.maximum(successes, 0.0),
            self._beta0 + failures,
        )

    # ------------------------------------------------------------------ budgets

    def _period(self, moment: dt.datetime) -> int:
        return int(moment.timestamp() // self.config.budget_period_seconds)

    def _budget_key(self, period: int) -> str:
        return f"{_PREFIX}:{self.decision_type}:spent:{period}"

    def spent(self, moment: dt.datetime | None = None) -> dict[str, float]:
        """Cost of the redemptions of each offer in the budget period of ``moment`` (now by default)."""
        counters = self._store.get_floats(self._budget_key(self._period(moment or self._clock())))
        return {arm: counters.get(arm, 0.0) for arm in self.arm_ids}

    def within_budget(self, moment: dt.datetime | None = None) -> NDArray[np.bool_]:
        """(A,) whether each arm can still pay for one more redemption this period."""
        if not self.config.budgets:
            return np.ones(len(self.arm_ids), dtype=bool)
        spent = self.spent(moment)
        used = np.array([spent[arm] for arm in self.arm_ids])
        return np.asarray(used + self._costs <= self._caps + 1e-9)

    # ------------------------------------------------------------------ choosing

    def _mix(self, mix: NDArray[np.floating]) -> NDArray[np.float64]:
        m = np.asarray(mix, dtype=np.float64)
        if m.shape != (len(self.persona_ids),):
            raise OnlineBanditError(f"mix must have {len(self.persona_ids)} weights, got shape {m.shape}")
        if not np.all(np.isfinite(m)) or (m < 0).any() or abs(float(m.sum()) - 1.0) > 1e-6:
            raise OnlineBanditError("mix weights must be finite, >= 0 and sum to 1")
        return m

    def _available(self, eligible_mask: NDArray[np.bool_] | None, moment: dt.datetime) -> NDArray[np.bool_]:
        available = self.within_budget(moment)
        if eligible_mask is not None:
            mask = np.asarray(eligible_mask, dtype=bool)
            if mask.shape != available.shape:
                raise OnlineBanditError(
                    f"eligible_mask has {mask.shape[0]} entries for {len(self.arm_ids)} arms"
                )
            available = available & mask
        return available

    def _distribution(self, wins: NDArray[np.float64], remaining: NDArray[np.bool_]) -> NDArray[np.float64]:
        """Thompson win shares among ``remaining``, mixed with the exploration floor."""
        n_remaining = int(remaining.sum())
        floor = min(self.config.exploration_floor, 1.0 / n_remaining)
        p = np.where(remaining, floor + (1.0 - n_remaining * floor) * wins, 0.0)
        return p / p.sum()

    def _draw_scores(
        self, posterior: ArmEstimates, mix: NDArray[np.float64], rng: np.random.Generator
    ) -> NDArray[np.float64]:
        """(draws, A) posterior draws of each arm's response for this mix, mix @ rho.

        Drawn from the normal with the exact mean and variance of sum_k mix_k rho_k under the
        independent Beta posteriors, rather than from the Betas themselves: 256 Beta draws of every
        persona x arm cost about 12 ms per decision, the normal draws 0.05 ms. The approximation only
        shapes how the Thompson shares explore; the propensity returned stays exact, because the arm is
        drawn from the very distribution that is returned.
        """
        alpha, beta = posterior.alpha, posterior.beta
        total = alpha + beta
        mean = mix @ (alpha / total)
        variance = (mix * mix) @ (alpha * beta / (total * total * (total + 1.0)))
        noise = rng.standard_normal((self.config.thompson_draws, len(mean)))
        return np.asarray(mean + np.sqrt(variance) * noise)

    @staticmethod
    def _wins(scores: NDArray[np.float64], remaining: NDArray[np.bool_]) -> NDArray[np.float64]:
        winners = np.argmax(np.where(remaining, scores, -np.inf), axis=1)
        return np.bincount(winners, minlength=scores.shape[1]) / len(scores)

    def propensities(
        self,
        mix: NDArray[np.floating],
        stage: JourneyStage,
        rng: np.random.Generator,
        eligible_mask: NDArray[np.bool_] | None = None,
        moment: dt.datetime | None = None,
    ) -> NDArray[np.float64]:
        """(A,) probability of each arm for the first position (0 for ineligible or exhausted arms)."""
        weights = self._mix(mix)
        remaining = self._available(eligible_mask, moment or self._clock())
        if not remaining.any():
            raise NoEligibleArmsError(f"no eligible {self.decision_type} arm")
        scores = self._draw_scores(self.posterior(stage), weights, rng)
        return self._distribution(self._wins(scores, remaining), remaining)

    def choose(
        self,
        *,
        decision_id: str,
        customer_id: str,
        mix: NDArray[np.floating],
        stage: JourneyStage,
        rng: np.random.Generator,
        n: int = 1,
        eligible_mask: NDArray[np.bool_] | None = None,
        context: str = "",
        experiment_arm: str = "",
        model_version: str = "",
        timestamp: dt.datetime | None = None,
    ) -> BanditDecision:
        """Up to ``n`` arms in rank order, remembered under ``decision_id`` for the outcomes to come."""
        if n < 1:
            raise OnlineBanditError(f"n must be at least 1, got {n}")
        moment = timestamp or self._clock()
        weights = self._mix(mix)
        remaining = self._available(eligible_mask, moment).copy()
        if not remaining.any():
            raise NoEligibleArmsError(f"no eligible {self.decision_type} arm")
        posterior = self.posterior(stage)
        scores = self._draw_scores(posterior, weights, rng)
        expected = weights @ posterior.mean()
        choices: list[BanditChoice] = []
        first: NDArray[np.float64] | None = None
        for rank in range(1, min(n, int(remaining.sum())) + 1):
            p = self._distribution(self._wins(scores, remaining), remaining)
            if first is None:
                first = p
            arm = int(rng.choice(len(p), p=p))
            choices.append(BanditChoice(self.arm_ids[arm], rank, float(p[arm]), float(expected[arm])))
            remaining[arm] = False
        assert first is not None
        self.remember(decision_id, weights, stage, [c.arm_id for c in choices])
        served = ServedDecision(
            decision_id=decision_id,
            customer_id=customer_id,
            timestamp=moment,
            context=context,
            decision_type=self.decision_type,
            arm_id=choices[0].arm_id,
            propensity=choices[0].propensity,
            persona_mix=tuple(
                (persona, float(w)) for persona, w in zip(self.persona_ids, weights, strict=True)
            ),
            journey_stage=stage.value,
            experiment_arm=experiment_arm,
            model_version=model_version,
        )
        return BanditDecision(
            tuple(choices),
            tuple((arm, float(q)) for arm, q in zip(self.arm_ids, first, strict=True)),
            stage,
            served,
        )

    # ------------------------------------------------------------------ learning

    def remember(
        self, decision_id: str, mix: NDArray[np.floating], stage: JourneyStage, arm_ids: Sequence[str]
    ) -> None:
        """Keep what an outcome of this decision needs (mix, stage, arms served) for its updates.

        ``choose`` calls it; the live loop also calls it for decisions another policy made (the
        artifact's, in a control arm): the per persona x arm statistics do not depend on which policy
        chose the arm, so those outcomes teach the bandit too.
        """
        unknown = [arm for arm in arm_ids if arm not in self._arm_position]
        if unknown:
            raise OnlineBanditError(f"unknown {self.decision_type} arm(s): {', '.join(unknown)}")
        self._store.set(
            self._decision_key(decision_id),
            json.dumps(
                {
                    "stage": stage.value,
                    "mix": self._mix(mix).tolist(),
                    "arms": list(arm_ids),
                    "personas": list(self.persona_ids),  # whose weights ``mix`` holds, in order
                }
            ).encode("utf-8"),
            ttl_seconds=self.config.decision_ttl_seconds,
        )

    def observe(self, events: Sequence[BehaviorEvent], outcomes: Sequence[DecisionOutcome]) -> None:
        """Update from the outcomes of this decision type (events are the journey tracker's business)."""
        for outcome in outcomes:
            if outcome.kind.decision_type == self.decision_type:
                self.update(outcome)

    def update(self, outcome: DecisionOutcome) -> bool:
        """Apply one outcome; False when its decision is unknown (expired, or served by another policy)
        or was made under another persona catalog (a ``ReloadModel`` with ``allow_catalog_change``):
        its mix weighs personas this bandit does not count, so it teaches nothing here. Before the
        catalog was stored with the decision, such an outcome stopped the live observer with a
        ValueError, or, with as many personas in both, was credited to the wrong ones."""
        raw = self._store.get(self._decision_key(outcome.decision_id))
        if raw is None:
            return False
        record = json.loads(raw)
        personas = record.get("personas")
        if (personas is not None and tuple(personas) != tuple(self.persona_ids)) or len(record["mix"]) != len(
            self.persona_ids
        ):
            return False
        arm = outcome.arm_id or record["arms"][0]
        if arm not in self._arm_position or arm not in record["arms"]:
            return False
        stage, mix = record["stage"], np.asarray(record["mix"], dtype=np.float64)
        marks = f"{self._decision_key(outcome.decision_id)}:marks"
        deltas: dict[str, float] = {}
        newly_exposed = self._store.add_floats(marks, {f"{arm}|exposed": 1.0})[f"{arm}|exposed"] == 1.0
        if newly_exposed:
            for persona, weight in zip(self.persona_ids, mix, strict=True):
                deltas[_counter(persona, arm, "n")] = float(weight)
        if outcome.kind.is_reward:
            first_reward = self._store.add_floats(marks, {f"{arm}|reward": 1.0})[f"{arm}|reward"] == 1.0
            if first_reward:
                a = self._arm_position[arm]
                rates = self.posterior(JourneyStage(stage)).mean()[:, a]
                joint = mix * rates
                responsibility = joint / joint.sum() if joint.sum() > 0 else mix
                for persona, r, weight in zip(self.persona_ids, responsibility, mix, strict=True):
                    n_key = _counter(persona, arm, "n")
                    deltas[n_key] = deltas.get(n_key, 0.0) + float(r - weight)
                    deltas[_counter(persona, arm, "s")] = float(r)
                if self.decision_type == "offer" and self._costs[a] > 0:
                    period = self._period(outcome.timestamp)
                    self._store.add_floats(self._budget_key(period), {arm: float(self._costs[a])})
        if deltas:
            self._store.add_floats(self._stats_key(stage), deltas)
        return True
