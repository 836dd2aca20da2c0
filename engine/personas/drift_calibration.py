"""The drift threshold an artifact's live path tests against, calibrated when the artifact is trained.

The change test's statistic is evidence in nats, the largest of one CUSUM per persona, so what a
given threshold means depends on the shop: how many personas the catalog has (the largest of more
CUSUMs is larger by chance), how distinct their behaviour is, how many events customers leave. A
constant calibrated on one shop flags some other share of the next shop's customers, so the live path
must not test against one. Training therefore calibrates the threshold as ``persona-engine drift``
does (``engine.personas.change_detection``: the (1 - rate) quantile of the largest statistic of
time-shuffled histories) on the events the artifact's persona model was fitted on, with the persona
model it serves, and stores it with the settings of the test it holds for.

A seeded sample of at most ``max_customers`` customers keeps the cost bounded on large shops: a
quantile at 95% from 20,000 customers is off by about 0.15 percentage points of false alarms
(binomial standard error of the share above it), well under the test's own calibration error.
With no more customers than that, every customer is used and the threshold equals the one
``persona-engine drift`` calibrates on the same events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from engine.personas.change_detection import ChangeDetectorConfig, threshold_for
from engine.personas.drift import DEFAULT_THRESHOLD, DriftConfig, trace_changes
from engine.personas.inference.model import PersonaInferenceModel

# Fewer tested customers than this calibrate nothing: the quantile of a handful of statistics is
# noise (at 5%, 200 customers put ten above it).
MIN_TESTED_CUSTOMERS = 200
# The settings a threshold is not part of: they choose it rather than shape the statistic.
_CHOOSING = ("false_alarm_rate", "threshold")


def statistic_settings(config: ChangeDetectorConfig) -> dict[str, Any]:
    """The settings that shape the change test's statistic: a threshold holds only for these."""
    return {f.name: getattr(config, f.name) for f in fields(config) if f.name not in _CHOOSING}


@dataclass(frozen=True)
class DriftCalibration:
    """A threshold and what it was calibrated for and on.

    ``customers`` and ``events``: the sample whose time-shuffled histories set it, ``tested_customers``
    those of them with a baseline to test against at some day (the quantile is theirs);
    ``settings``: the change test's settings (``statistic_settings``) the statistic was computed with.
    """

    threshold: float
    target_false_alarm: float
    customers: int
    tested_customers: int
    events: int
    settings: dict[str, Any]

    def holds_for(self, config: ChangeDetectorConfig) -> bool:
        """Whether the threshold was calibrated for the test ``config`` runs (same statistic)."""
        return _normalised(statistic_settings(config)) == _normalised(self.settings)

    def describe(self) -> str:
        return (
            f"the artifact's, calibrated to {self.target_false_alarm:.1%} false alarms on "
            f"{self.tested_customers:,} customers' shuffled histories"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "target_false_alarm": self.target_false_alarm,
            "customers": self.customers,
            "tested_customers": self.tested_customers,
            "events": self.events,
            "settings": dict(self.settings),
        }

    @classmethod
    def from_json(cls, document: Any, source: str) -> DriftCalibration:
        """Read a stored calibration; a malformed one is refused naming ``source`` and the key."""
        if not isinstance(document, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(document).__name__}")
        # the first stored calibrations (main at ae43d78) did not count tested customers separately
        document = {"tested_customers": document.get("customers"), **document}
        for key, kind in (("threshold", float), ("target_false_alarm", float), ("customers", int),
                          ("tested_customers", int), ("events", int), ("settings", dict)):  # fmt: skip
            value = document.get(key)
            number = kind in (float, int) and isinstance(value, int | float) and not isinstance(value, bool)
            if not (number or isinstance(value, kind)):
                raise ValueError(f"{source}: {key!r} must be {kind.__name__}, got {value!r}")
        threshold = float(document["threshold"])
        if not (math.isfinite(threshold) and threshold > 0):
            raise ValueError(f"{source}: 'threshold' must be a positive number, got {threshold!r}")
        return cls(
            threshold=threshold,
            target_false_alarm=float(document["target_false_alarm"]),
            customers=int(document["customers"]),
            tested_customers=int(document["tested_customers"]),
            events=int(document["events"]),
            settings=dict(document["settings"]),
        )


def _normalised(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as JSON gives them back (tuples become lists, integers stay equal to floats)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}


def calibrate_drift_threshold(
    model: PersonaInferenceModel,
    events: pl.DataFrame,
    items: pl.DataFrame,
    prior_mean: NDArray[np.float64],
    config: ChangeDetectorConfig,
    *,
    max_customers: int,
    seed: int,
    customers: NDArray[np.str_] | None = None,
) -> DriftCalibration | None:
    """Calibrate the threshold to ``config.false_alarm_rate`` on ``events`` of at most ``max_customers``
    customers (a sample drawn with ``seed``; 0 = all); None when fewer than ``MIN_TESTED_CUSTOMERS``
    of them have a baseline to test against (histories too short for the test's baseline lag).

    ``prior_mean`` centres every baseline: the artifact's mean customer mix, as live and offline use.
    ``customers``: the distinct customers of ``events``, when the caller has them (training's id map):
    finding them among ten million events costs a third of a second.
    """
    if events.height == 0:
        raise ValueError("cannot calibrate the drift threshold without events")
    customer_ids = events["customer_id"].cast(pl.Utf8)
    if customers is None:
        customers = customer_ids.unique().sort().to_numpy()
    if 0 < max_customers < customers.size:
        chosen = np.random.default_rng(seed).choice(customers.size, max_customers, replace=False)
        sample = pl.Series(np.asarray(customers)[np.sort(chosen)], dtype=pl.Utf8)
        events = events.filter(customer_ids.is_in(sample.implode()))
    trace = trace_changes(model, events, items, prior_mean, config)
    null = trace.shuffled_largest(config)
    if null.size < MIN_TESTED_CUSTOMERS:
        return None
    return DriftCalibration(
        threshold=threshold_for(null, config.false_alarm_rate),
        target_false_alarm=config.false_alarm_rate,
        customers=len(trace.customers),
        tested_customers=int(null.size),
        events=int(trace.indptr[-1]),
        settings=statistic_settings(config),
    )


def live_threshold(config: DriftConfig, calibration: DriftCalibration | None) -> tuple[float, str]:
    """The threshold live drift tests against, and where it comes from (for the log).

    A threshold set in the live config wins; otherwise the artifact's, when it was calibrated for the
    test the live config runs; otherwise ``DEFAULT_THRESHOLD`` (artifacts written before training
    calibrated one, or a live test with other settings than the calibrated one).
    """
    if config.detector.threshold is not None:
        return config.detector.threshold, "set in the live config"
    if calibration is None:
        return DEFAULT_THRESHOLD, "the default: the artifact holds no calibrated threshold"
    if not calibration.holds_for(config.detector):
        return DEFAULT_THRESHOLD, (
            f"the default: the artifact's threshold was calibrated for other test settings "
            f"({calibration.settings})"
        )
    return calibration.threshold, calibration.describe()
