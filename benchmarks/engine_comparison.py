"""One training run per engine, each in its own process, timed from outside with its peak memory.

``persona-engine train`` runs as a subprocess so that what is measured is what a user pays: the wall
time from start to artifact (for Spark including the JVM's start and the Python workers), and the peak
resident memory of the whole process tree (driver, JVM, Python workers: ``VmRSS`` of every
descendant, summed, sampled every 0.2 s). Both engines train the same config and data with the same
models, the ones the Spark engine trains (popularity, persona popularity, ALS).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.linux_processes import process_tree

_SAMPLE_SECONDS = 0.2


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        return 0.0
    return 0.0


def tree_rss_mb(root: int) -> float:
    """Summed resident memory of ``root`` and all its descendants, in MB."""
    return sum(_rss_mb(pid) for pid in process_tree(root))


@dataclass(frozen=True)
class EngineRun:
    engine: str
    seconds: float
    peak_rss_mb: float
    stages: list[dict[str, Any]]
    metrics: list[dict[str, Any]]
    persona_inference_seconds: float | None

    def ndcg(self, model: str) -> float | None:
        return next((m["ndcg"] for m in self.metrics if m["model"] == model and m["segment"] == "all"), None)


def train_json_measured(arguments: list[str], label: str) -> tuple[dict[str, Any], float, float]:
    """``persona-engine train <arguments> --json --no-progress`` in a subprocess: its JSON, wall seconds
    and the peak RSS of the process tree (sampled every 0.2 s: Spark's JVM is a child process)."""
    argv = [sys.executable, "-m", "cli", "train", *arguments, "--json", "--no-progress"]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    peak = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_mb(process.pid))
            done.wait(_SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{label} exited {process.returncode}: {err.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(out)
    return result, seconds, peak


def train_once(config: Path, engine: str, output: Path, master: str = "local[2]") -> EngineRun:
    """``persona-engine train --config config --engine engine --json`` in a subprocess, measured."""
    arguments = ["--config", str(config), "--engine", engine, "--output", str(output)]
    if engine == "spark":
        arguments += ["--master", master]
    result, seconds, peak = train_json_measured(arguments, f"train --engine {engine}")
    summary = result["summary"]
    return EngineRun(
        engine=engine,
        seconds=seconds,
        peak_rss_mb=peak,
        stages=summary.get("stages", []),
        metrics=result["metrics"],
        persona_inference_seconds=summary.get("persona_inference_seconds"),
    )
