"""Processes as Linux's ``/proc`` shows them: a process tree, a process's state and CPU times, and
stopping a set of processes for a while. A benchmarked server is several processes (supervisor,
workers, upkeep), so the benchmarks find them as a tree and read or stop each one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

FREEZE_TIMEOUT_S: Final = 2.0  # how long ``frozen`` waits for its processes to have stopped


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it, parents first (Linux ``/proc``; gone processes left out)."""
    tree, index = [pid], 0
    while index < len(tree):
        for task in Path(f"/proc/{tree[index]}/task").glob("*"):
            with contextlib.suppress(OSError):
                tree += [int(child) for child in (task / "children").read_text(encoding="ascii").split()]
        index += 1
    return tree


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first); None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    except OSError:
        return None


def process_state(pid: int) -> str:
    """The state letter of ``/proc/<pid>/stat`` ("R", "S", "T" for stopped, ...); "" when it is gone."""
    fields = _stat_fields(pid)
    return fields[0] if fields else ""


@contextlib.contextmanager
def frozen(pids: Sequence[int]) -> Iterator[None]:
    """Stop ``pids`` (SIGSTOP) for the length of the block, then let them go on (SIGCONT), whatever
    happens in it. Why: an idle server still wakes about 50 times a second per worker (its event-loop
    thread; gRPC's timer threads and the supervisor a few times more), and on this 2-core machine a
    neighbour's wake-ups cost the measured server 5-8% of its closed-loop calls/s
    (benchmarks/README.md, "The gRPC floor"); a stopped process never wakes. Gone processes are
    skipped."""
    stopped: list[int] = []
    try:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        deadline = time.monotonic() + FREEZE_TIMEOUT_S  # a signal lands when the process next runs
        while time.monotonic() < deadline and any(
            process_state(pid) not in ("T", "t", "") for pid in stopped
        ):
            time.sleep(0.001)
        yield
    finally:
        for pid in reversed(stopped):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def cpu_seconds(pids: Sequence[int]) -> dict[int, tuple[float, float]]:
    """User and system CPU seconds of each process so far (Linux ``/proc``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[float, float]] = {}
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            out[pid] = (int(fields[11]) / ticks, int(fields[12]) / ticks)
    return out
