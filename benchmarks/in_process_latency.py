"""The in-process side of the serving benchmark: the engine, the servicer and the baseline timed one
call at a time on the requests the server gets, and the candidate index checked against a full scan.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np

from benchmarks.latency_statistics import latency_summary
from benchmarks.serving_workloads import Workload
from engine.personalizer import Personalizer
from engine.ranking.candidate_index import candidates_top_k, exact_top_k
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
