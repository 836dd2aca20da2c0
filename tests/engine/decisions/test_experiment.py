"""Experiments: strict config, stable assignment with the configured shares, and the report statistics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.decisions.experiment import (
    CurrentExperiment,
    Experiment,
    ExperimentArm,
    ExperimentError,
    experiment_from_dict,
    load_experiment,
)
from engine.evaluation.experiment_report import (
    bootstrap_mean_difference,
    newcombe_interval,
    summarize_arms,
    wilson_interval,
)
from engine.live.state_store import MemoryStateStore

CONFIG = """
[experiment]
name = "bandit-vs-static"
control = "static"

[experiment.arms.static]
share = 0.7

[experiment.arms.bandit]
share = 0.3
policy = "online-bandit"
model = "als"
"""


def _two_arms(share: float = 0.3, name: str = "exp") -> Experiment:
    return Experiment(
        name, "control", (ExperimentArm("control", 1 - share), ExperimentArm("treatment", share))
    )


def test_config_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "experiment.toml"
    path.write_text(CONFIG, encoding="utf-8")
    experiment = load_experiment(path)
    assert experiment.control == "static"
    assert [(a.name, a.share, a.policy.value, a.model) for a in experiment.arms] == [
        ("static", 0.7, "artifact", ""),
        ("bandit", 0.3, "online-bandit", "als"),
    ]
    assert experiment_from_dict(experiment.as_dict()) == experiment


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (CONFIG.replace("share = 0.3", "share = 0.4"), "sum to 1"),
        (CONFIG.replace('control = "static"', 'control = "nope"'), "experiment.control 'nope'"),
        (CONFIG.replace('policy = "online-bandit"', 'policy = "magic"'), "experiment.arms.bandit.policy"),
        (CONFIG.replace("share = 0.7", "share = 0.7\ncolour = 1"), "unknown key(s) 'colour'"),
        (CONFIG.replace('name = "bandit-vs-static"', 'name = "has space"'), "experiment.name"),
        (CONFIG.replace("share = 0.3", 'share = "0.3"'), "experiment.arms.bandit.share"),
        ("[other]\nx = 1\n", "no [experiment] section"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ExperimentError) as error:
        load_experiment(path)
    assert message in str(error.value) and str(path) in str(error.value)


def test_assignment_is_stable_and_follows_the_shares() -> None:
    experiment = _two_arms(0.3)
    ids = [f"c{i}" for i in range(20_000)]
    arms = [experiment.assign(c).name for c in ids]
    assert arms == [_two_arms(0.3).assign(c).name for c in ids]  # same on any process
    share = arms.count("treatment") / len(arms)
    assert abs(share - 0.3) < 4 * math.sqrt(0.3 * 0.7 / len(arms))
    # Widening the treatment keeps everyone already in it.
    wider = _two_arms(0.5)
    assert all(
        wider.assign(c).name == "treatment" for c, a in zip(ids, arms, strict=True) if a == "treatment"
    )
    # Another experiment splits afresh: its treatment is not the same customers.
    other = [_two_arms(0.3, name="other").assign(c).name for c in ids]
    overlap = sum(a == b == "treatment" for a, b in zip(arms, other, strict=True)) / len(ids)
    assert abs(overlap - 0.09) < 0.02


def test_current_experiment_is_shared_through_the_store_and_can_stop() -> None:
    store = MemoryStateStore()
    now = [0.0]
    writer = CurrentExperiment(store, clock=lambda: now[0])
    reader = CurrentExperiment(store, refresh_seconds=1.0, clock=lambda: now[0])
    assert reader.assign("c1") == ""
    writer.set(_two_arms(0.5))
    assert reader.assign("c1") == ""  # cached for up to a second
    now[0] = 2.0
    assert reader.assign("c1") in {"control", "treatment"}
    # Arm order decides assignment, so it must survive the store: "treatment" sorts after "control",
    # an arm list in reverse alphabetical order must come back as it went in.
    reversed_arms = Experiment("exp", "zeta", (ExperimentArm("zeta", 0.5), ExperimentArm("alpha", 0.5)))
    writer.set(reversed_arms)
    now[0] = 3.0
    assert reader.get() == reversed_arms
    writer.set(None)
    now[0] = 5.0
    assert reader.get() is None


def test_wilson_and_newcombe_known_values() -> None:
    # Newcombe (1998), table II example: 56/70 vs 48/80 -> difference 0.2, 95% CI [0.0524, 0.3339].
    low, high = newcombe_interval(56, 70, 48, 80)
    assert low == pytest.approx(0.0524, abs=5e-4) and high == pytest.approx(0.3339, abs=5e-4)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=5e-4)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 60), st.integers(1, 60), st.integers(0, 60), st.integers(1, 60))
def test_newcombe_interval_contains_the_observed_difference(sa: int, na: int, sb: int, nb: int) -> None:
    sa, sb = min(sa, na), min(sb, nb)
    low, high = newcombe_interval(sa, na, sb, nb)
    assert -1 <= low <= sa / na - sb / nb + 1e-12 <= high + 2e-12 <= 1 + 2e-12


def test_bootstrap_and_summary() -> None:
    rng = np.random.default_rng(0)
    control_revenue = rng.exponential(10, 3_000) * (rng.random(3_000) < 0.1)
    treatment_revenue = rng.exponential(10, 3_000) * (rng.random(3_000) < 0.15)
    low, high = bootstrap_mean_difference(treatment_revenue, control_revenue, resamples=500)
    observed = treatment_revenue.mean() - control_revenue.mean()
    assert low < observed < high
    arms = ["control"] * 3_000 + ["treatment"] * 3_000
    revenue = np.concatenate([control_revenue, treatment_revenue])
    summaries = summarize_arms(arms, revenue > 0, revenue, "control", resamples=500)
    assert [s.arm for s in summaries] == ["control", "treatment"]
    control, treatment = summaries
    assert control.rate_difference is None and control.is_control
    assert treatment.rate_difference == pytest.approx(treatment.conversion_rate - control.conversion_rate)
    assert treatment.rate_difference_ci is not None and treatment.rate_difference_ci[0] > 0
    assert treatment.revenue == pytest.approx(treatment_revenue.sum())
