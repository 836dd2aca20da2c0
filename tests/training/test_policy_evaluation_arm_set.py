"""Positions in logged decisions, and which arms "uniform" is uniform over.

The log below shows 3 offers in 2 slots, but offer c was never logged in slot 2. Read as arm = offer
x position, a tool that takes its arms from the log silently evaluates "uniform over the 5 pairs that
happened to appear" instead of uniform over the 6 the shop can show.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cli.main import main

OFFERS = ("a", "b", "c")
LOGGED_PAIRS = (("a", "1"), ("a", "2"), ("b", "1"), ("b", "2"), ("c", "1"))  # never c in slot 2


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    n = 2_000
    pairs = [LOGGED_PAIRS[i] for i in rng.integers(0, len(LOGGED_PAIRS), n)]
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    pl.DataFrame(
        {
            "decision_id": [f"d{i}" for i in range(n)],
            "customer_id": [f"c{i % 300}" for i in range(n)],
            "timestamp": [start + dt.timedelta(minutes=i) for i in range(n)],
            "context": ["weekday"] * n,
            "decision_type": ["offer"] * n,
            "arm_id": [offer for offer, _ in pairs],
            "position": [slot for _, slot in pairs],
            "propensity": [1 / len(LOGGED_PAIRS)] * n,
            "outcome": (rng.random(n) < 0.1).astype(float),
        }
    ).write_parquet(tmp_path / "decisions.parquet")
    pl.DataFrame({"offer_id": list(OFFERS), "kind": ["percent_off"] * 3, "cost": [1.0, 1.0, 1.0]}).write_csv(
        tmp_path / "offers.csv"
    )
    return tmp_path


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[dict, str]:
    assert main(["evaluate-policy", "--policy", "uniform", "--json", *args]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def test_uniform_is_over_the_declared_offers_times_positions(
    shop: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report, err = _run(
        capsys,
        "--decisions",
        str(shop / "decisions.parquet"),
        "--arm-table",
        str(shop / "offers.csv"),
        "--positions",
        "1,2",
    )
    assert report["arms"] == ["a@1", "a@2", "b@1", "b@2", "c@1", "c@2"]
    assert "offers.csv" in report["arm_set_source"]
    # logged uniformly over 5 pairs, evaluated as uniform over 6: every weight is (1/6) / (1/5)
    assert report["policies"][0]["mean_weight"] == pytest.approx(5 / 6)
    # the one declared pair the log never shows is named: nothing can be learnt about it
    assert report["warnings"] == [w for w in report["warnings"] if "never appear in the log (c@2)" in w]
    assert len(report["warnings"]) == 1 and "inferred" not in err


def test_an_arm_set_inferred_from_the_log_is_warned_about(
    shop: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report, err = _run(capsys, "--decisions", str(shop / "decisions.parquet"))
    # every arm seen in every position seen, not only the 5 pairs that happened to appear
    assert report["arms"] == ["a@1", "a@2", "b@1", "b@2", "c@1", "c@2"]
    assert report["arm_set_source"] == "the log"
    arms, slots, unlogged = report["warnings"]  # the arms, the positions, the pair never logged
    assert "inferred from the log" in arms and "inferred from the log" in slots and "(c@2)" in unlogged
    assert "warning" in err and "--arm-table" in err and "--positions" in err


def test_a_logged_arm_outside_the_declared_set_is_an_error_naming_the_row(
    shop: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "evaluate-policy",
            "--policy",
            "uniform",
            "--decisions",
            str(shop / "decisions.parquet"),
            "--arms",
            "a,b",
            "--positions",
            "1,2",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "column 'arm_id'" in err and "'c'" in err and "--arms" in err
