"""Drift as the change test reports it: statuses from checks, and the test run over a trained shop."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.artifact.contents import load_artifact
from engine.personas.change_detection import ChangeDetectorConfig, DayCheck
from engine.personas.drift import (
    DEFAULT_THRESHOLD,
    DriftConfig,
    confidence_of,
    population_mean_mix,
    scaled_likelihoods,
    status_of,
    trace_changes,
)
from engine.personas.drift_accuracy import PlantedDrift, first_alarm_days, score_detection
from tests.engine.small_artifact import train_small_artifact

PERSONAS = ("a", "b", "c")


def test_a_check_over_the_threshold_drifts_towards_its_persona_since_its_restart() -> None:
    check = DayCheck(True, 7.0, towards=2, since_day=20_000, baseline_top=0)
    status = status_of(check, 5.0, PERSONAS, evidence=12.0)
    assert status.drifting and (status.from_persona, status.to_persona) == ("a", "c")
    assert status.since == dt.datetime(2024, 10, 4, tzinfo=dt.UTC)
    assert status.confidence == pytest.approx(1 / (1 + np.exp(-7.0)))
    below = status_of(check, 8.0, PERSONAS, evidence=12.0)
    assert not below.drifting and below.since is None and below.to_persona == "a"
    untested = status_of(DayCheck(False, 0.0, 0, -1, 0), 5.0, PERSONAS, evidence=1.0)
    assert not untested.drifting and untested.statistic == 0.0 and untested.confidence == 0.0


def test_confidence_rises_with_evidence_and_stays_a_probability() -> None:
    values = [confidence_of(s) for s in (0.0, 1.0, 5.0, 50.0, 5000.0)]
    assert values == sorted(values) and values[0] == 0.5 and values[-1] == 1.0


def test_likelihoods_are_scaled_per_event_and_the_prior_is_the_mean_mix() -> None:
    scores = np.log(np.array([[0.2, 0.4, 0.1], [1.0, 1.0, 3.0]]))
    scaled = scaled_likelihoods(scores)
    np.testing.assert_allclose(scaled, [[0.5, 1 / 3], [1.0, 1 / 3], [0.25, 1.0]], atol=1e-6)
    assert scaled[0, 1] == 0.333333  # six decimals: short in live state, the same offline
    np.testing.assert_allclose(
        population_mean_mix(np.array([[0.5, 0.5, 0.0], [0.1, 0.1, 0.8]])), [0.3, 0.3, 0.4]
    )


def test_the_live_threshold_defaults_to_the_demo_calibration() -> None:
    assert DriftConfig().threshold == DEFAULT_THRESHOLD
    assert DriftConfig(detector=ChangeDetectorConfig(threshold=3.0)).threshold == 3.0
    with pytest.raises(ValueError, match="half_life_days"):
        DriftConfig(half_life_days=0)


@pytest.fixture(scope="module")
def shop_and_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("drift")
    artifact = train_small_artifact(folder)
    return folder / "shop", artifact


def test_planted_drifters_are_found_far_more_often_than_the_others(
    shop_and_artifact: tuple[Path, Path],
) -> None:
    shop, artifact = shop_and_artifact
    loaded = load_artifact(artifact)
    events = pl.read_parquet(shop / "events.parquet")
    items = pl.read_parquet(shop / "items.parquet")
    truth = pl.read_parquet(shop / "truth/customer_mixes.parquet")
    prior = population_mean_mix(np.asarray(loaded.mix_overall))
    trace = trace_changes(loaded.inference, events, items, prior, ChangeDetectorConfig())
    planted = PlantedDrift.from_truth(truth, trace.customers)
    accuracy = score_detection(trace, planted, DEFAULT_THRESHOLD, {DEFAULT_THRESHOLD: None, 3.0: None})
    assert accuracy.n_planted > 20 and accuracy.recall > 3 * accuracy.false_alarm_rate
    assert accuracy.delay_days["p50"] >= 0 and accuracy.delay_events["p50"] >= 1
    loose, strict = accuracy.curve  # thresholds in increasing order: more alarms at the lower one
    assert loose.n_flagged >= strict.n_flagged and loose.recall >= strict.recall
    assert strict.n_flagged == accuracy.n_flagged and strict.recall == accuracy.recall
    budgets = list(strict.recall_within.values())
    assert budgets == sorted(budgets) and budgets[-1] <= strict.recall
    # Every status at the end of the history agrees with the checks it comes from.
    alarms = first_alarm_days(trace, DEFAULT_THRESHOLD)
    for customer, status in trace.statuses(DEFAULT_THRESHOLD).items():
        if status.drifting:
            assert alarms[trace.customers.index(customer)] >= 0  # drifting now: an alarm was raised
            assert status.since is not None and status.statistic >= DEFAULT_THRESHOLD
