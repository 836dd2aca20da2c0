"""The shared event log on a real redis-server: the SQLite log's promises, kept across Redis crashes.

The SQLite log is the reference: the same batches given to both must give the same answers (which
records were new) and the same ``events`` frame. Durability is checked where it matters: a Redis
without an fsync per write is refused, and a Redis killed outright (SIGKILL) comes back with every
acknowledged event.
"""

from __future__ import annotations

import datetime as dt
import itertools
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.live.event_log import TRAINING_READ_MARK, EventLog, EventLogError
from engine.live.events import BehaviorEvent
from engine.live.redis_event_log import RedisEventLog, split_log_url
from tests.serving.redis_server import RedisProcess

T0 = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)
_STREAMS = itertools.count()


@pytest.fixture(scope="module")
def durable_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("redis"), durable=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def fresh_log(server: RedisProcess) -> RedisEventLog:
    """A log under keys no other test uses (one Redis serves the module)."""
    return RedisEventLog.open(f"{server.url}?stream=test-{next(_STREAMS)}")


def event(event_id: str, seconds: int = 0, **extra: object) -> BehaviorEvent:
    return BehaviorEvent(event_id, "c1", "i1", "view", T0 + dt.timedelta(seconds=seconds), **extra)  # type: ignore[arg-type]


batches = st.lists(
    st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 50)), max_size=6), min_size=1, max_size=5
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=batches)
def test_the_shared_log_answers_as_the_sqlite_log_does(
    batches: list[list[tuple[str, int]]], durable_redis: RedisProcess, tmp_path: Path
) -> None:
    """Any sequence of batches, with ids repeated within and across them: same new records, same frame."""
    sqlite_path = tmp_path / f"reference-{next(_STREAMS)}.db"
    with fresh_log(durable_redis) as shared, EventLog.open(sqlite_path) as reference:
        for batch in batches:
            records = [event(event_id, seconds=seconds) for event_id, seconds in batch]
            assert shared.append(records) == reference.append(records)
        assert shared.last_event_rowid() == reference.last_event_rowid()
        assert shared.events_frame().equals(reference.events_frame())
        assert shared.events_frame(2).equals(reference.events_frame(2))


@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [
        ("appendfsync", "everysec", "appendfsync 'everysec'"),
        ("appendonly", "no", "appendonly 'no'"),
        ("maxmemory-policy", "allkeys-lru", "maxmemory-policy 'allkeys-lru'"),
    ],
)
def test_a_redis_that_could_lose_an_acknowledged_event_is_refused(
    tmp_path: Path, setting: str, value: str, named: str
) -> None:
    server = RedisProcess(tmp_path, durable=True)
    server.start()
    try:
        redis.Redis.from_url(server.url).config_set(setting, value)
        with pytest.raises(EventLogError, match=named):
            RedisEventLog.open(server.url)
    finally:
        server.stop()


def test_an_unreachable_redis_is_named_in_the_error(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path, durable=True)  # never started: its port is free
    with pytest.raises(EventLogError, match=rf"event log {server.url}: cannot reach Redis"):
        RedisEventLog.open(server.url)


def test_a_password_never_appears_in_messages() -> None:
    with pytest.raises(EventLogError) as error:
        RedisEventLog.open("redis://shop:s3cret@127.0.0.1:1/0")
    assert "s3cret" not in str(error.value) and "shop:***@127.0.0.1:1" in str(error.value)


def test_the_stream_parameter_names_the_keys_and_is_not_passed_to_redis() -> None:
    assert split_log_url("redis://h:6379/2?stream=shop&socket_timeout=2") == (
        "redis://h:6379/2?socket_timeout=2",
        "shop",
    )
    assert split_log_url("redis://h:6379/0")[1] == "persona-engine:event-log"
    with pytest.raises(EventLogError, match="stream="):
        split_log_url("redis://h:6379/0?stream=")


def test_every_acknowledged_event_survives_a_sigkill_of_redis(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path, durable=True)
    server.start()
    try:
        with RedisEventLog.open(server.url) as log:
            for number in range(50):
                log.append([event(f"b{number}-{n}", seconds=n) for n in range(10)])
            log.set_mark(TRAINING_READ_MARK, 120)
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)  # no shutdown: only what was fsynced is left
        server.process.wait()
        server.process = None
        server.start()
        with RedisEventLog.open(server.url) as log:
            assert log.counts()["events"] == 500 and log.last_event_rowid() == 500
            assert log.mark(TRAINING_READ_MARK) == 120
            assert log.append([event("b0-0")]).duplicate_events == 1  # ids survived with the events
    finally:
        server.stop()
