"""The event log's upkeep in a process of its own, beside the workers of ``serve --workers N``.

A live-state snapshot replays the events logged since the previous one into a private store: a few
seconds of pure-Python work each minute on a busy shop. Run on a thread of worker 0, as it used to
be, it took that worker's interpreter lock from its request handlers: the soak benchmark's worker 0
answered at a p99 of a second while worker 1 stayed under 0.35 s, and its resident memory kept
growing with the snapshots' garbage. Here the supervisor forks one more process that serves nothing:
it loads the artifact the workers serve, keeps only what a snapshot needs (the persona model, the
items and the customers' mixes), runs ``serving.log_upkeep.LogUpkeep`` (snapshots and retention) and
follows reloads. It runs at a lower CPU priority (``NICENESS``), so on a busy machine page renders
come first and the snapshot waits; the snapshot's replay itself runs on a ``SCHED_IDLE`` thread
(``serving.idle_priority``), which yields its core to any worker thread that wakes. The supervisor
restarts it when it dies; serving never depends on it (a worker's start-up replays whatever tail the
newest snapshot leaves).

A one-process server starts the same process itself (``UpkeepChild``): on a thread it shared the
interpreter lock with the request handlers after all.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Final

from engine.live.live_state import LiveState
from engine.live.state_store import MemoryStateStore
from serving.log_upkeep import LogUpkeep
from serving.model_holder import DesiredModel, SharedModelState, load_model
from serving.process_lifecycle import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    stop_on_signals,
    supervisor_environment,
    supervisor_gone,
    supervisor_pid,
)
from serving.redis_state_store import MEMORY
from serving.settings import ENV_READY_FILE, ServeSettings
from serving.worker_supervisor import RestartBudget, restarted_upkeep, worker_command

LOGGER = logging.getLogger("persona_engine.server")

# Linux nice values run from -20 to 19; at 10 a busy worker gets about ten times the CPU share of
# this process, and an idle machine still runs it at full speed.
NICENESS: Final = 10
FOLLOW_INTERVAL_S: Final = 2.0
STOP_WAIT_S: Final = 10.0  # a stopping server waits this long for its upkeep child, then kills it


class _ArtifactFollower:
    """Keeps the live state's artifact (persona model, items, mixes) equal to the one the workers serve.

    Only the artifact matters to a snapshot, not which of its models serves: a reload that switches
    model within one artifact loads nothing here.
    """

    def __init__(self, shared: SharedModelState, settings: ServeSettings, live_state: LiveState) -> None:
        self.shared = shared
        self.settings = settings
        self.live_state = live_state
        self.artifact_path = ""
        self._refused_generation = -1  # a generation whose artifact failed to load: not tried again

    def apply(self, desired: DesiredModel) -> bool:
        """Attach ``desired``'s artifact unless it is attached already; False when it cannot be loaded."""
        if desired.artifact_path == self.artifact_path:
            return True
        if desired.generation == self._refused_generation:
            return False
        try:
            loaded = load_model(
                Path(desired.artifact_path), desired.model_name or None, self.settings.artifact_verifier
            )
        except Exception:  # the workers refuse it too; the snapshot keeps the artifact it had
            LOGGER.exception(
                "event log upkeep: cannot load %s; keeping the previous artifact", desired.artifact_path
            )
            self._refused_generation = desired.generation
            return False
        self.live_state.attach(loaded.personalizer)  # the states keep the scorer and mixes, not the model
        self.artifact_path = desired.artifact_path
        LOGGER.info("event log upkeep follows artifact %s", loaded.personalizer.artifact.version)
        return True

    def follow(self) -> None:
        try:
            self.apply(self.shared.read())
        except Exception:  # an unreadable state file: try again at the next interval
            LOGGER.exception(
                "event log upkeep: checking %s for a newer artifact failed", self.shared.state_file
            )


