"""Event log retention: old events that training has read move to the archive; none is ever lost.

Every event accepted must be readable by training exactly once, whether it is still in the log, in
the archive, or in both after a crash between writing a part and deleting the rows it holds.
"""

from __future__ import annotations

import datetime as dt
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest

from engine.live.event_archive import archive_events, archive_folder, read_archived_events, write_part
from engine.live.event_log import TRAINING_READ_MARK, EventLog
from engine.live.events import BehaviorEvent
from serving.server_process import child_environment
from training.logged_events import read_logged_events

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
CUTOFF = NOW - dt.timedelta(days=56)


def event(n: int, days_ago: float) -> BehaviorEvent:
    return BehaviorEvent(f"e{n}", f"c{n % 5}", f"i{n % 7}", "view", NOW - dt.timedelta(days=days_ago), 3.5)


def fill(path: Path, count: int, *, old_share: float = 0.75) -> list[str]:
    """``count`` events, the first ``old_share`` of them before the cutoff; returns their ids."""
    events = [event(n, 90 if n < old_share * count else 3) for n in range(count)]
    with EventLog.open(path) as log:
        for start in range(0, count, 5_000):
            log.append(events[start : start + 5_000])
    return [e.event_id for e in events]


def every_event_once(path: Path, expected: list[str]) -> None:
    """Training reads each event exactly once, with its content intact, and none is missing."""
    read = read_logged_events(path)
    assert read["event_id"].is_duplicated().sum() == 0
    assert sorted(read["event_id"].to_list()) == sorted(expected)
    assert read.filter(pl.col("price_paid") != 3.5).height == 0


def test_only_old_events_that_training_read_move_and_training_still_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    ids = fill(path, 40)
    with EventLog.open(path) as log:
        untouched = archive_events(log, archive_folder(path), CUTOFF)  # no training run has read any
        assert untouched.moved == 0 and untouched.training_read_through == 0
    every_event_once(path, ids)  # a training run reads the log: the mark moves to its end
    late = [event(100 + n, 120) for n in range(3)]  # old events arriving after training read
    with EventLog.open(path) as log:
        log.append(late)
        assert log.mark(TRAINING_READ_MARK) == 40
        run = archive_events(log, archive_folder(path), CUTOFF, batch=7)
        assert run.moved == 30 and len(run.parts) == 5  # the 30 old events training read, 7 a part
        remaining = log.event_ids()
    assert remaining == {f"e{n}" for n in range(30, 40)} | {e.event_id for e in late}
    assert read_archived_events(archive_folder(path))["event_id"].to_list() == [f"e{n}" for n in range(30)]
    every_event_once(path, ids + [e.event_id for e in late])


