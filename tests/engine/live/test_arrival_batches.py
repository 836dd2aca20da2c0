"""Reading the event log back in the batches its events arrived in (what a restart replays)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from engine.live.arrival_batches import WHOLE_BATCH_EVENTS, arrival_batches
from engine.live.event_log import EventLog
from engine.live.events import BehaviorEvent

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)


def view(name: str, days_ago: float = 0.0) -> BehaviorEvent:
    return BehaviorEvent(name, "c1", "i1", "view", NOW - dt.timedelta(days=days_ago))


def ids(pages: list[tuple[int, list[list[BehaviorEvent]]]]) -> list[tuple[int, list[list[str]]]]:
    return [(end, [[e.event_id for e in batch] for batch in batches]) for end, batches in pages]


def test_each_append_is_one_batch_and_a_page_never_cuts_one(tmp_path: Path) -> None:
    with EventLog.open(tmp_path / "events.db") as log:
        for batch in (["a"], ["b", "c", "d"], ["e"], ["f", "g"]):
            log.append([view(name) for name in batch])
        # Pages of two rows: the first ends inside b-d, so b waits; the second holds no whole batch;
        # the third completes b-d and e, and f waits for g.
        assert ids(list(arrival_batches(log, 0, 7, page=2))) == [
            (1, [["a"]]),
            (5, [["b", "c", "d"], ["e"]]),
            (7, [["f", "g"]]),
        ]
        # From a position, through a position, and without the events before ``since``.
        assert ids(list(arrival_batches(log, 1, 6, page=100))) == [
            (5, [["b", "c", "d"], ["e"]]),
            (6, [["f"]]),
        ]


def test_events_before_since_are_left_out_of_their_batch(tmp_path: Path) -> None:
    with EventLog.open(tmp_path / "events.db") as log:
        log.append([view("old", 9), view("new", 1)])
        log.append([view("newer")])
        since = NOW - dt.timedelta(days=5)
        assert ids(list(arrival_batches(log, 0, 3, since))) == [(2, [["new"]]), (3, [["newer"]])]


def test_a_bulk_append_longer_than_the_whole_batch_bound_is_cut(tmp_path: Path) -> None:
    with EventLog.open(tmp_path / "events.db") as log:
        log.append([view(f"e{n}") for n in range(WHOLE_BATCH_EVENTS + 5)])
        sizes = [
            len(b) for _, batches in arrival_batches(log, 0, WHOLE_BATCH_EVENTS + 5, page=7) for b in batches
        ]
    assert sizes == [WHOLE_BATCH_EVENTS, 5]
