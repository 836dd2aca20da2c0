"""Per persona x arm response rates, learned from logged decisions made for persona *mixes*.

An arm is an offer or a layout variant. The engine never observes a persona: each logged decision was
made for a customer who is a mix ``m`` over personas, and the outcome model is

    P(y = 1 | arm a, mix m) = sum_k m_k * rho[k, a]

i.e. the customer acted as persona k with probability m_k, and persona k responds to arm a with rate
rho[k, a]. Fitting rho is a missing-data problem (which persona "was" the customer is unknown), solved
by EM: the responsibility of persona k for a success is proportional to m_k * rho[k, a], for a failure
to m_k * (1 - rho[k, a]); the M-step divides expected successes by expected trials. The log-likelihood
is concave in rho, so EM climbs to the global optimum from any interior start.

The result is kept as Beta(alpha0 + lambda * expected successes, beta0 + lambda * expected failures)
per (persona, arm), which is what the decision policy needs for greedy means and Thompson sampling
alike. Plain expected counts (lambda = 1) would treat every decision as if we had seen which persona
made it; with mixed customers that overstates the certainty (in simulation their 90% intervals
covered only ~65% of the true rates). lambda in [0, 1] is the share of the information those counts
claim that the mixes really carry, from the Fisher information of the mixture likelihood (see
``_information_retained``); with pure customers it is 1 and nothing changes, and with it the 90%
intervals cover ~90% of the true rates in the same simulation.

Outcomes may be fractional (in [0, 1]); a fraction y counts as y successes and 1 - y failures.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
import polars as pl
from numpy.typing import NDArray
from scipy.special import betaincinv

from engine.artifact.arrays import load_arrays, save_arrays
from engine.data.contract import DECISION_TYPES
from engine.data.id_map import IdMap, UnknownIdError
from engine.errors import PersonaEngineError
from engine.personas.shopping_context import CONTEXTS, context_index

FORMAT_VERSION = 1
_META_FILE = "arm_estimates.json"
_ALPHA = "alpha"  # alpha.npy and beta.npy
_BETA = "beta"
_MIX_TOLERANCE = 1e-6
# Rates are kept this far from 0 and 1 during EM so that no responsibility divides by zero.
_RATE_FLOOR = 1e-9
# Decision logs at least this many rows a part are counted on two threads (a million customers log two
# million decisions, counted some thirty times per decision type).
_PARTS = 2
_MIN_PART = 50_000


class ArmEstimateError(PersonaEngineError, ValueError):
    """Invalid input to fitting, or an unusable saved estimate; the message names the field or file."""


def _check_mix(mix: NDArray[np.floating], n_personas: int, what: str = "mix") -> NDArray[np.float64]:
    m = np.asarray(mix, dtype=np.float64)
    if m.ndim not in (1, 2) or m.shape[-1] != n_personas:
        raise ArmEstimateError(f"{what} must have shape ({n_personas},) or (n, {n_personas}), got {m.shape}")
    rows = np.atleast_2d(m)
    row = _first_row_off_simplex(rows, _MIX_TOLERANCE)
    if row >= 0:
        raise ArmEstimateError(
            f"{what} row {row} is not on the simplex (weights must be finite, >= 0 and sum to 1): {rows[row]}"
        )
    return m


@numba.njit(cache=True, nogil=True)
def _first_row_off_simplex(rows: NDArray[np.float64], tolerance: float) -> int:  # pragma: no cover - compiled
    """The first row with a weight that is not finite and >= 0 or whose weights do not sum to 1, or -1.

    One pass without temporaries: the decisions of a shop-sized log are millions of mix rows, and the
    numpy checks (finite, non-negative, row sums, each a temporary of the whole table) took 0.2 s a
    decision type on four million decisions.
    """
    for i in range(rows.shape[0]):
        total = 0.0
        for p in range(rows.shape[1]):
            value = rows[i, p]
            if not (0.0 <= value < np.inf):  # NaN fails both comparisons
                return i
            total += value
        if abs(total - 1.0) > tolerance:
            return i
    return -1


@dataclass(frozen=True)
class ArmEstimates:
    """Beta(alpha[k, a], beta[k, a]) response-rate estimates for persona k and arm a."""

    arm_ids: tuple[str, ...]
    persona_ids: tuple[str, ...]
    alpha: NDArray[np.float64]
    beta: NDArray[np.float64]
    prior: tuple[float, float] = (1.0, 1.0)
    iterations: int = 0
    converged: bool = True

    def __post_init__(self) -> None:
        shape = (len(self.persona_ids), len(self.arm_ids))
        for name, array in (("alpha", self.alpha), ("beta", self.beta)):
            if array.shape != shape:
                raise ArmEstimateError(f"{name} has shape {array.shape}, expected {shape} (personas x arms)")
            if not np.all(np.isfinite(array)) or (array <= 0).any():
                raise ArmEstimateError(f"{name} must be finite and positive")
        if len(set(self.arm_ids)) != len(self.arm_ids):
            raise ArmEstimateError("arm_ids are not unique")

    @property
    def n_personas(self) -> int:
        return len(self.persona_ids)

    @property
    def n_arms(self) -> int:
        return len(self.arm_ids)

    @classmethod
    def fit(
        cls,
        mix: NDArray[np.floating],
        arm_index: NDArray[np.integer],
        outcome: NDArray[np.floating],
        n_arms: int,
        *,
        arm_ids: Sequence[str] | None = None,
        persona_ids: Sequence[str] | None = None,
        prior: tuple[float, float] = (1.0, 1.0),
        iterations: int = 500,
        tolerance: float = 1e-6,
    ) -> ArmEstimates:
        """Fit rho by EM on decisions (mix row, arm index, outcome), then form the Beta posteriors.

        EM stops when no rate moves by more than ``tolerance`` between iterations, or after
        ``iterations``; ``converged`` records which. The M-step uses the posterior mean
        (successes + alpha0) / (trials + alpha0 + beta0), so arms or personas without data stay at the
        prior mean instead of dividing zero by zero, and rates never reach exactly 0 or 1. (That makes
        EM maximise the posterior under a Beta(alpha0 + 1, beta0 + 1) prior, which is concave in rho too.)
        """
        alpha0, beta0 = (float(v) for v in prior)
        if not (alpha0 > 0 and beta0 > 0 and np.isfinite(alpha0) and np.isfinite(beta0)):
            raise ArmEstimateError(f"prior must be two positive numbers, got {prior}")
        if n_arms <= 0:
            raise ArmEstimateError(f"n_arms must be positive, got {n_arms}")
        if iterations <= 0:
            raise ArmEstimateError(f"iterations must be positive, got {iterations}")
        if np.ndim(mix) != 2:
            raise ArmEstimateError(
                f"mix must be a 2-D (n_decisions, n_personas) array, got shape {np.shape(mix)}"
            )
        m = _check_mix(mix, np.shape(mix)[1])
        n, n_personas = m.shape
        arms = np.asarray(arm_index)
        y = np.asarray(outcome, dtype=np.float64)
        if arms.shape != (n,) or y.shape != (n,):
            raise ArmEstimateError(
                f"arm_index {arms.shape} and outcome {y.shape} must both have shape ({n},)"
            )
        if n and not np.issubdtype(arms.dtype, np.integer):
            raise ArmEstimateError(f"arm_index must hold integers, got dtype {arms.dtype}")
        arms = arms.astype(np.int64, copy=False)
        out_of_range = (arms < 0) | (arms >= n_arms)
        if out_of_range.any():
            row = int(np.flatnonzero(out_of_range)[0])
            raise ArmEstimateError(f"arm_index[{row}] = {arms[row]} is outside [0, {n_arms})")
        bad_outcome = ~np.isfinite(y) | (y < 0) | (y > 1)
        if bad_outcome.any():
            row = int(np.flatnonzero(bad_outcome)[0])
            raise ArmEstimateError(f"outcome[{row}] = {y[row]} is not in [0, 1]")
        arm_names = tuple(arm_ids) if arm_ids is not None else tuple(f"arm_{a}" for a in range(n_arms))
        persona_names = (
            tuple(persona_ids)
            if persona_ids is not None
            else tuple(f"persona_{k}" for k in range(n_personas))
        )
        if len(arm_names) != n_arms:
            raise ArmEstimateError(f"{len(arm_names)} arm_ids for n_arms={n_arms}")
        if len(persona_names) != n_personas:
            raise ArmEstimateError(f"{len(persona_names)} persona_ids for mixes over {n_personas} personas")

        rho, done, converged = _fit_rates(
            m, arms, y, np.full((n_personas, n_arms), alpha0 / (alpha0 + beta0)), (alpha0, beta0),
            iterations, tolerance,
        )  # fmt: skip
        successes, failures = _expected_counts(m, arms, y, rho)
        retained = _information_retained(m, arms, rho, successes + failures, (alpha0, beta0))
        return cls(
            arm_ids=arm_names,
            persona_ids=persona_names,
            alpha=alpha0 + retained * successes,
            beta=beta0 + retained * failures,
            prior=(alpha0, beta0),
            iterations=done,
            converged=converged,
        )

    @classmethod
    def fit_decisions(
        cls,
        decisions: pl.DataFrame,
        *,
        decision_type: str,
        arm_ids: Sequence[str],
        customers: IdMap,
        mixes: NDArray[np.floating],
        persona_ids: Sequence[str],
        customer_rows: NDArray[np.integer] | None = None,
        prior: tuple[float, float] = (1.0, 1.0),
        iterations: int = 500,
        tolerance: float = 1e-6,
    ) -> ArmEstimates:
        """Fit from a ``decisions`` table (data contract) for one decision type.

        ``mixes`` gives each customer's mix by ``customers`` index, either one matrix
        (n_customers, K) or one per shopping context (len(CONTEXTS), n_customers, K) in CONTEXTS order,
        in which case each decision uses the mix of its own ``context``. Decisions of the other type
        are ignored; a decision naming an unknown arm or customer is an error naming it.
        ``customer_rows``: each row's customer index in ``customers`` when the caller looked them up
        already (training does, once for the whole log); they are then not looked up again.
        """
        if decision_type not in DECISION_TYPES:
            raise ArmEstimateError(
                f"decision_type must be one of {', '.join(DECISION_TYPES)}, got {decision_type!r}"
            )
        rows = decisions.filter(pl.col("decision_type") == decision_type)
        arm_map = IdMap(arm_ids, kind=f"{decision_type} arm")
        try:
            # the id columns map in one vectorised look-up each (IdMap.to_internal of a Series)
            arm_index = arm_map.to_internal(rows["arm_id"].cast(pl.Utf8))
            if customer_rows is None:
                customer_index = customers.to_internal(rows["customer_id"].cast(pl.Utf8))
            else:
                customer_index = np.asarray(customer_rows, dtype=np.int64)
                if customer_index.shape != (decisions.height,):
                    raise ArmEstimateError(
                        f"customer_rows has shape {customer_index.shape}, expected ({decisions.height},)"
                    )
                customer_index = customer_index[(decisions["decision_type"] == decision_type).to_numpy()]
                if ((customer_index < 0) | (customer_index >= len(customers))).any():
                    raise ArmEstimateError(
                        f"customer_rows must be indices into the {len(customers)} customers"
                    )
        except UnknownIdError as error:
            raise ArmEstimateError(f"decisions: {error}") from None
        table = np.asarray(mixes, dtype=np.float64)
        if table.ndim == 2:
            mix = table[customer_index]
        elif table.ndim == 3 and table.shape[0] == len(CONTEXTS):
            try:
                contexts = context_index(rows["context"])
            except ValueError as error:
                raise ArmEstimateError(f"decisions.context: {error}") from None
            # Rows of one (customer, context) cell each: a customer-major table (training passes a
            # transposed view of the mixes' (customers, contexts, personas) array) is taken as is,
            # one row gather instead of a two-index gather through a strided view.
            by_customer = np.ascontiguousarray(np.moveaxis(table, 0, 1)).reshape(-1, table.shape[2])
            mix = by_customer.take(np.asarray(customer_index) * len(CONTEXTS) + contexts, axis=0)
        else:
            raise ArmEstimateError(
                f"mixes must be (n_customers, K) or ({len(CONTEXTS)}, n_customers, K), got {table.shape}"
            )
        if table.shape[-2] != len(customers):
            raise ArmEstimateError(
                f"mixes cover {table.shape[-2]} customers, the customer map {len(customers)}"
            )
        return cls.fit(
            mix,
            arm_index,
            # The contract's outcome is >= 0 with no upper bound, so a shop may log revenue: above 1 it
            # counts as a conversion, as evaluate-policy fits it. Unclipped, an outcome of 2 stopped train
            # with "outcome[2] = 2.0 is not in [0, 1]", naming neither the file nor the row.
            rows["outcome"].clip(0.0, 1.0).to_numpy().astype(np.float64),
            len(arm_map),
            arm_ids=arm_map.ids.tolist(),
            persona_ids=persona_ids,
            prior=prior,
            iterations=iterations,
            tolerance=tolerance,
        )

    def mean(self) -> NDArray[np.float64]:
        """(K, A) posterior mean response rate per persona and arm."""
        return self.alpha / (self.alpha + self.beta)

    def credible_interval(self, level: float = 0.9) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Equal-tailed (K, A) lower and upper bounds holding ``level`` of each Beta."""
        if not 0 < level < 1:
            raise ArmEstimateError(f"level must be in (0, 1), got {level}")
        tail = (1 - level) / 2
        low = betaincinv(self.alpha, self.beta, tail)  # the Beta quantile function
        high = betaincinv(self.alpha, self.beta, 1 - tail)
        return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)

    def expected_response(self, mix: NDArray[np.floating]) -> NDArray[np.float64]:
        """mix @ mean: (A,) for one mix of shape (K,), (n, A) for n mixes."""
        return _check_mix(mix, self.n_personas) @ self.mean()

    def sample(
        self, rng: np.random.Generator, mix: NDArray[np.floating], n_draws: int | None = None
    ) -> NDArray[np.float64]:
        """Thompson draws: rho from the Betas, then combined by the mix.

        Without ``n_draws`` one rho is drawn and the result has the shape of ``expected_response``;
        with it, ``n_draws`` independent rho are drawn and a leading axis of that length is added.
        """
        m = _check_mix(mix, self.n_personas)
        if n_draws is None:
            return m @ rng.beta(self.alpha, self.beta)
        if n_draws <= 0:
            raise ArmEstimateError(f"n_draws must be positive, got {n_draws}")
        rho = rng.beta(self.alpha, self.beta, size=(n_draws, *self.alpha.shape))
        return np.asarray(np.einsum("...k,dka->d...a", m, rho), dtype=np.float64)

    def save(self, directory: Path) -> list[Path]:
        """alpha.npy, beta.npy and arm_estimates.json (ids, prior, fit diagnostics) in ``directory``."""
        written = save_arrays(directory, {_ALPHA: self.alpha, _BETA: self.beta})
        meta = {
            "format_version": FORMAT_VERSION,
            "arm_ids": list(self.arm_ids),
            "persona_ids": list(self.persona_ids),
            "prior": list(self.prior),
            "iterations": self.iterations,
            "converged": self.converged,
        }
        (directory / _META_FILE).write_text(
            json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        return [*written, directory / _META_FILE]

    @classmethod
    def load(cls, directory: Path) -> ArmEstimates:
        meta_path = directory / _META_FILE
        if not meta_path.is_file():
            raise ArmEstimateError(f"{directory}: no {_META_FILE}; not a saved arm estimate")
        try:
            meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ArmEstimateError(f"{meta_path}: not valid JSON ({error})") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise ArmEstimateError(f"{meta_path}: unknown format_version {meta.get('format_version')!r}")
        arrays = load_arrays(directory, (_ALPHA, _BETA), error=ArmEstimateError)
        try:
            return cls(
                arm_ids=tuple(meta["arm_ids"]),
                persona_ids=tuple(meta["persona_ids"]),
                alpha=arrays[_ALPHA].astype(np.float64),
                beta=arrays[_BETA].astype(np.float64),
                prior=(float(meta["prior"][0]), float(meta["prior"][1])),
                iterations=int(meta["iterations"]),
                converged=bool(meta["converged"]),
            )
        except KeyError as error:
            raise ArmEstimateError(f"{meta_path}: missing field {error}") from None
        except ArmEstimateError as error:
            raise ArmEstimateError(f"{directory}: {error}") from None


def _fit_rates(
    mix: NDArray[np.float64],
    arms: NDArray[np.int64],
    outcome: NDArray[np.float64],
    start: NDArray[np.float64],
    prior: tuple[float, float],
    iterations: int,
    tolerance: float,
) -> tuple[NDArray[np.float64], int, bool]:
    """EM's fixed point for the rates, accelerated by SQUAREM; (rates, EM steps taken, converged).

    Each EM step is a pass over every decision, and plain EM crawls along the likelihood's flat
    directions (personas whose mixes overlap): 24 steps on a million customers' offers, still 2e-6 from
    the optimum when a step moved no rate by 1e-6. SQUAREM (Varadhan & Roland 2008, scheme S3)
    extrapolates along two steps' differences and takes one step from there: 9 steps, within 2e-8.
    The likelihood is concave, so any interior point leads to the same optimum; an extrapolation that
    leaves (0, 1) is replaced by the second plain step. Converged means a step moved no rate by more
    than ``tolerance``.
    """
    alpha0, beta0 = prior

    def step(rho: NDArray[np.float64]) -> NDArray[np.float64]:
        successes, failures = _expected_counts(mix, arms, outcome, rho)
        return np.asarray((successes + alpha0) / (successes + failures + alpha0 + beta0), dtype=np.float64)

    done = 0
    current = start
    while done < iterations:
        first = step(current)
        done += 1
        if np.max(np.abs(first - current)) < tolerance:
            return first, done, True
        if done == iterations:
            return first, done, False
        second = step(first)
        done += 1
        if np.max(np.abs(second - first)) < tolerance:
            return second, done, True
        if done == iterations:
            return second, done, False
        change, curvature = first - current, second - 2 * first + current
        spread = float(np.sum(curvature * curvature))
        # a = -1 gives the second plain step; a flat curvature leaves nothing to extrapolate along
        length = -1.0 if spread == 0.0 else min(-1.0, -float(np.sqrt(np.sum(change * change) / spread)))
        extrapolated = current - 2 * length * change + length * length * curvature
        if not np.all((extrapolated > 0) & (extrapolated < 1)):
            extrapolated = second
        current = step(extrapolated)
        done += 1
        if np.max(np.abs(current - extrapolated)) < tolerance:
            return current, done, True
    return current, done, False


def _expected_counts(
    mix: NDArray[np.float64],
    arms: NDArray[np.int64],
    outcome: NDArray[np.float64],
    rho: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """E-step: expected successes and failures per (persona, arm) given the current rates.

    Mix rows sum to 1, so P(failure) = 1 - P(success) and the failure joint is mix - success joint.
    One compiled pass over the decisions: as numpy expressions the step built five (decisions x
    personas) arrays per iteration, and with a million customers' decisions the EM's iterations were
    most of the training run's decision stage (25 s).
    """
    rates = np.ascontiguousarray(np.clip(rho, _RATE_FLOOR, 1 - _RATE_FLOOR))
    mix = np.ascontiguousarray(mix, dtype=np.float64)
    arms = np.ascontiguousarray(arms, dtype=np.int64)
    outcome = np.ascontiguousarray(outcome, dtype=np.float64)
    # The pass releases the GIL: a large log is cut into a fixed number of parts counted on threads
    # and added in part order, so the result does not depend on the threads' timing.
    parts = _PARTS if arms.size >= _PARTS * _MIN_PART else 1
    bounds = np.linspace(0, arms.size, parts + 1).astype(np.int64)
    counts = [(np.zeros(rho.shape), np.zeros(rho.shape)) for _ in range(parts)]

    def count(part: int) -> None:
        span = slice(bounds[part], bounds[part + 1])
        _add_expected_counts(mix[span], arms[span], outcome[span], rates, *counts[part])

    if parts == 1:
        count(0)
    else:
        with ThreadPoolExecutor(parts) as pool:
            list(pool.map(count, range(parts)))
    successes, failures = counts[0]
    for more_successes, more_failures in counts[1:]:
        successes += more_successes
        failures += more_failures
    return successes, failures


@numba.njit(cache=True, nogil=True)
def _add_expected_counts(
    mix: NDArray[np.float64],
    arms: NDArray[np.int64],
    outcome: NDArray[np.float64],
    rates: NDArray[np.float64],
    successes: NDArray[np.float64],
    failures: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled; tested against the numpy step in test_arm_estimates_em
    """Add each decision's posterior persona shares of its success or failure to its arm's counts."""
    n, k = mix.shape
    joint = np.empty(k)
    for i in range(n):
        arm = arms[i]
        p_success = 0.0
        for p in range(k):
            joint[p] = mix[i, p] * rates[p, arm]
            p_success += joint[p]
        y = outcome[i]
        on_success = y / p_success
        on_failure = (1.0 - y) / (1.0 - p_success)
        for p in range(k):
            successes[p, arm] += joint[p] * on_success
            failures[p, arm] += (mix[i, p] - joint[p]) * on_failure


def _information_retained(
    mix: NDArray[np.float64],
    arms: NDArray[np.int64],
    rho: NDArray[np.float64],
    trials: NDArray[np.float64],
    prior: tuple[float, float],
) -> NDArray[np.float64]:
    """(K, A) share lambda in [0, 1] of each rate's expected trials that the mixes actually inform.

    Expected counts pretend we saw which persona acted; we did not, so a rate is less certain than
    ``trials`` pure observations would make it. Both certainties are measured by Fisher information:
    - observed (what the mixes tell): per arm I_a = sum_i w_i m_i m_i^T with w_i = 1 / (p_i (1 - p_i)),
      plus the prior's precision P so that a persona absent from an arm's log keeps the prior's spread
      instead of making I_a singular; the information left for rate k once the other personas' rates
      are uncertain too is 1 / [(I_a + P)^-1]_kk - P;
    - complete (had we seen the persona): trials_k / (r_k (1 - r_k)).
    lambda is their ratio. With pure customers I_a is diagonal and equals the complete information,
    so lambda = 1 and the estimates are plain Beta(alpha0 + successes, beta0 + failures).
    """
    alpha0, beta0 = prior
    prior_precision = (alpha0 + beta0) ** 2 * (alpha0 + beta0 + 1) / (alpha0 * beta0)
    n_personas, n_arms = rho.shape
    rates = np.clip(rho, _RATE_FLOOR, 1 - _RATE_FLOOR)
    complete = trials / (rates * (1 - rates))
    retained = np.ones((n_personas, n_arms))
    informations = np.zeros((n_arms, n_personas, n_personas))
    _add_observed_information(
        np.ascontiguousarray(mix, dtype=np.float64),
        np.ascontiguousarray(arms, dtype=np.int64),
        np.ascontiguousarray(rates),
        informations,
    )
    for arm in range(n_arms):
        information = informations[arm] + prior_precision * np.eye(n_personas)
        observed = 1.0 / np.diag(np.linalg.inv(information)) - prior_precision
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(complete[:, arm] > 0, observed / complete[:, arm], 1.0)
        retained[:, arm] = np.clip(share, 0.0, 1.0)
    return retained


@numba.njit(cache=True, nogil=True)
def _add_observed_information(
    mix: NDArray[np.float64],
    arms: NDArray[np.int64],
    rates: NDArray[np.float64],
    informations: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled; tested against the numpy sums in test_arm_estimates_em
    """Add each decision's w m m^T, w = 1 / (p (1 - p)), to its arm's (personas x personas) information.

    One pass over the decisions: per arm, a mask over the whole log and a copy of its mix rows cost
    more than the sums (0.4 s per decision type on a million customers' two million decisions).
    """
    n, k = mix.shape
    for i in range(n):
        arm = arms[i]
        p = 0.0
        for q in range(k):
            p += mix[i, q] * rates[q, arm]
        p = min(max(p, _RATE_FLOOR), 1.0 - _RATE_FLOOR)
        weight = 1.0 / (p * (1.0 - p))
        for a in range(k):
            scaled = weight * mix[i, a]
            for b in range(k):
                informations[arm, a, b] += scaled * mix[i, b]
