"""How a server process ends: the signals that ask it to stop and the exit statuses it reports.

The single-process server and the worker supervisor stop the same way (SIGTERM or SIGINT sets one
event that their main loops wait on) and report the same statuses, which supervisors such as systemd
and Kubernetes read: 0 after a clean stop, 2 for a configuration the server cannot start with
(bad flag, artifact, port), 1 for anything that went wrong after it started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Final

LOGGER = logging.getLogger("persona_engine.server")

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2

# How often a main loop wakes to check its children or parent while it waits for a stop.
POLL_S: Final = 0.2
# How often a serving loop checks for a stop: a signal handler cannot wake it.
STOP_CHECK_S: Final = 0.02


# The pid of the process that started this one and whose death must end it (a worker's supervisor, a
# one-process server for its upkeep child), set by that process in the child's environment.
ENV_SUPERVISOR_PID: Final = "PERSONA_ENGINE_SUPERVISOR_PID"


def supervisor_environment() -> dict[str, str]:
    """What a process puts in the environment of a child that must not outlive it."""
    return {ENV_SUPERVISOR_PID: str(os.getpid())}


def supervisor_pid() -> int:
    """The pid this process must stop without: the one its starter named, else its parent now.

    Reading the parent only when a check begins is not enough: a child that spends seconds starting
    (imports, loading the artifact) and whose supervisor was killed meanwhile would take init, its
    new parent, for the supervisor and serve on, or keep the event log busy, forever. The pid given
    at birth has no such gap.
    """
    given = os.environ.get(ENV_SUPERVISOR_PID, "")
    return int(given) if given.isdigit() else os.getppid()


def supervisor_gone(supervisor: int) -> bool:
    """Whether this process was reparented away from ``supervisor`` (it exited)."""
    return os.getppid() != supervisor


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` (main thread only; elsewhere the caller owns ``stop``)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        LOGGER.info("received %s", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
