"""Where a training run spends its time and memory, stage by stage, for the manifest and ``--json``.

Training cost grows with the shop in different ways per stage (persona inference with events,
evaluation with customers x items, explanations with customers), so one total says little about what
to change when a run gets slow or runs out of memory. Each stage records wall-clock seconds, CPU
seconds of the process (less sensitive to other work on the machine) and the process's peak resident
memory so far (a stage that raises it is the one that needed the memory).
"""

from __future__ import annotations

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


@dataclass
class StageTimings:
    """Stages in the order they ran, each a JSON-ready record."""

    stages: list[dict[str, Any]] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.stages.append(
            {
                "stage": name,
                "seconds": time.perf_counter() - wall,
                "cpu_seconds": time.process_time() - cpu,
                "peak_rss_mb": peak_rss_mb(),
            }
        )

    def to_json(self) -> list[dict[str, Any]]:
        return [dict(stage) for stage in self.stages]
