"""Drift detection scored like a detector against planted drift: who was found, how late, what it cost.

A customer is *flagged* at their first check at or over the threshold (a sequential test's alarm). A
planted drifter flagged on or after the planted day is a hit; one flagged before it, and every flagged
customer without planted drift, is a false alarm. So:

- precision: hits / flagged customers;
- recall: hits / customers with planted drift;
- false-alarm rate: flagged / customers without planted drift (the rate the threshold is calibrated to);
- delay: alarm day minus planted day (days), and the customer's events from the planted day to the
  alarm (events: what the detector had to go on);
- recall by the planted drift's strength and ramp (synthetic shop knobs) and by the events the
  customer had after the drift at all: a drifter without events after the drift cannot be found;
- the curve: for several thresholds, recall and precision counting only alarms within a delay budget.
  A hit later than the budget counts as a miss, and as a false alarm for precision.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from engine.data.id_map import IdMap
from engine.personas.drift import ChangeTrace

DELAY_BUDGETS_DAYS: tuple[int, ...] = (7, 14, 21, 28, 42, 56, 91)
QUANTILES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
STRENGTH_BINS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0 + 1e-9)
RAMP_BINS: tuple[int, ...] = (0, 1, 8, 15, 31, 10_000)
EVENTS_AFTER_BINS: tuple[int, ...] = (0, 1, 3, 6, 11, 21, 10**9)
EARLY_DAYS = 14  # the delay target: how many drifters have any event this soon after the drift
_EPOCH = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class PlantedDrift:
    """Planted drift per customer of a trace: day (-1: none), strength and ramp (NaN / -1: unknown)."""

    day: NDArray[np.int64]
    strength: NDArray[np.float64]
    ramp_days: NDArray[np.int64]
    known: NDArray[np.bool_]  # the customer is in the truth at all

    @classmethod
    def from_truth(cls, truth: pl.DataFrame, customers: IdMap) -> PlantedDrift:
        """Read ``truth/customer_mixes.parquet`` rows (``drift_strength``/``drift_ramp_days`` optional)."""
        ids = truth["customer_id"].cast(pl.Utf8).to_list()
        row = {c: i for i, c in enumerate(ids)}
        dates = truth["drift_date"].to_list()
        nothing: list[Any] = [None] * len(ids)
        strength: list[Any] = (
            truth["drift_strength"].to_list() if "drift_strength" in truth.columns else nothing
        )
        ramp: list[Any] = (
            truth["drift_ramp_days"].to_list() if "drift_ramp_days" in truth.columns else nothing
        )
        n = len(customers)
        out_day = np.full(n, -1, dtype=np.int64)
        out_strength = np.full(n, np.nan)
        out_ramp = np.full(n, -1, dtype=np.int64)
        known = np.zeros(n, dtype=bool)
        for c, customer in enumerate(customers.ids.tolist()):
            r = row.get(customer)
            if r is None:
                continue
            known[c] = True
            if dates[r] is not None:
                out_day[c] = (dates[r] - _EPOCH).days
                out_strength[c] = np.nan if strength[r] is None else float(strength[r])
                out_ramp[c] = -1 if ramp[r] is None else int(ramp[r])
        return cls(out_day, out_strength, out_ramp, known)


@dataclass(frozen=True)
class CurvePoint:
    """One threshold's detection, overall and within each delay budget."""

    threshold: float
    target_false_alarm: float | None  # the calibration target that gave the threshold, if any
    n_flagged: int
    precision: float
    recall: float
    false_alarm_rate: float
    median_delay_days: float | None
    recall_within: dict[int, float]  # budget (days) -> recall counting hits within it
    precision_within: dict[int, float]


@dataclass(frozen=True)
class RecallRow:
    """Recall over one group of planted drifters."""

    group: str
    drifters: int
    found: int
    recall: float


@dataclass(frozen=True)
class DriftAccuracy:
    """The detector at its chosen threshold, against planted drift (module doc)."""

    threshold: float
    n_customers: int
    n_planted: int
    n_unchanged: int
    n_flagged: int
    true_positives: int
    precision: float
    recall: float
    false_alarm_rate: float
    delay_days: dict[str, float]  # quantile ("p10" .. "p90") -> days, over hits
    delay_events: dict[str, float]
    share_without_events_early: float  # drifters with no event in the EARLY_DAYS after their drift
    recall_by_strength: list[RecallRow]
    recall_by_ramp: list[RecallRow]
    recall_by_events_after: list[RecallRow]
    curve: list[CurvePoint]

    @property
    def median_delay_days(self) -> float | None:
        return self.delay_days.get("p50")

    def recall_within(self, days: int) -> float | None:
        """Recall at the chosen threshold counting hits within ``days`` of the drift (a budget of the
        curve, where the chosen threshold is one of its points); None when it is not there."""
        point = next((p for p in self.curve if p.threshold == self.threshold), None)
        return None if point is None else point.recall_within.get(days)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["median_delay_days"] = self.median_delay_days
        return out


def first_alarm_days(trace: ChangeTrace, threshold: float) -> NDArray[np.int64]:
    """Per customer of the trace, the day of the first check at or over ``threshold`` (-1: none)."""
    first = trace.checks.first_alarms(threshold, len(trace.customers))
    return np.where(first >= 0, trace.checks.day[np.maximum(first, 0)], -1).astype(np.int64)


