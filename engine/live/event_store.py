"""What the server and training need of an event log, and which log a location names.

Two logs keep live traffic: the SQLite file of one machine (``engine.live.event_log``, the default)
and a Redis Streams log that a whole fleet of servers shares (``engine.live.redis_event_log``). Both
store a batch durably before it is acknowledged and idempotently by event id, give every stored event
a position that only grows, and keep named marks of positions (how far training has read). Callers
that work with either depend on ``EventStore`` only; ``open_event_store`` picks the implementation
from the location: a ``redis://``, ``rediss://`` or ``unix://`` URL is the shared log, anything else
a file path.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final, Protocol, Self

import polars as pl

from engine.live.event_log import AppendResult, EventLog
from engine.live.events import BehaviorEvent, DecisionOutcome, ServedDecision

SHARED_LOG_SCHEMES: Final = ("redis://", "rediss://", "unix://")


class EventStore(Protocol):
    """An open event log. ``path`` names it in messages (a file, or a URL without its password)."""

    @property
    def path(self) -> Path | str: ...

    def append(
        self, events: Sequence[BehaviorEvent], outcomes: Sequence[DecisionOutcome] = ()
    ) -> AppendResult:
        """Store a batch durably (acknowledged means on disk); records already stored are duplicates."""
        ...

    def log_decisions(self, decisions: Sequence[ServedDecision]) -> int:
        """Store served decisions; returns how many arms were new."""
        ...

    def decision(self, decision_id: str) -> tuple[ServedDecision, ...]:
        """Every arm served under ``decision_id``, as logged; empty when unknown."""
        ...

    def has_record(self, kind: str, record_id: str) -> bool:
        """Whether an event ("event") or outcome ("outcome") with this id is stored (archived included)."""
        ...

    def last_event_rowid(self) -> int:
        """The position of the newest stored event (0 for none)."""
        ...

    def behavior_event_pages(
        self, after_rowid: int, through_rowid: int, since: dt.datetime | None = None, page: int = 5_000
    ) -> Iterator[tuple[int, list[BehaviorEvent]]]:
        """Events at positions in (after_rowid, through_rowid], in arrival order, a page at a time."""
        ...

    def events_frame(self, through_rowid: int | None = None) -> pl.DataFrame:
        """The data contract's ``events`` table, in arrival order (up to a position when given)."""
        ...

    def mark(self, name: str) -> int:
        """A named position (0 when never set)."""
        ...

    def set_mark(self, name: str, value: int) -> None:
        """Move a named position forward, never back."""
        ...

    def counts(self) -> dict[str, int]:
        """Stored events, outcomes and decision arms."""
        ...

    def event_ids(self) -> set[str]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


def is_shared_log_location(location: str | Path) -> bool:
    """Whether ``location`` names the shared (Redis) log rather than a SQLite file."""
    return isinstance(location, str) and location.startswith(SHARED_LOG_SCHEMES)


def open_event_store(location: str | Path, *, durable: bool = True) -> EventStore:
    """Open the log at ``location``: a Redis URL (``?stream=`` names its keys) or a SQLite file.

    ``durable`` is the SQLite log's choice for decision logging (see ``EventLog.open``); the Redis log
    is always durable, since it refuses a server that does not fsync every write.
    """
    if is_shared_log_location(location):
        from engine.live.redis_event_log import RedisEventLog  # redis-py only for a shared log

        return RedisEventLog.open(str(location))
    return EventLog.open(location, durable=durable)
