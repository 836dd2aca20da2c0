"""Where ``persona-engine train`` spends its time and memory, next to the library fits it wraps.

The models the engine trains are implicit and LightFM fits; everything else (loading, split,
features, persona inference, matrices, evaluation, estimates, explanations, writing the artifact) is
the engine's own cost. This benchmark runs ``persona-engine train --json`` in a subprocess per data
set (so each has its own peak memory), reads the stage records the job writes
(``training.stage_timings``: wall, CPU and peak RSS of every stage and of each part inside one), and
then, in the same run, fits the raw library models on the very matrix the served models were fitted
on (the artifact's history rows of its model customers) with the engine models' hyperparameters.

``engine_overhead_vs_library_fit`` per data set is the wall time of everything in the run that is not
a library fit divided by the wall time of the library fits: the time the ALS, BPR and LightFM models
spent inside implicit's or LightFM's ``fit`` (or the compiled solver that stands in for implicit's
ALS), split and refit, as each model records it (``Recommender.library_fit_seconds``, the job's
``summary.library_fit_seconds`` and ``served_models.library_fit_seconds``). What an engine model's
``fit`` does around the library (its training matrix, persona and demographic vectors, activity
levels) is the engine's. Until 2026-12-05 the whole engine ``fit`` counted as library time, which
put two to three seconds of a million-customer build's engine work in the denominator; rows of the
history table before then were measured that way. The raw library fits (in a process of their own,
on the served matrix) are printed beside them.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from benchmarks.engine_comparison import train_json_measured
from training.console_output import stderr_console

REPO: Final = Path(__file__).resolve().parents[1]
ML100K: Final = REPO.parent / "shared" / "data" / "ml-100k"
ML100K_CONFIG: Final = REPO / "training" / "configs" / "ml100k-tuned.toml"
DEMO_CONFIG: Final = REPO / "training" / "configs" / "demo.toml"
SHOP_CONFIG: Final = REPO / "benchmarks" / "configs" / "serving_large.toml"
SETS: Final = ("ml-100k", "demo", "shop")


@dataclass(frozen=True)
class DataSet:
    """A data folder and the training config the benchmark trains it with."""

    name: str
    data: Path
    config: Path


@dataclass(frozen=True)
class ShopSize:
    customers: int
    items: int
    events: int


def build_sets(folder: Path, sets: list[str], shop: ShopSize, shop_config: Path) -> list[DataSet]:
    """ml-100k through its adapter (tuned config, predefined split), the demo shop as ``make demo``
    generates it (demo config), a generated shop of ``shop``'s size (``shop_config``)."""
    from cli.main import main as cli_main
    from training.synthetic_shop import ShopConfig, generate_shop

    unknown = sorted(set(sets) - set(SETS))
    if unknown:
        raise SystemExit(f"--sets: unknown data set(s) {', '.join(unknown)}; known: {', '.join(SETS)}")
    out: list[DataSet] = []
    if "ml-100k" in sets:
        if ML100K.is_dir():
            data = folder / "ml100k"
            cli_main(["adapt", "movielens", "--source", str(ML100K), "--out", str(data), "--json"])
            out.append(DataSet("ml-100k", data, ML100K_CONFIG))
        else:
            stderr_console.print(f"ml-100k skipped: {ML100K} is absent (../shared/data holds MovieLens 100K)")
    if "demo" in sets:
        generate_shop(folder / "demo", ShopConfig())
        out.append(DataSet("demo", folder / "demo", DEMO_CONFIG))
    if "shop" in sets:
        data = folder / "shop"
        stderr_console.print(f"generating a shop of {shop.customers:,} x {shop.items:,} x {shop.events:,}")
        generate_shop(data, ShopConfig(customers=shop.customers, items=shop.items, events=shop.events))
        out.append(DataSet("shop", data, shop_config))
    return out


def train_measured(data_set: DataSet, output: Path) -> dict[str, Any]:
    """``persona-engine train --json`` on ``data_set`` in a subprocess: its JSON, wall time and peak
    RSS of the process tree (the job's own stage records give per-stage peaks)."""
    arguments = ["--config", str(data_set.config), "--data", str(data_set.data), "--output", str(output)]
    result, seconds, peak = train_json_measured(arguments, f"train on {data_set.name}")
    result["process_seconds"] = seconds
    result["process_peak_rss_mb"] = peak
    return result


