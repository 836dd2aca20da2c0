"""The event log's tables, and how a log written by an earlier persona-engine is brought up to date.

The version is SQLite's ``user_version``. A log is migrated when it is opened, in one ``BEGIN
IMMEDIATE`` transaction, so that several workers opening one log at once take turns and none sees a
half-made schema; each version only adds (tables, a column), so a migrated log keeps every row.
``engine.live.event_log`` holds the reading and writing.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Final

SCHEMA_VERSION: Final = 4

_SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS events (
        event_id TEXT PRIMARY KEY NOT NULL,
        customer_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        timestamp_us INTEGER NOT NULL,
        price_paid REAL,
        discount REAL,
        channel TEXT,
        device TEXT,
        received_us INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS outcomes (
        event_id TEXT PRIMARY KEY NOT NULL,
        decision_id TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        decision_type TEXT NOT NULL,
        is_reward INTEGER NOT NULL,
        timestamp_us INTEGER NOT NULL,
        arm_id TEXT,
        revenue REAL NOT NULL,
        received_us INTEGER NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS outcomes_by_decision ON outcomes (decision_id, decision_type)",
    """
    CREATE TABLE IF NOT EXISTS decisions (
        decision_id TEXT NOT NULL,
        decision_type TEXT NOT NULL,
        arm_id TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        timestamp_us INTEGER NOT NULL,
        context TEXT NOT NULL,
        propensity REAL NOT NULL,
        persona_mix TEXT NOT NULL,
        journey_stage TEXT NOT NULL,
        experiment_arm TEXT NOT NULL,
        model_version TEXT NOT NULL,
        PRIMARY KEY (decision_id, decision_type, arm_id)
    )
    """,
)

# Version 2 adds marks: named positions in the log (the rowid of the last event training has read).
_SCHEMA_V2: Final = (
    "CREATE TABLE IF NOT EXISTS marks (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL)",
)

# Version 3 adds the ids of archived events and outcomes, so a retry after retention moved the first
# copy is still a duplicate (the id is all a duplicate check needs; the row itself is in the archive).
_SCHEMA_V3: Final = (
    "CREATE TABLE IF NOT EXISTS archived_ids (kind TEXT NOT NULL, id TEXT NOT NULL, "
    "PRIMARY KEY (kind, id)) WITHOUT ROWID",
)

# Version 4 dates each archived id (``archived_s``: Unix seconds, stored in 4 bytes), so ids can be
# forgotten a set time after their record was archived (``forget_archived_ids``). Ids archived before
# the column existed are dated when the log is migrated: the window then starts for them at the upgrade,
# never earlier. No index on the date: it would hold every id a second time, and only logs that forget
# pay for the scan that stands in for it.
_SCHEMA_V4: Final = ("UPDATE archived_ids SET archived_s = {now} WHERE archived_s IS NULL",)


def create_schema(connection: sqlite3.Connection) -> None:
    """Create the tables once, or bring an older log's up to date; several workers opening a new log at
    the same time take turns. A log of a later version raises ``ValueError``: this code cannot read it."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        if version not in range(SCHEMA_VERSION + 1):
            raise ValueError(
                f"schema version {version}; this persona-engine reads versions 1 to {SCHEMA_VERSION}"
            )
        if version == 0:
            for statement in _SCHEMA:
                connection.execute(statement)
        if version < SCHEMA_VERSION:  # a new log, or one written before marks, archived ids or their dates
            now = int(time.time())
            for statement in (*(_SCHEMA_V2 if version < 2 else ()), *(_SCHEMA_V3 if version < 3 else ())):
                connection.execute(statement)
            dated = any(
                row[1] == "archived_s" for row in connection.execute("PRAGMA table_info(archived_ids)")
            )
            if not dated:  # a table of version 3, or one version 3 created just now
                connection.execute("ALTER TABLE archived_ids ADD COLUMN archived_s INTEGER")
            for statement in _SCHEMA_V4:
                connection.execute(statement.format(now=now))
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
