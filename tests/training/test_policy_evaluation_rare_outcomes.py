"""Off-policy evaluation on simulated logs with a conversion rate near 0.4% (click-through scale).

Many arms and rare outcomes are where a per-cell reward model smoothed with Beta(1, 1) goes wrong: a
cell with 30 trials and no success predicts 1/32 = 3%, eight times the truth, and DR then adds noise
instead of removing it. The logs here are simulated with known per-arm rates, so every estimate can
be checked against the true value.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cli.main import main
from engine.personas.shopping_context import CONTEXTS
from training.policy_evaluation_table import figures, interval_decimals

N_ARMS = 240
BASE_RATE = 0.004


def simulated_log(
    path: Path, seed: int, *, n: int = 24_000, with_mixes: bool = False
) -> tuple[Path, np.ndarray]:
    """An offer log with rare conversions; returns the file and the true arm rates."""
    rng = np.random.default_rng(seed)
    rates = BASE_RATE * rng.lognormal(0.0, 0.3, N_ARMS)
    # a logging policy that favours some arms (as a live one does), so the candidates' weights vary
    logging = rng.lognormal(0.0, 1.0, N_ARMS)
    logging /= logging.sum()
    arms = rng.choice(N_ARMS, size=n, p=logging)
    outcome = (rng.random(n) < rates[arms]).astype(np.float64)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    columns: dict[str, object] = {
        "decision_id": [f"d{i}" for i in range(n)],
        "customer_id": [f"c{c}" for c in rng.integers(0, 4_000, n)],
        "timestamp": [start + dt.timedelta(minutes=i) for i in range(n)],
        "context": [CONTEXTS[c] for c in rng.integers(0, len(CONTEXTS), n)],
        "decision_type": ["offer"] * n,
        "arm_id": [f"a{a:03d}" for a in arms],
        "propensity": logging[arms],
        "outcome": outcome,
    }
    if with_mixes:
        share = rng.random(n)
        columns["mix__p0"], columns["mix__p1"] = share, 1.0 - share
    pl.DataFrame(columns).write_parquet(path)
    return path, rates


def _evaluate(log: Path, capsys: pytest.CaptureFixture[str], *policies: str) -> dict:
    args = ["evaluate-policy", "--decisions", str(log), "--json"]
    for policy in policies:
        args += ["--policy", policy]
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("with_mixes", [False, True], ids=["context-x-arm", "persona-x-arm"])
def test_dr_with_rare_outcomes_covers_the_truth_and_is_no_wider_than_ips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], with_mixes: bool
) -> None:
    seeds = range(4)
    covered = 0
    for seed in seeds:
        log, rates = simulated_log(tmp_path / f"log{seed}.parquet", seed, with_mixes=with_mixes)
        report = _evaluate(log, capsys, "uniform")
        by = {e["estimator"]: e for e in report["policies"][0]["estimates"]}
        dr, ips = by["dr"], by["ips"]
        assert dr["ci_high"] - dr["ci_low"] <= ips["ci_high"] - ips["ci_low"], seed
        covered += dr["ci_low"] <= rates.mean() <= dr["ci_high"]
    # 95% intervals: at most one miss in four is within what chance allows here
    assert covered >= len(seeds) - 1


def test_the_table_shows_click_through_scale_estimates_with_their_digits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, _ = simulated_log(tmp_path / "log.parquet", 0)
    assert main(["evaluate-policy", "--decisions", str(log), "--policy", "uniform"]) == 0
    out = capsys.readouterr().out
    assert "nowhere" not in out
    ips_row = next(line for line in out.splitlines() if " ips " in f" {line} ")
    figures = [token for token in ips_row.split() if token.startswith("0.")]
    assert len(figures) == 3  # estimate, ci low, ci high
    # enough digits that the interval's half-width has two significant figures: 0.0040 [0.0032, 0.0048]
    assert all(len(f.split(".")[1]) >= 4 for f in figures), ips_row
    assert "persona mixes: none" in out and "outcomes and propensities" in out


def test_digits_follow_the_interval_at_every_scale() -> None:
    assert str(figures(0.0024, interval_decimals(0.0024, 0.0009, 0.0039))) == "0.0024"
    assert str(figures(0.11, interval_decimals(0.11, 0.09, 0.13))) == "0.110"
    assert str(figures(1234.4, interval_decimals(1234.4, 1184.0, 1284.0))) == "1234"
    assert interval_decimals(0.0, 0.0, 0.0) == 3  # no spread, no value: three decimals
