"""Paired bootstrap intervals: is model A better than model B on these users, or is it luck?

Two models scored on the same users give two per-user metric vectors (``RankingMetrics.ndcg``). Their
mean difference is one number; how far it could move with another sample of users is what decides
whether it means anything. The paired bootstrap answers that without assuming a distribution:
resample *users* with replacement (the same draw for both models, so a user's two scores stay
together and the between-user spread cancels), take the mean difference of each resample, and read
the 2.5th and 97.5th percentiles (the percentile interval).

Everything is vectorised: a resample is a row of user indices, and the mean differences of a block
of resamples are one ``take`` and one ``mean`` over that block. Blocks bound memory (resamples x users
int64 indices), so a data set with hundreds of thousands of customers needs no more than
``MAX_CELLS_PER_BLOCK`` cells at once. The generator is seeded, so an interval is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

DEFAULT_RESAMPLES = 2000
MAX_CELLS_PER_BLOCK = 1 << 23


@dataclass(frozen=True)
class PairedDifference:
    """mean(a - b) over the paired users, with its bootstrap percentile interval."""

    mean: float
    low: float
    high: float
    users: int
    confidence: float
    resamples: int

    @property
    def interval(self) -> list[float]:
        return [self.low, self.high]

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0: the sign of the difference is not luck."""
        return self.low > 0.0 or self.high < 0.0

    def to_dict(self) -> dict[str, float | int | list[float]]:
        return {
            "mean": self.mean,
            "interval": self.interval,
            "confidence": self.confidence,
            "users": self.users,
            "resamples": self.resamples,
        }


def bootstrap_means(
    values: NDArray[np.floating], *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> NDArray[np.float64]:
    """Means of ``resamples`` bootstrap resamples (with replacement, same size) of ``values``."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"need a non-empty 1-D vector of per-user values, got shape {x.shape}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    n = len(x)
    per_block = max(1, MAX_CELLS_PER_BLOCK // n)
    means = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, per_block):
        stop = min(resamples, start + per_block)
        draws = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = x[draws].mean(axis=1)
    return means


def paired_difference(
    a: NDArray[np.floating],
    b: NDArray[np.floating],
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> PairedDifference:
    """mean(a - b) and its paired bootstrap percentile interval; ``a[i]`` and ``b[i]`` are one user."""
    left, right = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if left.shape != right.shape:
        raise ValueError(
            f"paired vectors must cover the same users: shapes {left.shape} and {right.shape} differ"
        )
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if not (np.isfinite(left).all() and np.isfinite(right).all()):
        raise ValueError("per-user values must be finite (users without held-out items are not scored)")
    difference = left - right
    means = bootstrap_means(difference, resamples=resamples, seed=seed)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return PairedDifference(
        mean=float(difference.mean()),
        low=float(low),
        high=float(high),
        users=len(difference),
        confidence=confidence,
        resamples=resamples,
    )
