"""``persona-engine drift``: which customers' behaviour left their own past persona mix, and how well
that is detected.

Replays the event history of a shop (by default the data the artifact was trained on) through the
change test of ``engine.personas.change_detection`` (the one the live path runs), with the artifact's
persona model, and lists the customers drifting at the end of it. The threshold is calibrated to a
target false-alarm rate on the shop's own time-shuffled histories (``--target-false-alarm``) unless
one is given. When the data has planted truth (the synthetic shop's ``truth/customer_mixes.parquet``
with ``drift_date``), the report scores the detection (``engine.personas.drift_accuracy``): precision,
recall, false alarms, delays, recall by kind of drift and a precision/recall-against-delay curve over
several calibrated thresholds. When the truth also says which persona made each event
(``truth/event_personas.parquet``), it adds what the best detector could reach on that shop
(``engine.personas.detection_bound``), at the same false-alarm rates, so the figures can be read as a
share of what the events allow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from engine.artifact import ArtifactError
from engine.artifact.contents import load_artifact
from engine.data.loading import load_shop
from engine.personas.change_detection import ChangeDetectorConfig, threshold_for
from engine.personas.detection_bound import DetectionBound, detection_bound
from engine.personas.drift import DriftStatus, population_mean_mix, trace_changes
from engine.personas.drift_accuracy import DriftAccuracy, PlantedDrift, score_detection
from engine.personas.drift_calibration import DriftCalibration
from training.console_output import progress_bar
from training.data_match import other_data_warning
from training.synthetic_shop.truth import EVENT_PERSONAS_FILE, TRUTH_DIR

TRUTH_MIXES = Path("truth") / "customer_mixes.parquet"
TRUTH_EVENT_PERSONAS = Path(TRUTH_DIR) / EVENT_PERSONAS_FILE
# False-alarm targets of the curve's thresholds (the chosen one is added).
CURVE_TARGETS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3)


@dataclass(frozen=True)
class DriftReport:
    version: str
    data: Path
    config: ChangeDetectorConfig
    threshold: float
    calibrated: bool  # False when the threshold was given
    customers_checked: int  # customers whose baseline was known at some check
    drifting: list[tuple[str, DriftStatus]]  # at the end of the history, strongest first
    accuracy: DriftAccuracy | None  # only with planted truth beside the data
    # the threshold the artifact's live path tests against (calibrated in training); None in older ones
    live_calibration: DriftCalibration | None = None
    # the best any detector could do on this shop (needs truth/event_personas.parquet); its points are
    # at the curve's targets and at the false-alarm rate the detector measured
    bound: DetectionBound | None = None
    warnings: list[str] = field(default_factory=list)  # other data than the artifact's (training.data_match)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "data": str(self.data),
            "threshold": self.threshold,
            "threshold_calibrated": self.calibrated,
            "target_false_alarm": self.config.false_alarm_rate if self.calibrated else None,
            "shift": self.config.shift,
            "keep_baseline": self.config.keep_baseline,
            "baseline_lag_days": self.config.baseline_lag_days,
            "min_baseline_evidence": self.config.min_baseline_evidence,
            "prior_strength": self.config.prior_strength,
            "customers_checked": self.customers_checked,
            "drifting": [{"customer_id": c, **s.to_json()} for c, s in self.drifting],
            "accuracy": None if self.accuracy is None else self.accuracy.to_json(),
            "live_threshold": None if self.live_calibration is None else self.live_calibration.to_json(),
            "detection_bound": None if self.bound is None else self.bound.to_json(),
            "warnings": self.warnings,
        }


def detection_bound_beside(
    accuracy: DriftAccuracy,
    data_dir: Path,
    truth: pl.DataFrame,
    events: pl.DataFrame,
    targets: tuple[float, ...],
) -> DetectionBound | None:
    """The bound at ``targets`` and at the false-alarm rate ``accuracy`` measured, so the detector's
    row has a bound row to be read against; None when the shop's truth does not name each event's
    persona (a shop generated before that file existed)."""
    labels = data_dir / TRUTH_EVENT_PERSONAS
    if not labels.is_file():
        return None
    every = tuple(sorted({*targets, accuracy.false_alarm_rate}))
    return detection_bound(truth, events, pl.read_parquet(labels), every)


def run_drift_report(
    artifact_path: Path,
    *,
    data_path: Path | None = None,
    config: ChangeDetectorConfig | None = None,
    show_progress: bool = True,
) -> DriftReport:
    config = config or ChangeDetectorConfig()
    artifact = load_artifact(artifact_path)
    if data_path is None:
        configured = artifact.manifest.get("config", {}).get("data", {}).get("path")
        if not configured:
            raise ArtifactError(f"{artifact.path}: manifest names no training data; give --data")
        data_path = Path(configured)
    if not Path(data_path).is_dir():
        raise FileNotFoundError(f"data folder {data_path} not found (give --data)")
    with progress_bar(show_progress) as progress:
        task = progress.add_task("loading events", total=4)
        shop = load_shop(Path(data_path))
        prior = population_mean_mix(np.asarray(artifact.mix_overall, dtype=np.float64))
        progress.update(task, advance=1, description="running the change test")
        trace = trace_changes(artifact.inference, shop.events, shop.items, prior, config)
        progress.update(task, advance=1, description="calibrating on shuffled histories")
        null = trace.shuffled_largest(config)
        threshold = config.threshold or threshold_for(null, config.false_alarm_rate)
        progress.update(task, advance=1, description="scoring")
        statuses = trace.statuses(threshold)
        truth_path = Path(data_path) / TRUTH_MIXES
        accuracy = None
        bound = None
        if truth_path.is_file():
            truth = pl.read_parquet(truth_path)
            if {"customer_id", "drift_date"} <= set(truth.columns):
                curve: dict[float, float | None] = {threshold_for(null, t): t for t in CURVE_TARGETS}
                curve[threshold] = None if config.threshold else config.false_alarm_rate
                planted = PlantedDrift.from_truth(truth, trace.customers)
                accuracy = score_detection(trace, planted, threshold, curve)
                progress.update(task, description="bounding it with the planted personas")
                bound = detection_bound_beside(accuracy, Path(data_path), truth, shop.events, CURVE_TARGETS)
        progress.update(task, advance=1, description="done")
    drifting = sorted(
        ((c, s) for c, s in statuses.items() if s.drifting), key=lambda pair: -pair[1].statistic
    )
    return DriftReport(
        artifact.version,
        Path(data_path),
        config,
        threshold,
        config.threshold is None,
        len(statuses),
        drifting,
        accuracy,
        artifact.drift_calibration,
        bound,
        [w for w in [other_data_warning(Path(data_path), artifact.manifest, artifact.version)] if w],
    )
