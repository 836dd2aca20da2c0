"""The durable log of live traffic: behaviour events, decision outcomes and the decisions served.

An event the server has acknowledged must survive a crash of the server, and a batch the shop retries
after a timeout must not be counted twice. The log is one SQLite database in WAL mode, shared by every
worker process of a server (and readable by training while the server writes):

- ``append`` writes one batch of events and outcomes in a ``BEGIN IMMEDIATE`` transaction with
  ``synchronous=FULL``, so when it returns the batch is in the fsynced write-ahead log. The fsync is
  the cost of a durable write (milliseconds on most disks), so batches that arrive from several
  threads while one commits share the next commit (group commit), each in a savepoint of its own.
  The event id is the primary key of its table and rows go in with ``INSERT OR IGNORE``: the first
  record with an id wins, and a later one with the same id (a retry, whatever its content) is a
  duplicate. Events and outcomes are separate tables, so each has its own id space. Retention
  (``engine.live.event_archive``) moves old rows to Parquet, but their ids stay in ``archived_ids``,
  which every insert consults: a retry of a record that was archived in the meantime is still a
  duplicate, not a second row. Each id costs about 59 bytes there (a 36-character UUID), for good
  unless the operator sets a window (``forget_archived_ids``): ids are then kept that many days after
  their record was archived, which is after it was received, so a retry within the window of the
  first copy's arrival is always a duplicate. A later one is stored again and read once all the same:
  every reader of the log and its archive keeps one row per id.
- ``log_decisions`` records what the server served. Decisions are not acknowledged to anyone, so a log
  opened with ``durable=False`` (``synchronous=NORMAL``) writes them: in WAL mode that survives a crash
  of the process, and only a power loss may drop the last few. One served response can carry several
  arms under one decision id (Personalize ranks offers and picks a layout), so the decisions table is
  keyed by (decision_id, decision_type, arm_id).
- Several processes and threads may write at once: SQLite serialises writers, and ``busy_timeout``
  makes a writer wait for the lock instead of failing.

The readers return polars frames in the data contract's shapes (``events``, ``decisions``), so
training reads the log exactly as it reads a shop's files. Timestamps are stored as integer
microseconds since the Unix epoch, UTC: exact, sortable and the resolution of the contract's columns.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import polars as pl

from engine.data.contract import DECISIONS, EVENTS
from engine.errors import PersonaEngineError
from engine.live.event_log_schema import create_schema
from engine.live.events import BehaviorEvent, DecisionOutcome, OutcomeKind, ServedDecision

DEFAULT_BUSY_TIMEOUT_S: Final = 30.0
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

TRAINING_READ_MARK: Final = "training_read_through"  # the rowid of the last event training read

# Ids looked at per transaction when forgetting, so that appends waiting for the write lock wait
# milliseconds.
_FORGET_CHUNK: Final = 10_000

_EVENT_COLUMNS: Final = (
    "event_id, customer_id, item_id, event_type, timestamp_us, price_paid, discount, channel, device"
)

_DECISION_COLUMNS: Final = (
    "decision_id, decision_type, arm_id, customer_id, timestamp_us, context, propensity, persona_mix, "
    "journey_stage, experiment_arm, model_version"
)

_DECISION_VALUES: Final = ", ".join("?" * len(_DECISION_COLUMNS.split(",")))


class EventLogError(PersonaEngineError, RuntimeError):
    """The event log cannot be opened or used; the message names the file."""


@dataclass(frozen=True)
class AppendResult:
    """What one ``append`` newly stored; records not listed here were duplicates of stored ones."""

    new_events: tuple[BehaviorEvent, ...]
    new_outcomes: tuple[DecisionOutcome, ...]
    duplicate_events: int
    duplicate_outcomes: int


@dataclass
class _PendingBatch:
    """One caller's batch waiting for (or in) a group commit."""

    events: tuple[BehaviorEvent, ...]
    outcomes: tuple[DecisionOutcome, ...]
    done: bool = False
    result: AppendResult | None = None
    error: BaseException | None = None


