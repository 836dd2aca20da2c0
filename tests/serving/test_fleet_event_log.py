"""A fleet's shared event log: two real servers, one real redis-server, SIGKILL of either mid-burst.

Every server of a fleet writes RecordEvents batches to one Redis Streams log (``serve --event-log
redis://...``). Whichever server dies outright, every batch it acknowledged is in the log, and
training reads every acknowledged event exactly once; batches retried after the kill land once. When
the log's Redis is away, RecordEvents answers UNAVAILABLE (the client's cue to retry) and nothing
acknowledged before is lost.
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from benchmarks.fleet_event_log import Fleet, run_rounds
from engine.live.event_log import TRAINING_READ_MARK
from engine.live.events import BehaviorEvent
from engine.live.redis_event_log import RedisEventLog
from serving.client import PersonaEngineClient
from serving.server_process import running_server
from serving.settings import ENV_EVENT_LOG, ServeConfigError, add_serve_arguments, settings_from_args
from tests.serving.redis_server import RedisProcess
from tests.serving.server_harness import trained_artifacts
from training.config import parse_config
from training.logged_events import read_logged_events

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture
def log_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path / "log-redis", durable=True)
    server.folder.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def state_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path / "state-redis")
    server.folder.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def batch_of(tag: str, size: int = 10) -> list[BehaviorEvent]:
    return [BehaviorEvent(f"{tag}-e{n}", f"c{n % 7}", f"i{n % 11}", "view", NOW) for n in range(size)]


def logged_arm_types(log_url: str, decision_id: str, wait_s: float = 10.0) -> set[str]:
    """The decision types logged under ``decision_id``, once the server's decision writer (which
    commits off the request path, every 0.1 s) has written them."""
    deadline = time.monotonic() + wait_s
    with RedisEventLog.open(log_url) as log:
        while not (arms := log.decision(decision_id)) and time.monotonic() < deadline:
            time.sleep(0.05)
    return {arm.decision_type for arm in arms}


def test_every_acknowledged_event_is_read_once_by_training_after_a_sigkill_of_either_server(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, log_redis: RedisProcess
) -> None:
    log_url = f"{log_redis.url}?stream=fleet"
    fleet = Fleet(trained_artifacts(tmp_path_factory).older, tmp_path, log_url, log_redis.url)
    rows = run_rounds(fleet, rounds=2, senders=2, batch=10, burst_seconds=1.5, quiet=True)
    assert [row["killed"] for row in rows] == ["a", "b"]
    for row in rows:
        assert row["events_acknowledged_before_kill"] > 0, row
        assert (row["lost"], row["duplicates_stored"], row["duplicates_read_by_training"]) == (0, 0, 0), row
        assert row["torn_batches"] == 0, row
    with RedisEventLog.open(log_url) as log:
        stored = log.event_ids()
        assert log.mark(TRAINING_READ_MARK) == log.last_event_rowid() == len(stored)
    read = read_logged_events(log_url)["event_id"]
    assert read.n_unique() == read.len() == len(stored)  # a later run reads the same events, once each


def test_record_events_is_unavailable_while_the_logs_redis_is_down_and_nothing_is_lost(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    log_redis: RedisProcess,
    state_redis: RedisProcess,
) -> None:
    artifact = trained_artifacts(tmp_path_factory).older
    arguments = ["--event-log", log_redis.url, "--state", state_redis.url]
    with (
        running_server(artifact, tmp_path / "server", extra_args=arguments, metrics=False) as server,
        PersonaEngineClient(server.address, timeout_s=10.0, retries=0) as client,
    ):
        assert client.record_events(batch_of("before")).accepted_events == 10
        decision_id = client.personalize("c1", num_offers=2).decision.decision_id
        assert logged_arm_types(log_redis.url, decision_id) == {"offer", "layout"}
        assert log_redis.process is not None
        log_redis.process.send_signal(signal.SIGKILL)  # the log's Redis dies; live state's stays up
        log_redis.process.wait()
        log_redis.process = None
        with pytest.raises(grpc.RpcError) as refused:
            client.record_events(batch_of("during"))
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE, refused.value.details()
        assert "retry" in (refused.value.details() or "")
        log_redis.start()  # same folder: its append-only file comes back
        retried = client.record_events(batch_of("during"))
        assert retried.accepted_events + retried.duplicate_events == 10
    read = read_logged_events(log_redis.url)["event_id"].to_list()
    assert sorted(read) == sorted(e.event_id for e in batch_of("before") + batch_of("during"))


def _settings(argv: list[str], environ: dict[str, str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    settings_from_args(parser.parse_args(argv), environ or {})


def test_a_redis_that_does_not_fsync_every_write_is_refused_before_serving(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, state_redis: RedisProcess
) -> None:
    artifact = str(trained_artifacts(tmp_path_factory).older)
    with pytest.raises(ServeConfigError, match=r"^PERSONA_ENGINE_EVENT_LOG: .*appendfsync always"):
        _settings(["--artifact", artifact, "--state", state_redis.url], {ENV_EVENT_LOG: state_redis.url})
    with pytest.raises(ServeConfigError, match=r"^--event-log .*needs live state shared too"):
        _settings(["--artifact", artifact, "--event-log", state_redis.url])


def test_a_shared_log_url_passes_through_the_training_config_unchanged(tmp_path: Path) -> None:
    shared = "redis://10.0.0.5:6379/0?stream=shop"
    config = parse_config({"data": {"event_log": shared}}, base_dir=tmp_path)
    assert config.data.event_log == shared
    local = parse_config({"data": {"event_log": "events.db"}}, base_dir=tmp_path)
    assert local.data.event_log == str(tmp_path / "events.db")