def score_detection(
    trace: ChangeTrace,
    planted: PlantedDrift,
    threshold: float,
    curve_thresholds: dict[float, float | None] | None = None,
) -> DriftAccuracy:
    """Score ``threshold`` (module doc); ``curve_thresholds`` maps more thresholds to their targets."""
    known = planted.known
    positive = known & (planted.day >= 0)
    unchanged = known & (planted.day < 0)
    alarm = first_alarm_days(trace, threshold)
    hit = positive & (alarm >= planted.day) & (alarm >= 0)
    flagged = known & (alarm >= 0)
    after = _events_between(trace, planted.day, np.full(planted.day.size, np.iinfo(np.int64).max))
    early = _events_between(trace, planted.day, planted.day + EARLY_DAYS - 1)
    until_alarm = _events_between(trace, planted.day, alarm)
    delays = (alarm - planted.day)[hit].astype(np.float64)
    n_pos, n_flag = int(positive.sum()), int(flagged.sum())
    points = [
        _curve_point(trace, planted, t, target) for t, target in sorted((curve_thresholds or {}).items())
    ]
    return DriftAccuracy(
        threshold=threshold,
        n_customers=int(known.sum()),
        n_planted=n_pos,
        n_unchanged=int(unchanged.sum()),
        n_flagged=n_flag,
        true_positives=int(hit.sum()),
        precision=_ratio(int(hit.sum()), n_flag),
        recall=_ratio(int(hit.sum()), n_pos),
        false_alarm_rate=_ratio(int((flagged & unchanged).sum()), int(unchanged.sum())),
        delay_days=_quantiles(delays),
        delay_events=_quantiles(until_alarm[hit].astype(np.float64)),
        share_without_events_early=_ratio(int((positive & (early == 0)).sum()), n_pos),
        recall_by_strength=_by_bins(
            planted.strength, positive & np.isfinite(planted.strength), hit, STRENGTH_BINS, "strength"
        ),
        recall_by_ramp=_by_bins(
            planted.ramp_days.astype(np.float64), positive & (planted.ramp_days >= 0), hit, RAMP_BINS, "ramp"
        ),
        recall_by_events_after=_by_bins(after.astype(np.float64), positive, hit, EVENTS_AFTER_BINS, "events"),
        curve=points,
    )


def _curve_point(
    trace: ChangeTrace, planted: PlantedDrift, threshold: float, target: float | None
) -> CurvePoint:
    known, positive = planted.known, planted.known & (planted.day >= 0)
    unchanged = known & (planted.day < 0)
    alarm = first_alarm_days(trace, threshold)
    flagged = known & (alarm >= 0)
    delay = np.where(positive & (alarm >= planted.day), alarm - planted.day, -1)
    hit = positive & (delay >= 0)
    n_flag, n_pos = int(flagged.sum()), int(positive.sum())
    within_recall, within_precision = {}, {}
    for budget in DELAY_BUDGETS_DAYS:
        found = int((hit & (delay <= budget)).sum())
        within_recall[budget] = _ratio(found, n_pos)
        within_precision[budget] = _ratio(found, n_flag)
    return CurvePoint(
        threshold=threshold,
        target_false_alarm=target,
        n_flagged=n_flag,
        precision=_ratio(int(hit.sum()), n_flag),
        recall=_ratio(int(hit.sum()), n_pos),
        false_alarm_rate=_ratio(int((flagged & unchanged).sum()), int(unchanged.sum())),
        median_delay_days=float(np.median(delay[hit])) if hit.any() else None,
        recall_within=within_recall,
        precision_within=within_precision,
    )


def _events_between(
    trace: ChangeTrace, first: NDArray[np.int64], last: NDArray[np.int64]
) -> NDArray[np.int64]:
    """Per customer, (de-duplicated) event rows with ``first <= day <= last`` (0 where first < 0)."""
    lengths = np.diff(trace.indptr)
    owner = np.repeat(np.arange(lengths.size), lengths)
    inside = (first[owner] >= 0) & (trace.day >= first[owner]) & (trace.day <= last[owner])
    return np.bincount(owner[inside], minlength=lengths.size).astype(np.int64)


def _by_bins(
    value: NDArray[np.float64],
    among: NDArray[np.bool_],
    hit: NDArray[np.bool_],
    bins: tuple[float, ...],
    name: str,
) -> list[RecallRow]:
    rows = []
    for low, high in itertools.pairwise(bins):
        inside = among & (value >= low) & (value < high)
        n = int(inside.sum())
        if n == 0:
            continue
        found = int((hit & inside).sum())
        rows.append(RecallRow(_label(name, low, high), n, found, found / n))
    return rows


def _label(name: str, low: float, high: float) -> str:
    if name == "strength":
        return f"{low:.2f}-{min(high, 1.0):.2f}"
    if high - low == 1:
        return f"{int(low)}"
    top = int(high) - 1
    return f"{int(low)}+" if top >= 10_000 - 1 else f"{int(low)}-{top}"


def _quantiles(values: NDArray[np.float64]) -> dict[str, float]:
    if values.size == 0:
        return {}
    return {f"p{round(q * 100)}": float(np.quantile(values, q)) for q in QUANTILES}


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0
