"""The serving benchmark's artifact: a synthetic shop trained once per size, config and code version.

Building the large artifact takes a minute or two on 2 cores (generating the shop about 25 s, training
about 45 s on 2026-12-06; 40 minutes when this cache was written), and every phase of a run must serve
the same build, so it is cached under ``benchmarks/.cache/`` with a key covering the shop size, the
served model, the config's text and a digest of the code that shapes an artifact; any change rebuilds,
an unchanged tree reuses. Generating and training each run in their own process so that their wall time
and peak memory are measured and kept with the build.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from serving.server_process import child_environment
from training.console_output import stderr_console

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
BENCHMARKS_DIR: Final = Path(__file__).resolve().parent
CACHE_DIR: Final = BENCHMARKS_DIR / ".cache"
# Source folders whose code decides what an artifact contains: a change in any file there rebuilds.
CODE_FOLDERS: Final = ("engine", "training")


def code_version() -> str:
    """A digest of every source file that shapes an artifact (working tree, committed or not)."""
    digest = hashlib.sha256()
    for folder in CODE_FOLDERS:
        for path in sorted((REPO_ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".toml") and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(REPO_ROOT)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class ShopSize:
    customers: int
    items: int
    events: int
    seed: int = 7

    def label(self) -> str:
        return f"{self.customers}x{self.items}x{self.events}"


@dataclass(frozen=True)
class BuildStep:
    """One build subprocess: wall seconds, peak resident memory, and its JSON output when it gave one."""

    seconds: float
    peak_rss_mb: float
    output: dict[str, Any] = field(default_factory=dict)


def run_measured(command: Sequence[str], log: Path) -> BuildStep:
    """Run ``command`` to completion; its own peak RSS comes from ``wait4`` (children of children are
    not counted, and the training CLI runs in one process)."""
    with open(log, "ab") as err, tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=out, stderr=err, env=child_environment())
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        text = out.read().decode("utf-8", errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with status {process.returncode}; see {log}")
    try:
        output = json.loads(text) if text.lstrip().startswith("{") else {}
    except json.JSONDecodeError:
        output = {}
    return BuildStep(seconds, usage.ru_maxrss / 1024.0, output)


def ensure_artifact(
    size: ShopSize, config: Path, model: str, *, rebuild: bool = False
) -> tuple[Path, dict[str, Any]]:
    """The artifact for ``size`` trained with ``config`` by this code version, built when missing.

    The cache key covers the size, the served model, the config's text and the code version, so a
    stale artifact is never reused; older builds of the same size and config are removed when a new
    one is made. (``--artifact`` serves a kept build across code changes, when that is what is wanted.)
    """
    config_text = config.read_text(encoding="utf-8")
    key = hashlib.sha256(f"{size}\n{model}\n{config_text}\n{code_version()}".encode()).hexdigest()[:12]
    prefix = f"serving-{size.label()}-{config.stem}-"
    folder = CACHE_DIR / f"{prefix}{key}"
    marker = folder / "build.json"
    if marker.is_file() and not rebuild:
        build = json.loads(marker.read_text(encoding="utf-8"))
        build["cached"] = True
        return folder / "artifacts" / "latest", build
    for stale in CACHE_DIR.glob(f"{prefix}*"):
        shutil.rmtree(stale, ignore_errors=True)
    folder.mkdir(parents=True)
    log = folder / "build.log"
    python = sys.executable
    try:
        stderr_console.print(f"building the {size.label()} shop and artifact in {folder} (log: {log})")
        generate = run_measured(
            [
                python, "-m", "cli", "generate", "--out", str(folder / "shop"),
                "--customers", str(size.customers), "--items", str(size.items),
                "--events", str(size.events), "--seed", str(size.seed),
            ],
            log,
        )  # fmt: skip
        train = run_measured(
            [
                python, "-m", "benchmarks.serving_latency", "--build-artifact", str(folder / "shop"),
                str(folder / "artifacts"), "--config", str(config), "--model", model,
            ],
            log,
        )  # fmt: skip
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    build = {
        "key": key,
        "code_version": code_version(),
        "config": str(config.relative_to(REPO_ROOT) if config.is_relative_to(REPO_ROOT) else config),
        "customers": size.customers,
        "items": size.items,
        "events": size.events,
        "generate_seconds": generate.seconds,
        "generate_peak_rss_mb": generate.peak_rss_mb,
        "train_seconds": train.seconds,
        "train_peak_rss_mb": train.peak_rss_mb,
        "train_steps_seconds": train.output.get("steps_seconds", {}),
        "fit_seconds": train.output.get("fit_seconds", {}),
        "train_events": train.output.get("train_events"),
        "model_customers": train.output.get("model_customers"),
        "artifact_mb": sum(p.stat().st_size for p in (folder / "artifacts").rglob("*") if p.is_file())
        / 2**20,
    }
    marker.write_text(json.dumps(build, indent=2) + "\n", encoding="utf-8")
    build["cached"] = False
    return folder / "artifacts" / "latest", build


def build_serving_artifact(
    config_path: Path, data_dir: Path, output_root: Path, model: str
) -> dict[str, Any]:
    """The training job's own steps (``training.train_job``) minus offline evaluation; returns timings.

    Offline evaluation says nothing about serving and does not scale to a million customers (it
    scores every evaluation customer in one dense customers x items matrix), so the benchmark leaves
    it out; everything serving reads is written exactly as ``persona-engine train`` writes it. With
    evaluation gone, train's split fit only precedes its refit, so the build fits once, on what train
    serves: all events and all customers unless the config sets ``[output] refit_on_all_events =
    false`` (then the split's models, its cold-start hold-out included). The served model is recorded
    as the artifact's best model.
    """
    from engine.artifact import data_fingerprint, library_versions
    from training.config import load_config
    from training.prepared_data import load_training_shop, prepare, prepare_all_events
    from training.served_models import MANIFEST_KEY as SERVED_MODELS
    from training.stage_timings import StageTimings
    from training.train_job import (
        fit_decisions,
        fit_models,
        library_fit_seconds,
        served_models_record,
        write_artifact,
    )

    config = load_config(config_path)
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, path=str(data_dir)),
        output=dataclasses.replace(config.output, root=str(output_root)),
    )
    refit = config.output.refit_on_all_events
    if model not in config.models:
        raise ValueError(f"{config_path}: no [models.{model}] to serve; it trains {', '.join(config.models)}")
    timings = StageTimings()  # the train job's stage records, parts included (benchmarks.training_cost)
    started = time.perf_counter()
    with timings.stage("prepare"):  # explained inside, as train does: the encoded events are freed after
        if refit:
            with timings.stage("load"):
                shop, logged_events = load_training_shop(config, data_path=data_dir)
            prepared = prepare_all_events(
                config, shop, logged_events=logged_events, timings=timings, explain=True
            )
            del shop
        else:
            prepared = prepare(config, data_path=data_dir, timings=timings, explain=True)
    with timings.stage("fit_models"):
        models, fit_seconds = fit_models(prepared, config, show_progress=False)
    with timings.stage("decisions"):
        estimates = fit_decisions(prepared)
    manifest_fields = {
        "created_by": "benchmarks.serving_latency (persona-engine train without offline evaluation)",
        "config": config.to_dict(),
        "data_fingerprint": data_fingerprint(sorted(p for p in data_dir.glob("*.*") if p.is_file())),
        "library_versions": library_versions(),
        "metrics": [],
        "fit_seconds": fit_seconds,
        "summary": {
            "best_model": model,
            "customers": len(prepared.customers),
            "model_customers": len(prepared.model_customers),
            "items": len(prepared.items),
            "train_events": prepared.split.train_events.height,
        },
        "models": sorted(models),
        "personas": list(prepared.catalog.ids),
        SERVED_MODELS: served_models_record(
            prepared,
            refit=refit,
            fit_seconds=fit_seconds,
            seconds=None,  # no split fit came before: the build's fit is the served one
            persona_accuracy=None,
            library_fit_seconds=library_fit_seconds(models),
        ),
    }
    with timings.stage("write_artifact"):
        write_artifact(prepared, config, models, estimates, manifest_fields, timings=timings)
    seconds = {stage["stage"]: stage["seconds"] for stage in timings.stages}
    prepare_stage = next(stage for stage in timings.stages if stage["stage"] == "prepare")
    parts = {part["stage"]: part["seconds"] for part in prepare_stage["parts"]}
    steps = {
        "prepare (load, split, persona inference)": seconds["prepare"] - parts["explanations"],
        "mix explanations": parts["explanations"],
        "fit models": seconds["fit_models"],
        "fit offer and layout estimates": seconds["decisions"],
        "write artifact": seconds["write_artifact"],
    }
    return {
        "seconds": time.perf_counter() - started,
        "stages": timings.to_json(),
        "persona_inference_seconds": (
            prepared.inference.fit_summary.seconds if prepared.inference.fit_summary else None
        ),
        "customers": len(prepared.customers),
        "items": len(prepared.items),
        "steps_seconds": steps,
        "fit_seconds": fit_seconds,
        "library_fit_seconds": library_fit_seconds(models),
        "train_events": prepared.split.train_events.height,
        "model_customers": len(prepared.model_customers),
    }


def existing_build(artifact: Path) -> dict[str, Any]:
    """What is known of how an artifact given with ``--artifact`` was built: its cache entry's record
    when it comes from ``benchmarks/.cache``, else nothing."""
    for folder in (artifact, *artifact.resolve().parents):
        marker = folder / "build.json"
        if marker.is_file():
            build: dict[str, Any] = json.loads(marker.read_text(encoding="utf-8"))
            build["cached"] = True
            return build
        if folder == CACHE_DIR:
            break
    return {"cached": True}