def to_micros(moment: dt.datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC, as everywhere in the contract."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=micros)


class EventLog:
    """One process's connection to the log; safe to share between the threads of that process."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._connection = connection
        self._lock = threading.Lock()  # one user of the connection at a time
        self._group = threading.Condition()  # group commit of appends (see ``append``)
        self._pending: list[_PendingBatch] = []
        self._committing = False
        self.commits = 0  # append transactions so far: fewer than appends when batches shared one

    @classmethod
    def open(
        cls, path: Path | str, *, durable: bool = True, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
    ) -> EventLog:
        """Open (creating if needed) the log at ``path``.

        ``durable`` chooses ``synchronous=FULL`` (every commit fsyncs the write-ahead log: for what is
        acknowledged) or ``NORMAL`` (survives a process crash, not a power loss: for decision logging).
        """
        path = Path(path)
        if path.is_dir():
            raise EventLogError(f"event log {path}: is a directory, expected a database file")
        if not path.parent.is_dir():
            raise EventLogError(f"event log {path}: folder {path.parent} does not exist")
        try:
            connection = sqlite3.connect(
                path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as error:
            raise EventLogError(f"event log {path}: cannot open ({error})") from None
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise EventLogError(f"event log {path}: cannot switch to WAL mode (got {mode!r})")
            connection.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            create_schema(connection)
        except ValueError as error:
            connection.close()
            raise EventLogError(f"event log {path}: {error}") from None
        except sqlite3.DatabaseError as error:
            connection.close()
            raise EventLogError(f"event log {path}: not a usable SQLite database ({error})") from None
        except EventLogError:
            connection.close()
            raise
        return cls(path, connection)

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taking the write lock up front so it never fails half way on a busy log."""
        with self._lock:
            connection = self._connection
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    # ------------------------------------------------------------------ writing

    def append(
        self, events: Sequence[BehaviorEvent], outcomes: Sequence[DecisionOutcome] = ()
    ) -> AppendResult:
        """Store a batch durably; returns the records that were not already stored.

        Group commit: batches that arrive from other threads while a commit is in progress wait for
        it, then share the next transaction and its one fsync; each batch is stored whole or not at
        all (a savepoint of its own), and each caller returns only after the commit that holds its
        batch. A failed commit raises in every caller whose batch it held, none of which was stored.
        """
        slot = _PendingBatch(tuple(events), tuple(outcomes))
        with self._group:
            self._pending.append(slot)
            while not slot.done:
                if self._committing:
                    self._group.wait()
                    continue
                self._committing = True
                group, self._pending = self._pending, []
                self._group.release()
                try:
                    self._commit_group(group)
                finally:
                    self._group.acquire()
                    self._committing = False
                    self._group.notify_all()
        if slot.error is not None:
            raise slot.error
        assert slot.result is not None  # set by the commit that marked the slot done
        return slot.result

    def _commit_group(self, group: list[_PendingBatch]) -> None:
        """One transaction for ``group``; marks every slot done with its result or its error."""
        try:
            with self._transaction() as connection:
                self.commits += 1
                for number, slot in enumerate(group):
                    connection.execute(f"SAVEPOINT batch_{number}")
                    try:
                        slot.result = self._insert(connection, slot.events, slot.outcomes)
                    except sqlite3.Error as error:  # this batch only; the others still commit
                        connection.execute(f"ROLLBACK TO batch_{number}")
                        slot.error = error
                    connection.execute(f"RELEASE batch_{number}")
        except BaseException as error:
            for slot in group:
                slot.result, slot.error = None, error
            raise
        finally:
            for slot in group:
                slot.done = True

    def _insert(
        self,
        connection: sqlite3.Connection,
        events: Sequence[BehaviorEvent],
        outcomes: Sequence[DecisionOutcome],
    ) -> AppendResult:
        received = to_micros(dt.datetime.now(dt.UTC))
        new_events: list[BehaviorEvent] = []
        new_outcomes: list[DecisionOutcome] = []
        for event in events:
            cursor = connection.execute(
                "INSERT OR IGNORE INTO events SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ? "
                "WHERE NOT EXISTS (SELECT 1 FROM archived_ids WHERE kind = 'event' AND id = ?)",
                (*event_row(event, received), event.event_id),
            )
            if cursor.rowcount == 1:
                new_events.append(event)
        for outcome in outcomes:
            cursor = connection.execute(
                "INSERT OR IGNORE INTO outcomes SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ? "
                "WHERE NOT EXISTS (SELECT 1 FROM archived_ids WHERE kind = 'outcome' AND id = ?)",
                (
                    outcome.event_id,
                    outcome.decision_id,
                    outcome.customer_id,
                    outcome.kind.value,
                    outcome.kind.decision_type,
                    int(outcome.kind.is_reward),
                    to_micros(outcome.timestamp),
                    outcome.arm_id,
                    float(outcome.revenue),
                    received,
                    outcome.event_id,
                ),
            )
            if cursor.rowcount == 1:
                new_outcomes.append(outcome)
        return AppendResult(
            tuple(new_events),
            tuple(new_outcomes),
            duplicate_events=len(events) - len(new_events),
            duplicate_outcomes=len(outcomes) - len(new_outcomes),
        )

    def log_decisions(self, decisions: Sequence[ServedDecision]) -> int:
        """Store served decisions (a served arm already logged is kept as first written); returns how many
        were new."""
        if not decisions:
            return 0
        added = 0
        with self._transaction() as connection:
            for decision in decisions:
                cursor = connection.execute(
                    f"INSERT OR IGNORE INTO decisions ({_DECISION_COLUMNS}) VALUES ({_DECISION_VALUES})",
                    (
                        decision.decision_id,
                        decision.decision_type,
                        decision.arm_id,
                        decision.customer_id,
                        to_micros(decision.timestamp),
                        decision.context,
                        float(decision.propensity),
                        json.dumps(dict(decision.persona_mix)),
                        decision.journey_stage,
                        decision.experiment_arm,
                        decision.model_version,
                    ),
                )
                added += cursor.rowcount
        return added

    # ------------------------------------------------------------------ reading

    def _query(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._connection.execute(sql, parameters).fetchall()

    def decision(self, decision_id: str) -> tuple[ServedDecision, ...]:
        """Every arm served under ``decision_id`` (offers in rank order of logging, then the layout);
        empty when the log has no such decision."""
        rows = self._query(
            f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE decision_id = ? ORDER BY rowid", (decision_id,)
        )
        return tuple(_served_decision(row) for row in rows)

    def served_decisions(self) -> list[ServedDecision]:
        """Every logged decision in the order served: the input of off-policy evaluation."""
        rows = self._query(f"SELECT {_DECISION_COLUMNS} FROM decisions ORDER BY timestamp_us, rowid")
        return [_served_decision(row) for row in rows]

    def behavior_events(self, since: dt.datetime | None = None) -> list[BehaviorEvent]:
        """Stored events in arrival order, those that happened at or after ``since`` when given: what a
        restarted live state replays to catch up."""
        rows = self._query(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE timestamp_us >= ? ORDER BY rowid", (_since(since),)
        )
        return [behavior_event_from_row(row) for row in rows]

    def has_record(self, kind: str, record_id: str) -> bool:
        """Whether an event (``kind`` "event") or outcome ("outcome") with this id is stored, in the log
        or moved to the archive: a record with that id is a duplicate, whatever its other fields."""
        table = {"event": "events", "outcome": "outcomes"}[kind]
        row = self._query(
            f"SELECT EXISTS (SELECT 1 FROM {table} WHERE event_id = ?) "
            "OR EXISTS (SELECT 1 FROM archived_ids WHERE kind = ? AND id = ?)",
            (record_id, kind, record_id),
        )
        return bool(row[0][0])

    def last_event_rowid(self) -> int:
        """The position of the newest stored event (0 for none). Positions only grow: rows are added
        at the end, and retention never removes the newest row (``delete_archived_events``)."""
        return int(self._query("SELECT COALESCE(MAX(rowid), 0) FROM events")[0][0])

    def behavior_event_pages(
        self, after_rowid: int, through_rowid: int, since: dt.datetime | None = None, page: int = 5_000
    ) -> Iterator[tuple[int, list[BehaviorEvent]]]:
        """Events at positions ``after_rowid < rowid <= through_rowid`` that happened at or after
        ``since``, in arrival order, a page at a time with the position of the page's last event.

        Each page is one short query, so a long replay never holds the connection or a read
        transaction, and its reader can stop between pages.
        """
        for rows in self.event_row_pages(after_rowid, through_rowid, since, page):
            yield int(rows[-1][0]), [behavior_event_from_row(row[2:]) for row in rows]

    def event_row_pages(
        self, after_rowid: int, through_rowid: int, since: dt.datetime | None, page: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        """(rowid, received_us, event columns) rows of the events in a range of positions, a page per
        query, in arrival order (``behavior_event_from_row`` reads the columns): the rows one
        ``append`` stored follow one another and share ``received_us`` (``engine.live.arrival_batches``)."""
        start = after_rowid
        while start < through_rowid:
            rows = self._query(
                f"SELECT rowid, received_us, {_EVENT_COLUMNS} FROM events WHERE rowid > ? AND rowid <= ? "
                "AND timestamp_us >= ? ORDER BY rowid LIMIT ?",
                (start, through_rowid, _since(since), page),
            )
            if not rows:
                return
            start = int(rows[-1][0])
            yield rows

    # ------------------------------------------------------------------ marks and retention

    def mark(self, name: str) -> int:
        """A named position in the log (0 when never set)."""
        rows = self._query("SELECT value FROM marks WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else 0

    def set_mark(self, name: str, value: int) -> None:
        """Move a named position forward (never back: two training runs may finish in any order)."""
        with self._transaction() as connection:
            connection.execute(
                "INSERT INTO marks VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
                (name, int(value)),
            )

    def archivable_events(self, through_rowid: int, before: dt.datetime, limit: int) -> pl.DataFrame:
        """Up to ``limit`` events at positions up to ``through_rowid`` (never the newest row) that
        happened before ``before``, oldest position first, as an ``events`` frame with ``rowid``."""
        rows = self._query(
            f"SELECT rowid, {_EVENT_COLUMNS}, received_us FROM events WHERE rowid <= ? "
            "AND rowid < (SELECT MAX(rowid) FROM events) AND timestamp_us < ? ORDER BY rowid LIMIT ?",
            (int(through_rowid), to_micros(before), int(limit)),
        )
        schema = {"rowid": pl.Int64, **EVENT_FRAME_SCHEMA, "received_us": pl.Int64}
        return pl.DataFrame(rows, schema=schema, orient="row")

    def delete_archived_events(self, rowids: Sequence[int], event_ids: Sequence[str]) -> int:
        """Remove events already written to the archive, in one transaction; returns how many went.

        A row goes only when both its position and its id match (a row is never confused with
        another) and it is not the newest row, so positions keep growing.
        """
        removed = 0
        now = int(time.time())
        with self._transaction() as connection:
            newest = connection.execute("SELECT COALESCE(MAX(rowid), 0) FROM events").fetchone()[0]
            for rowid, event_id in zip(rowids, event_ids, strict=True):
                if int(rowid) >= newest:
                    continue
                cursor = connection.execute(
                    "DELETE FROM events WHERE rowid = ? AND event_id = ?", (int(rowid), event_id)
                )
                if cursor.rowcount:
                    connection.execute(
                        "INSERT OR IGNORE INTO archived_ids (kind, id, archived_s) VALUES ('event', ?, ?)",
                        (event_id, now),
                    )
                removed += cursor.rowcount
        return removed

    def archivable_rows(self, table: str, before: dt.datetime, limit: int) -> pl.DataFrame:
        """Up to ``limit`` rows of ``decisions`` or ``outcomes`` (never the table's newest row) that
        happened before ``before``, oldest position first, with ``rowid``: what retention moves."""
        columns = _archived_columns(table)
        rows = self._query(
            f"SELECT rowid, {', '.join(columns)} FROM {table} "
            f"WHERE rowid < (SELECT MAX(rowid) FROM {table}) AND timestamp_us < ? ORDER BY rowid LIMIT ?",
            (to_micros(before), int(limit)),
        )
        return pl.DataFrame(rows, schema={"rowid": pl.Int64, **columns}, orient="row")

    def table_rows(self, table: str) -> pl.DataFrame:
        """Every row of ``decisions`` or ``outcomes`` with ``rowid``, in the archive's shape, so the log
        and its archive read as one table (``engine.live.event_archive``)."""
        columns = _archived_columns(table)
        rows = self._query(f"SELECT rowid, {', '.join(columns)} FROM {table} ORDER BY rowid")
        return pl.DataFrame(rows, schema={"rowid": pl.Int64, **columns}, orient="row")

    def delete_archived_rows(self, table: str, rowids: Sequence[int]) -> int:
        """Remove rows of ``decisions`` or ``outcomes`` already written to the archive, in one
        transaction; returns how many went. Never the newest row: rowids are then never reused, so a
        position names one row for good (archive part names and re-runs after a crash rely on it)."""
        _archived_columns(table)
        removed = 0
        now = int(time.time())
        with self._transaction() as connection:
            newest = connection.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {table}").fetchone()[0]
            for rowid in rowids:
                if int(rowid) < newest:
                    if table == "outcomes":  # a retried outcome must stay a duplicate (archived_ids)
                        connection.execute(
                            "INSERT OR IGNORE INTO archived_ids (kind, id, archived_s) "
                            "SELECT 'outcome', event_id, ? FROM outcomes WHERE rowid = ?",
                            (now, int(rowid)),
                        )
                    removed += connection.execute(
                        f"DELETE FROM {table} WHERE rowid = ?", (int(rowid),)
                    ).rowcount
        return removed

    def forget_archived_ids(self, archived_before: dt.datetime) -> int:
        """Drop the ids of records archived before ``archived_before``; returns how many went.

        A retry of such a record is then stored again, where before it was a duplicate: readers of the
        log and its archive still read it once (one row per id), and live state gives an event that
        old next to no weight; the RecordEvents answer counts it as accepted. One pass over the ids in
        key order, ``_FORGET_CHUNK`` at a time, each chunk its own transaction, so appends are never
        held up for long.
        """
        cutoff = int(archived_before.timestamp())
        forgotten = 0
        after: tuple[str, str] = ("", "")
        while True:
            with self._transaction() as connection:
                last = connection.execute(
                    "SELECT kind, id FROM archived_ids WHERE (kind, id) > (?, ?) ORDER BY kind, id "
                    "LIMIT 1 OFFSET ?",
                    (*after, _FORGET_CHUNK - 1),
                ).fetchone()
                upper = "AND (kind, id) <= (?, ?)" if last is not None else ""
                forgotten += connection.execute(
                    f"DELETE FROM archived_ids WHERE (kind, id) > (?, ?) {upper} AND archived_s < ?",
                    (*after, *(last or ()), cutoff),
                ).rowcount
            if last is None:
                return forgotten
            after = (str(last[0]), str(last[1]))

    def archived_id_count(self) -> int:
        """Ids the log keeps of archived events and outcomes (each answers a retry as a duplicate)."""
        return int(self._query("SELECT COUNT(*) FROM archived_ids")[0][0])

    def outcomes(self, since: dt.datetime | None = None) -> list[DecisionOutcome]:
        """Stored outcomes in arrival order, those that happened at or after ``since`` when given."""
        rows = self._query(
            "SELECT event_id, decision_id, customer_id, kind, timestamp_us, arm_id, revenue "
            "FROM outcomes WHERE timestamp_us >= ? ORDER BY rowid",
            (_since(since),),
        )
        return [
            DecisionOutcome(
                event_id=row[0],
                decision_id=row[1],
                customer_id=row[2],
                kind=OutcomeKind(row[3]),
                timestamp=from_micros(row[4]),
                arm_id=row[5],
                revenue=row[6],
            )
            for row in rows
        ]

    def counts(self) -> dict[str, int]:
        """Rows per table, for reports and tests."""
        return {
            table: int(self._query(f"SELECT COUNT(*) FROM {table}")[0][0])
            for table in ("events", "outcomes", "decisions")
        }

    def event_ids(self) -> set[str]:
        return {row[0] for row in self._query("SELECT event_id FROM events")}

    def events_frame(self, through_rowid: int | None = None) -> pl.DataFrame:
        """The ``events`` table of the data contract, in arrival order (up to a position when given)."""
        rows = self._query(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE rowid <= ? ORDER BY rowid",
            (2**63 - 1 if through_rowid is None else int(through_rowid),),
        )
        frame = pl.DataFrame(rows, schema=EVENT_FRAME_SCHEMA, orient="row")
        return contract_events(frame)

    def decisions_frame(self) -> pl.DataFrame:
        """The ``decisions`` table of the data contract: one row per served arm.

        ``outcome`` is 1 when a reward (redeemed, converted) was reported for the arm, else 0. An outcome
        that named no arm counts for its decision's arm of its type when there is only one (a layout).
        Since one served response may carry several arms under one decision id, ``decision_id`` here is
        ``<decision id>:<decision_type>:<arm_id>`` (the contract's key is one row per decision) and the
        id the server returned is in the extra column ``served_decision_id``; ``shown`` says whether an
        exposure or a reward was reported for the arm.
        """
        rows = self._query(
            """
            SELECT d.decision_id, d.customer_id, d.timestamp_us, d.context, d.decision_type, d.arm_id,
                   d.propensity,
                   EXISTS (
                       SELECT 1 FROM outcomes o
                       WHERE o.decision_id = d.decision_id AND o.decision_type = d.decision_type
                         AND o.is_reward = 1 AND (o.arm_id = d.arm_id OR (o.arm_id IS NULL AND (
                             SELECT COUNT(*) FROM decisions s
                             WHERE s.decision_id = d.decision_id AND s.decision_type = d.decision_type
                         ) = 1))
                   ),
                   EXISTS (
                       SELECT 1 FROM outcomes o
                       WHERE o.decision_id = d.decision_id AND o.decision_type = d.decision_type
                         AND (o.arm_id = d.arm_id OR o.arm_id IS NULL)
                   )
            FROM decisions d ORDER BY d.timestamp_us, d.rowid
            """
        )
        frame = pl.DataFrame(
            rows,
            schema={
                "served_decision_id": pl.Utf8,
                "customer_id": pl.Utf8,
                "timestamp": pl.Int64,
                "context": pl.Utf8,
                "decision_type": pl.Utf8,
                "arm_id": pl.Utf8,
                "propensity": pl.Float64,
                "outcome": pl.Float64,
                "shown": pl.Boolean,
            },
            orient="row",
        )
        frame = frame.with_columns(
            _utc_micros("timestamp"),
            pl.concat_str(
                [pl.col("served_decision_id"), pl.col("decision_type"), pl.col("arm_id")], separator=":"
            ).alias("decision_id"),
        )
        frame = frame.with_columns(pl.lit(None, dtype=pl.Utf8).alias("position"))  # ranks are not slots
        return frame.select([column.name for column in DECISIONS.columns] + ["served_decision_id", "shown"])


EVENT_FRAME_SCHEMA: Final = {
    "event_id": pl.Utf8,
    "customer_id": pl.Utf8,
    "item_id": pl.Utf8,
    "event_type": pl.Utf8,
    "timestamp": pl.Int64,  # microseconds, as stored
    "price_paid": pl.Float64,
    "discount": pl.Float64,
    "channel": pl.Utf8,
    "device": pl.Utf8,
}


# The columns of the decisions and outcomes tables as retention archives them (rowid aside).
DECISION_ROW_SCHEMA: Final = {
    "decision_id": pl.Utf8,
    "decision_type": pl.Utf8,
    "arm_id": pl.Utf8,
    "customer_id": pl.Utf8,
    "timestamp_us": pl.Int64,
    "context": pl.Utf8,
    "propensity": pl.Float64,
    "persona_mix": pl.Utf8,
    "journey_stage": pl.Utf8,
    "experiment_arm": pl.Utf8,
    "model_version": pl.Utf8,
}
OUTCOME_ROW_SCHEMA: Final = {
    "event_id": pl.Utf8,
    "decision_id": pl.Utf8,
    "customer_id": pl.Utf8,
    "kind": pl.Utf8,
    "decision_type": pl.Utf8,
    "is_reward": pl.Int64,
    "timestamp_us": pl.Int64,
    "arm_id": pl.Utf8,
    "revenue": pl.Float64,
    "received_us": pl.Int64,
}
_ARCHIVED_TABLES: Final = {"decisions": DECISION_ROW_SCHEMA, "outcomes": OUTCOME_ROW_SCHEMA}


def _archived_columns(table: str) -> dict[str, Any]:
    """The schema of a table retention archives; anything else is a programming error (and the name
    goes into SQL, so it is checked against this fixed list)."""
    if table not in _ARCHIVED_TABLES:
        raise ValueError(f"retention archives the tables {sorted(_ARCHIVED_TABLES)}, not {table!r}")
    return dict(_ARCHIVED_TABLES[table])


def served_decision_from_row(row: Sequence[Any]) -> ServedDecision:
    """A decision from a row in ``DECISION_ROW_SCHEMA`` order (the log's and the archive's)."""
    return _served_decision(tuple(row))


def outcome_from_row(row: Sequence[Any]) -> DecisionOutcome:
    """An outcome from a row in ``OUTCOME_ROW_SCHEMA`` order (the log's and the archive's)."""
    return DecisionOutcome(
        event_id=row[0],
        decision_id=row[1],
        customer_id=row[2],
        kind=OutcomeKind(row[3]),
        timestamp=from_micros(row[6]),
        arm_id=row[7],
        revenue=row[8],
    )


def contract_events(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows in the log's shape (timestamps in microseconds) as the contract's ``events`` table."""
    names = [column.name for column in EVENTS.columns]
    # Contract columns that live events do not carry (a transaction line's quantity) are empty.
    missing = [pl.lit(None, dtype=pl.Float64).alias(name) for name in names if name not in frame.columns]
    return frame.with_columns(_utc_micros("timestamp"), *missing).select(names)


def event_row(event: BehaviorEvent, received_us: int) -> tuple[Any, ...]:
    """An event as the log stores it (``_EVENT_COLUMNS`` then ``received_us``); the Redis log's records
    are the same row."""
    return (
        event.event_id,
        event.customer_id,
        event.item_id,
        event.event_type,
        to_micros(event.timestamp),
        event.price_paid,
        event.discount,
        event.channel,
        event.device,
        received_us,
    )


def behavior_event_from_row(row: Sequence[Any]) -> BehaviorEvent:
    """An event from a row in the log's event column order (``_EVENT_COLUMNS``; the Redis log stores
    the same order)."""
    return BehaviorEvent(
        event_id=row[0],
        customer_id=row[1],
        item_id=row[2],
        event_type=row[3],
        timestamp=from_micros(row[4]),
        price_paid=row[5],
        discount=row[6],
        channel=row[7],
        device=row[8],
    )


def _since(moment: dt.datetime | None) -> int:
    return to_micros(moment) if moment is not None else -(2**63)


def _utc_micros(column: str) -> pl.Expr:
    return pl.from_epoch(pl.col(column), time_unit="us").dt.replace_time_zone("UTC").alias(column)


def _served_decision(row: tuple[Any, ...]) -> ServedDecision:
    mix = json.loads(row[7])
    return ServedDecision(
        decision_id=row[0],
        decision_type=row[1],
        arm_id=row[2],
        customer_id=row[3],
        timestamp=from_micros(row[4]),
        context=row[5],
        propensity=row[6],
        persona_mix=tuple((str(persona), float(weight)) for persona, weight in mix.items()),
        journey_stage=row[8],
        experiment_arm=row[9],
        model_version=row[10],
    )
