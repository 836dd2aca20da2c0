"""Where a training run spends its time and memory, stage by stage, for the manifest and ``--json``.

Training cost grows with the shop in different ways per stage (persona inference with events,
evaluation with customers x items, explanations with customers), so one total says little about what
to change when a run gets slow or runs out of memory. Each stage records wall-clock seconds, CPU
seconds of the process (less sensitive to other work on the machine), the process's peak resident
memory so far (a stage that raises it is the one that needed the memory) and its resident memory when
the stage ended (what the stage left behind for the next ones: a peak says where memory was needed, the
level at the end says what is still held when the next stage adds its own).

A stage opened inside another is recorded as one of its ``parts`` (``prepare`` is loading, split,
features, persona inference and matrices), so the top-level list stays the job's outline while the
parts say which step inside a stage the time went to.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


def peak_rss_mb() -> float:
    """The process's peak resident set size so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak) / (1024 * 1024 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB elsewhere


def current_rss_mb() -> float | None:
    """The process's resident set size now, in MiB; None where ``/proc`` is not there to say."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            resident_pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


@dataclass
class StageTimings:
    """Stages in the order they ran, each a JSON-ready record (with its ``parts`` when it had any)."""

    stages: list[dict[str, Any]] = field(default_factory=list)
    _open: list[list[dict[str, Any]]] = field(default_factory=list, repr=False)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        parts: list[dict[str, Any]] = []
        self._open.append(parts)
        try:
            yield
        finally:
            self._open.pop()
        record: dict[str, Any] = {
            "stage": name,
            "seconds": time.perf_counter() - wall,
            "cpu_seconds": time.process_time() - cpu,
            **_kernel_share(usage),
            "peak_rss_mb": peak_rss_mb(),
            "rss_at_end_mb": current_rss_mb(),
        }
        if parts:
            record["parts"] = parts
        (self._open[-1] if self._open else self.stages).append(record)

    def to_json(self) -> list[dict[str, Any]]:
        return [_copy(stage) for stage in self.stages]


def _kernel_share(before: resource.struct_rusage) -> dict[str, float | int]:
    """The stage's CPU time spent in the kernel and the pages it faulted in.

    Part of ``cpu_seconds``. On a virtual machine that hands free memory back to its host, touching
    memory the process has not held for a few seconds costs the host's page fault too (on the
    benchmark machine about 4.7 s of kernel time per GB against 0.1 s for memory still held), so a
    stage's cost can be memory it touches rather than work it does; these say which.
    """
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "system_cpu_seconds": after.ru_stime - before.ru_stime,
        "minor_page_faults": after.ru_minflt - before.ru_minflt,
    }


def _copy(record: dict[str, Any]) -> dict[str, Any]:
    out = dict(record)
    if "parts" in out:
        out["parts"] = [_copy(part) for part in out["parts"]]
    return out
