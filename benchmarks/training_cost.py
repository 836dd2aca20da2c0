"""Training cost: where ``persona-engine train`` spends its time and memory, against the library fits.

By default, per data set (MovieLens 100K from ../shared/data, skipped when absent; the demo shop; a
generated shop of ``--customers x --items x --events``), one ``persona-engine train`` run with its
stage table (wall, CPU seconds and peak RSS of every stage and of the parts of ``prepare``,
``evaluation``, ``refit`` and ``write_artifact``), the raw library fits (implicit ALS/BPR, LightFM) on
the same matrix in the same run, and ``ratios.<data set>.engine_overhead_vs_library_fit``: the wall
time of everything that is not a library fit over the library fits' (``benchmarks.training_stages``).
Run it niced on a shared machine:

    nice -n 10 python -m benchmarks.training_cost [--sets ml-100k,demo,shop]
        [--customers 100000 --items 20000 --events 1000000] [--shop-config benchmarks/configs/x.toml]

``--serving-build`` measures the generated shop alone, built as the serving benchmark builds its
artifact (no offline evaluation, no refit), for sizes where scoring every customer offline would not
end (``make bench-training-large``: 1M customers x 100k items x 10M events):

    nice -n 10 python -m benchmarks.training_cost --serving-build --customers 1000000 --items 100000 \
        --events 10000000

With ``--latency`` it measures instead fit time and in-process scoring latency of every model, against
baselines measured in the same run:

Absolute seconds depend on the machine; ratios to a baseline measured in the same process do not (much),
so each figure is printed next to one: fit time relative to plain ``implicit`` ALS with its library
defaults on the same matrix (what persona conditioning costs over the raw library), and per-request
recommend latency relative to a plain numpy full-scan top-k over random factors of the same size.
Results are appended to ``benchmarks/results/`` as JSON and as a row of a Markdown history table.

    python -m benchmarks.training_cost --latency [--customers 5000 --items 2000 --events 200000]

With ``--engines`` it compares instead the two training engines end to end, ``persona-engine train``
with the local engine and with ``--engine spark --master local[2]`` (``benchmarks.engine_comparison``):
wall time and peak memory of the whole process tree side by side, Spark as a ratio to local, and the
ALS NDCG@10 each reached, on MovieLens 100K (from ../shared/data, skipped when absent) and on a
generated shop of ``--events`` events:

    python -m benchmarks.training_cost --engines [--events 1000000] [--sets ml-100k,shop]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Final

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from benchmarks.training_stages import (
    SETS,
    SHOP_CONFIG,
    ShopSize,
    build_sets,
    cpu_overhead_ratio,
    dominant_stage,
    measure,
    measure_serving_build,
    overhead_ratio,
    stage_rows,
)
from engine.models.base import UserBatch
from engine.ranking.top_k import top_k
from training.config import DataSection, TrainConfig
from training.console_output import print_table
from training.prepared_data import prepare
from training.synthetic_shop import ShopConfig, generate_shop
from training.train_job import fit_models

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    a = np.asarray(samples_ms)
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(a.max()),
        "throughput_per_s": float(len(a) / (a.sum() / 1000.0)),
    }


def time_requests(score_one: Any, n: int) -> list[float]:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        score_one(i)
        samples.append((time.perf_counter() - started) * 1000.0)
    return samples


def raw_implicit_als_seconds(interactions: Any) -> float:
    """Fit time of implicit's ALS with its documented defaults: the cost a data scientist pays anyway."""
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # no stubs, no py.typed

    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(random_state=0)
        started = time.perf_counter()
        model.fit(interactions, show_progress=False)
        return time.perf_counter() - started


