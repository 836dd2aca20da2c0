"""The event log: idempotent appends, decisions keyed per served arm, contract-shaped frames, many writers."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import sqlite3
import tempfile
import threading
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.data.contract import DECISIONS, EVENTS
from engine.live.decision_log_writer import DecisionLogWriter
from engine.live.event_log import EventLog, EventLogError, from_micros, to_micros
from engine.live.events import BehaviorEvent, DecisionOutcome, OutcomeKind, ServedDecision

T0 = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)


def event(
    event_id: str, customer: str = "c1", item: str = "i1", kind: str = "view", **extra: object
) -> BehaviorEvent:
    return BehaviorEvent(event_id, customer, item, kind, T0 + dt.timedelta(seconds=len(event_id)), **extra)  # type: ignore[arg-type]


def served(decision_id: str, decision_type: str, arm: str, propensity: float = 0.5) -> ServedDecision:
    return ServedDecision(
        decision_id=decision_id,
        customer_id="c1",
        timestamp=T0,
        context="weekday",
        decision_type=decision_type,
        arm_id=arm,
        propensity=propensity,
        persona_mix=(("bargain_hunter", 0.75), ("tech_savvy", 0.25)),
        model_version="v1",
    )


def test_a_retried_batch_is_stored_once_and_reported_as_duplicates(tmp_path: Path) -> None:
    with EventLog.open(tmp_path / "log.db") as log:
        batch = [event("e1"), event("e2", kind="purchase", price_paid=9.5, discount=0.1, channel="email")]
        first = log.append(batch)
        again = log.append(batch)
        assert [e.event_id for e in first.new_events] == ["e1", "e2"]
        assert first.duplicate_events == 0
        assert again.new_events == () and again.duplicate_events == 2
        assert log.counts()["events"] == 2
        assert log.behavior_events() == batch
        assert log.behavior_events(since=T0) == batch
        assert log.behavior_events(since=batch[0].timestamp + dt.timedelta(microseconds=1)) == []


def test_the_first_record_with_an_id_wins_even_within_one_batch(tmp_path: Path) -> None:
    with EventLog.open(tmp_path / "log.db") as log:
        result = log.append([event("e1", item="first"), event("e1", item="second")])
        assert result.duplicate_events == 1
        assert log.events_frame()["item_id"].to_list() == ["first"]


def test_events_frame_has_the_contract_columns_and_types(tmp_path: Path) -> None:
    with EventLog.open(tmp_path / "log.db") as log:
        log.append([event("e1"), event("e22", kind="cart", price_paid=3.0, discount=0.0, device="app")])
        frame = log.events_frame()
    assert frame.columns == [c.name for c in EVENTS.columns]
    assert frame.schema["timestamp"] == pl.Datetime("us", "UTC")
    assert frame.row(1, named=True) == {
        "event_id": "e22",
        "customer_id": "c1",
        "item_id": "i1",
        "event_type": "cart",
        "timestamp": T0 + dt.timedelta(seconds=3),
        "price_paid": 3.0,
        "quantity": None,  # live events do not carry it
        "discount": 0.0,
        "channel": None,
        "device": "app",
    }


def test_decisions_are_looked_up_by_id_with_every_served_arm(tmp_path: Path) -> None:
    with EventLog.open(tmp_path / "log.db") as log:
        arms = [
            served("d1", "offer", "o1", 0.6),
            served("d1", "offer", "o2", 0.3),
            served("d1", "layout", "grid"),
        ]
        assert log.log_decisions(arms) == 3
        assert log.log_decisions(arms[:1]) == 0  # logged once per arm
        assert log.decision("d1") == tuple(arms)
        assert log.decision("unknown") == ()


def test_decisions_frame_joins_rewards_to_the_arm_they_name(tmp_path: Path) -> None:
    with EventLog.open(tmp_path / "log.db") as log:
        log.log_decisions(
            [served("d1", "offer", "o1"), served("d1", "offer", "o2"), served("d1", "layout", "grid")]
        )
        log.log_decisions([served("d2", "layout", "list")])

        def outcome(event_id: str, decision: str, kind: OutcomeKind, arm: str | None) -> DecisionOutcome:
            return DecisionOutcome(event_id, decision, "c1", kind, T0, arm, revenue=4.0)

        log.append(
            [],
            [
                outcome("x1", "d1", OutcomeKind.OFFER_SHOWN, "o1"),
                outcome("x2", "d1", OutcomeKind.OFFER_REDEEMED, "o2"),
                outcome("x3", "d1", OutcomeKind.LAYOUT_CONVERTED, None),  # the one layout of d1
                outcome("x4", "d2", OutcomeKind.LAYOUT_SHOWN, None),
            ],
        )
        frame = log.decisions_frame()
        assert frame.columns[: len(DECISIONS.columns)] == [c.name for c in DECISIONS.columns]
        rows = {row["decision_id"]: row for row in frame.iter_rows(named=True)}
        assert frame["decision_id"].n_unique() == frame.height == 4
        assert rows["d1:offer:o1"]["outcome"] == 0.0 and rows["d1:offer:o1"]["shown"]
        assert rows["d1:offer:o2"]["outcome"] == 1.0
        assert rows["d1:layout:grid"]["outcome"] == 1.0
        assert rows["d2:layout:list"]["outcome"] == 0.0 and rows["d2:layout:list"]["shown"]
        assert [o.event_id for o in log.outcomes()] == ["x1", "x2", "x3", "x4"]


def test_the_writer_thread_logs_everything_submitted_before_close(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    writer = DecisionLogWriter(path, queue_size=8)
    for n in range(100):
        writer.submit([served(f"d{n}", "layout", "grid")])
    writer.close()
    with EventLog.open(path) as log:
        assert log.counts()["decisions"] == 100
    assert writer.written == 100 and writer.failed == 0


def test_a_file_that_is_not_a_log_is_refused_naming_it(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(EventLogError, match=r"junk\.db"):
        EventLog.open(junk)
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as connection:
        connection.execute("PRAGMA user_version = 99")
    with pytest.raises(EventLogError, match="schema version 99"):
        EventLog.open(newer)
    with pytest.raises(EventLogError, match="does not exist"):
        EventLog.open(tmp_path / "missing" / "log.db")


def _append_many(path: str, worker: int) -> None:
    with EventLog.open(path) as log:
        for batch in range(20):
            # every worker sends the same shared ids too: exactly one of them may store each
            log.append([event(f"w{worker}-{batch}-{n}") for n in range(10)] + [event(f"shared-{batch}")])


def test_several_processes_append_to_one_log_without_losing_or_doubling(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    EventLog.open(path).close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(str(path), w)) for w in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    with EventLog.open(path) as log:
        assert log.counts()["events"] == 3 * 20 * 10 + 20


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.integers(0, 15), max_size=12), max_size=6))
def test_each_id_is_new_exactly_once_over_any_sequence_of_batches(batches: list[list[int]]) -> None:
    with tempfile.TemporaryDirectory() as folder, EventLog.open(Path(folder) / "log.db") as log:
        new_ids: list[str] = []
        for batch in batches:
            result = log.append([event(f"e{n}") for n in batch])
            new_ids += [e.event_id for e in result.new_events]
            assert len(result.new_events) + result.duplicate_events == len(batch)
        expected = list(dict.fromkeys(f"e{n}" for batch in batches for n in batch))
        assert new_ids == expected
        assert log.event_ids() == set(expected)


@given(st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2200, 1, 1)))
def test_timestamps_round_trip_exactly(moment: dt.datetime) -> None:
    aware = moment.replace(tzinfo=dt.UTC)
    assert from_micros(to_micros(aware)) == aware


def test_concurrent_appends_share_commits_and_each_id_is_new_exactly_once(tmp_path: Path) -> None:
    threads, batches = 8, 15
    results: list[list[str]] = [[] for _ in range(threads)]
    with EventLog.open(tmp_path / "log.db") as log:

        def send(worker: int) -> None:
            for batch in range(batches):
                # each batch has ids of its own and one id that every thread sends
                result = log.append(
                    [event(f"t{worker}-{batch}-{n}") for n in range(5)] + [event(f"all-{batch}")]
                )
                assert len(result.new_events) + result.duplicate_events == 6
                results[worker] += [e.event_id for e in result.new_events]

        pool = [threading.Thread(target=send, args=(worker,)) for worker in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        new = [event_id for worker in results for event_id in worker]
        assert len(new) == len(set(new)) == threads * batches * 5 + batches
        assert log.event_ids() == set(new)
        assert 1 <= log.commits <= threads * batches


def test_pages_of_events_cover_a_range_of_positions_in_arrival_order(tmp_path: Path) -> None:
    with EventLog.open(tmp_path / "events.db") as log:
        log.append([event(f"e{n}", f"c{n % 3}") for n in range(10)])
        assert log.last_event_rowid() == 10
        pages = list(log.behavior_event_pages(2, 9, page=3))
    assert [(end, [e.event_id for e in events]) for end, events in pages] == [
        (5, ["e2", "e3", "e4"]),
        (8, ["e5", "e6", "e7"]),
        (9, ["e8"]),
    ]
