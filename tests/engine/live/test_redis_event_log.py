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
from engine.live.event_store import is_shared_log_location, open_event_store
from engine.live.events import BehaviorEvent, DecisionOutcome, OutcomeKind, ServedDecision
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


def served(decision_id: str, decision_type: str, arm: str) -> ServedDecision:
    return ServedDecision(
        decision_id=decision_id,
        customer_id="c1",
        timestamp=T0,
        context="weekday",
        decision_type=decision_type,
        arm_id=arm,
        propensity=0.25,
        persona_mix=(("bargain_hunter", 0.75), ("tech_savvy", 0.25)),
        journey_stage="browsing",
        experiment_arm="treatment",
        model_version="v1",
    )


def test_a_retried_batch_is_stored_once_and_positions_have_no_gaps(durable_redis: RedisProcess) -> None:
    with fresh_log(durable_redis) as log:
        batch = [event("e1"), event("e2", price_paid=9.5, discount=0.1, channel="email", device="ios")]
        first = log.append([*batch, batch[0]])  # an id twice in one batch: the first record wins
        again = log.append(batch)
        assert first.new_events == tuple(batch) and first.duplicate_events == 1
        assert again.new_events == () and again.duplicate_events == 2
        assert log.last_event_rowid() == 2 and log.counts()["events"] == 2
        assert log.behavior_events() == batch
        assert log.event_ids() == {"e1", "e2"}


def test_events_and_outcomes_have_their_own_id_spaces(durable_redis: RedisProcess) -> None:
    outcome = DecisionOutcome("x1", "d1", "c1", OutcomeKind.OFFER_REDEEMED, T0, arm_id="o1", revenue=12.5)
    with fresh_log(durable_redis) as log:
        stored = log.append([event("x1")], [outcome])
        assert stored.new_events == (event("x1"),) and stored.new_outcomes == (outcome,)
        assert log.append([], [outcome]).duplicate_outcomes == 1
        assert log.outcomes() == [outcome]
        assert log.outcomes(since=T0 + dt.timedelta(seconds=1)) == []
        assert log.counts() == {"events": 1, "outcomes": 1, "decisions": 0}


def test_pages_cover_a_range_of_positions_once_filtered_by_time(durable_redis: RedisProcess) -> None:
    with fresh_log(durable_redis) as log:
        log.append([event(f"e{n}", seconds=n) for n in range(10)])
        pages = list(log.behavior_event_pages(2, 9, page=3))
        assert [position for position, _ in pages] == [5, 8, 9]
        assert [e.event_id for _, page in pages for e in page] == [f"e{n}" for n in range(2, 9)]
        since = T0 + dt.timedelta(seconds=7)
        late = [e.event_id for _, page in log.behavior_event_pages(0, 10, since) for e in page]
        assert late == ["e7", "e8", "e9"]


def test_marks_only_move_forward(durable_redis: RedisProcess) -> None:
    with fresh_log(durable_redis) as log:
        assert log.mark(TRAINING_READ_MARK) == 0
        log.set_mark(TRAINING_READ_MARK, 7)
        log.set_mark(TRAINING_READ_MARK, 3)  # a training run that started earlier finished later
        assert log.mark(TRAINING_READ_MARK) == 7


def test_decisions_are_kept_per_served_arm_in_logging_order(durable_redis: RedisProcess) -> None:
    arms = [served("d1", "offer", "o2"), served("d1", "offer", "o1"), served("d1", "layout", "grid")]
    with fresh_log(durable_redis) as log:
        assert log.log_decisions(arms) == 3
        assert log.log_decisions([served("d1", "offer", "o2"), served("d2", "layout", "list")]) == 1
        assert log.decision("d1") == tuple(arms)
        assert log.decision("unknown") == ()
        assert len(log.served_decisions()) == 4
        assert log.counts()["decisions"] == 4


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


def test_the_location_chooses_the_log(durable_redis: RedisProcess, tmp_path: Path) -> None:
    assert is_shared_log_location("redis://h:6379/0") and is_shared_log_location("unix:///run/redis.sock")
    assert not is_shared_log_location(tmp_path / "redis:" / "x.db")  # a path is never a URL
    with open_event_store(durable_redis.url) as shared, open_event_store(tmp_path / "a.db") as local:
        assert isinstance(shared, RedisEventLog) and isinstance(local, EventLog)
