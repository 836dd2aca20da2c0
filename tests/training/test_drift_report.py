"""``persona-engine drift`` on a small trained shop: the report, its JSON, its scoring and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main
from tests.engine.small_artifact import train_small_artifact


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_artifact(tmp_path_factory.mktemp("drift-cli"))


def test_json_lists_drifting_customers_and_scores_them_against_planted_truth(
    artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["drift", "--artifact", str(artifact), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["threshold"] == 0.08 and report["customers_checked"] > 0
    divergences = [row["divergence"] for row in report["drifting"]]
    assert divergences == sorted(divergences, reverse=True)
    assert all(
        d > report["threshold"] and row["since"]
        for d, row in zip(divergences, report["drifting"], strict=True)
    )
    assert all(row["from_persona"] and row["to_persona"] for row in report["drifting"])
    accuracy = report["accuracy"]
    assert accuracy["n_flagged"] == len(report["drifting"])
    assert 0 <= accuracy["precision"] <= 1 and 0 <= accuracy["recall"] <= 1


def test_a_higher_threshold_flags_fewer_and_the_table_names_the_columns(
    artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["drift", "--artifact", str(artifact), "--json", "--threshold", "0.2"]) == 0
    strict = json.loads(capsys.readouterr().out)
    assert main(["drift", "--artifact", str(artifact), "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert len(strict["drifting"]) <= len(default["drifting"])
    assert main(["drift", "--artifact", str(artifact), "--no-progress", "--limit", "3"]) == 0
    text = capsys.readouterr().out
    for column in ("customer", "from persona", "to persona", "JS divergence", "since", "precision", "recall"):
        assert column in text


def test_bad_flags_and_missing_data_exit_with_status_2(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["drift", "--artifact", str(artifact), "--threshold", "1.5"]) == 2
    assert "--threshold" in capsys.readouterr().err
    assert main(["drift", "--artifact", str(artifact), "--data", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
