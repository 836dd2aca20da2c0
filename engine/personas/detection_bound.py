"""The best drift detection a generated shop's events allow: the bound to read a detector's figures against.

A detector's precision, recall and delay say as much about the shop as about the detector: a drifter who
leaves two events after the change cannot be found in a week by anything. On a generated shop the truth
holds what no detector sees: the persona behind every interaction (``truth/event_personas.parquet``)
and every customer's planted mixes before and after their drift, per shopping context. Told all of
that, the optimal sequential test for the change is a CUSUM on the exact log-likelihood ratio of the
persona labels between the after- and the before-mix of each event's context (Page 1954; optimal for
the worst-case delay at a given false-alarm rate, Lorden 1971, Moustakides 1986). The labels hold all
the mix information the events carry (item, price, channel and device are drawn given the persona),
so a detector working from the events cannot expect to beat it at the same false-alarm rate: its
figures are what the engine's test (``engine.personas.change_detection``), or any other, should be
read against. (A Shiryaev-Roberts statistic told the same lands on the same precision/recall/delay
curve on the demo shop, so the bound does not hinge on the CUSUM's particular trade-off.)

A customer without planted drift is tested against the after-mix of a drifter drawn at random (seeded):
the same alternatives the test meets in the drifters, independent of the customer's own events. As in
``drift_accuracy``, an alarm is checked at the end of each day with events, a drifter's alarm before the
drift day is a false one, and a threshold is set by the share of customers without planted drift that
it flags. Gradual drift is tested against the mix the drift ends in, so for ramps the figures are a
near bound rather than an exact one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numba
import numpy as np
import polars as pl
from numpy.typing import NDArray

from engine.data.id_map import IdMap
from engine.personas.drift_accuracy import EARLY_DAYS, PlantedDrift
from engine.personas.shopping_context import CONTEXTS, DEFAULT_HOLIDAYS, context_expr

DEFAULT_TARGETS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1)
_SMOOTHING = 1e-6  # mixes are mixed with this much of the uniform one, so a zero weight is finite
_POST_PREFIX = "post_drift_"


@dataclass(frozen=True)
class BoundPoint:
    """The label-told CUSUM at one threshold."""

    target_false_alarm: float  # the false-alarm share the threshold was set for
    threshold: float  # nats
    false_alarm_rate: float  # measured: flagged customers without planted drift / all of them
    n_flagged: int
    precision: float
    recall: float
    median_delay_days: float | None
    recall_within_early_days: float  # hits within EARLY_DAYS of the drift day / drifters


@dataclass(frozen=True)
class DetectionBound:
    """What a detector told each interaction's persona and the planted mixes reaches (module doc)."""

    n_planted: int
    n_unchanged: int
    interactions: int
    early_days: int
    points: list[BoundPoint]

    def at(self, target_false_alarm: float) -> BoundPoint:
        """The point set for ``target_false_alarm`` (it must be one the bound was computed at)."""
        for point in self.points:
            if point.target_false_alarm == target_false_alarm:
                return point
        raise KeyError(f"no bound point at {target_false_alarm}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def detection_bound(
    truth: pl.DataFrame,
    events: pl.DataFrame,
    event_personas: pl.DataFrame,
    targets: tuple[float, ...] = DEFAULT_TARGETS,
    *,
    holidays: tuple[tuple[int, int], ...] = DEFAULT_HOLIDAYS,
    seed: int = 0,
) -> DetectionBound | None:
    """The bound at each false-alarm ``targets`` share; None when the truth plants no drift.

    ``truth`` is ``truth/customer_mixes.parquet`` (customer_id, drift_date and the ``weekday__``,
    ``weekend_holiday__`` and ``post_drift_`` mix blocks); ``events`` the shop's events (event_id,
    customer_id, event_type, timestamp); ``event_personas`` maps event_id to persona_id. One view row
    stands for each interaction: its cart and purchase rows repeat its persona, so they add no evidence.
    """
    personas = [c.split("__", 1)[1] for c in truth.columns if c.startswith(f"{CONTEXTS[0]}__")]
    blocks = [f"{c}__{p}" for c in CONTEXTS for p in personas]
    missing = [
        c
        for c in ["customer_id", "drift_date", *blocks, *(_POST_PREFIX + b for b in blocks)]
        if c not in truth.columns
    ]
    if missing:
        raise ValueError(f"truth table lacks column(s) {', '.join(missing[:5])}")
    drift_day = PlantedDrift.from_truth(truth, IdMap(truth["customer_id"].cast(pl.Utf8), kind="customer")).day
    drifted = drift_day >= 0
    if not drifted.any():
        return None
    n, k, contexts = truth.height, len(personas), len(CONTEXTS)
    before = _smoothed(truth.select(blocks).to_numpy().reshape(n, contexts, k))
    after = _smoothed(truth.select([_POST_PREFIX + b for b in blocks]).to_numpy().reshape(n, contexts, k))
    drifters = np.flatnonzero(drifted)
    alternative = np.where(drifted, np.arange(n), np.random.default_rng(seed).choice(drifters, n))

    rows = pl.DataFrame(
        {"customer_id": truth["customer_id"].cast(pl.Utf8), "_row": np.arange(n, dtype=np.int64)}
    )
    views = (
        events.filter(pl.col("event_type") == "view")
        .select(
            pl.col("event_id").cast(pl.Utf8),
            pl.col("customer_id").cast(pl.Utf8),
            pl.col("timestamp"),
        )
        .join(
            event_personas.select(pl.col("event_id").cast(pl.Utf8), pl.col("persona_id").cast(pl.Utf8)),
            on="event_id",
        )
        .join(rows, on="customer_id")
        .with_columns(
            pl.col("persona_id").replace_strict(personas, list(range(k)), default=-1).alias("_persona"),
            context_expr("timestamp", holidays)
            .replace_strict(list(CONTEXTS), list(range(contexts)))
            .alias("_context"),
            pl.col("timestamp").dt.epoch("d").alias("_day"),
        )
        .filter(pl.col("_persona") >= 0)
        .sort("_row", "timestamp", "event_id", maintain_order=True)
    )
    check_row, check_day, check_value = _cusum_checks(
        views["_row"].to_numpy().astype(np.int64),
        views["_day"].to_numpy().astype(np.int64),
        views["_context"].to_numpy().astype(np.int64),
        views["_persona"].to_numpy().astype(np.int64),
        np.log(after[alternative]) - np.log(before),
    )
    unchanged = ~drifted
    largest = np.zeros(n)
    np.maximum.at(largest, check_row, check_value)
    points = [
        _point(
            t, _threshold_for(largest[unchanged], t), check_row, check_day, check_value, drift_day, drifted
        )
        for t in targets
    ]
    return DetectionBound(
        n_planted=int(drifted.sum()),
        n_unchanged=int(unchanged.sum()),
        interactions=views.height,
        early_days=EARLY_DAYS,
        points=points,
    )


