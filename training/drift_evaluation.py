"""Customers drifting at the split, scored with the mix serving gives them: does following a drift pay?

The server runs a change test on each customer's events (``engine.personas.change_detection``) and,
while a customer drifts, serves their recent mix (``engine.personas.drift.recent_mixes``: the events
since the change began, around their long-term mix) instead of the long-term one. Offline evaluation
scores everyone with the overall mix, so the figures elsewhere say nothing of that path. Here the same
test runs over the warm customers' training events, its threshold calibrated on their time-shuffled
histories at ``[drift] target_false_alarm`` (as training calibrates the live threshold), and the
customers it flags at the end of the training period have their held-out events scored twice: with
the recent mix the server would give them on the first test day (the models learned their history
under the overall mix, which is the ``base_mix``) and with the overall mix. The paired difference,
with a bootstrap interval over those customers, is what the drift path is worth to their lists.

On the synthetic demo shop (``training/configs/demo.toml``; 10% of customers planted with a drift) the
test flagged 201 of the 3,168 warm customers it could test, 135 of them planted drifters; persona
popularity scored them 0.0616 NDCG@10 with the overall mix and 0.0761 with the recent mix, +0.0145
[+0.0057, +0.0236], ALS +0.0061 [-0.0008, +0.0139] (README, "Customers who drift").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from engine.data.id_map import IdMap
from engine.models.base import Recommender
from engine.personas.change_detection import threshold_for
from engine.personas.drift import DriftConfig, population_mean_mix, recent_mixes, trace_changes
from engine.personas.drift_calibration import MIN_TESTED_CUSTOMERS
from engine.personas.event_encoding import build_event_features
from training.compare_verdict import WARM_SEGMENT
from training.config import TrainConfig
from training.evaluation import ScoredLists, difference_cells, evaluate_context_mixes
from training.paired_bootstrap import PairedDifference
from training.prepared_data import ContextSegments, EvaluationSegment, PreparedData

DRIFT_EVALUATION = "drift_evaluation"  # the manifest's key
# Warm customers the change test runs over (a seeded sample beyond): the test and its shuffled
# calibration cost a pass over their events each, and 20,000 customers flag about a thousand.
MAX_CUSTOMERS = 20_000
_MICROSECONDS_PER_DAY = 86_400 * 1_000_000
SEGMENT = "drifting"


@dataclass(frozen=True)
class DriftingCustomers:
    """The change test over the warm customers at the end of the training period.

    ``pair`` holds the flagged customers with held-out events, scored with their recent mix and with
    their overall mix (None when no customer was flagged, or too few had a history to test).
    """

    customers: int  # warm customers the test ran over
    tested: int  # of them, those with a baseline to test against
    threshold: float | None  # nats; None: fewer than MIN_TESTED_CUSTOMERS tested, nothing calibrated
    target_false_alarm: float
    flagged: int  # drifting at the end of the training period
    half_life_days: float  # of the recent mix
    pair: ContextSegments | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "customers": self.customers,
            "tested": self.tested,
            "threshold": self.threshold,
            "target_false_alarm": self.target_false_alarm,
            "flagged": self.flagged,
            "flagged_scored": 0 if self.pair is None else len(self.pair.with_overall_mix.customer_ids),
            "half_life_days": self.half_life_days,
        }


@dataclass(frozen=True)
class DriftMixResult:
    """One model on the flagged customers' held-out events: NDCG with the recent and the overall mix."""

    model: str
    users: int
    ndcg_recent_mix: float
    ndcg_overall_mix: float
    difference: PairedDifference  # recent minus overall, paired over customers

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "users": self.users,
            "ndcg_recent_mix": self.ndcg_recent_mix,
            "ndcg_overall_mix": self.ndcg_overall_mix,
            "difference": self.difference.to_dict(),
        }


