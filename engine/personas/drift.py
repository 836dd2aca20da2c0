"""Persona drift: has a customer's behaviour left their own past mix, towards whom, since when, how surely.

Drift is a change point, found by the sequential test of ``engine.personas.change_detection``: per
customer, a CUSUM per persona against a baseline learnt from the customer's own older events, with a
threshold (nats of evidence) chosen for a false-alarm rate. The same test runs offline over an event
history (``trace_changes``: ``persona-engine drift``, its scoring against the synthetic shop's planted
drift, the report) and online in each customer's live state (``engine.live.customer_state``), which
carries the detector's state from one batch of events to the next.

A customer is *drifting* while the statistic is at or over the threshold: from the baseline's dominant
persona towards the persona whose CUSUM is largest, since the day that CUSUM last restarted. Once the
new behaviour is old enough to enter the baseline, the statistic falls back and the drift ends: the
change has become who the customer is.

``confidence`` is the posterior probability of the change at even prior odds,
``1 / (1 + exp(-statistic))``: the statistic is a log-likelihood ratio, but the largest of several
(personas, start days), so it overstates; the threshold, calibrated on shuffled histories, is what
carries the false-alarm rate.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from engine.data.id_map import IdMap
from engine.numeric_settings import check_numeric_settings
from engine.personas.change_detection import (
    ChangeChecks,
    ChangeDetectorConfig,
    DayCheck,
    check_changes,
    shuffled_largest,
)
from engine.personas.event_encoding import build_event_features
from engine.personas.inference.model import PersonaInferenceModel

_EPOCH = dt.date(1970, 1, 1)
# Live state keeps events this many half-lives old (the replay window after a restart; the log's
# retention): older ones weigh under 1/16 of a fresh one in the recent mix.
WINDOW_HALF_LIVES = 4.0
# The threshold the live path uses when neither its config sets one nor the artifact holds one
# calibrated for its test (``engine.personas.drift_calibration``; artifacts trained before it):
# ``persona-engine drift --target-false-alarm 0.05`` calibrated 5.02 nats on the demo shop
# (``make demo``), flagging 5.4% of its customers without planted drift.
DEFAULT_THRESHOLD = 5.02


@dataclass(frozen=True)
class DriftConfig:
    """Drift as the live path runs it.

    detector:       the change test's settings (``detector.threshold`` None: the artifact's calibrated
                    threshold, else ``DEFAULT_THRESHOLD``; see ``drift_calibration.live_threshold``).
    half_life_days: half-life of the recent mix served to a drifting customer; the live window
                    (events replayed after a restart) is ``WINDOW_HALF_LIVES`` of them.
    artifact_baseline_events: events the artifact's long-term mix is worth as the starting baseline
                    of a customer it knows (0: learn the baseline from live events only, as offline).
    """

    detector: ChangeDetectorConfig = field(default_factory=ChangeDetectorConfig)
    half_life_days: float = 14.0
    artifact_baseline_events: float = 20.0

    def __post_init__(self) -> None:
        check_numeric_settings(
            self,
            [
                ("half_life_days", self.half_life_days > 0, "> 0"),
                ("artifact_baseline_events", self.artifact_baseline_events >= 0, ">= 0"),
            ],
        )

    @property
    def threshold(self) -> float:
        given = self.detector.threshold
        return DEFAULT_THRESHOLD if given is None else given


def confidence_of(statistic: float) -> float:
    """Posterior probability of a change at even prior odds (module doc)."""
    return 1.0 / (1.0 + math.exp(-min(statistic, 700.0)))


@dataclass(frozen=True)
class DriftStatus:
    """One customer's drift at one moment; ``since`` is set only while drifting."""

    drifting: bool
    statistic: float  # nats of evidence for the change (the CUSUM)
    confidence: float
    since: dt.datetime | None
    from_persona: str
    to_persona: str
    evidence: float  # (de-duplicated) events in the baseline the change is measured against
    threshold: float  # nats the statistic is compared with: drifting at or over it

    def to_json(self) -> dict[str, Any]:
        return {
            "drifting": self.drifting,
            "statistic": self.statistic,
            "confidence": self.confidence,
            "since": None if self.since is None else self.since.isoformat(),
            "from_persona": self.from_persona,
            "to_persona": self.to_persona,
            "evidence": self.evidence,
            "threshold": self.threshold,
        }


def day_start(day: int) -> dt.datetime:
    """Midnight UTC of ``day`` (days since 1970-01-01)."""
    return dt.datetime.combine(_EPOCH + dt.timedelta(days=day), dt.time(), dt.UTC)


def status_of(
    check: DayCheck, threshold: float, persona_ids: tuple[str, ...], evidence: float
) -> DriftStatus:
    """The drift status one check of the change test says (offline and live alike)."""
    drifting = check.tested and check.statistic >= threshold and check.since_day >= 0
    return DriftStatus(
        drifting=drifting,
        statistic=check.statistic if check.tested else 0.0,
        confidence=confidence_of(check.statistic) if check.tested else 0.0,
        since=day_start(check.since_day) if drifting else None,
        from_persona=persona_ids[check.baseline_top],
        to_persona=persona_ids[check.towards if drifting else check.baseline_top],
        evidence=evidence,
        threshold=threshold,
    )


def decay_weights(ages_days: NDArray[np.floating], half_life_days: float) -> NDArray[np.float64]:
    """Weight of evidence ``ages_days`` old; events from the future (clock skew) count as fresh."""
    return np.asarray(np.exp2(-np.maximum(np.asarray(ages_days, dtype=np.float64), 0.0) / half_life_days))


