"""Adding the events recorded live (the event log) to a shop's own events, for the next training run.

A shop's export and the live log overlap: a backend that sends events to RecordEvents usually also
writes them to its own tables, which the next export then contains. The event id is the key in both,
so an event of the log whose id the shop's events already hold is the same event and is left out (the
shop's row wins: its export is the shop's record of truth and may carry corrections).

Events for items the shop's items table does not list are left out and counted: the log accepts them
because an item may be added to the catalog after the serving model was trained, and such an event
becomes usable as soon as an export lists the item, but training cannot place an item it knows nothing
about (no category, no price).

The log's old events may have moved to its Parquet archive (``engine.live.event_archive``): they are
read from there, each event once. Reading the log records how far training has read (the log's
``training_read_through`` mark), which is what lets retention move those events: an event no
training run has read stays in the log.

A fleet's shared log (``redis://host:port/db?stream=NAME``, ``engine.live.redis_event_log``) is read
the same way: every event through its newest position, each once, and the same mark is moved. It has
no archive (the stream keeps every event).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from engine.data.id_cells import malformed_ids
from engine.data.shop_data import ShopData
from engine.live.event_archive import archive_folder, read_archived_events
from engine.live.event_log import TRAINING_READ_MARK, EventLog
from engine.live.event_store import is_shared_log_location
from engine.live.redis_event_log import RedisEventLog

LOG_TABLE = "event_log"  # the name under which the load report counts the log's rows


@dataclass(frozen=True)
class LoggedEventsMerge:
    """The shop with the log's events added, and what happened to each logged event."""

    shop: ShopData
    read: int  # events in the log
    added: int  # added to the shop's events
    already_in_shop: int  # same event id as one of the shop's events
    unknown_items: int  # item not in the shop's items table
    malformed_ids: int = 0  # an id the data contract refuses (engine.data.id_cells)

    def to_dict(self) -> dict[str, int]:
        return {
            "read": self.read,
            "added": self.added,
            "already_in_shop": self.already_in_shop,
            "unknown_items": self.unknown_items,
            "malformed_ids": self.malformed_ids,
        }


def merge_logged_events(shop: ShopData, logged: pl.DataFrame) -> LoggedEventsMerge:
    """``shop`` with the rows of ``logged`` (an ``events`` frame) that are new and usable appended.

    An event whose ids the data contract refuses (a control character, whitespace around an id) is
    left out and counted: the log took it as sent, but a shop file with it would not load, and a NUL
    stopped training with a traceback in the id map (found by a helper's bad-input pass).
    """
    id_columns = ("event_id", "customer_id", "item_id")
    bad = pl.any_horizontal([malformed_ids(logged[c].cast(pl.String)) for c in id_columns])
    well_formed = logged.filter(~bad)
    known_ids = shop.events.select("event_id")
    fresh = well_formed.join(known_ids, on="event_id", how="anti")
    usable = fresh.join(shop.items.select("item_id"), on="item_id", how="semi")
    columns = shop.events.columns
    addition = usable.select([pl.col(c).cast(shop.events.schema[c]) for c in columns])
    rows_read = {**shop.report.rows_read, LOG_TABLE: logged.height}
    merged = dataclasses.replace(
        shop,
        events=pl.concat([shop.events, addition], how="vertical"),
        report=dataclasses.replace(shop.report, rows_read=rows_read),
    )
    return LoggedEventsMerge(
        shop=merged,
        read=logged.height,
        added=addition.height,
        already_in_shop=well_formed.height - fresh.height,
        unknown_items=fresh.height - usable.height,
        malformed_ids=logged.height - well_formed.height,
    )


def read_logged_events(location: Path | str) -> pl.DataFrame:
    """The ``events`` frame of the log at ``location`` (a SQLite file, or a shared log's Redis URL) and
    its archive, each event once, archived first; a missing file is an error (a typo, not an empty log).
    Marks the log as read up to its newest event."""
    if is_shared_log_location(location):
        with RedisEventLog.open(str(location)) as shared:
            through = shared.last_event_rowid()
            logged = shared.events_frame(through)
            shared.set_mark(TRAINING_READ_MARK, through)
        return logged.unique("event_id", keep="first", maintain_order=True)
    path = Path(location)
    if not path.is_file():
        raise FileNotFoundError(f"event log {path}: no such file (the server creates it with --event-log)")
    with EventLog.open(path) as log:
        through = log.last_event_rowid()
        # Archive after the position is fixed: a retention run in between moves rows from the log
        # (read below, up to ``through``) into the archive, so every event is read in one of them.
        logged = log.events_frame(through)
        archived = read_archived_events(archive_folder(path))
        log.set_mark(TRAINING_READ_MARK, through)
    return pl.concat([archived, logged], how="vertical").unique("event_id", keep="first", maintain_order=True)
