"""The batches the logged events arrived in, read back from the event log: what a restart replays.

Live state folds a customer's events a batch at a time (a ``RecordEvents`` call's), and an event of a
day the customer's drift test has already committed counts only when it arrives in the same batch as
that day's events (``engine.live.customer_state``: a late event is not re-tested). So the state after a
history depends on how the events were batched, not only on which events there were, and a restart
that replayed the log in arbitrary pages ended in another state than the live path had reached when
events came out of time order (a phone's queue sent hours late, a backfill inside the drift window).
Replaying the batches as they arrived reaches the same state. A batch is the rows one ``append``
stored: they follow one another in the log and share ``received_us``, read once per batch.

Two calls that store batches of one customer at the same moment may reach live state in the other
order than the log's; only then can the replay differ from what live state saw.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Final

from engine.live.event_log import EventLog, behavior_event_from_row
from engine.live.events import BehaviorEvent

# A batch of at most this many events is replayed whole (a longer one, a bulk append's, is cut, so a
# replay's memory and the moments it can stop stay bounded); RecordEvents takes no more per call
# (``serving.event_translation.MAX_EVENTS``).
WHOLE_BATCH_EVENTS: Final = 1_000


def arrival_batches(
    log: EventLog, after_rowid: int, through_rowid: int, since: dt.datetime | None = None, page: int = 5_000
) -> Iterator[tuple[int, list[list[BehaviorEvent]]]]:
    """The events of ``log.behavior_event_pages``, each page cut into the batches they arrived in, with
    the position of the last event handed on. A batch no longer than ``page`` or
    ``WHOLE_BATCH_EVENTS`` is never cut between two pages: it waits for the next page."""
    uncut = max(page, WHOLE_BATCH_EVENTS)
    batch: list[BehaviorEvent] = []
    batch_received: int | None = None
    batch_end = after_rowid
    for rows in log.event_row_pages(after_rowid, through_rowid, since, page):
        complete: list[list[BehaviorEvent]] = []
        complete_end = batch_end
        for row in rows:
            if batch and row[1] != batch_received:
                complete.append(batch)
                complete_end = batch_end
                batch = []
            batch_received, batch_end = row[1], int(row[0])
            batch.append(behavior_event_from_row(row[2:]))
            if len(batch) >= uncut:
                complete.append(batch)
                complete_end = batch_end
                batch = []
        if complete:
            yield complete_end, complete
    if batch:
        yield batch_end, [batch]