def test_the_newest_row_stays_so_log_positions_keep_growing(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    fill(path, 10, old_share=1.0)
    read_logged_events(path)
    with EventLog.open(path) as log:
        assert archive_events(log, archive_folder(path), CUTOFF).moved == 9
        assert log.event_ids() == {"e9"} and log.last_event_rowid() == 10
        log.append([event(50, 1)])
        assert log.last_event_rowid() == 11


def test_a_crash_between_writing_a_part_and_deleting_its_rows_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    ids = fill(path, 30)
    read_logged_events(path)
    with EventLog.open(path) as log:
        rows = log.archivable_events(log.mark(TRAINING_READ_MARK), CUTOFF, 12)
    # What a crash after the part's fsync and before the delete leaves: the events in both places.
    write_part(archive_folder(path) / "events-000000000000001-000000000000012.parquet", rows)
    every_event_once(path, ids)
    with EventLog.open(path) as log:
        run = archive_events(log, archive_folder(path), CUTOFF, batch=12)
        assert run.moved == 23 and log.counts()["events"] == 7  # the 23 old ones, 12 of them again
    every_event_once(path, ids)


def test_a_retention_run_killed_at_any_moment_loses_no_event(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    ids = fill(path, 30_000)
    read_logged_events(path)
    script = textwrap.dedent(
        f"""
        import datetime as dt, pathlib, sys
        from engine.live.event_archive import archive_events, archive_folder
        from engine.live.event_log import EventLog
        path = pathlib.Path({str(path)!r})
        cutoff = dt.datetime.fromisoformat({CUTOFF.isoformat()!r})
        with EventLog.open(path) as log:
            print("archiving", flush=True)
            archive_events(log, archive_folder(path), cutoff, batch=50)
        """
    )
    remaining: list[int] = []
    for delay in (0.3, 0.6, 1.0):
        process = subprocess.Popen(
            [sys.executable, "-c", script], env=child_environment(), stdout=subprocess.PIPE
        )
        assert process.stdout is not None and process.stdout.readline() == b"archiving\n"
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        every_event_once(path, ids)
        with EventLog.open(path) as log:
            remaining.append(log.counts()["events"])
    assert remaining[0] > 7_500, "the first kill should have come mid-way (450 parts of 50 events)"
    with EventLog.open(path) as log:
        archive_events(log, archive_folder(path), CUTOFF)
        assert log.counts()["events"] == 7_500
    every_event_once(path, ids)


def test_batch_must_be_positive(tmp_path: Path) -> None:
    with EventLog.open(tmp_path / "events.db") as log, pytest.raises(ValueError, match="batch"):
        archive_events(log, tmp_path / "archive", CUTOFF, batch=0)


def _date_archived_ids(path: Path, archived: dt.datetime) -> None:
    """As if every id in ``archived_ids`` had been archived at ``archived``."""
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE archived_ids SET archived_s = ?", (int(archived.timestamp()),))


def test_ids_archived_longer_ago_than_the_window_are_forgotten_and_a_late_retry_is_still_read_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    ids = fill(path, 40)
    every_event_once(path, ids)
    now = dt.datetime.now(dt.UTC)
    with EventLog.open(path) as log:
        run = archive_events(log, archive_folder(path), CUTOFF, forget_ids_after=dt.timedelta(days=30))
        assert (run.moved, run.forgotten_ids, run.archived_ids) == (30, 0, 30), "just archived: kept"
        assert run.to_dict()["forgotten_ids"] == 0 and run.to_dict()["archived_ids"] == 30
    _date_archived_ids(path, now - dt.timedelta(days=31))
    with EventLog.open(path) as log:
        log.append([event(40, 1)])  # the newest row never moves: another makes e39 archivable
    every_event_once(path, [*ids, "e40"])
    with EventLog.open(path) as log:
        kept = archive_events(log, archive_folder(path), CUTOFF)  # no window: nothing is forgotten
        assert kept.forgotten_ids == 0 and kept.archived_ids == 30
        run = archive_events(log, archive_folder(path), CUTOFF, forget_ids_after=dt.timedelta(days=30))
        assert (run.forgotten_ids, run.archived_ids) == (30, 0)
        retried = log.append([event(n, 90) for n in range(5)])  # a retry beyond the window
        assert len(retried.new_events) == 5 and retried.duplicate_events == 0
    every_event_once(path, [*ids, "e40"])  # stored again, read once: the archive's copy and the log's


def test_an_event_retried_after_its_archiving_is_a_duplicate(tmp_path: Path) -> None:
    """A shop that retries an old event after retention moved it gets "duplicate", and training still
    reads the event once (the log keeps archived ids)."""
    path = tmp_path / "events.db"
    ids = fill(path, 40)
    every_event_once(path, ids)  # a training run reads the log, so retention may move the old ones
    with EventLog.open(path) as log:
        assert archive_events(log, archive_folder(path), CUTOFF).moved == 30
        retried = [event(n, 90) for n in range(5)]
        result = log.append(retried)
        assert result.new_events == () and result.duplicate_events == 5
        assert log.has_record("event", "e0") and log.has_record("event", "e39")
        assert not log.has_record("event", "e40")
        assert log.event_ids() == {f"e{n}" for n in range(30, 40)}
    every_event_once(path, ids)
