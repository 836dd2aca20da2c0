"""Cost of persona inference (EM fit, fold-ins, explanations) against the ALS fit it feeds, same run.

Per data set, in a child process of its own (so its peak RSS is its own): the training split as
``persona-engine train`` makes it, then ``PersonaInferenceModel.fit`` (feature building, the EM, the
final and context fold-ins) and ``MixExplanations.build``, wall and CPU seconds, and the raw
``implicit`` ALS fit (library defaults, one BLAS thread) on the same customers x items matrix as the
baseline: ``ratio_to_raw_als`` is persona inference's wall time over that fit's.

    python -m benchmarks.persona_inference_cost [--sets ml-100k,demo] [--threads 2] [--chunk 50000]

MovieLens 100K is read from ../shared/data/ml-100k (skipped when absent); the demo shop is generated
with the defaults of ``persona-engine generate``. Results go to benchmarks/results/ (JSON plus a row
per data set in persona_inference_cost.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import multiprocessing
import os
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from benchmarks.result_files import RESULTS_DIR, utc_stamp, write_result

MOVIELENS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


def _prepare_data(name: str, folder: Path) -> Path | None:
    """The data set's folder in the data contract's layout, or None when its source is absent."""
    if name == "ml-100k":
        from training.movielens_adapter import adapt_movielens

        if not MOVIELENS.is_dir():
            return None
        adapt_movielens(MOVIELENS, folder)
        return CONFIGS / "ml100k-tuned.toml"
    from training.synthetic_shop import ShopConfig, generate_shop

    generate_shop(folder, ShopConfig())
    return CONFIGS / "demo.toml"


def measure(name: str, threads: int, chunk: int) -> dict[str, Any] | None:
    """Run in a child process: time persona inference and the raw ALS fit on one data set."""
    import numpy as np
    import scipy.sparse as sp
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # no stubs

    from engine.data.id_map import IdMap
    from engine.data.loading import load_shop
    from engine.personas.catalog import load_catalog
    from engine.personas.explanations import MixExplanations
    from engine.personas.inference.config import PersonaInferenceConfig
    from engine.personas.inference.model import PersonaInferenceModel
    from training.config import load_config
    from training.prepared_data import split_for

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / name
        config_path = _prepare_data(name, folder)
        if config_path is None:
            return None
        config = load_config(config_path)
        shop = load_shop(folder)
        split = split_for(config, shop, folder)
    catalog = load_catalog(config.personas.catalog)
    known = list(split.train_events["customer_id"].unique(maintain_order=True).to_list())
    if shop.customers is not None:
        known += shop.customers["customer_id"].to_list()
    customers = IdMap.from_values(known, kind="customer")
    train_shop = dataclasses.replace(shop, events=split.train_events)
    settings = {**config.personas.inference, "threads": threads, "chunk_customers": chunk}
    cfg = PersonaInferenceConfig(**settings)
    # compile (numba caches to disk) before timing: a first run's compilation is not the fit's cost
    PersonaInferenceModel(dataclasses.replace(cfg, max_iterations=1)).fit(train_shop, catalog, customers)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    wall, cpu = time.perf_counter(), time.process_time()
    inference = PersonaInferenceModel(cfg)
    mixes = inference.fit(train_shop, catalog, customer_ids=customers)
    fit_wall, fit_cpu = time.perf_counter() - wall, time.process_time() - cpu
    wall, cpu = time.perf_counter(), time.process_time()
    MixExplanations.build(inference, mixes)
    explain_wall, explain_cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    events = split.train_events
    rows = customers.to_internal(events["customer_id"].to_list())
    items = IdMap.from_values(events["item_id"].unique(maintain_order=True).to_list(), kind="item")
    columns = items.to_internal(events["item_id"].to_list())
    matrix = sp.csr_matrix(
        (np.ones(rows.size, dtype=np.float32), (rows, columns)), shape=(len(customers), len(items))
    )
    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares(random_state=0)
        wall = time.perf_counter()
        als.fit(matrix, show_progress=False)
        als_wall = time.perf_counter() - wall
    summary = inference.fit_summary
    assert summary is not None
    return {
        "data_set": name,
        "events": int(events.height),
        "customers": len(customers),
        "personas": len(catalog),
        "em_iterations": summary.iterations,
        "em_converged": summary.converged,
        "threads": threads,
        "chunk_customers": chunk,
        "persona_fit_wall_s": fit_wall,
        "persona_fit_cpu_s": fit_cpu,
        "explanations_wall_s": explain_wall,
        "explanations_cpu_s": explain_cpu,
        "raw_implicit_als_fit_wall_s": als_wall,
        "ratio_to_raw_als": (fit_wall + explain_wall) / als_wall,
        "peak_rss_mb": peak,
        "rss_before_fit_mb": rss_before,
        "load_average_1min": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sets", default="ml-100k,demo", help="comma-separated: ml-100k, demo")
    parser.add_argument("--threads", type=int, default=2, help="persona inference threads (default 2)")
    parser.add_argument("--chunk", type=int, default=50_000, help="customers per chunk (default 50000)")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    results = []
    for name in args.sets.split(","):
        with context.Pool(1) as pool:
            result = pool.apply(measure, (name.strip(), args.threads, args.chunk))
        if result is None:
            print(f"{name}: skipped (../shared/data/ml-100k absent)")
            continue
        results.append(result)
        print(
            f"{name}: {result['events']:,} events, {result['customers']:,} customers, "
            f"{result['em_iterations']} EM iterations: persona fit {result['persona_fit_wall_s']:.2f} s wall "
            f"({result['persona_fit_cpu_s']:.2f} s CPU), explanations {result['explanations_wall_s']:.2f} s, "
            f"raw ALS {result['raw_implicit_als_fit_wall_s']:.2f} s, ratio {result['ratio_to_raw_als']:.2f}, "
            f"peak RSS {result['peak_rss_mb']:.0f} MB, load {result['load_average_1min']:.1f}"
        )
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    document = {
        "benchmark": "persona_inference_cost",
        "time": now,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "results": results,
    }
    header = ["time", "data set", "events", "customers", "iterations", "threads", "fit wall s", "fit CPU s",
              "explain s", "raw ALS s", "ratio", "peak RSS MB", "load"]  # fmt: skip
    rows = [
        [now, r["data_set"], r["events"], r["customers"], r["em_iterations"], r["threads"],
         f"{r['persona_fit_wall_s']:.2f}", f"{r['persona_fit_cpu_s']:.2f}", f"{r['explanations_wall_s']:.2f}",
         f"{r['raw_implicit_als_fit_wall_s']:.2f}", f"{r['ratio_to_raw_als']:.2f}", f"{r['peak_rss_mb']:.0f}",
         f"{r['load_average_1min']:.1f}"]
        for r in results
    ]  # fmt: skip
    path = write_result(
        RESULTS_DIR,
        "persona_inference_cost",
        utc_stamp(now),
        document,
        header,
        rows,
        title="# Persona inference cost (python -m benchmarks.persona_inference_cost)",
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