def recent_mixes(
    model: PersonaInferenceModel,
    log_likelihoods: NDArray[np.float64],
    ages_days: NDArray[np.floating],
    indptr: NDArray[np.int64],
    long_term: NDArray[np.float64],
    config: DriftConfig,
) -> NDArray[np.float64]:
    """(groups, personas): who each drifting customer is now, the mix served to them while they drift.

    The MAP mix of a customer's events since their change began (group ``g`` at rows
    ``indptr[g]:indptr[g + 1]`` of ``log_likelihoods``, each ``ages_days`` old), weighed by
    ``config.half_life_days`` and centred on their long-term mix worth the change test's
    ``prior_strength`` events: a few events move it part of the way, a run of them all of it. The live
    path (``engine.live.customer_state``) and the offline drift evaluation
    (``training.drift_evaluation``) both serve it through here.
    """
    return model.mixes_of_scored_events(
        np.asarray(log_likelihoods, dtype=np.float64),
        decay_weights(ages_days, config.half_life_days),
        np.asarray(indptr, dtype=np.int64),
        np.asarray(long_term, dtype=np.float64),
        config.detector.prior_strength,
    )


def population_mean_mix(overall: NDArray[np.float64]) -> NDArray[np.float64]:
    """The prior centre of every baseline: the mean of the artifact's customer mixes."""
    mean = np.asarray(overall, dtype=np.float64).mean(axis=0)
    return np.asarray(mean / mean.sum())


# Likelihoods are kept to this many decimals (each event's largest is 1): live state stores the events
# younger than the baseline lag, and six decimals keep their JSON short while moving no statistic by
# more than about 1e-5 nats an event. Offline rounds the same way, so both still agree exactly.
LIKELIHOOD_DECIMALS = 6


def scaled_likelihoods(scores: NDArray[np.float64]) -> NDArray[np.float64]:
    """(personas, events) likelihoods from (events, personas) log-likelihoods, each event's maximum 1,
    rounded to ``LIKELIHOOD_DECIMALS``."""
    scaled = np.exp(scores - scores.max(axis=1, keepdims=True)).T
    return np.ascontiguousarray(np.round(scaled, LIKELIHOOD_DECIMALS))


# The seed of the time shuffles thresholds are calibrated on: training's, the drift job's and the
# report's calibrations of the same events agree.
CALIBRATION_SEED = 0


@dataclass(frozen=True)
class ChangeTrace:
    """The change test run over a history: every check, and the events behind them.

    ``indptr`` bounds each customer's events (rows of ``customers``) in ``likelihoods``/``weight``/
    ``day``, time-ordered; ``checks`` rows are grouped by customer in the same order.
    """

    customers: IdMap
    persona_ids: tuple[str, ...]
    likelihoods: NDArray[np.float64]
    weight: NDArray[np.float64]
    day: NDArray[np.int64]
    indptr: NDArray[np.int64]
    prior_mean: NDArray[np.float64]
    checks: ChangeChecks

    def shuffled_largest(self, config: ChangeDetectorConfig) -> NDArray[np.float64]:
        """The null distribution thresholds are calibrated on (``change_detection.shuffled_largest``)
        for this history, shuffled with ``CALIBRATION_SEED``."""
        rng = np.random.default_rng(CALIBRATION_SEED)
        return shuffled_largest(
            self.likelihoods, self.weight, self.day, self.indptr, self.prior_mean, config, rng
        )

    def statuses(self, threshold: float) -> dict[str, DriftStatus]:
        """Each tested customer's status at their last check."""
        n = len(self.customers)
        last = np.full(n, -1, dtype=np.int64)
        last[self.checks.customer] = np.arange(self.checks.customer.size)
        ids = self.customers.ids.tolist()
        out: dict[str, DriftStatus] = {}
        for c in np.flatnonzero(last >= 0).tolist():
            r = int(last[c])
            check = DayCheck(
                True,
                float(self.checks.statistic[r]),
                int(self.checks.towards[r]),
                int(self.checks.since_day[r]),
                int(self.checks.baseline_top[r]),
            )
            lo, hi = int(self.indptr[c]), int(self.indptr[c + 1])
            evidence = float(self.weight[lo:hi].sum())
            out[ids[c]] = status_of(check, threshold, self.persona_ids, evidence)
        return out


def trace_changes(
    model: PersonaInferenceModel,
    events: pl.DataFrame,
    items: pl.DataFrame,
    prior_mean: NDArray[np.float64],
    config: ChangeDetectorConfig,
) -> ChangeTrace:
    """Score every event with the persona model and run the change test over every customer."""
    customers = IdMap(sorted(events["customer_id"].cast(pl.Utf8).unique().to_list()), kind="customer")
    features = build_event_features(
        events, items, customer_ids=customers, space=model.space, holidays=model.config.holidays
    )
    likelihoods = scaled_likelihoods(model.event_log_likelihoods(features))
    indptr = np.concatenate(
        [[0], np.cumsum(np.bincount(features.customer_index, minlength=len(customers)))]
    ).astype(np.int64)
    day = features.day.astype(np.int64)
    checks = check_changes(likelihoods, features.weight, day, indptr, prior_mean, config)
    return ChangeTrace(
        customers, model.persona_ids, likelihoods, features.weight, day, indptr, prior_mean, checks
    )
