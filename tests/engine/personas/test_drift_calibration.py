"""The live drift threshold calibrated in training: sampled and seeded, stored as JSON, chosen for live."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from engine.artifact import ArtifactError
from engine.artifact.contents import LoadedArtifact, load_artifact
from engine.data.loading import load_shop
from engine.personas.change_detection import ChangeDetectorConfig
from engine.personas.drift import DEFAULT_THRESHOLD, DriftConfig, population_mean_mix
from engine.personas.drift_calibration import (
    MIN_TESTED_CUSTOMERS,
    DriftCalibration,
    calibrate_drift_threshold,
    live_threshold,
    statistic_settings,
)
from tests.engine.artifact.test_contents import contents_of, rewrite
from tests.engine.small_artifact import train_small_artifact


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedArtifact, pl.DataFrame, pl.DataFrame]:
    folder = tmp_path_factory.mktemp("drift-calibration")
    artifact = load_artifact(train_small_artifact(folder))
    shop = load_shop(folder / "shop")
    return artifact, shop.events, shop.items


def calibrate(
    trained: tuple[LoadedArtifact, pl.DataFrame, pl.DataFrame], **kwargs: Any
) -> DriftCalibration | None:
    artifact, events, items = trained
    config = ChangeDetectorConfig(false_alarm_rate=kwargs.pop("rate", 0.05))
    prior = population_mean_mix(np.asarray(artifact.mix_overall, dtype=np.float64))
    return calibrate_drift_threshold(artifact.inference, events, items, prior, config, **kwargs)


def test_a_sample_holds_the_given_number_of_customers_and_repeats_with_its_seed(
    trained: tuple[LoadedArtifact, pl.DataFrame, pl.DataFrame],
) -> None:
    _, events, _ = trained
    everyone = events["customer_id"].n_unique()
    sampled = calibrate(trained, max_customers=300, seed=1)
    assert sampled is not None and sampled.customers == 300 and 0 < sampled.events < events.height
    assert MIN_TESTED_CUSTOMERS <= sampled.tested_customers <= 300
    assert calibrate(trained, max_customers=300, seed=1) == sampled
    # no sample when it would not be smaller: every customer, the same threshold either way
    full = calibrate(trained, max_customers=0, seed=1)
    assert full is not None and full.customers == everyone and full.events == events.height
    assert calibrate(trained, max_customers=everyone, seed=7) == full


def test_too_few_customers_with_a_baseline_calibrate_nothing(
    trained: tuple[LoadedArtifact, pl.DataFrame, pl.DataFrame],
) -> None:
    assert calibrate(trained, max_customers=MIN_TESTED_CUSTOMERS - 1, seed=1) is None
    # a shop whose histories are all younger than the baseline lag tests nobody: no quantile at all
    artifact, events, items = trained
    last = events["timestamp"].max()
    recent = events.filter(pl.col("timestamp") > last - dt.timedelta(days=20))  # type: ignore[operator]
    assert calibrate((artifact, recent, items), max_customers=0, seed=1) is None


def test_a_higher_false_alarm_target_gives_a_lower_threshold(
    trained: tuple[LoadedArtifact, pl.DataFrame, pl.DataFrame],
) -> None:
    calibrations = [calibrate(trained, max_customers=0, seed=0, rate=r) for r in (0.02, 0.05, 0.2)]
    thresholds = [c.threshold for c in calibrations if c is not None]
    assert thresholds[0] >= thresholds[1] >= thresholds[2] > 0
    assert thresholds[0] > thresholds[2]


def test_the_stored_form_round_trips_and_a_malformed_one_is_refused_naming_the_key() -> None:
    calibration = DriftCalibration(
        6.5, 0.05, 1_200, 1_100, 30_000, statistic_settings(ChangeDetectorConfig())
    )
    assert DriftCalibration.from_json(calibration.to_json(), "x.json") == calibration
    for key, value in (("threshold", "7"), ("threshold", -1.0), ("customers", None), ("settings", [])):
        document = {**calibration.to_json(), key: value}
        with pytest.raises(ValueError, match=rf"x\.json: '{key}'"):
            DriftCalibration.from_json(document, "x.json")
    with pytest.raises(ValueError, match=r"x\.json: expected a JSON object"):
        DriftCalibration.from_json([6.5], "x.json")


def test_live_uses_a_configured_threshold_then_the_artifacts_then_the_default() -> None:
    default_test = ChangeDetectorConfig()
    calibration = DriftCalibration(7.5, 0.05, 1_000, 900, 20_000, statistic_settings(default_test))
    assert calibration.holds_for(default_test)
    assert calibration.holds_for(ChangeDetectorConfig(false_alarm_rate=0.2))  # chooses, not shapes
    assert not calibration.holds_for(ChangeDetectorConfig(baseline_lag_days=14))
    threshold, source = live_threshold(DriftConfig(), calibration)
    assert threshold == 7.5 and "900 customers" in source and "5.0%" in source
    configured = DriftConfig(detector=ChangeDetectorConfig(threshold=4.0))
    assert live_threshold(configured, calibration) == (4.0, "set in the live config")
    threshold, source = live_threshold(DriftConfig(detector=ChangeDetectorConfig(shift=0.3)), calibration)
    assert threshold == DEFAULT_THRESHOLD and "other test settings" in source
    threshold, source = live_threshold(DriftConfig(), None)
    assert threshold == DEFAULT_THRESHOLD and "no calibrated threshold" in source


class _Malformed:
    """Writes a calibration without a threshold, as a hand-edited or truncated file would be."""

    def to_json(self) -> dict[str, Any]:
        return {"target_false_alarm": 0.05, "customers": 10, "events": 100, "settings": {}}


def test_an_artifact_stores_its_calibration_and_a_malformed_one_is_refused_naming_the_file(
    trained: tuple[LoadedArtifact, pl.DataFrame, pl.DataFrame], tmp_path: Path
) -> None:
    artifact, _, _ = trained
    stored = artifact.drift_calibration
    assert stored is not None and stored.holds_for(ChangeDetectorConfig()) and stored.threshold > 0
    contents = contents_of(artifact)
    assert load_artifact(rewrite(contents, tmp_path / "same")).drift_calibration == stored
    broken = load_artifact(rewrite(dataclasses.replace(contents, drift_calibration=_Malformed()), tmp_path))
    with pytest.raises(ArtifactError, match=r"personas/drift_calibration\.json: 'threshold'"):
        _ = broken.drift_calibration


def test_a_calibration_stored_before_tested_customers_were_counted_still_loads() -> None:
    first_format = {"threshold": 5.0, "target_false_alarm": 0.05, "customers": 800, "events": 9_000,
                    "settings": statistic_settings(ChangeDetectorConfig())}  # fmt: skip
    loaded = DriftCalibration.from_json(first_format, "x.json")
    assert loaded.tested_customers == loaded.customers == 800 and loaded.threshold == 5.0
