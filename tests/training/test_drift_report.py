"""``persona-engine drift`` on a small trained shop: the report, its JSON, its scoring and its errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cli.main import main
from tests.engine.small_artifact import train_small_artifact
from training.synthetic_shop import ShopConfig, generate_shop


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_artifact(tmp_path_factory.mktemp("drift-cli"))


def test_json_lists_drifting_customers_and_scores_them_like_a_detector(
    artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["drift", "--artifact", str(artifact), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["threshold_calibrated"] and report["target_false_alarm"] == 0.05
    assert report["customers_checked"] > 0
    assert report["warnings"] == []  # the artifact's own data
    statistics = [row["statistic"] for row in report["drifting"]]
    assert statistics == sorted(statistics, reverse=True)
    assert all(s >= report["threshold"] for s in statistics)
    assert all(row["since"] and row["from_persona"] and row["to_persona"] for row in report["drifting"])
    accuracy = report["accuracy"]
    assert 0 <= accuracy["precision"] <= 1 and 0 <= accuracy["recall"] <= 1
    assert 0 <= accuracy["false_alarm_rate"] <= 0.15  # calibrated to 5% on shuffled histories
    assert set(accuracy["delay_days"]) <= {"p10", "p25", "p50", "p75", "p90"}
    groups = accuracy["recall_by_events_after"]
    assert sum(g["drifters"] for g in groups) == accuracy["n_planted"]
    assert {g["group"] for g in accuracy["recall_by_strength"]} == {"0.75-1.00"}  # the default knobs
    targets = [p["target_false_alarm"] for p in accuracy["curve"]]
    assert 0.01 in targets and 0.3 in targets
    thresholds = [p["threshold"] for p in accuracy["curve"]]
    assert thresholds == sorted(thresholds)
    # Beside it, the best any detector could do on the same events: at the detector's own false-alarm
    # rate, the CUSUM told every interaction's persona finds at least as many drifters.
    bound = report["detection_bound"]
    assert bound["n_planted"] == accuracy["n_planted"] and bound["n_unchanged"] == accuracy["n_unchanged"]
    matched = [p for p in bound["points"] if p["target_false_alarm"] == accuracy["false_alarm_rate"]]
    assert len(matched) == 1
    assert matched[0]["false_alarm_rate"] <= accuracy["false_alarm_rate"]
    assert matched[0]["recall"] >= accuracy["recall"]
    assert all(p["false_alarm_rate"] <= p["target_false_alarm"] for p in bound["points"])


def test_a_given_threshold_replaces_calibration_and_the_tables_name_the_measures(
    artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["drift", "--artifact", str(artifact), "--json", "--threshold", "20"]) == 0
    strict = json.loads(capsys.readouterr().out)
    assert not strict["threshold_calibrated"] and strict["threshold"] == 20
    assert main(["drift", "--artifact", str(artifact), "--json", "--target-false-alarm", "0.3"]) == 0
    loose = json.loads(capsys.readouterr().out)
    assert len(strict["drifting"]) <= len(loose["drifting"])
    assert main(["drift", "--artifact", str(artifact), "--no-progress", "--limit", "3"]) == 0
    text = capsys.readouterr().out
    for words in (
        "from persona",
        "to persona",
        "precision",
        "recall",
        "false-alarm rate",
        "delay, events",
        "best any detector could do",
    ):
        assert words in text


def test_the_tables_keep_headers_whole_and_numbers_right_aligned(
    artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["drift", "--artifact", str(artifact), "--no-progress", "--limit", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "\u2026" not in "".join(lines)
    for measure in ("recall", "precision"):
        title = next(i for i, line in enumerate(lines) if line.startswith(f"{measure} counting only alarms"))
        header, first = lines[title + 2], lines[title + 4]
        assert header.split()[:4] == ["threshold", "target", "FA", "FA"]
        for column in ("7 d", "any delay"):  # each figure ends where its header ends
            end = header.index(column) + len(column)
            assert re.fullmatch(r"\d\.\d\d", first[:end].split()[-1])
    evidence = [line.split()[3] for line in lines if re.match(r" c\d+ ", line)]
    assert evidence and all(re.fullmatch(r"[\d,]+\.\d\d", value) for value in evidence)  # one precision


def test_bad_flags_and_missing_data_exit_with_status_2(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_status:
        main(["drift", "--artifact", str(artifact), "--target-false-alarm", "1.5"])
    assert exit_status.value.code == 2
    assert "--target-false-alarm" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_status:
        main(["drift", "--artifact", str(artifact), "--data", str(tmp_path / "nowhere")])
    assert exit_status.value.code == 2
    assert f"argument --data: {tmp_path / 'nowhere'}: no such folder" in capsys.readouterr().err


def test_the_server_tests_against_what_the_drift_job_calibrates_on_the_training_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # refit on all events: training calibrates on the events `drift` replays by default
    refit = train_small_artifact(tmp_path, refit=True)
    assert main(["drift", "--artifact", str(refit), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    live = report["live_threshold"]
    assert live["target_false_alarm"] == report["target_false_alarm"] == 0.05
    assert live["threshold"] == pytest.approx(report["threshold"], rel=1e-9)
    assert live["customers"] == 600 and live["settings"]["baseline_lag_days"] == 28.0
    assert main(["drift", "--artifact", str(refit), "--no-progress", "--limit", "0"]) == 0
    assert f"the server tests against {live['threshold']:.2f} nats" in capsys.readouterr().out


def test_other_data_than_the_artifacts_is_said_in_the_output_and_the_json(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An Online Retail artifact run on MovieLens listed users "drifting" between gift-shop personas
    without a word (a data scientist's walkthrough)."""
    other = tmp_path / "other-shop"
    generate_shop(other, ShopConfig(customers=300, items=150, events=9_000, seed=11))
    assert main(["drift", "--artifact", str(artifact), "--data", str(other), "--json", "--no-progress"]) == 0
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith(f"{other} is not the data artifact ")
    assert main(["drift", "--artifact", str(artifact), "--data", str(other), "--no-progress"]) == 0
    assert f"warning: {other} is not the data artifact" in " ".join(capsys.readouterr().out.split())
