"""Small serving benchmark result documents, shaped as ``benchmarks.serving_latency`` writes them, for
the tests of the parts that judge a result (ratios, targets, the floor section) without a server."""

from __future__ import annotations

from typing import Any


def phase(
    *,
    calls_per_s: float = 1000.0,
    p99_ms: float = 8.0,
    share_within_ms: dict[str, float] | None = None,
    server_p99_ms: float = 4.0,
    server_within_5ms: float = 0.995,
    cpu_ms: float = 1.0,
    errors: int = 0,
    dropped: int = 0,
    rate: float | None = None,
    concurrency: int = 16,
    batch: float | None = None,
) -> dict[str, Any]:
    """One load phase: client figures, server-side histogram figures and CPU per call."""
    return {
        "mode": "closed" if rate is None else "open",
        **({"concurrency": concurrency} if rate is None else {"rate": rate}),
        "client": {
            "calls": 1000,
            "p50_ms": p99_ms / 3,
            "p99_ms": p99_ms,
            "calls_per_s": calls_per_s,
            "errors": {"DEADLINE_EXCEEDED": errors} if errors else {},
            "dropped": dropped,
            "share_within_ms": share_within_ms or {"5": 0.9, "10": 0.995, "25": 1.0},
            "client_cpu_cores": 0.3,
        },
        "server": {
            "calls": 1000,
            "p99_ms": server_p99_ms,
            "share_within_ms": {"5": server_within_5ms},
            **({} if batch is None else {"mean_batch_size": batch}),
        },
        "server_cpu_ms_per_call": cpu_ms,
        "server_cpu_ms_per_call_with_supervisor": cpu_ms,
        "server_cpu_cores": calls_per_s * cpu_ms / 1000.0,
    }


def server_run(workers: int, calls_per_s: float, cpu_ms: float = 1.0) -> dict[str, Any]:
    """A server run with Personalize closed, open at 300/s (its --rate) and open at 1,000/s."""
    return {
        "workers": workers,
        "responses": {"Personalize": {"response_bytes": 2400.0}},
        "phases": {
            "Personalize|closed": phase(calls_per_s=calls_per_s, cpu_ms=cpu_ms),
            "Personalize|open": phase(rate=300.0, p99_ms=6.0),
            "Personalize|open@1000": phase(rate=1000.0, p99_ms=20.0),
        },
    }


def floor_run(workers: int, calls_per_s: float) -> dict[str, Any]:
    """A floor run that happened, with its headline figures."""
    return {
        "workers": workers,
        "skipped": None,
        "calls_per_s": calls_per_s,
        "server_cpu_ms_per_call": 0.5,
        "server_p99_ms": 2.0,
        "response_bytes": 2400.0,
        "phases": {"Personalize|closed": phase(calls_per_s=calls_per_s, cpu_ms=0.5)},
    }


def with_closed_phases(
    run: dict[str, Any], calls_per_s: dict[int, float], errors: dict[int, int] | None = None
) -> dict[str, Any]:
    """``run`` with further closed-loop Personalize phases, at each concurrency its calls/s (keys
    ``Personalize|closed@<c>``, as ``--personalize-extra-concurrency`` adds them)."""
    more = {
        f"Personalize|closed@{c}": phase(
            calls_per_s=calls, concurrency=c, errors=(errors or {}).get(c, 0), batch=c / 4
        )
        for c, calls in calls_per_s.items()
    }
    return {**run, "phases": {**run["phases"], **more}}


def result_document(
    server_runs: list[dict[str, Any]], floor_runs: list[dict[str, Any]], servicer_mean_ms: float = 0.8
) -> dict[str, Any]:
    """A whole result document with the 1M x 100k shop's size, Personalize only."""
    return {
        "size": {"customers": 1_000_000, "items": 100_000, "events": 10_000_000},
        "load": {"concurrency": 16},
        "rates": {"Personalize": 300.0},
        "in_process": {
            "Personalize": {"engine": {"p50_ms": 0.25}, "servicer": {"mean_ms": servicer_mean_ms}}
        },
        "server_runs": server_runs,
        "floor": {"server_flag": "--benchmark-floor", "skipped": None, "runs": floor_runs},
    }
