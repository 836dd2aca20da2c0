"""The event log's retention by hand: ``persona-engine archive-events``.

A server with ``--event-log`` moves old events to the archive by itself every hour
(``serving.log_upkeep``); this command does the same for a log no server is running on, or at once.
Imports stay inside the function so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from cli.arguments import event_log_file, positive_float
from cli.errors import UserError
from cli.json_output import emit_json
from cli.subcommand import Subcommands, add_command
from training.console_output import print_table

ARCHIVE_EVENTS_EXAMPLES = """
    an event moves to <log>.archive/ (Parquet) when it happened before the drift window (56 days by
    default) and a training run has read it; served decisions and their outcomes move once they
    happened before the same cutoff. Training, evaluate-policy and experiment-report read the log
    and the archive together, each row once. Nothing is ever deleted without being in the archive first.

    the log keeps the id of every record it archived (about 59 bytes each), so that a client's retry
    of it is still a duplicate. --forget-ids-after-days N drops the ids archived more than N days ago:
    a retry within N days of the record's arrival is then still a duplicate, a later one is stored
    again (and read once all the same). Without it, ids are kept for good.

    examples:
      persona-engine archive-events --event-log run/events.sqlite
      persona-engine archive-events --event-log run/events.sqlite --older-than-days 90 --json
      persona-engine archive-events --event-log run/events.sqlite --forget-ids-after-days 30
    """


def add_archive_events_command(sub: Subcommands) -> None:
    command = add_command(
        sub,
        "archive-events",
        "move old event log events that training has read to the log's Parquet archive",
        ARCHIVE_EVENTS_EXAMPLES,
        cmd_archive_events,
    )
    command.add_argument(
        "--event-log", type=event_log_file, required=True, help="the server's event log (SQLite)"
    )
    command.add_argument(
        "--older-than-days",
        type=positive_float,
        help="move events older than this many days (default: the drift window, 4 drift half-lives)",
    )
    command.add_argument(
        "--forget-ids-after-days",
        type=positive_float,
        metavar="DAYS",
        help="drop the ids of records archived more than DAYS ago (default: keep them for good)",
    )


def cmd_archive_events(args: argparse.Namespace) -> int:
    from engine.live.event_archive import archive_events, archive_folder
    from engine.live.event_log import EventLog, EventLogError
    from engine.personas.drift import WINDOW_HALF_LIVES, DriftConfig

    path: Path = args.event_log  # there: checked when parsed (the server creates it with --event-log)
    days = (
        WINDOW_HALF_LIVES * DriftConfig().half_life_days
        if args.older_than_days is None
        else args.older_than_days
    )
    before = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    try:
        with EventLog.open(path) as log:
            forget = (
                None if args.forget_ids_after_days is None else dt.timedelta(days=args.forget_ids_after_days)
            )
            run = archive_events(log, archive_folder(path), before, forget_ids_after=forget)
            counts = log.counts()
    except EventLogError as error:
        raise UserError(str(error)) from None
    if args.json:
        left = {f"{table}_in_log": count for table, count in counts.items()}
        emit_json({**run.to_dict(), **left, "archive": str(archive_folder(path))})
        return 0
    print_table(
        f"event log retention: {path}",
        ["rows", "moved", "left in the log"],
        [
            ["events", run.moved, counts["events"]],
            ["decisions (served arms)", run.decisions_moved, counts["decisions"]],
            ["outcomes", run.outcomes_moved, counts["outcomes"]],
        ],
    )
    print(
        f"{len(run.parts)} parts written to {archive_folder(path)}; rows that happened before "
        f"{run.before.date().isoformat()} could move (events only once training had read them: "
        f"through position {run.training_read_through})"
    )
    assert run.archived_ids is not None  # counted: archive_events' default
    kept = (
        f"the log keeps {run.archived_ids:,} ids of archived records, so that retries of them are duplicates"
    )
    if args.forget_ids_after_days is not None:
        kept += f" ({run.forgotten_ids:,} archived over {args.forget_ids_after_days:g} days ago dropped)"
    print(kept)
    return 0
