"""Paired bootstrap intervals for the difference of two scorings of the same customers.

Two ways of scoring the same customers (one mix or another, one model or another) give each customer
a pair of figures; their difference is what a change buys. Resampling *customers* (with replacement)
and recomputing the mean difference keeps each customer's two figures together, so the spread of
the interval reflects how much customers disagree about the change, not the spread of either figure
alone (which is much larger and would hide a consistent small gain).

Resampling is ``engine.evaluation.paired_bootstrap.bootstrap_means`` (the one ``compare`` uses); this
module adds what the context evaluation needs around it: figures for segments of zero or one customer
and the result's shape in the manifest (``mean``, ``low``, ``high``, ``n``, ``level``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from engine.evaluation.paired_bootstrap import bootstrap_means

DEFAULT_RESAMPLES = 2000


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a - b`` over customers with its percentile bootstrap interval (``level``, e.g. 0.95)."""

    mean: float
    low: float
    high: float
    n: int
    level: float

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n, "level": self.level}


def paired_bootstrap(
    a: NDArray[np.floating],
    b: NDArray[np.floating],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """The mean of ``a - b`` and its percentile interval from ``resamples`` resamples of the pairs.

    Deterministic for a seed. With fewer than two pairs the interval is the mean itself (one customer
    cannot say how customers vary); with none every figure is NaN.
    """
    first, second = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(
            f"paired figures need two 1-d arrays of one length, got {first.shape} and {second.shape}"
        )
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    n = len(first)
    if n == 0:
        nan = float("nan")
        return PairedDifference(nan, nan, nan, 0, level)
    difference = first - second
    mean = float(difference.mean())
    if n == 1:
        return PairedDifference(mean, mean, mean, 1, level)
    means = bootstrap_means(difference, resamples=resamples, seed=seed)  # the one resampler compare uses
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return PairedDifference(mean, float(low), float(high), n, level)