def drifting_customers(
    prepared: PreparedData,
    warm: EvaluationSegment,
    *,
    target_false_alarm: float,
    seed: int,
    max_customers: int = MAX_CUSTOMERS,
    drift: DriftConfig | None = None,
) -> DriftingCustomers:
    """Run the change test over ``warm``'s customers (the evaluation's "all" segment) and pair the flagged
    ones' segments (module docstring). ``drift`` gives the recent mix's half-life and the test's
    settings other than the false-alarm rate (default: the server's defaults)."""
    base = drift or DriftConfig()
    detector = dataclasses.replace(base.detector, false_alarm_rate=target_false_alarm, threshold=None)
    drift = dataclasses.replace(base, detector=detector)
    ids = warm.customer_ids
    if 0 < max_customers < len(ids):
        ids = ids[np.sort(np.random.default_rng(seed).choice(len(ids), max_customers, replace=False))]
    chosen = pl.Series("customer_id", ids.tolist(), dtype=pl.Utf8)
    events = prepared.split.train_events.filter(pl.col("customer_id").cast(pl.Utf8).is_in(chosen.implode()))
    empty = DriftingCustomers(len(ids), 0, None, target_false_alarm, 0, drift.half_life_days, None)
    if events.height == 0:
        return empty
    inference = prepared.inference
    prior = population_mean_mix(prepared.mixes.overall)
    trace = trace_changes(inference, events, prepared.shop.items, prior, detector)
    null = trace.shuffled_largest(detector)
    if null.size < MIN_TESTED_CUSTOMERS:
        return dataclasses.replace(empty, tested=int(null.size))
    threshold = threshold_for(null, target_false_alarm)
    statuses = trace.statuses(threshold)
    since = {
        customer: status.since
        for customer, status in statuses.items()
        if status.drifting and status.since is not None
    }
    flagged = DriftingCustomers(
        len(ids), int(null.size), threshold, target_false_alarm, len(since), drift.half_life_days, None
    )
    rows = np.flatnonzero([customer in since for customer in warm.customer_ids.tolist()])
    if rows.size == 0:
        return flagged
    flagged_ids = warm.customer_ids[rows].tolist()
    starts = pl.DataFrame(
        {"customer_id": flagged_ids, "_since": [since[c] for c in flagged_ids]},
        schema={"customer_id": pl.Utf8, "_since": events.schema["timestamp"]},
    )
    recent_events = (
        events.with_columns(pl.col("customer_id").cast(pl.Utf8))
        .join(starts, on="customer_id")
        .filter(pl.col("timestamp") >= pl.col("_since"))
        .drop("_since")
    )
    features = build_event_features(
        recent_events,
        prepared.shop.items,
        customer_ids=IdMap(flagged_ids, kind="customer"),
        space=inference.space,
        holidays=inference.config.holidays,
    )
    now_us = int(prepared.split.test_start.timestamp() * 1_000_000)
    overall = np.asarray(warm.users.mix[rows], dtype=np.float64)
    recent = recent_mixes(
        inference,
        inference.event_log_likelihoods(features),
        (now_us - features.timestamp_us) / _MICROSECONDS_PER_DAY,
        features.customer_indptr,
        overall,
        drift,
    )
    scored = EvaluationSegment(
        f"{SEGMENT}:overall_mix",
        warm.customer_ids[rows],
        warm.users.rows(rows),
        warm.exclude[rows],
        warm.relevant[rows],
    )
    with_recent = dataclasses.replace(
        scored,
        name=f"{SEGMENT}:recent_mix",
        users=dataclasses.replace(scored.users, mix=recent.astype(scored.users.mix.dtype), base_mix=overall),
    )
    pair = ContextSegments(
        context=SEGMENT,
        with_context_mix=with_recent,
        with_overall_mix=scored,
        distinct_mix=~np.all(with_recent.users.mix == scored.users.mix, axis=1),
    )
    return dataclasses.replace(flagged, pair=pair)


def evaluate_drift_mixes(
    models: Mapping[str, Recommender],
    drifting: DriftingCustomers,
    k: int,
    *,
    scored_lists: Mapping[str, ScoredLists] | None = None,
) -> list[DriftMixResult]:
    """Every model on the flagged customers, scored with the recent and the overall mix (the context
    evaluation's steps, ``training.evaluation.evaluate_context_mixes``, on this one pair: the overall
    lists come from ``scored_lists`` when given, and only customers whose mix moved are scored again)."""
    if drifting.pair is None:
        return []
    return [
        DriftMixResult(
            model=r.model,
            users=r.users,
            ndcg_recent_mix=r.ndcg_context_mix,
            ndcg_overall_mix=r.ndcg_overall_mix,
            difference=r.difference,
        )
        for r in evaluate_context_mixes(models, [drifting.pair], k, scored_lists=scored_lists)
    ]


def drift_evaluation_record(drifting: DriftingCustomers, results: list[DriftMixResult]) -> dict[str, Any]:
    """The manifest's and ``--json``'s account: the test's figures and one entry per model."""
    return {**drifting.to_dict(), "results": [r.to_dict() for r in results]}


def drift_evaluation(
    prepared: PreparedData,
    models: Mapping[str, Recommender],
    segments: Sequence[EvaluationSegment],
    config: TrainConfig,
    *,
    scored_lists: Mapping[str, ScoredLists] | None = None,
) -> dict[str, Any] | None:
    """``train``'s and ``evaluate``'s drift evaluation of a prepared split: the record of
    ``drift_evaluation_record``, or None when the split has no warm customers to test."""
    warm = next((s for s in segments if s.name == WARM_SEGMENT), None)
    if warm is None or len(warm.customer_ids) == 0:
        return None
    drifting = drifting_customers(
        prepared, warm, target_false_alarm=config.drift.target_false_alarm, seed=config.split.seed
    )
    results = evaluate_drift_mixes(models, drifting, config.evaluation.k, scored_lists=scored_lists)
    return drift_evaluation_record(drifting, results)


def drift_mix_table(record: Mapping[str, Any], k: int) -> tuple[str, list[str], list[list[Any]]]:
    """A title saying who was flagged, and one row per model: NDCG with each mix and the difference."""
    threshold = record.get("threshold")
    title = (
        f"drifting customers ({record.get('flagged', 0):,} of {record.get('tested', 0):,} tested, "
        + (f"{threshold:.2f} nats" if isinstance(threshold, int | float) else "no threshold")
        + "): recent mix (as served) vs overall mix"
    )
    columns = ["model", "users", f"NDCG@{k} recent mix", f"NDCG@{k} overall mix", "diff", "95% CI"]
    rows = [
        [
            r["model"],
            r["users"],
            r["ndcg_recent_mix"],
            r["ndcg_overall_mix"],
            *difference_cells(r["difference"]["mean"], r["difference"]["low"], r["difference"]["high"]),
        ]
        for r in record.get("results", [])
    ]
    return title, columns, rows
