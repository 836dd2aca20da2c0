"""Latency figures of the serving benchmark: client-side quantiles, and server-side ones from the
server's own request histogram.

The server's ``persona_engine_request_duration_seconds`` histogram is scraped before and after each
measured phase; quantiles are estimated from the bucket deltas as Prometheus does (interpolated inside
a bucket, so exact only at bucket bounds) while the mean and the share of calls within each bound are
exact. The dynamic batcher's ``persona_engine_batch_size`` and ``persona_engine_batch_cpu_seconds`` are
read at the same moments: how many calls a phase's batches held on average is what decides whether
batching saves anything, and the CPU the loop's thread spent scoring them, per call, is what the engine
costs inside the server (to set against the same work in process).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from benchmarks.serving_workloads import SERVICE
from serving.server_process import scrape_metrics

NAN: Final = float("nan")
DURATION_METRIC: Final = "persona_engine_request_duration_seconds"
REQUESTS_METRIC: Final = "persona_engine_requests"
BATCH_METRIC: Final = "persona_engine_batch_size"
BATCH_CPU_METRIC: Final = "persona_engine_batch_cpu_seconds"


def latency_summary(
    samples_ms: Sequence[float], wall_s: float, targets_per_call: int = 1
) -> dict[str, float]:
    """Quantiles of successful calls and their rate over the phase's wall time."""
    if not samples_ms:
        return {"calls": 0}
    a = np.asarray(samples_ms, dtype=np.float64)
    return {
        "calls": int(a.size),
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(a.max()),
        "mean_ms": float(a.mean()),
        "calls_per_s": a.size / wall_s,
        "targets_per_s": a.size * targets_per_call / wall_s,
    }


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus' estimate: linear interpolation inside the bucket holding quantile ``q``.

    ``buckets`` are (upper bound, cumulative count) sorted by bound, ending with +Inf. A quantile in
    the +Inf bucket is reported as the highest finite bound (the true value is above it).
    """
    if not buckets or buckets[-1][1] <= 0:
        return float("nan")
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass(frozen=True)
class MetricsSnapshot:
    """The server's request histogram and status counts for every method, at one moment."""

    buckets: dict[str, dict[float, float]]  # method -> upper bound (s) -> cumulative count
    sums: dict[str, float]
    codes: dict[str, dict[str, float]]  # method -> status code -> count
    batches: dict[str, tuple[float, float]]  # method -> (batches, calls in them), all workers
    batch_cpu: dict[str, float] = field(default_factory=dict)  # method -> CPU s scoring them, all workers

    @classmethod
    def scrape(cls, port: int) -> MetricsSnapshot:
        buckets: dict[str, dict[float, float]] = {}
        sums: dict[str, float] = {}
        codes: dict[str, dict[str, float]] = {}
        batches: dict[str, tuple[float, float]] = {}
        batch_cpu: dict[str, float] = {}
        for family in scrape_metrics(port).values():
            for sample in family.samples:
                if sample.name == f"{BATCH_CPU_METRIC}_total":
                    method = sample.labels["method"]
                    batch_cpu[method] = batch_cpu.get(method, 0.0) + sample.value
                    continue
                if sample.name in (f"{BATCH_METRIC}_count", f"{BATCH_METRIC}_sum"):
                    count, calls = batches.get(sample.labels["method"], (0.0, 0.0))
                    if sample.name.endswith("_count"):
                        count += sample.value
                    else:
                        calls += sample.value
                    batches[sample.labels["method"]] = (count, calls)
                    continue
                if sample.labels.get("service") != SERVICE:
                    continue
                method = sample.labels["method"]
                if sample.name == f"{DURATION_METRIC}_bucket":
                    bound = float(sample.labels["le"])
                    per_method = buckets.setdefault(method, {})
                    per_method[bound] = per_method.get(bound, 0.0) + sample.value
                elif sample.name == f"{DURATION_METRIC}_sum":
                    sums[method] = sums.get(method, 0.0) + sample.value
                elif sample.name == f"{REQUESTS_METRIC}_total":
                    per_code = codes.setdefault(method, {})
                    per_code[sample.labels["code"]] = per_code.get(sample.labels["code"], 0.0) + sample.value
        return cls(buckets, sums, codes, batches, batch_cpu)


def server_side(before: MetricsSnapshot, after: MetricsSnapshot, method: str) -> dict[str, Any]:
    """Handler-time quantiles (estimated from bucket deltas), exact mean, and status counts of a phase."""
    bounds = sorted(after.buckets.get(method, {}))
    deltas = [
        (bound, after.buckets[method][bound] - before.buckets.get(method, {}).get(bound, 0.0))
        for bound in bounds
    ]
    count = deltas[-1][1] if deltas else 0.0
    seconds = after.sums.get(method, 0.0) - before.sums.get(method, 0.0)
    codes = {
        code: value - before.codes.get(method, {}).get(code, 0.0)
        for code, value in after.codes.get(method, {}).items()
        if value - before.codes.get(method, {}).get(code, 0.0) > 0
    }
    out: dict[str, Any] = {"calls": int(count), "codes": codes}
    batches_after, batched_after = after.batches.get(method, (0.0, 0.0))
    batches_before, batched_before = before.batches.get(method, (0.0, 0.0))
    batch_count, batched = batches_after - batches_before, batched_after - batched_before
    if batch_count > 0:  # only the batched RPCs (Personalize, RecommendProducts) have batches
        out["batches"] = int(batch_count)
        out["mean_batch_size"] = batched / batch_count
        if method in after.batch_cpu and batched > 0:  # servers from before the metric have none
            cpu_seconds = after.batch_cpu[method] - before.batch_cpu.get(method, 0.0)
            out["batch_cpu_ms_per_call"] = cpu_seconds / batched * 1000.0
    if count > 0:
        for q in (0.5, 0.95, 0.99):
            out[f"p{round(q * 100)}_ms"] = histogram_quantile(q, deltas) * 1000.0
        out["mean_ms"] = seconds / count * 1000.0
        # Exact, unlike the interpolated quantiles: the share of calls at or under each bucket bound.
        out["share_within_ms"] = {
            f"{bound * 1000.0:g}": c / count for bound, c in deltas if bound != float("inf")
        }
    return out
