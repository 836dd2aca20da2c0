"""``persona-engine experiment-report`` from a real event log and from a decisions file."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cli.main import main
from engine.live.event_log import EventLog
from engine.live.events import DecisionOutcome, OutcomeKind, ServedDecision

NOW = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC)


def _log(path: Path) -> dict[str, tuple[int, int, float]]:
    """200 control and 200 treatment decisions; returns (decisions, conversions, revenue) per arm."""
    rng = np.random.default_rng(1)
    served, outcomes = [], []
    truth = {"control": [0, 0, 0.0], "treatment": [0, 0, 0.0]}
    for i in range(400):
        arm = "control" if i % 2 else "treatment"
        decision_id = f"d{i}"
        for decision_type, arm_id in (("offer", "o1"), ("offer", "o2"), ("layout", "v1")):
            served.append(
                ServedDecision(
                    decision_id,
                    f"c{i}",
                    NOW,
                    "weekday",
                    decision_type,
                    arm_id,
                    0.5,
                    (("p", 1.0),),
                    experiment_arm=arm,
                )
            )
        truth[arm][0] += 1
        outcomes.append(DecisionOutcome(f"s{i}", decision_id, f"c{i}", OutcomeKind.OFFER_SHOWN, NOW, "o1"))
        if rng.random() < (0.3 if arm == "treatment" else 0.1):
            revenue = float(rng.integers(5, 50))
            outcomes.append(
                DecisionOutcome(f"r{i}", decision_id, f"c{i}", OutcomeKind.OFFER_REDEEMED, NOW, "o1", revenue)
            )
            truth[arm][1] += 1
            truth[arm][2] += revenue
    # A decision outside any experiment is left out.
    served.append(ServedDecision("x", "cx", NOW, "weekday", "offer", "o1", 1.0, (("p", 1.0),)))
    with EventLog.open(path) as log:
        log.log_decisions(served)
        log.append([], outcomes)
    return {arm: (int(n), int(c), float(r)) for arm, (n, c, r) in truth.items()}


def test_report_from_event_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "events.sqlite"
    truth = _log(path)
    assert main(["experiment-report", "--event-log", str(path), "--json", "--resamples", "500"]) == 0
    report = json.loads(capsys.readouterr().out)
    arms = {arm["arm"]: arm for arm in report["arms"]}
    assert [arm["arm"] for arm in report["arms"]] == ["control", "treatment"]
    for name, (decisions, conversions, revenue) in truth.items():
        assert (arms[name]["decisions"], arms[name]["conversions"]) == (decisions, conversions)
        assert arms[name]["revenue"] == pytest.approx(revenue)
    low, high = arms["treatment"]["rate_difference_ci"]
    assert low > 0 and high < 1  # 30% vs 10% on 200 each is clearly different
    assert main(["experiment-report", "--event-log", str(path), "--resamples", "500"]) == 0
    out = capsys.readouterr().out
    assert "experiment arms vs control" in out and "treatment" in out and "+0.2" in out


def test_report_from_decisions_file_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    n = 300
    frame = pl.DataFrame(
        {
            "decision_id": [f"d{i}" for i in range(n)],
            "customer_id": [f"c{i}" for i in range(n)],
            "timestamp": ["2026-11-23T12:00:00Z"] * n,
            "context": ["weekday"] * n,
            "decision_type": ["offer"] * n,
            "arm_id": ["o1"] * n,
            "propensity": [0.5] * n,
            "outcome": [float(i % 4 == 0) for i in range(n)],
            "experiment_arm": ["a" if i % 3 else "b" for i in range(n)],
            "revenue": [10.0 * (i % 4 == 0) for i in range(n)],
        }
    )
    path = tmp_path / "decisions.csv"
    frame.write_csv(path)
    assert main(["experiment-report", "--decisions", str(path), "--control", "b", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["control"] == "b" and sum(arm["decisions"] for arm in report["arms"]) == n
    assert main(["experiment-report", "--decisions", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert (
        "no arm named 'control'" in err
        and "--experiment FILE (the config the server ran) or --control ARM" in err
    )
    frame.drop("experiment_arm").write_csv(path)
    assert main(["experiment-report", "--decisions", str(path), "--control", "b"]) == 2
    assert "experiment_arm" in capsys.readouterr().err


EXPERIMENT_TOML = """
[experiment]
name = "bandit-vs-static"
control = "treatment"

[experiment.arms.control]
share = 0.5

[experiment.arms.treatment]
share = 0.5
policy = "online-bandit"
"""


def test_the_control_arm_comes_from_the_experiments_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The control is the one the experiment's config names (here, unusually, 'treatment'), not an arm
    that happens to be called 'control'; --control still wins."""
    log = tmp_path / "events.sqlite"
    _log(log)
    experiment = tmp_path / "experiment.toml"
    experiment.write_text(EXPERIMENT_TOML, encoding="utf-8")
    assert (
        main(["experiment-report", "--event-log", str(log), "--experiment", str(experiment), "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["control"] == "treatment" and report["experiment"] == "bandit-vs-static"
    assert report["arms"][0]["arm"] == "treatment"
    argv = [
        "experiment-report",
        "--event-log",
        str(log),
        "--experiment",
        str(experiment),
        "--control",
        "control",
    ]
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["control"] == "control"
