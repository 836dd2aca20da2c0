"""Vectorised sampling primitives of the synthetic shop, and the array types they work on.

Millions of events are drawn without a Python loop per event: every draw is inverse-CDF sampling
(a comparison against row-wise cumulative probabilities, or one ``searchsorted`` over a segmented CDF),
so each phase of the simulation is a handful of numpy calls whatever the chunk size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


def draw_from_rows(cumulative: FloatArray, u: FloatArray) -> IntArray:
    """Draw one index per row from row-wise cumulative probabilities (rows end at ~1)."""
    index = (u[:, None] >= cumulative).sum(axis=1)
    return np.minimum(index, cumulative.shape[1] - 1).astype(np.int64)


@dataclass(frozen=True)
class SegmentedSampler:
    """Inverse-CDF sampling of elements within segments (clusters, brands, personas) in one searchsorted.

    Elements are sorted by segment; segment ``s`` occupies the CDF range ``(s, s + 1]`` so drawing from
    segment ``s`` is ``searchsorted(cdf, s + u)``. Zero-weight elements are never drawn.
    """

    order: IntArray  # element index at each sorted position
    cdf: FloatArray

    @classmethod
    def build(cls, segment: IntArray, weight: FloatArray, n_segments: int) -> SegmentedSampler:
        if (weight < 0).any() or not np.isfinite(weight).all():
            raise ValueError("sampling weights must be finite and non-negative")
        order = np.lexsort((np.arange(len(segment)), segment)).astype(np.int64)
        sorted_segment = segment[order]
        totals = np.bincount(segment, weights=weight, minlength=n_segments)
        starts = np.searchsorted(sorted_segment, np.arange(n_segments), side="left")
        ends = np.searchsorted(sorted_segment, np.arange(n_segments), side="right")
        nonempty = ends > starts
        if (totals[nonempty] <= 0).any():
            bad = int(np.flatnonzero(nonempty & (totals <= 0))[0])
            raise ValueError(f"segment {bad} has elements but zero total sampling weight")
        # Normalising before the running sum keeps every segment's mass at 1 whatever its scale.
        cumulative = np.cumsum(weight[order] / totals[sorted_segment])
        before = np.concatenate([[0.0], cumulative])[starts]
        within = np.clip(cumulative - before[sorted_segment], 0.0, 1.0)
        cdf = sorted_segment.astype(np.float64) + within
        cdf[ends[nonempty] - 1] = np.arange(n_segments)[nonempty] + 1.0
        return cls(order=order, cdf=cdf)

    def draw(self, segment: IntArray, u: FloatArray) -> IntArray:
        position = np.searchsorted(self.cdf, segment + u, side="right")
        return self.order[np.minimum(position, len(self.order) - 1)]