def run_upkeep_process(settings: ServeSettings, *, stop: threading.Event | None = None) -> int:
    """The body of the upkeep process: snapshots and retention until SIGTERM/SIGINT (or ``stop``)."""
    if settings.event_log is None or settings.run_dir is None:
        LOGGER.error("the event log upkeep process needs --event-log and --run-dir")
        return EXIT_USAGE
    supervisor = supervisor_pid()  # now, before a start that takes seconds
    stop = stop or threading.Event()
    with stop_on_signals(stop):
        os.nice(NICENESS)
        shared = SharedModelState(settings.run_dir)
        live_state = LiveState(MemoryStateStore())  # never read: each snapshot replays into its own store
        follower = _ArtifactFollower(shared, settings, live_state)
        try:
            if not follower.apply(shared.read()):
                return EXIT_FAILURE
        except RuntimeError as error:  # the shared state file is unreadable
            LOGGER.error("%s", error)
            return EXIT_FAILURE
        # With Redis the state outlives restarts: nothing to snapshot, only retention to do.
        forget = settings.forget_archived_ids_after_days
        upkeep = LogUpkeep(
            settings.event_log,
            live_state,
            snapshots=settings.state == MEMORY,
            forget_ids_after=None if forget is None else dt.timedelta(days=forget),
        )
        upkeep.start()
        LOGGER.info(
            "event log upkeep running for %s (pid %d, nice %d)", settings.event_log, os.getpid(), NICENESS
        )
        try:
            while not stop.wait(FOLLOW_INTERVAL_S):
                if supervisor_gone(supervisor):  # reparented: the supervisor is gone, so are the workers
                    LOGGER.error("the supervising process exited; stopping the event log upkeep")
                    break
                follower.follow()
        finally:
            upkeep.close()
    LOGGER.info("event log upkeep ended")
    return EXIT_OK


class UpkeepChild:
    """The upkeep process of a one-process server: the same ``--upkeep-process`` the supervisor of
    ``--workers N`` runs, started and watched by the serving process itself.

    On a thread of the serving process, a snapshot's replay held the interpreter lock its request
    handlers need: in the serving benchmark's 1-worker mixed workload, the snapshot after 10,000 logged
    events ("1990 customers through event 13150 in 1.4s") put Personalize's open-loop p99 near half a
    second for that phase (52-75 x its p99 alone; 2 workers, whose upkeep is a process: 1.05 x). The
    child follows the artifact the server serves through a run directory of its own
    (``SharedModelState``), which the server updates after every reload (``follow``). It is spawned,
    not forked: the serving process already runs gRPC's threads. A dead child is restarted (at most
    ``MAX_RESTARTS`` within the window, then given up: serving never depends on it); it stops when the
    server stops, or by itself when its parent is gone.
    """

    def __init__(self, settings: ServeSettings, artifact_path: Path, model_name: str) -> None:
        self._settings = settings
        self._served = (artifact_path, model_name)
        self._run_dir: Path | None = None
        self.shared: SharedModelState | None = None
        self._command: list[str] = []
        self._budget = RestartBudget()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.process: subprocess.Popen[bytes] | None = None
        self._watcher = threading.Thread(target=self._watch, name="event-log-upkeep-watcher", daemon=True)

    def start(self) -> None:
        """Create the child's run directory and spawn it (once the server serves)."""
        self._run_dir = Path(tempfile.mkdtemp(prefix="persona-engine-upkeep-"))
        self.shared = SharedModelState.create(self._run_dir, *self._served)
        arguments = worker_command(self._settings, self._settings.address, self._run_dir, 0)[3:]
        self._command = [sys.executable, "-m", "serving.server", *arguments, "--upkeep-process"]
        with self._lock:
            self.process = self._spawn()
        self._watcher.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        environment = {**os.environ, **supervisor_environment()}  # it stops without this server
        environment.pop(ENV_READY_FILE, None)  # the server writes it, not its upkeep
        return subprocess.Popen(self._command, env=environment)

    def follow(self, artifact_path: Path, model_name: str, version: str) -> None:
        """Tell the child which artifact the server serves now (after a reload)."""
        self._served = (artifact_path, model_name)
        if self.shared is not None:
            with self.shared.exclusive():
                self.shared.publish(artifact_path, model_name, version)

    def _watch(self) -> None:
        while not self._stop.wait(FOLLOW_INTERVAL_S):
            with self._lock:
                if self._stop.is_set():
                    return
                self.process = restarted_upkeep(self.process, self._budget, self._spawn)
                if self.process is None:
                    return

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._watcher.is_alive():
            self._watcher.join(timeout=FOLLOW_INTERVAL_S * 2)
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
