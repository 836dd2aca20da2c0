"""Event log retention: old events move from the SQLite log to a Parquet archive, never lost.

The log would otherwise grow with every event for as long as the server runs. An event moves to the
archive once both hold:

- it happened before the drift window (``WINDOW_HALF_LIVES`` drift half-lives: 56 days by default),
  so live state would not replay it any more, and
- a training run has read it: ``training.logged_events`` records the position of the last event it
  read as the log's ``training_read_through`` mark when it reads the log.

Training reads the log and the archive together (``read_archived_events`` plus the log, one row per
event id), so moving an event changes nothing it sees.

The move is crash-safe. A batch of events is written to a Parquet part under a temporary name,
fsynced, renamed into place and the folder fsynced; only then are the same rows deleted from the log
in one transaction. A crash between the two leaves the events in both places, and the next run
writes them again (to the same part name when the batch is the same, replacing it) before deleting
them; readers drop repeats of an event id, so an event is never read twice and never lost. The
newest row of the log is never moved, so log positions (which snapshots of live state rely on) only
grow.

Parts are ``events-<first rowid>-<last rowid>.parquet`` in ``<log>.archive/``, with the log's event
columns plus ``rowid`` and ``received_us``.

Served decisions and their outcomes (one row per Personalize call that decided an offer or layout:
more rows than behaviour events on a busy shop) move the same way once they happened before the same
cutoff, as ``decisions-*.parquet`` and ``outcomes-*.parquet`` parts with every column of their table.
No training run has to have read them first: their readers (``policy-evaluation``,
``experiment-report``) read the log and the archive together (``read_served_decisions``,
``read_outcomes``), so a move changes nothing they see. An outcome reported for a decision already
archived is stored unchecked against it (the live check looks in the log only), as for a decision the
log never held; by then the decision is older than the drift window.

The log keeps the id of every record it archives, so that a retry is still answered as a duplicate
(``engine.live.event_log``). With ``forget_ids_after`` (``archive-events --forget-ids-after-days``,
``serve --forget-archived-ids-after-days``) a run also drops the ids archived longer ago than that;
without it they are kept for good, about 59 bytes each.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import polars as pl

from engine.live.event_log import (
    DECISION_ROW_SCHEMA,
    EVENT_FRAME_SCHEMA,
    OUTCOME_ROW_SCHEMA,
    TRAINING_READ_MARK,
    EventLog,
    contract_events,
    outcome_from_row,
    served_decision_from_row,
)
from engine.live.events import DecisionOutcome, ServedDecision

ARCHIVE_SUFFIX: Final = ".archive"
DEFAULT_BATCH: Final = 100_000  # events per part
_PART_PREFIX: Final = "events-"
_TABLES: Final = ("decisions", "outcomes")
# What makes a row of each table the same row: a part written again after a crash, or a row both
# archived and (before its delete committed) still in the log, is read once.
_ROW_KEYS: Final = {"decisions": ["decision_id", "decision_type", "arm_id"], "outcomes": ["event_id"]}


@dataclass(frozen=True)
class ArchiveRun:
    """What one retention run moved."""

    moved: int  # events deleted from the log (they are in the archive)
    parts: tuple[Path, ...]  # parts written
    training_read_through: int  # the log position training had read up to
    before: dt.datetime  # events that happened before this could move
    decisions_moved: int = 0  # served arms deleted from the log (they are in the archive)
    outcomes_moved: int = 0
    forgotten_ids: int = 0  # ids of archived records dropped (forget_ids_after)
    archived_ids: int | None = None  # ids of archived records the log keeps after it (count_ids)

    def to_dict(self) -> dict[str, object]:
        return {
            "moved": self.moved,
            "decisions_moved": self.decisions_moved,
            "outcomes_moved": self.outcomes_moved,
            "parts": [str(part) for part in self.parts],
            "training_read_through": self.training_read_through,
            "before": self.before.isoformat(),
            "forgotten_ids": self.forgotten_ids,
            "archived_ids": self.archived_ids,
        }


def archive_folder(event_log: Path) -> Path:
    """Where the archive of the log at ``event_log`` lives: beside it, named after it."""
    return event_log.with_name(event_log.name + ARCHIVE_SUFFIX)


def archive_events(
    log: EventLog,
    folder: Path,
    before: dt.datetime,
    *,
    batch: int = DEFAULT_BATCH,
    stop: threading.Event | None = None,
    forget_ids_after: dt.timedelta | None = None,
    count_ids: bool = True,
) -> ArchiveRun:
    """Move the events that happened before ``before`` and that training has read into ``folder``.

    Works a batch at a time (one part each); ``stop`` is checked between batches. With
    ``forget_ids_after``, the ids of records archived longer ago than that are dropped afterwards.
    ``count_ids`` counts the ids kept, for a report: a pass over the whole table, which the server's
    hourly round does not need.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if forget_ids_after is not None and forget_ids_after <= dt.timedelta(0):
        raise ValueError(f"forget_ids_after must be positive, got {forget_ids_after}")
    through = log.mark(TRAINING_READ_MARK)
    parts: list[Path] = []

    def move(prefix: str, rows_of: Callable[[], pl.DataFrame], delete: Callable[[pl.DataFrame], int]) -> int:
        """Parts of ``prefix`` while rows remain, each durable before its rows leave the log."""
        moved = 0
        while stop is None or not stop.is_set():
            rows = rows_of()
            if rows.height == 0:
                break
            part = folder / f"{prefix}{rows['rowid'][0]:015d}-{rows['rowid'][-1]:015d}.parquet"
            write_part(part, rows)
            moved += delete(rows)
            parts.append(part)
            if rows.height < batch:
                break
        return moved

    events = move(
        _PART_PREFIX,
        lambda: log.archivable_events(through, before, batch),
        lambda rows: log.delete_archived_events(rows["rowid"].to_list(), rows["event_id"].to_list()),
    )
    moved_rows = {
        table: move(
            f"{table}-",
            functools.partial(log.archivable_rows, table, before, batch),
            functools.partial(_delete_rows, log, table),
        )
        for table in _TABLES
    }
    forgotten = 0
    if forget_ids_after is not None and (stop is None or not stop.is_set()):
        forgotten = log.forget_archived_ids(dt.datetime.now(dt.UTC) - forget_ids_after)
    return ArchiveRun(
        events,
        tuple(parts),
        through,
        before,
        moved_rows["decisions"],
        moved_rows["outcomes"],
        forgotten,
        log.archived_id_count() if count_ids else None,
    )