def raw_library_fits(config_path: Path, artifact: Path) -> dict[str, float]:
    """Seconds of each raw library fit (implicit ALS/BPR, LightFM) the config's models wrap, on the
    artifact's served training matrix, with the engine models' hyperparameters, seed and threads."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # no stubs

    from engine.artifact.contents import load_artifact
    from engine.models.base import TrainingSet
    from training.config import load_config
    from training.library_baselines import ENGINE_COUNTERPART, create_library_model, library_parameters
    from training.training_engine import LOCAL_ENGINE

    config = load_config(config_path)
    loaded = load_artifact(artifact)
    rows = loaded.customers.to_internal(list(loaded.model_customers.ids))
    interactions = loaded.history[rows].astype(np.float32)
    data = TrainingSet(
        interactions=interactions,
        user_mix=np.asarray(loaded.mix_overall[rows], dtype=np.float64),
        user_demographics=loaded.demographics[rows],
        item_features=loaded.item_features,
        persona_names=loaded.catalog.ids,
        demographic_feature_names=loaded.demographic_space.names,
        item_feature_names=loaded.item_space.names,
    )
    seconds: dict[str, float] = {}
    for library, engine_kind in ENGINE_COUNTERPART.items():
        if engine_kind not in config.models:
            continue
        settings = LOCAL_ENGINE.create_model(engine_kind, config.model_settings(engine_kind)).get_config()
        wanted = {*library_parameters(library), "random_state", "num_threads"}
        model = create_library_model(library, **{k: v for k, v in settings.items() if k in wanted})
        with threadpool_limits(1, "blas"):
            started = time.perf_counter()
            model.fit(data)
            seconds[library] = time.perf_counter() - started
    return seconds


def measure(data_set: DataSet, output: Path) -> dict[str, Any]:
    """One data set: the train run's stages and the ratio of the engine's own time to its library fits."""
    stderr_console.print(f"[{data_set.name}] persona-engine train --config {data_set.config.name}")
    run = train_measured(data_set, output)
    summary = run["summary"]
    split_fits = summary["library_fit_seconds"]
    refit = run["served_models"]["refit_on_all_events"]
    served_fits = run["served_models"]["library_fit_seconds"]
    library_fit = sum(split_fits.values()) + (sum(served_fits.values()) if refit else 0.0)
    total = float(summary["seconds"])
    stderr_console.print(f"[{data_set.name}] raw library fits on the served matrix")
    raw = raw_library_fits(data_set.config, Path(run["artifact"]))
    return {
        "data": data_set.name,
        "config": str(data_set.config.relative_to(REPO)),
        "size": {
            "customers": summary["customers"],
            "model_customers": summary["model_customers"],
            "items": summary["items"],
            "train_events": summary["train_events"],
            "test_events": summary["test_events"],
            "served_events": run["served_models"]["events"],
        },
        "train_seconds": total,
        "process_seconds": run["process_seconds"],
        "process_peak_rss_mb": run["process_peak_rss_mb"],
        "stages": summary["stages"],
        "fit_seconds": run["fit_seconds"],
        "served_fit_seconds": run["served_models"]["fit_seconds"] if refit else {},
        "library_fit_seconds": library_fit,
        "engine_overhead_seconds": total - library_fit,
        "raw_library_fit_seconds": raw,
        "persona_inference_seconds": summary.get("persona_inference_seconds"),
        "metrics": [m for m in run["metrics"] if m["segment"] == "all"],
    }


def overhead_ratio(result: dict[str, Any]) -> float | None:
    """``engine_overhead_vs_library_fit``: None when the config fits no library model."""
    library = float(result["library_fit_seconds"])
    return float(result["engine_overhead_seconds"]) / library if library > 0 else None


def cpu_overhead_ratio(result: dict[str, Any]) -> float | None:
    """The same ratio in CPU seconds, steadier than wall time on a shared machine: every stage's CPU
    time but the ``fit_models`` stages' (split and refit; popularity fits, milliseconds, count as fits
    there), over those. None when no fit used any CPU."""
    total = sum(float(stage["cpu_seconds"]) for stage in result["stages"])
    fits = 0.0
    for stage in result["stages"]:
        for record in (stage, *stage.get("parts", [])):
            if record["stage"] == "fit_models":
                fits += float(record["cpu_seconds"])
    return (total - fits) / fits if fits > 0 else None


def stage_rows(result: dict[str, Any]) -> list[list[Any]]:
    """One row per stage and per part of a stage (indented), with its share of the whole run; the RSS at
    a stage's end and the CPU time spent in the kernel (mostly faulting in fresh memory) are "-" in
    records written before stages recorded them."""
    total = float(result["train_seconds"])
    rows: list[list[Any]] = []

    def add(stage: dict[str, Any], depth: int) -> None:
        rows.append(
            [
                result["data"] if not rows else "",
                "  " * depth + stage["stage"],
                round(stage["seconds"], 2),
                round(stage["cpu_seconds"], 2),
                "-" if stage.get("system_cpu_seconds") is None else round(stage["system_cpu_seconds"], 2),
                round(stage["peak_rss_mb"]),
                "-" if stage.get("rss_at_end_mb") is None else round(stage["rss_at_end_mb"]),
                f"{100.0 * stage['seconds'] / total:.1f}%",
            ]
        )
        for part in stage.get("parts", []):
            add(part, depth + 1)

    for stage in result["stages"]:
        add(stage, 0)
    return rows


def dominant_stage(result: dict[str, Any]) -> tuple[str, float]:
    """The slowest stage or part that has no parts of its own (where the time actually went)."""
    leaves: list[tuple[str, float]] = []

    def walk(stage: dict[str, Any], prefix: str) -> None:
        name = f"{prefix}{stage['stage']}"
        if stage.get("parts"):
            for part in stage["parts"]:
                walk(part, f"{name}.")
        else:
            leaves.append((name, float(stage["seconds"])))

    for stage in result["stages"]:
        walk(stage, "")
    return max(leaves, key=lambda leaf: leaf[1])


def measure_serving_build(folder: Path, shop: ShopSize, config: Path) -> dict[str, Any]:
    """The serving benchmark's large build (``benchmarks.serving_artifact_cache``: the train job without
    offline evaluation or refit, which do not scale to a million customers) measured like ``measure``:
    the shop generated by ``persona-engine generate``, then the build in its own process."""
    import pyarrow.parquet as pq

    from benchmarks.serving_artifact_cache import run_measured

    log = folder / "build.log"
    data, root = folder / "shop", folder / "artifacts"
    stderr_console.print(
        f"[shop] generating {shop.customers:,} x {shop.items:,} x {shop.events:,} (log: {log})"
    )
    generate = run_measured(
        [
            sys.executable, "-m", "cli", "generate", "--out", str(data), "--customers", str(shop.customers),
            "--items", str(shop.items), "--events", str(shop.events), "--seed", "7",
        ],
        log,
    )  # fmt: skip
    stderr_console.print(f"[shop] serving build with {config.name}")
    build = run_measured(
        [
            sys.executable, "-m", "benchmarks.serving_latency", "--build-artifact", str(data), str(root),
            "--config", str(config), "--model", "als",
        ],
        log,
    )  # fmt: skip
    out = build.output
    library_fit = sum(out["library_fit_seconds"].values())
    events = pq.ParquetFile(data / "events.parquet").metadata.num_rows
    stderr_console.print("[shop] raw library fits on the served matrix")
    return {
        "data": "shop (serving build)",
        "config": str(config.relative_to(REPO)) if config.is_relative_to(REPO) else str(config),
        "size": {
            "customers": out["customers"],
            "model_customers": out["model_customers"],
            "items": out["items"],
            "train_events": out["train_events"],
            "test_events": events - out["train_events"],
            "served_events": out["train_events"],
        },
        "generate_seconds": generate.seconds,
        "generate_peak_rss_mb": generate.peak_rss_mb,
        "train_seconds": float(out["seconds"]),
        "process_seconds": build.seconds,
        "process_peak_rss_mb": build.peak_rss_mb,
        "stages": out["stages"],
        "fit_seconds": out["fit_seconds"],
        "served_fit_seconds": {},
        "library_fit_seconds": library_fit,
        "engine_overhead_seconds": float(out["seconds"]) - library_fit,
        "raw_library_fit_seconds": raw_library_fits(config, root / "latest"),
        "persona_inference_seconds": out.get("persona_inference_seconds"),
        "metrics": [],
    }
