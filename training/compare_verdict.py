"""The verdict of ``persona-engine compare``: which differences it states, each with a paired interval.

A comparison row's mean NDCG hides how much it could move with another sample of customers. Every
difference stated here is a paired bootstrap over the customers both rows scored
(``engine.evaluation.paired_bootstrap``), so a reader sees at once whether a lead is more than luck:

- ``difference_ci95``: best engine model - best raw library model tuned with the same trial budget
  and validation split (the engine's lead once tuning is taken out of it);
- ``persona_lift_ci95``: best engine model - the same model with persona conditioning off (what the
  personas add, everything else identical);
- the engine against the library defaults and popularity, the tuning gain of the libraries (tuned -
  defaults), each engine model against its own ablation;
- personas on the library's tuning: each engine model at a tuned library model's hyperparameters
  (family "engine at library tuning") minus that library model, which is its own ablation;
- cold start: the best persona-conditioned model against popularity, and against 1.5 x popularity
  (the target), on the held-out cold-start customers.

The model with the best mean is picked on the test customers, as a reader of the table would; the
intervals are about the difference between the two rows so picked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from engine.evaluation.paired_bootstrap import DEFAULT_RESAMPLES, PairedDifference, paired_difference

WARM_SEGMENT = "all"
COLD_SEGMENT = "cold_start"
COLD_START_TARGET_RATIO = 1.5
# The family of rows with an engine model at a tuned library model's hyperparameters and seed: a
# diagnostic compared with that library row (its ``ablation_of``), never the engine's best (that one
# comes from the engine's own search, with the same budget as the library's).
AT_LIBRARY_TUNING = "engine at library tuning"


class ScoredRow(Protocol):
    """What the verdict needs of a comparison row (``training.compare_job.ComparedModel``)."""

    @property
    def name(self) -> str: ...

    @property
    def family(self) -> str: ...

    @property
    def persona_conditioned(self) -> bool: ...

    @property
    def ablation_of(self) -> str | None: ...

    def metric(self, segment: str, metric: str = "ndcg") -> float | None: ...

    def per_user(self, segment: str, metric: str = "ndcg") -> NDArray[np.float64] | None: ...


@dataclass(frozen=True)
class StatedDifference:
    """One difference the comparison states: a - b on a segment, with its interval."""

    name: str
    a: str
    b: str
    segment: str
    result: PairedDifference

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "a": self.a,
            "b": self.b,
            "segment": self.segment,
            "mean": self.result.mean,
            "ci95": self.result.interval,
            "users": self.result.users,
            "above_zero": self.result.low > 0.0,
        }


def _best(rows: Sequence[ScoredRow], segment: str) -> ScoredRow | None:
    scored = [r for r in rows if r.metric(segment) is not None]
    return max(scored, key=lambda r: r.metric(segment) or 0.0, default=None)


class _Differences:
    """Collects stated differences, each bootstrapped with the same seed and resample count."""

    def __init__(self, seed: int, resamples: int) -> None:
        self.seed, self.resamples = seed, resamples
        self.stated: list[StatedDifference] = []

    def add(
        self, name: str, a: ScoredRow | None, b: ScoredRow | None, segment: str, b_scale: float = 1.0
    ) -> StatedDifference | None:
        if a is None or b is None:
            return None
        left, right = a.per_user(segment), b.per_user(segment)
        if left is None or right is None or len(left) == 0 or len(left) != len(right):
            return None
        result = paired_difference(left, b_scale * right, resamples=self.resamples, seed=self.seed)
        b_name = b.name if b_scale == 1.0 else f"{b_scale:g} x {b.name}"
        stated = StatedDifference(name=name, a=a.name, b=b_name, segment=segment, result=result)
        self.stated.append(stated)
        return stated


def _named(row: ScoredRow | None, segment: str, k: int) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"model": row.name, f"ndcg_at_{k}": row.metric(segment)}


def verdict(
    rows: Sequence[ScoredRow], k: int, *, seed: int, resamples: int = DEFAULT_RESAMPLES
) -> dict[str, Any]:
    """The comparison's answers; the four headline keys are also copied to the top of the report."""
    engine_rows = [r for r in rows if r.family == "engine"]
    engine = _best(engine_rows, WARM_SEGMENT)
    tuned = _best([r for r in rows if r.family == "library tuned"], WARM_SEGMENT)
    defaults = _best([r for r in rows if r.family == "library default"], WARM_SEGMENT)
    popularity = next((r for r in rows if r.name == "popularity"), None)
    ablations = {r.ablation_of: r for r in rows if r.ablation_of is not None}
    own_ablation = ablations.get(engine.name) if engine is not None else None

    differences = _Differences(seed, resamples)
    headline = differences.add("engine best - library best tuned", engine, tuned, WARM_SEGMENT)
    lift = differences.add("persona lift (engine best - its ablation)", engine, own_ablation, WARM_SEGMENT)
    differences.add("engine best - library best default", engine, defaults, WARM_SEGMENT)
    differences.add("engine best - popularity", engine, popularity, WARM_SEGMENT)
    differences.add("tuning gain (library best tuned - best default)", tuned, defaults, WARM_SEGMENT)
    for row in engine_rows:
        if row is not engine:
            differences.add(f"persona lift of {row.name}", row, ablations.get(row.name), WARM_SEGMENT)
    for row in rows:
        if row.family == AT_LIBRARY_TUNING:  # its ablation is the tuned library row
            differences.add(
                f"personas on the library's tuning ({row.name})", row, ablations.get(row.name), WARM_SEGMENT
            )

    cold = _best([r for r in rows if r.persona_conditioned], COLD_SEGMENT)
    cold_vs_popularity = differences.add("cold start best - popularity", cold, popularity, COLD_SEGMENT)
    cold_vs_target = differences.add(
        "cold start best - target x popularity", cold, popularity, COLD_SEGMENT, COLD_START_TARGET_RATIO
    )
    out: dict[str, Any] = {
        "metric": f"ndcg_at_{k}",
        "engine_best": _named(engine, WARM_SEGMENT, k),
        "library_best_tuned": _named(tuned, WARM_SEGMENT, k),
        "library_best_default": _named(defaults, WARM_SEGMENT, k),
        "difference_ci95": headline.result.interval if headline else None,
        "persona_lift_ci95": lift.result.interval if lift else None,
        "engine_beats_library_tuned": bool(headline and headline.result.low > 0.0),
        "persona_lift_above_zero": bool(lift and lift.result.low > 0.0),
    }
    if cold is not None and popularity is not None:
        c, p = cold.metric(COLD_SEGMENT), popularity.metric(COLD_SEGMENT)
        ratio = c / p if c is not None and p else None
        out["cold_start"] = {
            "best_persona_conditioned": cold.name,
            f"ndcg_at_{k}": c,
            f"popularity_ndcg_at_{k}": p,
            "ratio_to_popularity": ratio,
            "target_ratio": COLD_START_TARGET_RATIO,
            # Met as the other verdicts are: the paired interval of (cold best - target x popularity) lies
            # above 0. The point ratio alone said "met" on 6 cold-start customers whose interval was
            # [-0.0570, +0.2901] (a data scientist's walkthrough on 50 MovieLens users).
            "meets_target": bool(cold_vs_target and cold_vs_target.result.low > 0.0),
            "difference_ci95": cold_vs_popularity.result.interval if cold_vs_popularity else None,
            "difference_to_target_ci95": cold_vs_target.result.interval if cold_vs_target else None,
        }
    out["differences"] = [d.to_dict() for d in differences.stated]
    out["bootstrap"] = {"resamples": resamples, "seed": seed, "confidence": 0.95, "paired_over": "customers"}
    return out
