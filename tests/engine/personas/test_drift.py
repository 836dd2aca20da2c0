"""Drift detection: the divergence itself, and detection against a synthetic shop's planted drift."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engine.artifact.contents import load_artifact
from engine.personas.drift import (
    DriftConfig,
    DriftFinding,
    DriftStatus,
    js_divergence,
    score_drift,
    trace_drift,
)
from tests.engine.small_artifact import train_small_artifact

mixes = (
    arrays(np.float64, 5, elements=st.floats(0.0, 1.0))
    .filter(lambda a: a.sum() > 1e-3)
    .map(lambda a: a / a.sum())
)


@settings(max_examples=80, deadline=None)
@given(p=mixes, q=mixes)
def test_js_divergence_is_a_symmetric_bounded_divergence(p: np.ndarray, q: np.ndarray) -> None:
    d = float(js_divergence(p, q))
    assert 0.0 <= d <= 1.0
    assert d == pytest.approx(float(js_divergence(q, p)), abs=1e-12)
    assert float(js_divergence(p, p)) == pytest.approx(0.0, abs=1e-12)


def test_js_divergence_of_disjoint_mixes_is_one_bit() -> None:
    assert float(js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0]))) == pytest.approx(1.0)
    rows = js_divergence(np.array([[0.5, 0.5], [1.0, 0.0]]), np.array([[0.5, 0.5], [0.0, 1.0]]))
    np.testing.assert_allclose(rows, [0.0, 1.0])


def finding(customer: str, drifting: bool, since: dt.date | None) -> DriftFinding:
    moment = None if since is None else dt.datetime.combine(since, dt.time(), dt.UTC)
    return DriftFinding(customer, DriftStatus(drifting, 0.3, moment, "a", "b", 5.0), since)


def test_scoring_counts_hits_false_alarms_misses_and_delays() -> None:
    truth = pl.DataFrame(
        {
            "customer_id": ["c1", "c2", "c3", "c4"],
            "drift_date": [dt.date(2026, 3, 1), dt.date(2026, 3, 1), None, None],
        }
    )
    findings = [
        finding("c1", True, dt.date(2026, 3, 11)),  # hit, 10 days late
        finding("c2", False, None),  # miss
        finding("c3", True, dt.date(2026, 2, 1)),  # false alarm
        finding("c4", False, None),
    ]
    accuracy = score_drift(findings, truth)
    assert (accuracy.n_planted, accuracy.n_flagged, accuracy.true_positives) == (2, 2, 1)
    assert accuracy.precision == 0.5 and accuracy.recall == 0.5
    assert accuracy.median_delay_days == 10.0


def test_config_rejects_thresholds_outside_zero_one() -> None:
    with pytest.raises(ValueError, match="threshold"):
        DriftConfig(threshold=1.5)


@pytest.fixture(scope="module")
def shop_and_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("drift")
    artifact = train_small_artifact(folder)
    return folder / "shop", artifact


def test_planted_drifters_diverge_more_and_are_found_more_often(shop_and_artifact: tuple[Path, Path]) -> None:
    shop, artifact = shop_and_artifact
    loaded = load_artifact(artifact)
    model, customers, long_term = loaded.inference, loaded.customers, loaded.mix_overall
    events = pl.read_parquet(shop / "events.parquet")
    items = pl.read_parquet(shop / "items.parquet")
    truth = pl.read_parquet(shop / "truth/customer_mixes.parquet")
    trace = trace_drift(model, events, items, (customers, long_term), DriftConfig().half_life_days)
    config = DriftConfig()
    findings = trace.findings(config.threshold, config.min_evidence)
    drifted = set(truth.filter(pl.col("drift_date").is_not_null())["customer_id"].to_list())
    final = {f.customer_id: f.status.divergence for f in findings}
    assert np.median([final[c] for c in drifted if c in final]) > 2 * np.median(
        [d for c, d in final.items() if c not in drifted]
    )
    accuracy = score_drift(findings, truth)
    flagged_share = accuracy.n_flagged / accuracy.n_customers
    assert accuracy.recall > 2 * flagged_share  # far better than flagging at random
    for f in findings:
        if f.status.drifting:
            assert f.status.since is not None and f.first_flagged is not None
            assert f.first_flagged <= f.status.since.date()
