"""The in-process side of the serving benchmark: the engine, the servicer and the baseline timed one
call at a time on the requests the server gets, and the candidate index checked against a full scan.

``measure_batched`` times the engine's batched entry point (``LiveLoop.personalize_many``) on the same
Personalize requests in batches of 1, 8 and 32, per request, interleaved with one-at-a-time calls so
that all figures share the machine's weather. Run on its own:

    python -m benchmarks.in_process_latency ARTIFACT [--model als] [--requests 2000]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from benchmarks.latency_statistics import latency_summary
from benchmarks.serving_workloads import Workload, build_workloads
from engine.live.live_loop import LiveLoop
from engine.personalization_request import PageRequest
from engine.personalizer import Personalizer
from engine.ranking.candidate_index import candidates_top_k, exact_top_k
from serving import request_validation as validate
from serving.generated.persona.v1 import personalization_service_pb2 as pb
from serving.model_holder import load_model
from training.console_output import stderr_console

INDEX_QUALITY_QUERIES: Final = 1000  # customers whose candidate-index search is checked against a full scan
IN_PROCESS_BUDGET_S: Final = 20.0  # per RPC and kind, whatever --in-process-requests says


def time_calls(call: Callable[[int], object], n: int, distinct: int, budget_s: float) -> dict[str, float]:
    """Sequential calls, bounded by count and time; the first few warm caches and are not counted."""
    for i in range(min(10, distinct)):
        call(i)
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s
    started = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        call(i % distinct)
        samples.append((time.perf_counter() - t0) * 1000.0)
        if t0 > deadline:
            break
    summary = latency_summary(samples, time.perf_counter() - started)
    return summary


def measure_in_process(workloads: Sequence[Workload], n: int) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for w in workloads:
        stderr_console.print(f"in-process: {w.name}")
        distinct = len(w.requests)
        out[w.name] = {
            "engine": time_calls(w.engine_call, n, distinct, IN_PROCESS_BUDGET_S),
            "servicer": time_calls(w.servicer_call, n, distinct, IN_PROCESS_BUDGET_S),
        }
        for kind in ("engine", "servicer"):
            out[w.name][kind]["targets_per_s"] = (
                out[w.name][kind].get("calls_per_s", 0.0) * w.targets_per_call
            )
        if w.baseline_call is not None:
            out[w.name]["baseline"] = time_calls(w.baseline_call, n, distinct, IN_PROCESS_BUDGET_S)
            out[w.name]["baseline"]["targets_per_s"] = (
                out[w.name]["baseline"].get("calls_per_s", 0.0) * w.targets_per_call
            )
    return out


def candidate_index_quality(personalizer: Personalizer, customers: Sequence[str], k: int) -> dict[str, Any]:
    """Recall@k of the served candidate index against the exact full scan, on the benchmark's customers.

    Each customer's query vector (their resolved mix, model row and demographics, as a request without
    filters scores them) is searched both ways; also reported: the share of searches whose stopping
    bound certified the top-k, candidates scored per search, and search against full-scan time.
    """
    index = personalizer.index
    settings = personalizer.index_settings
    base: dict[str, Any] = {"used": index is not None, "min_items": settings.min_items}
    item_vectors = personalizer.model.item_vectors()
    if index is None or item_vectors is None:
        return base
    queries = personalizer.model.query_vectors(personalizer.scoring_batch(list(customers)))
    hits, certified, candidates, search_ms, scan_ms = 0, 0, [], [], []
    for query in queries:
        t0 = time.perf_counter()
        found = index.search(query, k)
        top = candidates_top_k(found, k)
        t1 = time.perf_counter()
        exact = exact_top_k(item_vectors @ query, k)
        t2 = time.perf_counter()
        hits += len(np.intersect1d(top, exact))
        certified += found.certified
        candidates.append(len(found.items))
        search_ms.append((t1 - t0) * 1000.0)
        scan_ms.append((t2 - t1) * 1000.0)
    return {
        **base,
        "k": k,
        "queries": len(queries),
        "recall_at_k": hits / (len(queries) * k),
        "certified_share": certified / len(queries),
        "lists": index.n_lists,
        "max_probe": index.max_probe,
        "build_seconds": personalizer.index_build_seconds,
        "candidates_p50": float(np.percentile(candidates, 50)),
        "candidates_p99": float(np.percentile(candidates, 99)),
        "search_p50_ms": float(np.percentile(search_ms, 50)),
        "search_p99_ms": float(np.percentile(search_ms, 99)),
        "full_scan_p50_ms": float(np.percentile(scan_ms, 50)),
        "full_scan_p99_ms": float(np.percentile(scan_ms, 99)),
    }


BATCH_SIZES: Final = (1, 8, 32)


def _quantiles(samples_ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(samples_ms, dtype=np.float64)
    return {
        "calls": int(a.size),
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
    }


def measure_batched(
    personalizer: Personalizer,
    requests: Sequence[PageRequest],
    n: int,
    sizes: Sequence[int] = BATCH_SIZES,
    rounds: int = 5,
) -> dict[str, dict[str, float]]:
    """Per-request wall and CPU time of Personalize one at a time and in batches of ``sizes``.

    ``n`` requests per kind, split into ``rounds`` that alternate the kinds, so that a busy minute on
    a shared machine weighs on all of them alike. A batch's time is divided by its size: what each of
    its requests cost.
    """
    loop = LiveLoop()
    for i in range(min(20, len(requests))):  # warm caches and the compiled search
        loop.personalize(personalizer, requests[i])
    wall: dict[str, list[float]] = {"single": [], **{f"batch_{b}": [] for b in sizes}}
    cpu: dict[str, list[float]] = {kind: [] for kind in wall}
    per_round = max(1, n // rounds)
    cursor = 0
    for _ in range(rounds):
        for kind in wall:
            size = 1 if kind == "single" else int(kind.split("_")[1])
            done = 0
            while done < per_round:
                batch = [requests[(cursor + j) % len(requests)] for j in range(size)]
                cursor += size
                w0, c0 = time.perf_counter(), time.thread_time()
                if kind == "single":
                    loop.personalize(personalizer, batch[0])
                else:
                    loop.personalize_many(personalizer, batch)
                w1, c1 = time.perf_counter(), time.thread_time()
                wall[kind].append((w1 - w0) * 1000.0 / size)
                cpu[kind].append((c1 - c0) * 1000.0 / size)
                done += size
    out = {}
    for kind in wall:
        w, c = _quantiles(wall[kind]), _quantiles(cpu[kind])
        out[kind] = {**w, "cpu_p50_ms": c["p50_ms"], "cpu_p95_ms": c["p95_ms"]}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.in_process_latency", description=__doc__)
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--model", default="als")
    parser.add_argument("--requests", type=int, default=2000, help="requests per kind")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    personalizer = load_model(args.artifact, args.model).personalizer
    workloads = build_workloads(
        personalizer, np.random.default_rng(args.seed), batch_size=1, rate=1.0, batch_rate=1.0
    )
    personalize = next(w for w in workloads if w.name == "Personalize")
    pages = [
        validate.personalize_call(r, personalizer)
        for r in personalize.requests
        if isinstance(r, pb.PersonalizeRequest)
    ]
    print(
        f"{args.artifact} ({len(personalizer.customers)} customers x {len(personalizer.items)} items), "
        f"Personalize as the serving benchmark sends it, per request:"
    )
    for kind, figures in measure_batched(personalizer, pages, args.requests).items():
        print(
            f"  {kind:9s} wall p50 {figures['p50_ms']:.3f} p95 {figures['p95_ms']:.3f} ms   "
            f"cpu p50 {figures['cpu_p50_ms']:.3f} p95 {figures['cpu_p95_ms']:.3f} ms   "
            f"({figures['calls']} samples)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
