"""The machine stall watcher: a stopped machine shows as a stall, with when it ended and how long it was."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from benchmarks.machine_stalls import StallWatch, main, read_stalls
from benchmarks.serving_report import _round_stalls, stalls_line


def _wait_for_stall(path: Path, at_least_ms: float, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(ms >= at_least_ms for _, ms in read_stalls(path)):
        assert time.monotonic() < deadline, f"no stall of {at_least_ms} ms written to {path}"
        time.sleep(0.02)


def test_a_watcher_held_still_reports_the_stall_with_when_and_how_long(tmp_path: Path) -> None:
    with StallWatch(tmp_path) as watch:
        pid = watch.pid
        assert pid is not None
        stopped_at = time.time()
        os.kill(pid, signal.SIGSTOP)  # what a stalled host does to every process
        time.sleep(0.3)
        os.kill(pid, signal.SIGCONT)
        _wait_for_stall(watch.path, 250.0)
    assert watch.pid is None  # the child is gone with the block
    summary = watch.summary()
    long = [(ended, ms) for ended, ms in summary["stalls"] if ms >= 250.0]
    assert len(long) == 1
    ended, ms = long[0]
    assert stopped_at <= ended - ms / 1000 + 0.05 and ended <= time.time()
    assert summary["count"] >= 1 and summary["longest_ms"] >= 250.0
    assert summary["total_ms"] >= summary["longest_ms"]
    assert summary["threshold_ms"] == 15.0 and summary["sleep_ms"] == 5.0
    assert 0.3 <= summary["watched_s"] < 60


def test_a_sleep_not_shorter_than_the_threshold_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", "unused.txt", "--sleep-ms", "20", "--threshold-ms", "15"])
    assert exit_info.value.code == 2
    assert "need 0 < --sleep-ms < --threshold-ms, got 20 and 15" in capsys.readouterr().err


def test_the_report_says_how_often_the_machine_stalled_and_in_which_rounds() -> None:
    result = {
        "machine_stalls": {
            "threshold_ms": 15.0,
            "watched_s": 90.0,
            "count": 3,
            "per_minute": 2.0,
            "longest_ms": 31.4,
        }
    }
    assert stalls_line(result) == (
        "machine stalls (a sleeping process woken over 15 ms late): 3 in 1.5 min of load phases, "
        "2.0 a minute, longest 31.4 ms"
    )
    assert stalls_line({}) is None  # results from before the watch
    one = {"count": 1, "longest_ms": 20.0}
    none = {"count": 0, "longest_ms": 0.0}
    assert _round_stalls({"round_stalls": [[none, one], [one, none]]}) == "0/1 1/0"
    assert _round_stalls({}) == "-"


def test_the_serving_benchmark_watches_for_stalls_only_when_asked() -> None:
    from benchmarks.serving_latency import parse_args

    assert parse_args([]).stall_watch is False  # the watch costs calls/s on 2 cores (module doc)
    assert parse_args(["--stall-watch"]).stall_watch is True