def _smoothed(mixes: NDArray[np.float64]) -> NDArray[np.float64]:
    totals = mixes.sum(axis=2, keepdims=True)
    shares = np.divide(mixes, totals, out=np.full_like(mixes, 1.0 / mixes.shape[2]), where=totals > 0)
    return (1.0 - _SMOOTHING) * shares + _SMOOTHING / mixes.shape[2]


@numba.njit(cache=True)
def _cusum_checks(
    row: NDArray[np.int64],
    day: NDArray[np.int64],
    context: NDArray[np.int64],
    persona: NDArray[np.int64],
    log_ratio: NDArray[np.float64],  # (customer, context, persona): log after / before
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """The CUSUM at the end of each (customer, day) with interactions; rows sorted by customer, time."""
    m = row.size
    out_row = np.empty(m, dtype=np.int64)
    out_day = np.empty(m, dtype=np.int64)
    out_value = np.empty(m, dtype=np.float64)
    checks = 0
    statistic = 0.0
    for i in range(m):
        if i == 0 or row[i] != row[i - 1]:
            statistic = 0.0
        statistic = max(0.0, statistic + log_ratio[row[i], context[i], persona[i]])
        if i == m - 1 or row[i + 1] != row[i] or day[i + 1] != day[i]:
            out_row[checks] = row[i]
            out_day[checks] = day[i]
            out_value[checks] = statistic
            checks += 1
    return out_row[:checks], out_day[:checks], out_value[:checks]


def _threshold_for(largest: NDArray[np.float64], target: float) -> float:
    """The lowest threshold that flags at most ``target`` of these customers (largest statistic each)."""
    if largest.size == 0:
        return float("inf")
    ranked = np.sort(largest)[::-1]
    allowed = int(np.floor(target * largest.size))
    # Flagged: statistic >= threshold. Just above the (allowed + 1)-th largest keeps it to ``allowed``.
    above = ranked[allowed] if allowed < ranked.size else 0.0
    return float(np.nextafter(max(above, 0.0), np.inf))


def _point(
    target: float,
    threshold: float,
    check_row: NDArray[np.int64],
    check_day: NDArray[np.int64],
    check_value: NDArray[np.float64],
    drift_day: NDArray[np.int64],
    drifted: NDArray[np.bool_],
) -> BoundPoint:
    n = drifted.size
    alarm = np.full(n, -1, dtype=np.int64)
    over = np.flatnonzero(check_value >= threshold)
    customers, first = np.unique(check_row[over], return_index=True)  # checks are in time order per customer
    alarm[customers] = check_day[over[first]]
    flagged = alarm >= 0
    hit = drifted & flagged & (alarm >= drift_day)
    delays = (alarm - drift_day)[hit]
    n_planted, n_unchanged, n_flagged = int(drifted.sum()), int((~drifted).sum()), int(flagged.sum())
    return BoundPoint(
        target_false_alarm=target,
        threshold=threshold,
        false_alarm_rate=float((flagged & ~drifted).sum() / n_unchanged) if n_unchanged else 0.0,
        n_flagged=n_flagged,
        precision=float(hit.sum() / n_flagged) if n_flagged else 0.0,
        recall=float(hit.sum() / n_planted),
        median_delay_days=float(np.median(delays)) if delays.size else None,
        recall_within_early_days=float((delays <= EARLY_DAYS).sum() / n_planted),
    )