def run(customers: int, items: int, events: int, requests: int, k: int = 20) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "shop"
        generate_shop(data_dir, ShopConfig(customers=customers, items=items, events=events))
        config = TrainConfig(data=DataSection(path=str(data_dir)))
        prepared = prepare(config)
    models, fit_seconds = fit_models(prepared, config, show_progress=False)
    data = prepared.training_set
    raw_als_seconds = raw_implicit_als_seconds(data.interactions)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, data.n_users, size=requests)

    def batch_of(i: int) -> UserBatch:
        r = int(rows[i])
        return UserBatch(np.asarray([r]), data.user_mix[r : r + 1], data.user_demographics[r : r + 1])

    factors = rng.standard_normal((data.n_items, 64)).astype(np.float32)
    user_vectors = rng.standard_normal((requests, 64)).astype(np.float32)
    baseline = percentiles(time_requests(lambda i: top_k(user_vectors[i : i + 1] @ factors.T, k), requests))
    latency: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        latency[name] = percentiles(
            time_requests(
                lambda i, m=model: m.recommend(batch_of(i), k, exclude=data.interactions[rows[i]]), requests
            )
        )
        latency[name]["p99_ratio_to_numpy_topk"] = latency[name]["p99_ms"] / baseline["p99_ms"]
    return {
        "benchmark": "training_cost",
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "size": {
            "customers": data.n_users,
            "items": data.n_items,
            "interactions": int(data.interactions.nnz),
        },
        "fit_seconds": fit_seconds,
        "baseline_raw_implicit_als_fit_seconds": raw_als_seconds,
        "fit_ratio_to_raw_als": {m: s / raw_als_seconds for m, s in fit_seconds.items()},
        "recommend_latency": latency,
        "baseline_numpy_topk_64d": baseline,
        "k": k,
        "requests": requests,
    }


