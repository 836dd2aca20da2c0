"""Acknowledged means durable: a server killed outright (SIGKILL) mid-burst loses no acknowledged event.

A real ``persona-engine serve --event-log`` process takes a burst of RecordEvents batches from a
thread; the test kills it with SIGKILL (no handler runs, nothing is flushed) while batches are in
flight, then opens the log as training would. Every batch the server acknowledged must be there in
full, any other batch must be there in full or not at all (one transaction per batch), and the file
must pass SQLite's integrity check. A new server on the same log then takes the retried batches,
counting the ones that had landed as duplicates.
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import sqlite3
import threading
from pathlib import Path

import grpc
import pytest

from engine.live.event_log import EventLog
from engine.live.events import BehaviorEvent
from serving.client import PersonaEngineClient
from serving.server_process import running_server, start_server
from serving.settings import ENV_EVENT_LOG, ServeConfigError, add_serve_arguments, settings_from_args
from tests.serving.server_harness import trained_artifacts

BATCH = 25
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def batch_of(number: int) -> list[BehaviorEvent]:
    return [
        BehaviorEvent(f"b{number}-e{n}", f"c{n % 7}", f"i{n % 11}", "view", NOW - dt.timedelta(seconds=n))
        for n in range(BATCH)
    ]


def test_every_acknowledged_event_survives_a_sigkill(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    artifact = trained_artifacts(tmp_path_factory).older
    log_path = tmp_path / "events.db"
    server = start_server(artifact, tmp_path, extra_args=["--event-log", str(log_path)], metrics=False)
    acknowledged: list[int] = []
    sent: list[int] = []
    failure: list[BaseException] = []
    enough = threading.Event()

    def burst() -> None:
        with PersonaEngineClient(server.address, timeout_s=5.0, retries=0) as client:
            number = 0
            while True:
                sent.append(number)
                try:
                    response = client.record_events(batch_of(number))
                except grpc.RpcError as error:  # the server died under this call
                    failure.append(error)
                    return
                assert response.accepted_events == BATCH and not response.errors
                acknowledged.append(number)
                if len(acknowledged) >= 20:
                    enough.set()
                number += 1

    sender = threading.Thread(target=burst, daemon=True)
    sender.start()
    try:
        assert enough.wait(60), f"the burst did not get going; server log:\n{server.log()}"
    finally:
        server.stop(signal.SIGKILL)
    sender.join(10)
    assert not sender.is_alive() and failure, "the burst should have been cut by the kill"
    assert server.process.returncode == -signal.SIGKILL

    with sqlite3.connect(log_path) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with EventLog.open(log_path) as log:
        stored = log.event_ids()
        frame = log.events_frame()
    assert frame.height == len(stored)
    for number in acknowledged:
        assert {e.event_id for e in batch_of(number)} <= stored, f"acknowledged batch {number} lost"
    for number in sent:
        present = {e.event_id for e in batch_of(number)} & stored
        assert len(present) in (0, BATCH), f"batch {number} stored in part: {len(present)} of {BATCH}"

    # The shop's pipeline retries what it never saw acknowledged; a new server sorts it out.
    unacknowledged = [n for n in sent if n not in set(acknowledged)]
    with (
        running_server(artifact, tmp_path, extra_args=["--event-log", str(log_path)], metrics=False) as again,
        again.client() as client,
    ):
        landed = 0
        for number in unacknowledged:
            response = client.record_events(batch_of(number))
            assert response.accepted_events + response.duplicate_events == BATCH
            landed += response.duplicate_events
    with EventLog.open(log_path) as log:
        assert log.counts()["events"] == BATCH * len(sent)
    assert landed in (0, BATCH)  # at most the batch in flight at the kill had reached the disk


def test_workers_share_one_log_and_a_graceful_stop_writes_every_served_decision(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    artifact = trained_artifacts(tmp_path_factory).older
    log_path = tmp_path / "events.db"
    clients = 2
    with running_server(
        artifact, tmp_path, workers=2, metrics=False, extra_env={ENV_EVENT_LOG: str(log_path)}
    ) as server:
        decision_ids = set()
        for client_number in range(clients):  # one connection each: the kernel spreads them over workers
            with server.client() as client:
                for number in range(3):
                    response = client.record_events(batch_of(client_number * 100 + number))
                    assert response.accepted_events == BATCH
                    page = client.personalize(f"c{client_number}", num_offers=2)
                    decision_ids.add(page.decision.decision_id)
    assert server.process.returncode == 0
    with EventLog.open(log_path) as log:
        assert log.counts()["events"] == clients * 3 * BATCH
        for decision_id in decision_ids:
            assert {d.decision_type for d in log.decision(decision_id)} == {"offer", "layout"}


@pytest.mark.parametrize("source", ["flag", "environment"])
def test_an_unusable_event_log_path_is_refused_naming_its_source(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, source: str
) -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    missing = tmp_path / "no-such-folder" / "events.db"
    argv = ["--artifact", str(trained_artifacts(tmp_path_factory).older)]
    environ = {ENV_EVENT_LOG: str(missing)} if source == "environment" else {}
    if source == "flag":
        argv += ["--event-log", str(missing)]
    with pytest.raises(ServeConfigError) as error:
        settings_from_args(parser.parse_args(argv), environ)
    expected = ENV_EVENT_LOG if source == "environment" else "--event-log"
    assert str(error.value).startswith(f"{expected}: event log {missing}: folder")
