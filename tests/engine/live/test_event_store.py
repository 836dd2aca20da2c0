"""The EventStore contract, on both logs: the SQLite file of one machine and the fleet's Redis log.

Whatever the log, the server and training rely on the same behaviour: a retried batch is stored once,
positions count stored events without gaps, pages cover a range of positions once, marks only move
forward, decisions are kept per served arm in logging order. Each test runs on both (the Redis one on
a real redis-server that fsyncs every write).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.live.event_log import TRAINING_READ_MARK, EventLog
from engine.live.event_store import EventStore, is_shared_log_location, open_event_store
from engine.live.events import BehaviorEvent, DecisionOutcome, OutcomeKind, ServedDecision
from engine.live.redis_event_log import RedisEventLog
from tests.serving.redis_server import RedisProcess

T0 = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)
_STREAMS = itertools.count()
Store = EventLog | RedisEventLog


@pytest.fixture(scope="module")
def durable_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("redis"), durable=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A new, empty log of either kind (the Redis one under keys no other test uses)."""
    if request.param == "sqlite":
        return EventLog.open(tmp_path / "events.db")
    server: RedisProcess = request.getfixturevalue("durable_redis")
    return RedisEventLog.open(f"{server.url}?stream=contract-{next(_STREAMS)}")


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


def stored_events(log: EventStore) -> list[BehaviorEvent]:
    return [e for _, page in log.behavior_event_pages(0, log.last_event_rowid()) for e in page]


def test_a_retried_batch_is_stored_once_and_positions_have_no_gaps(store: Store) -> None:
    with store as log:
        batch = [event("e1"), event("e2", price_paid=9.5, discount=0.1, channel="email", device="ios")]
        first = log.append([*batch, batch[0]])  # an id twice in one batch: the first record wins
        again = log.append(batch)
        assert first.new_events == tuple(batch) and first.duplicate_events == 1
        assert again.new_events == () and again.duplicate_events == 2
        assert log.last_event_rowid() == 2 and log.counts()["events"] == 2
        assert stored_events(log) == batch
        assert log.event_ids() == {"e1", "e2"}


def test_events_and_outcomes_have_their_own_id_spaces(store: Store) -> None:
    outcome = DecisionOutcome("x1", "d1", "c1", OutcomeKind.OFFER_REDEEMED, T0, arm_id="o1", revenue=12.5)
    with store as log:
        stored = log.append([event("x1")], [outcome])
        assert stored.new_events == (event("x1"),) and stored.new_outcomes == (outcome,)
        assert log.append([], [outcome]).duplicate_outcomes == 1
        assert log.outcomes() == [outcome]
        assert log.outcomes(since=T0 + dt.timedelta(seconds=1)) == []
        assert log.counts() == {"events": 1, "outcomes": 1, "decisions": 0}
        assert log.has_record("event", "x1") and log.has_record("outcome", "x1")
        assert not log.has_record("event", "x2") and not log.has_record("outcome", "x2")
        log.append([event("x2")])
        assert log.has_record("event", "x2") and not log.has_record("outcome", "x2")


def test_pages_cover_a_range_of_positions_once_filtered_by_time(store: Store) -> None:
    with store as log:
        log.append([event(f"e{n}", seconds=n) for n in range(10)])
        pages = list(log.behavior_event_pages(2, 9, page=3))
        assert [position for position, _ in pages] == [5, 8, 9]
        assert [e.event_id for _, page in pages for e in page] == [f"e{n}" for n in range(2, 9)]
        since = T0 + dt.timedelta(seconds=7)
        late = [e.event_id for _, page in log.behavior_event_pages(0, 10, since) for e in page]
        assert late == ["e7", "e8", "e9"]


def test_marks_only_move_forward(store: Store) -> None:
    with store as log:
        assert log.mark(TRAINING_READ_MARK) == 0
        log.set_mark(TRAINING_READ_MARK, 7)
        log.set_mark(TRAINING_READ_MARK, 3)  # a training run that started earlier finished later
        assert log.mark(TRAINING_READ_MARK) == 7


def test_decisions_are_kept_per_served_arm_in_logging_order(store: Store) -> None:
    arms = [served("d1", "offer", "o2"), served("d1", "offer", "o1"), served("d1", "layout", "grid")]
    with store as log:
        assert log.log_decisions(arms) == 3
        assert log.log_decisions([served("d1", "offer", "o2"), served("d2", "layout", "list")]) == 1
        assert log.decision("d1") == tuple(arms)
        assert log.decision("unknown") == ()
        assert len(log.served_decisions()) == 4
        assert log.counts()["decisions"] == 4


def test_the_location_chooses_the_log(durable_redis: RedisProcess, tmp_path: Path) -> None:
    assert is_shared_log_location("redis://h:6379/0") and is_shared_log_location("unix:///run/redis.sock")
    assert not is_shared_log_location(tmp_path / "redis:" / "x.db")  # a path is never a URL
    with open_event_store(durable_redis.url) as shared, open_event_store(tmp_path / "a.db") as local:
        assert isinstance(shared, RedisEventLog) and isinstance(local, EventLog)