def write_results(result: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.fromisoformat(result["time"]).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"training_cost-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    history = RESULTS_DIR / "training_cost.md"
    if not history.exists():
        history.write_text(
            "| time | customers x items | model | fit s | fit / raw ALS | p50 ms | p99 ms | req/s "
            "| p99 / numpy top-k |\n"
            "|---|---|---|---|---|---|---|---|---|\n",
            encoding="utf-8",
        )
    size = f"{result['size']['customers']} x {result['size']['items']}"
    with history.open("a", encoding="utf-8") as out:
        for model, seconds in result["fit_seconds"].items():
            lat = result["recommend_latency"][model]
            out.write(
                f"| {result['time']} | {size} | {model} | {seconds:.2f} | "
                f"{result['fit_ratio_to_raw_als'][model]:.2f} | {lat['p50_ms']:.3f} | "
                f"{lat['p99_ms']:.3f} | "
                f"{lat['throughput_per_s']:.0f} | {lat['p99_ratio_to_numpy_topk']:.2f} |\n"
            )
    return path


ENGINE_MODELS = "[models.popularity]\n[models.persona_popularity]\n[models.als]\n"
ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"


def _engine_config(folder: Path, data: Path, extra: str = "") -> Path:
    config = folder / "train.toml"
    config.write_text(f'[data]\npath = "{data}"\n{extra}{ENGINE_MODELS}', encoding="utf-8")
    return config


def engine_sets(folder: Path, sets: list[str], customers: int, items: int, events: int) -> dict[str, Path]:
    """Config per data set: ml-100k through its adapter (predefined split), a generated shop."""
    from cli.main import main as cli_main

    configs: dict[str, Path] = {}
    if "ml-100k" in sets:
        if ML100K.is_dir():
            data = folder / "ml100k"
            cli_main(["adapt", "movielens", "--source", str(ML100K), "--out", str(data), "--json"])
            extra = '[personas]\ncatalog = "movielens"\n[split]\nmethod = "predefined"\n'
            extra += "[interactions]\npurchase = 1.0\n"
            (folder / "ml-100k").mkdir()
            configs["ml-100k"] = _engine_config(folder / "ml-100k", data, extra)
        else:
            print(f"ml-100k skipped: {ML100K} is absent")
    if "shop" in sets:
        data = folder / "shop-data"
        generate_shop(data, ShopConfig(customers=customers, items=items, events=events))
        (folder / "shop").mkdir()
        configs[f"shop ({events:,} events)"] = _engine_config(folder / "shop", data)
    return configs


def run_engines(sets: list[str], customers: int, items: int, events: int) -> dict[str, Any]:
    """Both engines on each data set (``benchmarks.engine_comparison``), the local one first."""
    from benchmarks.engine_comparison import train_once

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in engine_sets(Path(tmp), sets, customers, items, events).items():
            local = train_once(config, "local", Path(tmp) / "artifacts-local")
            spark = train_once(config, "spark", Path(tmp) / "artifacts-spark")
            runs.append(
                {
                    "data": name,
                    "local": local.__dict__,
                    "spark": spark.__dict__,
                    "spark_seconds_ratio": spark.seconds / local.seconds,
                    "spark_memory_ratio": spark.peak_rss_mb / local.peak_rss_mb,
                    "als_ndcg": {"local": local.ndcg("als"), "spark": spark.ndcg("als")},
                }
            )
    return {
        "benchmark": "training_engines",
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "spark_master": "local[2]",
        "runs": runs,
    }


def print_and_write_engines(result: dict[str, Any]) -> Path:
    from benchmarks.result_files import RESULTS_DIR as FOLDER
    from benchmarks.result_files import utc_stamp, write_result

    header = [
        "data",
        "local s",
        "spark local[2] s",
        "spark / local",
        "local peak MB",
        "spark peak MB",
        "spark / local",
        "ALS NDCG local",
        "ALS NDCG spark",
    ]
    rows = [
        [
            run["data"],
            round(run["local"]["seconds"], 1),
            round(run["spark"]["seconds"], 1),
            round(run["spark_seconds_ratio"], 2),
            round(run["local"]["peak_rss_mb"]),
            round(run["spark"]["peak_rss_mb"]),
            round(run["spark_memory_ratio"], 2),
            round(run["als_ndcg"]["local"] or float("nan"), 4),
            round(run["als_ndcg"]["spark"] or float("nan"), 4),
        ]
        for run in result["runs"]
    ]
    print_table(
        "training engines: persona-engine train end to end (wall time, peak RSS of the process tree)",
        header,
        rows,
    )
    return write_result(
        FOLDER,
        "training_engines",
        utc_stamp(result["time"]),
        result,
        ["time", *header],
        [[result["time"], *row] for row in rows],
        title="# Training engines: local vs Spark local[2] (benchmarks/training_cost.py --engines)",
    )


STAGE_HEADER: Final = [
    "data", "stage", "wall s", "CPU s", "of it kernel s", "peak RSS MB", "RSS at end MB", "share",
]  # fmt: skip
RATIO_HEADER: Final = [
    "data",
    "customers x items x events",
    "train s",
    "library fits s",
    "engine overhead s",
    "overhead / library fit",
    "raw library fits s",
    "persona inference s",
    "slowest step",
    "peak RSS MB",
]
STAGES_SECTION: Final = (
    "\n## Stages: engine overhead vs library fits (python -m benchmarks.training_cost)\n\n"
)


def run_stages(sets: list[str], shop: ShopSize, shop_config: Path) -> dict[str, Any]:
    """Every data set's train run measured stage by stage, with its ratio to the library fits."""
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for data_set in build_sets(Path(tmp), sets, shop, shop_config):
            results.append(measure(data_set, Path(tmp) / "artifacts" / data_set.name))
    return _document(
        results,
        "(train wall time - wall time of the ALS/BPR/LightFM fits, split and refit) / wall time of those "
        "fits",
        "the same in CPU seconds of the stages, the fit_models stages (split and refit) counting as library "
        "fits",
    )


def _document(results: list[dict[str, Any]], wall_definition: str, cpu_definition: str) -> dict[str, Any]:
    """The result document of a run: its sets, their ratios and what the ratios mean."""
    return {
        "benchmark": "training_cost",
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "definition": {
            "engine_overhead_vs_library_fit": wall_definition,
            "engine_overhead_vs_library_fit_cpu": cpu_definition,
        },
        "sets": results,
        "ratios": {r["data"]: _ratios(r) for r in results},
    }


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def _short(n: int) -> str:
    """1234567 -> 1.2M: sizes that fit a table column."""
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def _ratios(result: dict[str, Any]) -> dict[str, float | None]:
    return {
        "engine_overhead_vs_library_fit": overhead_ratio(result),
        "engine_overhead_vs_library_fit_cpu": cpu_overhead_ratio(result),
    }


def run_serving_build(shop: ShopSize, config: Path) -> dict[str, Any]:
    """The serving benchmark's build of a generated shop, stage by stage (``measure_serving_build``)."""
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure_serving_build(Path(tmp), shop, config)]
    return _document(
        results,
        "(build wall time - wall time of the ALS/BPR/LightFM fits) / wall time of those fits; the serving "
        "build has no evaluation and no refit",
        "the same in CPU seconds of the stages, the fit_models stage counting as library fits",
    )


