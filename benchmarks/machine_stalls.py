"""Stalls of the machine itself, watched while a benchmark runs.

Why: on the benchmark machine a process that sleeps 2 ms at a time overslept by 17-36 ms about once
a minute while the serving benchmark ran (benchmarks README, "What moves the mixed ratio"). At 300
calls/s one such stall delays 5-10 calls at once, and a p99 over a few thousand calls is its few
dozenth slowest: a few stalls that land in one phase move a tail figure, or a ratio of two, further
than the code under test does. A run that says how often the machine stalled, and in which phases,
can be told from a run whose server stalled.

A child process (its own interpreter, so that neither the benchmark's interpreter lock nor its work
delays it) sleeps ``sleep_s`` at a time and writes every wake-up later than ``threshold_s`` after the
previous one as a line "<epoch seconds> <ms since the previous wake-up>". It asks for nothing but a
timer and a core, so what delays it delays every process of the machine: a stalled host, or cores
that all the benchmark's processes keep busy (then the wake-up waits for a time slice).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

SLEEP_S: Final = 0.005
THRESHOLD_S: Final = 0.015
STARTUP_TIMEOUT_S: Final = 30.0


def watch(out: Path, sleep_s: float, threshold_s: float) -> None:
    """The child's loop: runs until killed, writing each stall as soon as it ended.

    It runs as a batch process (Linux ``SCHED_BATCH``), so that its wake-ups do not preempt the
    processes it watches; a batch process woken on busy cores runs at the next scheduler tick, a few
    ms late, well inside the threshold. Even so the watch is not free on 2 cores (benchmarks README,
    "Machine stalls"), so the serving benchmark runs it only when asked (``--stall-watch``).
    """
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_BATCH"):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    with out.open("a", buffering=1) as lines:
        lines.write("watching\n")  # the parent waits for this before it counts the watch as started
        last = time.monotonic()
        while True:
            time.sleep(sleep_s)
            now = time.monotonic()
            if now - last > threshold_s:
                lines.write(f"{time.time():.3f} {(now - last) * 1000:.1f}\n")
            last = now


def read_stalls(path: Path) -> list[tuple[float, float]]:
    """(epoch seconds at the stall's end, its length in ms) for every complete line of the file."""
    stalls: list[tuple[float, float]] = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) == 2:
            stalls.append((float(fields[0]), float(fields[1])))
    return stalls


class StallWatch:
    """The watching child for the length of a ``with`` block; ``summary()`` afterwards."""

    def __init__(self, folder: Path, *, sleep_s: float = SLEEP_S, threshold_s: float = THRESHOLD_S) -> None:
        self.path = folder / "machine-stalls.txt"
        self.sleep_s = sleep_s
        self.threshold_s = threshold_s
        self._process: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self._ended = 0.0
        self._stalls: list[tuple[float, float]] = []

    @property
    def pid(self) -> int | None:
        """The watching child's process id while it runs."""
        return None if self._process is None or self._process.poll() is not None else self._process.pid

    def __enter__(self) -> StallWatch:
        self.path.write_text("")
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.machine_stalls",
                "--out",
                str(self.path),
                "--sleep-ms",
                f"{self.sleep_s * 1000:g}",
                "--threshold-ms",
                f"{self.threshold_s * 1000:g}",
            ],
            cwd=Path(__file__).resolve().parent.parent,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.path.read_text().startswith("watching"):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self._stop()
                code = self._process.returncode
                raise RuntimeError(f"the machine stall watcher did not start (exit status {code})")
            time.sleep(0.01)
        self._started = time.time()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._ended = time.time()
        self._stop()
        self._stalls = read_stalls(self.path)  # read now: the folder may go with the block's end

    def _stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def summary(self) -> dict[str, Any]:
        """The JSON section, once the block ended: settings, how long it watched, the stalls' count, rate,
        longest and total, and every stall (epoch end, ms) so that phases can be matched with them
        (``benchmarks.mixed_workload.slice_stalls``)."""
        stalls = self._stalls
        watched = max(self._ended - self._started, 0.0)
        lengths = [ms for _, ms in stalls]
        return {
            "sleep_ms": self.sleep_s * 1000,
            "threshold_ms": self.threshold_s * 1000,
            "watched_s": watched,
            "count": len(stalls),
            "per_minute": len(stalls) / (watched / 60) if watched > 0 else 0.0,
            "longest_ms": max(lengths, default=0.0),
            "total_ms": sum(lengths),
            "stalls": [[ended, ms] for ended, ms in stalls],
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Watch for stalls of the machine: sleep, and log every late wake-up (module doc).",
        epilog="python -m benchmarks.machine_stalls --out /tmp/stalls.txt   # until killed",
    )
    parser.add_argument("--out", type=Path, required=True, help="file the stalls are appended to")
    parser.add_argument("--sleep-ms", type=float, default=SLEEP_S * 1000, help="default: %(default)s")
    parser.add_argument(
        "--threshold-ms",
        type=float,
        default=THRESHOLD_S * 1000,
        help="a longer gap between wake-ups is a stall; default: %(default)s",
    )
    args = parser.parse_args(argv)
    if not 0 < args.sleep_ms < args.threshold_ms:
        parser.error(f"need 0 < --sleep-ms < --threshold-ms, got {args.sleep_ms:g} and {args.threshold_ms:g}")
    with contextlib.suppress(KeyboardInterrupt):  # run by hand, Ctrl-C is how it ends
        watch(args.out, args.sleep_ms / 1000, args.threshold_ms / 1000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