def _delete_rows(log: EventLog, table: str, rows: pl.DataFrame) -> int:
    return log.delete_archived_rows(table, rows["rowid"].to_list())


def write_part(part: Path, rows: pl.DataFrame) -> None:
    """Write one part durably: temporary name, fsync, rename, fsync of the folder."""
    part.parent.mkdir(parents=True, exist_ok=True)
    temporary = part.with_name(f".{part.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            rows.write_parquet(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, part)
    finally:
        temporary.unlink(missing_ok=True)
    descriptor = os.open(part.parent, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def event_parts(folder: Path) -> list[Path]:
    """The archive's event parts in position order (decision and outcome parts lie beside them)."""
    return sorted(folder.glob(f"{_PART_PREFIX}*.parquet")) if folder.is_dir() else []


def read_archived_events(folder: Path) -> pl.DataFrame:
    """Every archived event once, as the contract's ``events`` table in log order (empty without an
    archive): a part written again after a crash, or rows also still in the log, are the same events."""
    parts = event_parts(folder)
    if not parts:
        return contract_events(pl.DataFrame(schema=EVENT_FRAME_SCHEMA))
    frame = pl.concat([pl.read_parquet(part) for part in parts], how="vertical")
    frame = frame.sort("rowid", maintain_order=True).unique("event_id", keep="first", maintain_order=True)
    return contract_events(frame.select(list(EVENT_FRAME_SCHEMA)))


def read_served_decisions(log: EventLog, folder: Path) -> list[ServedDecision]:
    """Every served decision of the log and its archive once, in the order served (time, then position):
    ``EventLog.served_decisions`` over both."""
    rows = _log_and_archive(log, folder, "decisions").sort(["timestamp_us", "rowid"], maintain_order=True)
    return [served_decision_from_row(row) for row in rows.drop("rowid").iter_rows()]


def read_outcomes(log: EventLog, folder: Path) -> list[DecisionOutcome]:
    """Every outcome of the log and its archive once, in arrival order: ``EventLog.outcomes`` over both."""
    rows = _log_and_archive(log, folder, "outcomes")
    return [outcome_from_row(row) for row in rows.drop("rowid").iter_rows()]


def _log_and_archive(log: EventLog, folder: Path, table: str) -> pl.DataFrame:
    """The rows of ``table`` in the archive and the log, by position, each row once (archived first)."""
    schema = {"rowid": pl.Int64, **(DECISION_ROW_SCHEMA if table == "decisions" else OUTCOME_ROW_SCHEMA)}
    parts = sorted(folder.glob(f"{table}-*.parquet")) if folder.is_dir() else []
    frames = [pl.read_parquet(part).select(list(schema)) for part in parts]
    frame = pl.concat([*frames, log.table_rows(table)], how="vertical")
    return frame.sort("rowid", maintain_order=True).unique(
        _ROW_KEYS[table], keep="first", maintain_order=True
    )
