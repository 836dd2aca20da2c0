"""The soak tool: a short real run (a 2-worker server, reloads and kills every few seconds) whose
accounting adds up, and the analysis functions on known inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.soak import SoakSettings, main
from benchmarks.soak_report import (
    CallRecord,
    call_accounting,
    latency_windows,
    rss_slope,
)
from tests.serving.server_harness import trained_artifacts


def test_a_line_through_growing_samples_has_its_slope_per_ten_minutes() -> None:
    samples = [(float(t), 200.0 + 0.01 * t) for t in range(0, 1200, 5)]  # 0.01 MB/s = 6 MB / 10 min
    fitted = rss_slope(samples, warmup_s=120.0)
    assert fitted["slope_mb_per_10min"] == pytest.approx(6.0)
    assert fitted["fitted"] == len([t for t, _ in samples if t >= 120])


def test_the_warm_up_is_counted_from_each_series_start() -> None:
    # A replacement worker first seen at 600 s: its steep start-up is left out, its flat rest is fitted.
    samples = [(600.0 + t, 100.0 + min(t, 60.0)) for t in range(0, 600, 5)]
    assert rss_slope(samples, warmup_s=60.0)["slope_mb_per_10min"] == pytest.approx(0.0, abs=1e-9)
    assert rss_slope(samples[:10], warmup_s=60.0)["slope_mb_per_10min"] is None  # too few after warm-up


def test_failures_around_a_kill_are_told_from_the_others() -> None:
    kills = [{"at": 10.0, "pid": 1}]
    calls = [
        CallRecord("Personalize", 1.0, 1.01),
        CallRecord("Personalize", 9.9, 10.2, "UNAVAILABLE", True, "OK"),  # in flight at the kill
        CallRecord("RecordEvents", 10.5, 10.6, "UNAVAILABLE", True, "OK"),  # just after: the channel's delay
        CallRecord("Personalize", 30.0, 30.1, "DEADLINE_EXCEEDED", True, "UNAVAILABLE", "Deadline Exceeded"),
    ]
    counts = call_accounting(calls, kills)
    assert counts["sent"] == 4
    assert counts["succeeded_first_time"] == 1
    assert counts["retried"] == counts["failed_first_time"] == 3
    assert (counts["retry_succeeded"], counts["retry_failed"]) == (2, 1)
    assert counts["failed_not_at_a_kill"] == 1
    assert counts["failures_not_at_a_kill"] == [
        {
            "rpc": "Personalize",
            "scheduled_s": 30.0,
            "ended_s": 30.1,
            "code": "DEADLINE_EXCEEDED",
            "detail": "Deadline Exceeded",
            "retry_code": "UNAVAILABLE",
        }
    ]
    assert counts["first_failure_codes"] == {"UNAVAILABLE": 2, "DEADLINE_EXCEEDED": 1}


def test_windows_measure_the_successes_and_count_the_failures() -> None:
    calls = [CallRecord("Personalize", t / 10, t / 10 + 0.002) for t in range(100)]
    calls.append(CallRecord("Personalize", 5.0, 6.0, "UNAVAILABLE", True, "UNAVAILABLE"))
    windows = latency_windows(calls, window_s=5.0)
    assert [w["calls"] for w in windows] == [50, 51]
    assert [w["failed"] for w in windows] == [0, 1]
    assert windows[0]["p99_ms"] == pytest.approx(2.0, abs=1e-6)


def test_bad_settings_are_refused_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="--rate"):
        SoakSettings(rate=0).check()
    with pytest.raises(ValueError, match="--workers"):
        SoakSettings(workers=1).check()
    with pytest.raises(ValueError, match="--prefill-events"):
        SoakSettings(prefill_events=-1).check()
    assert main(["--duration", "-1"]) == 2
    assert "--duration must be a positive number" in capsys.readouterr().err


def test_a_short_soak_adds_up(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    # A long first deadline: on a busy shared machine a slow call must not pass for a failure; the
    # calls in flight at a kill fail at once anyway (the connection drops).
    artifact = trained_artifacts(tmp_path_factory).newer
    status = main(
        [
            "--artifact", str(artifact),
            "--duration", "20", "--rate", "25", "--timeout", "10",
            "--reload-every", "4", "--kill-every", "5",
            "--warmup", "3", "--rss-every", "0.5", "--window", "5", "--prefill-events", "3",
            "--channels", "4",
            "--results", str(tmp_path), "--json",
        ]
    )  # fmt: skip
    documents = list(tmp_path.glob("soak-*.json"))
    assert len(documents) == 1
    result = json.loads(documents[0].read_text(encoding="utf-8"))
    calls = result["calls"]
    assert calls["sent"] == sum(calls["sent_by_rpc"].values()) > 300
    assert all(calls["sent_by_rpc"][rpc] > 0 for rpc in ("Personalize", "RecommendProducts", "RecordEvents"))
    assert calls["sent"] == calls["succeeded_first_time"] + calls["failed_first_time"]
    assert calls["failed_first_time"] == calls["retried"] == calls["retry_succeeded"] + calls["retry_failed"]
    assert sum(calls["first_failure_codes"].values()) == calls["failed_first_time"]
    assert calls["retry_failed"] == 0
    assert calls["failed_not_at_a_kill"] == 0
    # A kill waits until every worker serves again, so a slow restart may leave room for one kill only.
    kills = result["kills"]["each"]
    assert 1 <= len(kills) <= 3
    assert len({kill["pid"] for kill in kills}) == len(kills)  # never the same worker twice
    replaced = sum(1 for kill in kills if "replaced_by" in kill)
    assert result["reloads"]["done"] >= 4 and result["reloads"]["failed"] == 0
    outcomes = [r["outcome"] for r in result["reloads"]["each"]]
    assert "RELOAD_OUTCOME_RELOADED" in outcomes
    assert set(outcomes) <= {"RELOAD_OUTCOME_RELOADED", "RELOAD_OUTCOME_UNCHANGED"}  # after a retry
    # Before the clock: 4 channels over 2 workers, each channel 2 events per customer (3 x 2 / 4, rounded
    # up) for the 500 customers writes go to, 500 events a call; acknowledged and checked like the rest.
    assert result["prefill"]["per_customer_per_channel"] == 2
    assert (result["prefill"]["events"], result["prefill"]["calls"]) == (4 * 2 * 500, 8)
    assert result["prefill"]["snapshot_covers_prefill"]
    assert result["acknowledged_events"] > result["prefill"]["events"]
    assert result["acknowledged_events_missing"] == 0
    assert sum(w["calls"] for w in result["windows"]) == calls["sent"]
    # A series per worker process: the two original workers, and the replacements that lived to be
    # sampled (one killed as soon as it served may have none).
    series = result["rss"]["series"]
    originals = [one for one in series if one["first_s"] < 1.0]
    assert len(originals) == 2 and all(one["first_mb"] > 0 for one in series)
    replacements = {kill["replaced_by"] for kill in kills if "replaced_by" in kill}
    assert {one["pid"] for one in series if one["first_s"] >= 1.0} <= replacements
    assert len(series) <= 2 + replaced
    assert (tmp_path / "soak.md").read_text(encoding="utf-8").count("\n| 20") == 1
    assert status == (0 if result["passed"] else 1)
