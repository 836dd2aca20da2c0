"""How each arm of an experiment did, and whether it differs from the control by more than chance.

Per arm: decisions, conversions (decisions with a positive outcome), conversion rate, revenue. Against
the control arm:

- conversion rate difference with Newcombe's hybrid score interval (method 10 of Newcombe 1998),
  built from the two Wilson score intervals. Unlike the normal ("Wald") interval it stays inside
  [-1, 1] and keeps its coverage for rare conversions and small arms, which is where experiments
  start.
- revenue per decision difference with a percentile bootstrap (resampling decisions within each arm),
  because revenue is heavy-tailed: most decisions earn nothing, a few a lot, and a normal interval
  on such a mean is too narrow at the sample sizes where decisions are made.

Decisions are the unit: a customer with several decisions contributes several (correlated) rows, so
with heavy repeat traffic the intervals are somewhat too narrow; assignment by customer keeps the
arms comparable either way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm

from engine.errors import PersonaEngineError

DEFAULT_LEVEL = 0.95
DEFAULT_BOOTSTRAP = 2_000


class ExperimentReportError(PersonaEngineError, ValueError):
    """Inputs that cannot make a report (no control arm, mismatched lengths, a bad level)."""


def wilson_interval(successes: int, n: int, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    z = float(norm.ppf(0.5 + level / 2))
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(
    successes_a: int, n_a: int, successes_b: int, n_b: int, level: float = DEFAULT_LEVEL
) -> tuple[float, float]:
    """Interval of p_a - p_b from the two Wilson intervals (Newcombe's hybrid score method)."""
    if n_a == 0 or n_b == 0:
        return -1.0, 1.0
    p_a, p_b = successes_a / n_a, successes_b / n_b
    low_a, high_a = wilson_interval(successes_a, n_a, level)
    low_b, high_b = wilson_interval(successes_b, n_b, level)
    difference = p_a - p_b
    lower = difference - math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2)
    upper = difference + math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2)
    return max(-1.0, lower), min(1.0, upper)


def bootstrap_mean_difference(
    a: ArrayLike,
    b: ArrayLike,
    *,
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_BOOTSTRAP,
    rng: np.random.Generator | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) - mean(b), resampling each group independently."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(x) == 0 or len(y) == 0:
        return float("nan"), float("nan")
    generator = rng or np.random.default_rng(0)
    # Means of resamples via multinomial counts: one (resamples, n) draw per group, no index arrays.
    means_x = generator.multinomial(len(x), np.full(len(x), 1 / len(x)), size=resamples) @ x / len(x)
    means_y = generator.multinomial(len(y), np.full(len(y), 1 / len(y)), size=resamples) @ y / len(y)
    tail = (1 - level) / 2
    low, high = np.quantile(means_x - means_y, [tail, 1 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class ArmSummary:
    arm: str
    decisions: int
    conversions: int
    conversion_rate: float
    revenue: float
    revenue_per_decision: float
    is_control: bool
    # Differences to the control arm (None for the control itself):
    rate_difference: float | None = None
    rate_difference_ci: tuple[float, float] | None = None
    revenue_difference: float | None = None  # per decision
    revenue_difference_ci: tuple[float, float] | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "arm": self.arm,
            "decisions": self.decisions,
            "conversions": self.conversions,
            "conversion_rate": self.conversion_rate,
            "revenue": self.revenue,
            "revenue_per_decision": self.revenue_per_decision,
            "is_control": self.is_control,
            "rate_difference": self.rate_difference,
            "rate_difference_ci": list(self.rate_difference_ci) if self.rate_difference_ci else None,
            "revenue_difference": self.revenue_difference,
            "revenue_difference_ci": list(self.revenue_difference_ci) if self.revenue_difference_ci else None,
        }


def summarize_arms(
    arms: Sequence[str],
    converted: ArrayLike,
    revenue: ArrayLike,
    control: str,
    *,
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> list[ArmSummary]:
    """One summary per arm (control first, then by name), from per-decision rows."""
    if not 0 < level < 1:
        raise ExperimentReportError(f"level must be in (0, 1), got {level}")
    names = np.asarray(list(arms), dtype=object)
    success: NDArray[np.bool_] = np.asarray(converted, dtype=bool)
    money = np.asarray(revenue, dtype=np.float64)
    if not (len(names) == len(success) == len(money)):
        raise ExperimentReportError(
            "arms, converted and revenue must have the same length "
            f"({len(names)}, {len(success)}, {len(money)})"
        )
    present = sorted(set(names.tolist()))
    if control not in present:
        raise ExperimentReportError(
            f"the control arm {control!r} has no decisions; arms present: {', '.join(present) or 'none'}"
        )
    rng = np.random.default_rng(seed)
    control_rows = names == control
    n_c, s_c = int(control_rows.sum()), int(success[control_rows].sum())
    order = [control] + [arm for arm in present if arm != control]
    out = []
    for arm in order:
        rows = names == arm
        n, s = int(rows.sum()), int(success[rows].sum())
        total = float(money[rows].sum())
        summary = ArmSummary(arm, n, s, s / n, total, total / n, arm == control)
        if arm != control:
            summary = replace(
                summary,
                rate_difference=s / n - s_c / n_c,
                rate_difference_ci=newcombe_interval(s, n, s_c, n_c, level),
                revenue_difference=total / n - float(money[control_rows].sum()) / n_c,
                revenue_difference_ci=bootstrap_mean_difference(
                    money[rows], money[control_rows], level=level, resamples=resamples, rng=rng
                ),
            )
        out.append(summary)
    return out