def ratio_rows(result: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for r in result["sets"]:
        size = r["size"]
        slowest, slowest_s = dominant_stage(r)
        ratio = result["ratios"][r["data"]]["engine_overhead_vs_library_fit"]
        rows.append(
            [
                r["data"],
                f"{_short(size['customers'])} x {_short(size['items'])} x "
                f"{_short(size['train_events'] + size['test_events'])}",
                round(r["train_seconds"], 1),
                round(r["library_fit_seconds"], 1),
                round(r["engine_overhead_seconds"], 1),
                "n/a" if ratio is None else round(ratio, 2),
                round(sum(r["raw_library_fit_seconds"].values()), 1),
                round(r["persona_inference_seconds"] or 0.0, 1),
                f"{slowest} {slowest_s:.1f} s",
                round(max(r["process_peak_rss_mb"], max(s["peak_rss_mb"] for s in r["stages"]))),
            ]
        )
    return rows


def print_and_write_stages(result: dict[str, Any]) -> Path:
    from benchmarks.result_files import RESULTS_DIR as FOLDER
    from benchmarks.result_files import markdown_row, utc_stamp, write_result

    for r in result["sets"]:
        print_table(
            f"{r['data']}: persona-engine train by stage ({r['config']})", STAGE_HEADER, stage_rows(r)
        )
    rows = ratio_rows(result)
    print_table(
        "engine overhead vs library fits (library fits: the time inside implicit's and LightFM's fit in "
        "train, split + refit; raw: the libraries alone on the served matrix)",
        RATIO_HEADER,
        rows,
    )
    history = FOLDER / "training_cost.md"
    header = ["time", *RATIO_HEADER]
    if history.is_file() and markdown_row(header) not in history.read_text(encoding="utf-8"):
        with history.open("a", encoding="utf-8") as out:
            out.write(STAGES_SECTION + markdown_row(header) + "|" + "---|" * len(header) + "\n")
    return write_result(
        FOLDER,
        "training_cost",
        utc_stamp(result["time"]),
        result,
        header,
        [[result["time"], *row] for row in rows],
        title="# Training cost" + STAGES_SECTION,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, help="generated shop (default 100000; --latency 5000)")
    parser.add_argument("--items", type=int, help="generated shop (default 20000; --latency 2000)")
    parser.add_argument("--events", type=int, help="generated shop (default 1000000; --latency 200000)")
    parser.add_argument("--requests", type=int, default=2_000, help="with --latency: requests per model")
    parser.add_argument(
        "--shop-config", type=Path, default=SHOP_CONFIG, help="training config of the generated shop"
    )
    parser.add_argument("--latency", action="store_true", help="per-model fit time and scoring latency")
    parser.add_argument(
        "--serving-build",
        action="store_true",
        help="the generated shop only, built as the serving benchmark builds its artifact (no evaluation, "
        "no refit: the way to measure 1M customers x 10M events and more)",
    )
    parser.add_argument("--engines", action="store_true", help="compare the local and Spark engines")
    parser.add_argument(
        "--sets",
        help="data sets: ml-100k, demo, shop (default all; with --engines ml-100k,shop)",
    )
    args = parser.parse_args()
    small = args.latency or args.engines
    customers = args.customers or (5_000 if small else 100_000)
    items = args.items or (2_000 if small else 20_000)
    events = args.events or (200_000 if small else 1_000_000)
    if args.engines:
        sets = (args.sets or "ml-100k,shop").split(",")
        engines = run_engines(sets, customers, items, events)
        print(f"results: {print_and_write_engines(engines)}")
        return
    if args.serving_build:
        built = run_serving_build(ShopSize(customers, items, events), args.shop_config)
        print(f"results: {print_and_write_stages(built)}")
        return
    if not args.latency:
        stages = run_stages(
            (args.sets or ",".join(SETS)).split(","), ShopSize(customers, items, events), args.shop_config
        )
        print(f"results: {print_and_write_stages(stages)}")
        return
    result = run(customers, items, events, args.requests)
    rows = []
    for model, seconds in result["fit_seconds"].items():
        lat = result["recommend_latency"][model]
        rows.append(
            [
                model,
                seconds,
                result["fit_ratio_to_raw_als"][model],
                lat["p50_ms"],
                lat["p95_ms"],
                lat["p99_ms"],
                lat["throughput_per_s"],
                lat["p99_ratio_to_numpy_topk"],
            ]
        )
    base = result["baseline_numpy_topk_64d"]
    nan = float("nan")
    raw = result["baseline_raw_implicit_als_fit_seconds"]
    rows.append(["raw implicit ALS (baseline)", raw, 1.0, nan, nan, nan, nan, nan])
    rows.append(
        [
            "numpy top-k (baseline)",
            nan,
            nan,
            base["p50_ms"],
            base["p95_ms"],
            base["p99_ms"],
            base["throughput_per_s"],
            1.0,
        ]
    )
    print_table(
        f"training cost and single-request latency ({result['size']['customers']} customers x "
        f"{result['size']['items']} items, k={result['k']})",
        ["model", "fit s", "fit / raw ALS", "p50 ms", "p95 ms", "p99 ms", "req/s", "p99 / numpy"],
        rows,
    )
    print(f"results: {write_results(result)}")


if __name__ == "__main__":
    main()
