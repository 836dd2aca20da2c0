"""Offline evaluation of fitted models on the held-out period, per customer segment.

Metrics come from ``engine.ranking_metrics`` (implemented once, tested against hand-computed cases);
this module decides *whom* to score and how: segments, the k, exclusion of already-seen items, and the
ratio to popularity that tells whether personalisation is worth its cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.models.base import Recommender
from engine.ranking_metrics import catalog_coverage, ranking_metrics
from training.prepared_data import EvaluationSegment

METRIC_NAMES: tuple[str, ...] = ("precision", "recall", "ndcg", "map", "hit_rate")
BASELINE = "popularity"


@dataclass(frozen=True)
class SegmentResult:
    model: str
    segment: str
    users: int
    metrics: dict[str, float]  # metric name -> mean over users with held-out positives
    coverage: float

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "segment": self.segment, "users": self.users, **self.metrics,
                "coverage": self.coverage}


def evaluate_models(
    models: Mapping[str, Recommender], segments: list[EvaluationSegment], k: int
) -> list[SegmentResult]:
    results: list[SegmentResult] = []
    for name, model in models.items():
        for segment in segments:
            recommended, _ = model.recommend(segment.users, k, exclude=segment.exclude)
            per_user = ranking_metrics(recommended, segment.relevant, k)
            results.append(
                SegmentResult(
                    model=name,
                    segment=segment.name,
                    users=int(per_user.n_users),
                    metrics={m: float(per_user.mean(m)) for m in METRIC_NAMES},
                    coverage=float(catalog_coverage(recommended, model.n_items)),
                )
            )
    return results


def ratio_to_baseline(results: list[SegmentResult], metric: str = "ndcg") -> dict[tuple[str, str], float]:
    """metric(model, segment) / metric(popularity, segment); NaN where the baseline is absent or zero."""
    base = {r.segment: r.metrics[metric] for r in results if r.model == BASELINE}
    out: dict[tuple[str, str], float] = {}
    for r in results:
        b = base.get(r.segment)
        out[(r.model, r.segment)] = r.metrics[metric] / b if b else float("nan")
    return out


def best_model(results: list[SegmentResult], segment: str = "all", metric: str = "ndcg") -> str:
    """The persona-conditioned model with the highest metric on a segment (baselines excluded)."""
    candidates = [r for r in results if r.segment == segment and r.model != BASELINE]
    if not candidates:
        raise ValueError(f"no results for segment {segment!r}")
    return max(candidates, key=lambda r: r.metrics[metric]).model


def results_table(results: list[SegmentResult], k: int) -> tuple[list[str], list[list[Any]]]:
    ratios = ratio_to_baseline(results)
    columns = ["model", "segment", "users", f"P@{k}", f"R@{k}", f"NDCG@{k}", f"MAP@{k}", f"HR@{k}", "coverage",
               "NDCG / pop"]
    rows = [
        [r.model, r.segment, r.users, *(r.metrics[m] for m in METRIC_NAMES), r.coverage,
         ratios.get((r.model, r.segment), float("nan"))]
        for r in results
    ]
    return columns, rows
