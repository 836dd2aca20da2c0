"""The server's background upkeep of its event log: live-state snapshots and retention.

One process of a server does it, with its own connections to the log: a process of its own at a
lower CPU priority, beside the workers of ``--workers N`` or as the child of a one-process server
(``serving.upkeep_process``), so that no request handler waits for the interpreter lock while a
snapshot replays. Within that process the replay runs on a ``SCHED_IDLE`` thread
(``serving.idle_priority``), so a worker's loop that wakes takes the core at once, unless it waits for
idle CPU too long (below). A file lock beside the log keeps two servers sharing one log from doing it
at once.

- With the in-memory state store, the live-state snapshot is advanced to the end of the log
  (``engine.live.live_state.LiveState.write_snapshot``) every ``SNAPSHOT_INTERVAL_S`` (first
  ``FIRST_SNAPSHOT_S`` after start), and sooner whenever ``SNAPSHOT_TAIL_EVENTS`` events have been
  logged since the newest snapshot (checked every ``SNAPSHOT_CHECK_S``, at most one snapshot per
  ``SNAPSHOT_MIN_GAP_S``). A restart replays that tail, so its length, not the time since the last
  snapshot, decides how long a restart takes: a busy shop logging a thousand events a second would
  otherwise leave a minute of events to replay, and a server that crashes within seconds of every
  start (the crash benchmark's rounds) would never snapshot at all and replay more at every restart.
  With Redis the state outlives restarts and there is nothing to snapshot.
- A snapshot waits for idle CPU at most ``SNAPSHOT_IDLE_PATIENCE_S``, and not at all once the tail has
  reached ``SNAPSHOT_OVERDUE_EVENTS`` or when it is the first one after a start that replayed a tail of
  ``SNAPSHOT_TAIL_EVENTS`` or more: then it replays on the upkeep thread, at the upkeep process's own
  priority (nice 10). Why: on cores that never idle, a ``SCHED_IDLE`` thread gets next to no CPU,
  and in the crash benchmark (2 workers saturated by RecordEvents, SIGKILL every 2-6 s) no snapshot
  finished, so each restart replayed the tails of all the rounds before it: 24,280, 31,120 and 37,520
  events in its last three rounds, restarts of up to 9.7 s, where the snapshot at nice 10 had kept
  every tail under 16,200 events. The patience alone still let tails reach 32,220 (the kill comes
  first); with the first-after-start rule they stayed at 18,280 and 14,880 in two runs. Such replays
  cost the reads they overlap what nice 10 cost them (the idle-priority module's figures): the price
  of bounded restarts. The periodic snapshots of a server that is up keep the idle thread.
- Every ``RETENTION_INTERVAL_S`` (first ``FIRST_RETENTION_S`` after start), events older than the drift
  window that a training run has read, and served decisions and outcomes older than it, move to the
  Parquet archive (``engine.live.event_archive``); with ``forget_ids_after``
  (``serve --forget-archived-ids-after-days``) the ids of records archived longer ago than that are
  dropped too. ``persona-engine archive-events`` does the same by hand.

A failed round is logged and tried again at the next interval; it never stops the server.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from pathlib import Path
from typing import Final

from engine.live.event_archive import archive_events, archive_folder
from engine.live.event_log import EventLog
from engine.live.live_state import LiveState, window_start
from engine.live.live_state_snapshot import LiveStateSnapshot, newest_snapshot_rowid, snapshot_folder
from serving.idle_priority import IdlePriorityThread

LOGGER = logging.getLogger("persona_engine.server")

FIRST_SNAPSHOT_S: Final = 5.0
SNAPSHOT_INTERVAL_S: Final = 60.0
# About 2 s of replay per worker at start-up (0.2 ms an event): the start-up target is 5 s to SERVING.
SNAPSHOT_TAIL_EVENTS: Final = 10_000
SNAPSHOT_CHECK_S: Final = 1.0
SNAPSHOT_MIN_GAP_S: Final = 5.0
# Longer than a snapshot takes on the idle thread beside a loaded but not saturated server (2.3-3.4 s
# for 6,600-11,200 events in the serving benchmark's mixed workload), short against the interval.
SNAPSHOT_IDLE_PATIENCE_S: Final = 10.0
# A tail this long no longer waits for idle CPU: about 4 s of replay per worker at the next start.
SNAPSHOT_OVERDUE_EVENTS: Final = 2 * SNAPSHOT_TAIL_EVENTS
FIRST_RETENTION_S: Final = 60.0
RETENTION_INTERVAL_S: Final = 3_600.0


def retention_cutoff(live_state: LiveState, now: dt.datetime | None = None) -> dt.datetime:
    """Events that happened before this are past the drift window: live state no longer replays them."""
    now = now or dt.datetime.now(dt.UTC)
    return window_start(live_state.config, now)


class LogUpkeep:
    """The upkeep thread of one server process; ``close`` stops it (within one page of work)."""

    def __init__(
        self,
        event_log: Path,
        live_state: LiveState,
        *,
        snapshots: bool | None = None,
        forget_ids_after: dt.timedelta | None = None,
    ) -> None:
        """``snapshots``: whether to write live-state snapshots (default: when ``live_state`` is kept in
        process memory, the only state a restart has to rebuild). ``forget_ids_after``: how long the
        log keeps the ids of archived records (None: for good)."""
        self.path = event_log
        self.forget_ids_after = forget_ids_after
        self.live_state = live_state
        self.snapshots = live_state.is_process_local if snapshots is None else snapshots
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-log-upkeep", daemon=True)
        self._tail_log: EventLog | None = None  # the tail check's own connection, opened on first use
        # The snapshot's replay runs on a SCHED_IDLE thread of its own (serving.idle_priority): it is
        # CPU work that must not delay a page render, and it holds no lock RecordEvents waits for.
        self._idle = IdlePriorityThread("live-state-snapshot")
        self._idle_attempt: Future[LiveStateSnapshot | None] | None = None  # the idle thread's last one
        self._first_snapshot = True  # until the first snapshot of this start has been tried

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._close_tail_log()
            self._idle.close()

    def _loop(self) -> None:
        started = time.monotonic()
        next_snapshot = started + FIRST_SNAPSHOT_S
        next_check = started  # at once: a start-up that replayed a long tail snapshots it first
        last_snapshot = -math.inf
        next_retention = started + FIRST_RETENTION_S
        snapshots = self.snapshots
        while True:
            wake = min(next_snapshot, next_check, next_retention) if snapshots else next_retention
            if self._stop.wait(max(0.0, wake - time.monotonic())):
                return
            now = time.monotonic()
            if snapshots and (
                now >= next_snapshot
                or (
                    now >= next_check
                    and now - last_snapshot >= SNAPSHOT_MIN_GAP_S
                    and self._tail_events() >= SNAPSHOT_TAIL_EVENTS
                )
            ):
                self._locked(self._snapshot)
                last_snapshot = time.monotonic()
                next_snapshot = last_snapshot + SNAPSHOT_INTERVAL_S
            if now >= next_check:
                next_check = time.monotonic() + SNAPSHOT_CHECK_S
            if now >= next_retention:
                self._locked(self._retention)
                next_retention = time.monotonic() + RETENTION_INTERVAL_S

    def _tail_events(self) -> int:
        """Events logged after the newest snapshot (all when there is none): what a restart replays.

        Asked every second, on one connection the thread keeps: opening the log runs its schema check
        in a write transaction, which would contend with RecordEvents' commits once a second.
        """
        try:
            if self._tail_log is None:
                self._tail_log = EventLog.open(self.path)
            return self._tail_log.last_event_rowid() - newest_snapshot_rowid(snapshot_folder(self.path))
        except Exception:  # an unreadable log is the snapshot's own failure to report, at its interval
            LOGGER.debug("could not count the events after the newest snapshot", exc_info=True)
            self._close_tail_log()
            return 0

    def _close_tail_log(self) -> None:
        if self._tail_log is not None:
            with contextlib.suppress(Exception):
                self._tail_log.close()
            self._tail_log = None

    def _locked(self, work: Callable[[EventLog], None]) -> None:
        """Run ``work`` holding the log's upkeep lock; skipped when another process holds it."""
        lock_path = self.path.with_name(self.path.name + ".upkeep.lock")
        try:
            with open(lock_path, "a+b") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return
                with EventLog.open(self.path) as log:
                    work(log)
        except Exception:  # logged and retried at the next interval; upkeep never stops serving
            LOGGER.exception("event log upkeep failed; trying again at the next interval")

    def _snapshot(self, log: EventLog) -> None:
        started = time.perf_counter()
        folder = snapshot_folder(self.path)
        idle_free = self._idle_attempt is None or self._idle_attempt.done()
        tail = self._tail_events()
        # The first snapshot after a start that found a long tail: the workers have just replayed it,
        # and a crash before it is written makes the next start replay it again, and more.
        after_replay = self._first_snapshot and tail >= SNAPSHOT_TAIL_EVENTS
        self._first_snapshot = False
        done, snapshot = False, None
        if after_replay:
            where = "at the upkeep's priority: the tail the start replayed"
        elif not idle_free or tail >= SNAPSHOT_OVERDUE_EVENTS:
            where = "at the upkeep's priority: overdue"
        else:
            where = "on the idle thread"
            done, snapshot = self._on_idle_thread(folder)
            if not done:
                where = "at the upkeep's priority: no idle CPU for it"
        if not done:
            snapshot = self.live_state.write_snapshot(log, folder, stop=self._stop)
        if snapshot is not None:
            LOGGER.info(
                "live state snapshot: %d customers through event %d in %.1fs (%s)",
                len(snapshot.customer_ids),
                snapshot.last_event_rowid,
                time.perf_counter() - started,
                where,
            )

    def _on_idle_thread(self, folder: Path) -> tuple[bool, LiveStateSnapshot | None]:
        """(done, snapshot) of a replay on the idle thread; not done when it waited too long for CPU.

        The attempt has a connection of its own, opened here (its schema check is a write transaction,
        which must not wait for idle CPU) and closed by the attempt: one given up keeps it until it
        next runs, sees its stop and ends without writing. Should it have finished replaying just
        before, it writes a snapshot older than the one replayed instead, which is harmless: snapshot
        files are written atomically under their last event's number, and a restart reads the newest.
        """
        connection = EventLog.open(self.path)
        attempt = threading.Event()

        def replay() -> LiveStateSnapshot | None:
            try:
                return self.live_state.write_snapshot(connection, folder, stop=attempt)
            finally:
                connection.close()

        future = self._idle.submit(replay)
        self._idle_attempt = future
        give_up_at = time.monotonic() + SNAPSHOT_IDLE_PATIENCE_S
        while True:
            try:
                return True, future.result(timeout=SNAPSHOT_CHECK_S)
            except FutureTimeoutError:
                pass
            if self._stop.is_set():  # the server stops: no snapshot now, and none at full priority
                attempt.set()
                return True, None
            waited_out = time.monotonic() >= give_up_at
            if waited_out or self._tail_events() >= SNAPSHOT_OVERDUE_EVENTS:
                attempt.set()
                LOGGER.warning(
                    "live state snapshot: %s on the idle thread; replaying at the upkeep's priority",
                    f"no idle CPU in {SNAPSHOT_IDLE_PATIENCE_S:g}s" if waited_out else "the tail grew long",
                )
                return False, None

    def _retention(self, log: EventLog) -> None:
        run = archive_events(
            log,
            archive_folder(self.path),
            retention_cutoff(self.live_state),
            stop=self._stop,
            forget_ids_after=self.forget_ids_after,
            count_ids=False,  # nobody reads the count here, and it would scan every id each hour
        )
        if run.forgotten_ids:
            LOGGER.info(
                "event log retention: %d ids of records archived before %s dropped",
                run.forgotten_ids,
                (dt.datetime.now(dt.UTC) - (self.forget_ids_after or dt.timedelta(0))).date(),
            )
        if run.moved or run.decisions_moved or run.outcomes_moved:
            LOGGER.info(
                "event log retention: %d events, %d served decisions and %d outcomes before %s moved to %s",
                run.moved,
                run.decisions_moved,
                run.outcomes_moved,
                run.before.date(),
                archive_folder(self.path),
            )
