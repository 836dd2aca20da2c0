"""``persona-engine evaluate-policy`` on a small synthetic shop: estimates near the planted truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cli.main import main
from tests.engine.small_artifact import train_small_artifact
from training.policy_evaluation_job import SPLIT_SOURCE, customer_folds


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_artifact(tmp_path_factory.mktemp("ope"), refit=True)


def _shop(artifact: Path) -> Path:
    return artifact.parent.parent / "shop"


def test_estimates_are_close_to_the_true_values(artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shop = _shop(artifact)
    args = ["evaluate-policy", "--decisions", str(shop / "decisions.parquet"), "--artifact", str(artifact)]
    args += ["--truth", str(shop / "truth"), "--json", "--policy", "uniform", "--policy", "greedy"]
    args += ["--policy", "thompson:100", "--policy", "always:offer_freeship_all"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    # The artifact was refit on every decision of this log: its test period is scored with the split's
    # mixes and estimates, fitted again (tests/training/test_refit_on_all_events.py).
    assert report["mix_source"] == report["estimates_source"] == SPLIT_SOURCE
    assert [p["policy"] for p in report["policies"]] == [
        "uniform",
        "greedy",
        "thompson:100",
        "always:offer_freeship_all",
    ]
    for policy in report["policies"]:
        assert 0 < policy["effective_sample_size"] <= report["decisions"]
        for estimate in policy["estimates"]:
            assert estimate["estimator"] in {"ips", "snips", "dr"}
            # A small log: loose, but a wrong propensity or weight would be off by far more.
            assert abs(estimate["error"]) < 4 * estimate["std_error"] + 0.01
    assert report["coverage"]["share"] >= 0.75
    uniform = report["policies"][0]
    assert uniform["true_value"] == pytest.approx(uniform["estimates"][0]["value"], abs=0.03)


def test_mix_columns_replace_the_artifact_and_table_output(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    decisions = pl.read_parquet(_shop(artifact) / "decisions.parquet")
    n = decisions.height
    with_mix = decisions.with_columns(
        pl.Series("mix__bargain_hunter", np.full(n, 0.5)), pl.Series("mix__tech_savvy", np.full(n, 0.5))
    )
    path = tmp_path / "log.csv"
    with_mix.write_csv(path)
    assert (
        main(["evaluate-policy", "--decisions", str(path), "--policy", "greedy", "--policy", "uniform"]) == 0
    )
    out = capsys.readouterr().out
    assert "persona mixes: columns" in out and "arm estimates: log (in-sample)" in out
    assert "snips" in out and "dr" in out


def test_bad_input_is_a_user_error(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    decisions = pl.read_parquet(_shop(artifact) / "decisions.parquet")
    broken = decisions.with_columns(
        pl.Series("mix__a", np.full(decisions.height, 0.7)),
        pl.Series("mix__b", np.full(decisions.height, 0.7)),
    )
    path = tmp_path / "bad.parquet"
    broken.write_parquet(path)
    assert main(["evaluate-policy", "--decisions", str(path), "--policy", "uniform"]) == 2
    assert "row 1" in capsys.readouterr().err
    good = str(_shop(artifact) / "decisions.parquet")
    assert main(["evaluate-policy", "--decisions", good, "--policy", "always:nope"]) == 2
    assert "unknown arm 'nope'" in capsys.readouterr().err
    assert main(["evaluate-policy", "--decisions", good, "--policy", "greedy"]) == 2
    assert "needs persona mixes" in capsys.readouterr().err


def test_folds_are_stable_per_customer() -> None:
    folds = customer_folds(["c1", "c2", "c1", "c3"], 5)
    assert folds[0] == folds[2]
    assert customer_folds(["c1"], 5)[0] == folds[0]


def test_the_table_title_gives_the_period_start_for_people() -> None:
    from training.policy_evaluation_table import table_title

    report = {
        "since": "2026-07-01T23:50:50.000001+00:00",
        "decision_type": "offer",
        "decisions": 1550,
        "mix_source": "event log",
        "estimates_source": "artifact",
        "reward_model": "persona x arm",
    }
    title = table_title(report, 0.95)
    assert "on 1,550 logged decisions from 2026-07-01 23:50:50 UTC (95% intervals)" in title
