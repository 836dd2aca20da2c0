"""Start-up with a large event log: a SIGTERM while live state is rebuilt stops the server at once.

It used to be ignored until the rebuild ended (a minute at 33,000 events), so the supervisor killed
the worker after its grace period. The server here starts on a log of 40,000 recent events and no
snapshot, so the rebuild takes a while; it is told to stop as soon as its log says the rebuild began.
"""

from __future__ import annotations

import datetime as dt
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from engine.live.event_log import EventLog
from engine.live.events import BehaviorEvent
from serving.server_process import child_environment
from tests.serving.server_harness import TrainedArtifacts, trained_artifacts

EVENTS = 40_000


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> TrainedArtifacts:
    return trained_artifacts(tmp_path_factory)


@pytest.fixture(scope="module")
def big_log(artifacts: TrainedArtifacts, tmp_path_factory: pytest.TempPathFactory) -> Path:
    customers = pl.read_parquet(artifacts.shop / "customers.parquet")["customer_id"].cast(str).to_list()
    items = pl.read_parquet(artifacts.shop / "items.parquet")["item_id"].cast(str).to_list()
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=20)
    events = [
        BehaviorEvent(
            f"e{n}",
            customers[(n * 7) % len(customers)],
            items[(n * 13) % len(items)],
            "view",
            start + dt.timedelta(seconds=40 * n),
        )
        for n in range(EVENTS)
    ]
    path = tmp_path_factory.mktemp("big-log") / "events.db"
    with EventLog.open(path) as log:
        log.append(events)
    return path


def wait_for_line(log: Path, text: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text(errors="replace"):
        assert process.poll() is None, f"server exited early:\n{log.read_text(errors='replace')}"
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{log.read_text(errors='replace')}"
        time.sleep(0.02)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_sigterm_during_the_rebuild_stops_the_server_promptly_and_cleanly(
    artifacts: TrainedArtifacts, big_log: Path, tmp_path: Path, workers: int
) -> None:
    log = tmp_path / "server.log"
    command = [
        sys.executable, "-m", "serving.server",
        "--artifact", str(artifacts.older),
        "--address", "127.0.0.1:0",
        "--workers", str(workers),
        "--grace-seconds", "30",
        "--event-log", str(big_log),
    ]  # fmt: skip
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command, cwd=tmp_path, env=child_environment(), stdout=output, stderr=subprocess.STDOUT
        )
    try:
        wait_for_line(log, "rebuilding live state from the event log", process, timeout_s=120)
        told = time.monotonic()
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=30)
        took = time.monotonic() - told
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text(errors="replace")
    assert status == 0, text
    assert "asked to stop while rebuilding live state" in text
    assert "live state rebuilt" not in text and "did not stop in time" not in text
    assert took < 10, f"took {took:.1f}s to stop (the grace period is 30s):\n{text}"
    with sqlite3.connect(big_log) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with EventLog.open(big_log) as event_log:
        assert event_log.counts()["events"] == EVENTS
