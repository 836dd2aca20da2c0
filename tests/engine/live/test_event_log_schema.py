"""The event log's schema: a new log gets every table, and a log written by an earlier persona-engine is
brought up to date when opened, keeping its rows; a log of a later version is refused, named."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from engine.live.event_archive import archive_events, archive_folder
from engine.live.event_log import EventLog, EventLogError
from engine.live.event_log_schema import SCHEMA_VERSION, create_schema
from engine.live.events import BehaviorEvent
from training.logged_events import read_logged_events

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
CUTOFF = NOW - dt.timedelta(days=56)


def event(event_id: str, customer: str, days_ago: float = 0.0) -> BehaviorEvent:
    return BehaviorEvent(event_id, customer, "i1", "view", NOW - dt.timedelta(days=days_ago))


def test_a_new_log_has_the_latest_schema_and_a_later_one_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "raw.db") as raw:
        create_schema(raw)
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"events", "outcomes", "decisions", "marks", "archived_ids"} <= tables
        create_schema(raw)  # opening it again changes nothing
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        with pytest.raises(ValueError, match=f"schema version {SCHEMA_VERSION + 1}; this persona-engine"):
            create_schema(raw)
    with pytest.raises(EventLogError, match=f"raw.db: schema version {SCHEMA_VERSION + 1}"):
        EventLog.open(tmp_path / "raw.db")


def test_a_log_of_the_first_schema_gains_marks_and_keeps_its_events(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    with EventLog.open(path) as log:
        log.append([event("e1", "c1")])
    with sqlite3.connect(path) as raw:  # as persona-engine wrote it before marks existed
        raw.execute("DROP TABLE marks")
        raw.execute("PRAGMA user_version = 1")
    with EventLog.open(path) as log:
        assert log.event_ids() == {"e1"} and log.mark("training_read_through") == 0
        log.set_mark("training_read_through", 5)
        log.set_mark("training_read_through", 3)  # marks never move back
        assert log.mark("training_read_through") == 5
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_a_log_of_the_second_schema_gains_archived_ids_and_keeps_its_events(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    with EventLog.open(path) as log:
        log.append([event("e1", "c1")])
    with sqlite3.connect(path) as raw:  # as persona-engine wrote it before archived ids existed
        raw.execute("DROP TABLE archived_ids")
        raw.execute("PRAGMA user_version = 2")
    with EventLog.open(path) as log:
        assert log.event_ids() == {"e1"}
        assert log.append([event("e1", "c1"), event("e2", "c1")]).duplicate_events == 1
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert raw.execute("SELECT COUNT(*) FROM archived_ids").fetchone() == (0,)


def test_a_log_of_the_third_schema_dates_its_archived_ids_at_the_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with EventLog.open(path) as log:
        log.append([event(f"e{n}", "c1", 90 if n < 30 else 1) for n in range(40)])
    read_logged_events(path)  # a training run read them: the old ones may move
    with EventLog.open(path) as log:
        archive_events(log, archive_folder(path), CUTOFF)
    with sqlite3.connect(path) as raw:  # as persona-engine 3 wrote it: ids without dates
        raw.execute(
            "CREATE TABLE old_ids (kind TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (kind, id)) "
            "WITHOUT ROWID"
        )
        raw.execute("INSERT INTO old_ids SELECT kind, id FROM archived_ids")
        raw.execute("DROP TABLE archived_ids")
        raw.execute("ALTER TABLE old_ids RENAME TO archived_ids")
        raw.execute("PRAGMA user_version = 3")
    before_upgrade = dt.datetime.now(dt.UTC)
    with EventLog.open(path) as log:
        assert log.archived_id_count() == 30
        assert log.forget_archived_ids(before_upgrade - dt.timedelta(seconds=1)) == 0, "dated at the upgrade"
        assert log.append([event("e0", "c1", 90)]).duplicate_events == 1
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert raw.execute("SELECT COUNT(*) FROM archived_ids WHERE archived_s IS NULL").fetchone() == (0,)
