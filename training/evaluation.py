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
from engine.ranking_metrics import ranking_metrics
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
        return {
            "model": self.model,
            "segment": self.segment,
            "users": self.users,
            **self.metrics,
            "coverage": self.coverage,
        }


def evaluate_models(
    models: Mapping[str, Recommender], segments: list[EvaluationSegment], k: int
) -> list[SegmentResult]:
    results: list[SegmentResult] = []
    for name, model in models.items():
        for segment in segments:
            recommended, _ = model.recommend(segment.users, k, exclude=segment.exclude)
            scored = ranking_metrics(recommended, segment.relevant)
            per_user = {
                "precision": scored.precision,
                "recall": scored.recall,
                "ndcg": scored.ndcg,
                "map": scored.average_precision,
                "hit_rate": scored.hit,
            }
            results.append(
                SegmentResult(
                    model=name,
                    segment=segment.name,
                    users=scored.n_evaluated,
                    metrics={m: float(v.mean()) if len(v) else float("nan") for m, v in per_user.items()},
                    coverage=scored.coverage,
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
    """All metrics for every model on the warm customers, with the NDCG ratio to popularity."""
    ratios = ratio_to_baseline(results)
    columns = ["model", "users", f"P@{k}", f"R@{k}", f"NDCG@{k}", f"MAP@{k}", f"HR@{k}", "cover", "x pop"]
    rows = [
        [
            r.model,
            r.users,
            *(r.metrics[m] for m in METRIC_NAMES),
            r.coverage,
            ratios.get((r.model, r.segment)),
        ]
        for r in results
        if r.segment == "all"
    ]
    return columns, rows


def segment_table(
    results: list[SegmentResult], k: int, metric: str = "ndcg"
) -> tuple[list[str], list[list[Any]]]:
    """One row per segment (all, each dominant persona, cold start, new customers), one column per model."""
    models = list(dict.fromkeys(r.model for r in results))
    segments = list(dict.fromkeys(r.segment for r in results))
    value = {(r.model, r.segment): r.metrics[metric] for r in results}
    users = {r.segment: r.users for r in results}
    columns = [f"{metric.upper()}@{k} by segment", "users", *models]
    rows = [
        [
            segment.removeprefix("persona:"),
            users[segment],
            *(value.get((m, segment), float("nan")) for m in models),
        ]
        for segment in segments
    ]
    return columns, rows
