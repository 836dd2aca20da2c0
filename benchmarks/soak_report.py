"""The soak test's records and what is made of them: accounting, RSS slopes, latency per window, the
printed tables and the result files (``benchmarks.soak`` runs the soak; the module doc there says what
each figure means).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.result_files import RESULTS_DIR, utc_stamp, write_result
from engine.live.event_log import EventLog

RPCS: Final = ("Personalize", "RecommendProducts", "RecordEvents")
RSS_TARGET_MB_PER_10_MIN: Final = 5.0
# A first failure counts as "at a kill" when the call started before the kill plus this margin (the
# channel needs a moment to see the connection drop) and ended after the kill.
KILL_MARGIN_S: Final = 1.0
# Failures away from kills are listed one by one up to this many (a broken run would list thousands).
MAX_LISTED_FAILURES: Final = 50


@dataclass
class CallRecord:
    """One call as the client saw it; times are seconds since the run started."""

    rpc: str
    scheduled: float
    ended: float = 0.0
    first_code: str = "OK"
    retried: bool = False
    retry_code: str = ""
    first_detail: str = ""  # the status message of a first failure: it tells a kill from a GOAWAY race

    @property
    def ok(self) -> bool:
        return self.first_code == "OK" or self.retry_code == "OK"

    @property
    def latency_ms(self) -> float:
        return (self.ended - self.scheduled) * 1000.0


@dataclass
class RunLog:
    """Everything the run observed, for ``analyse``."""

    calls: list[CallRecord] = field(default_factory=list)
    kills: list[dict[str, Any]] = field(
        default_factory=list
    )  # {"at": s, "pid": ..., "replaced_by", "restart_s"}
    reloads: list[dict[str, Any]] = field(
        default_factory=list
    )  # {"at": s, "model", "outcome" | "error", "s"}
    rss: dict[int, list[tuple[float, float]]] = field(default_factory=dict)  # pid -> [(s, MB)]
    acknowledged_event_ids: list[str] = field(default_factory=list)
    send_lateness_ms: list[float] = field(default_factory=list)
    connections: dict[str, int] = field(default_factory=dict)  # worker pid -> client connections
    prefill: dict[str, Any] = field(default_factory=dict)  # {"events", "calls", "seconds"} before the clock


# -- analysis --------------------------------------------------------------------------------------


def rss_slope(samples: Sequence[tuple[float, float]], warmup_s: float) -> dict[str, Any]:
    """A least-squares line through the samples taken ``warmup_s`` after the series' first one.

    The slope is in MB per 10 minutes; None with fewer than 3 samples after the warm-up.
    """
    if not samples:
        return {"samples": 0, "fitted": 0, "slope_mb_per_10min": None}
    born = samples[0][0]
    kept = [(t, mb) for t, mb in samples if t - born >= warmup_s]
    out: dict[str, Any] = {
        "first_s": samples[0][0],
        "last_s": samples[-1][0],
        "first_mb": samples[0][1],
        "last_mb": samples[-1][1],
        "peak_mb": max(mb for _, mb in samples),
        "samples": len(samples),
        "fitted": len(kept),
        "slope_mb_per_10min": None,
    }
    if len(kept) >= 3 and kept[-1][0] > kept[0][0]:
        times = np.asarray([t for t, _ in kept]) / 600.0
        slope = float(np.polyfit(times, np.asarray([mb for _, mb in kept]), 1)[0])
        out["slope_mb_per_10min"] = round(slope, 3)
    return out


def at_a_kill(record: CallRecord, kills: Sequence[dict[str, Any]]) -> bool:
    """Whether the call was in flight when a worker was killed (with ``KILL_MARGIN_S`` after it)."""
    return any(
        record.scheduled <= kill["at"] + KILL_MARGIN_S and record.ended >= kill["at"] for kill in kills
    )


def call_accounting(calls: Sequence[CallRecord], kills: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts that must add up: sent = first-time successes + retried; retried = retry OK + retry failed."""
    first_failures = [c for c in calls if c.first_code != "OK"]
    codes: dict[str, int] = {}
    for c in first_failures:
        codes[c.first_code] = codes.get(c.first_code, 0) + 1
    by_rpc = {rpc: sum(1 for c in calls if c.rpc == rpc) for rpc in RPCS}
    return {
        "sent": len(calls),
        "sent_by_rpc": by_rpc,
        "succeeded_first_time": sum(1 for c in calls if c.first_code == "OK"),
        "failed_first_time": len(first_failures),
        "first_failure_codes": codes,
        "retried": sum(1 for c in calls if c.retried),
        "retry_succeeded": sum(1 for c in calls if c.retried and c.retry_code == "OK"),
        "retry_failed": sum(1 for c in calls if c.retried and c.retry_code != "OK"),
        "failed_not_at_a_kill": sum(1 for c in first_failures if not at_a_kill(c, kills)),
        # Each one listed (they are few): the time and message are what a diagnosis starts from.
        "failures_not_at_a_kill": [
            {
                "rpc": c.rpc,
                "scheduled_s": round(c.scheduled, 3),
                "ended_s": round(c.ended, 3),
                "code": c.first_code,
                "detail": c.first_detail,
                "retry_code": c.retry_code,
            }
            for c in first_failures
            if not at_a_kill(c, kills)
        ][:MAX_LISTED_FAILURES],
    }


def latency_windows(calls: Sequence[CallRecord], window_s: float) -> list[dict[str, Any]]:
    """Per window of scheduled send time: calls, failures (after retry), p50/p99/max of the successes."""
    windows: dict[int, list[CallRecord]] = {}
    for call in calls:
        windows.setdefault(int(call.scheduled // window_s), []).append(call)
    out = []
    for index in sorted(windows):
        group = windows[index]
        latencies = np.asarray([c.latency_ms for c in group if c.ok], dtype=np.float64)
        row: dict[str, Any] = {
            "start_s": index * window_s,
            "calls": len(group),
            "first_failures": sum(1 for c in group if c.first_code != "OK"),
            "failed": sum(1 for c in group if not c.ok),
        }
        for name, q in (("p50_ms", 50), ("p99_ms", 99)):
            row[name] = round(float(np.percentile(latencies, q)), 3) if latencies.size else None
        row["max_ms"] = round(float(latencies.max()), 3) if latencies.size else None
        out.append(row)
    return out


def missing_acknowledged(event_log: Path, acknowledged: Sequence[str]) -> int:
    """Acknowledged event ids the log does not hold after the run."""
    with EventLog.open(event_log) as log:
        stored = log.event_ids()
    return sum(1 for event_id in acknowledged if event_id not in stored)


def analyse(log: RunLog, *, warmup_s: float, window_s: float, missing_events: int) -> dict[str, Any]:
    """The result document's figures and verdicts from what the run observed."""
    accounting = call_accounting(log.calls, log.kills)
    series = []
    for pid, samples in log.rss.items():
        fitted = rss_slope(samples, warmup_s)
        series.append({"pid": pid, **fitted})
    slopes = [s["slope_mb_per_10min"] for s in series if s["slope_mb_per_10min"] is not None]
    lateness = np.asarray(log.send_lateness_ms or [0.0])
    latencies = np.asarray([c.latency_ms for c in log.calls if c.ok] or [np.nan])
    reload_failures = sum(1 for r in log.reloads if "error" in r)
    verdicts = {
        "retry_failed_is_0": accounting["retry_failed"] == 0,
        "failures_only_at_kills": accounting["failed_not_at_a_kill"] == 0,
        "no_acknowledged_event_lost": missing_events == 0,
        "no_reload_failed": reload_failures == 0,
        "rss_slope_within_target": bool(slopes) and max(slopes) <= RSS_TARGET_MB_PER_10_MIN,
    }
    return {
        "calls": accounting,
        "connections_per_worker": log.connections,
        "prefill": log.prefill,
        "acknowledged_events": len(log.acknowledged_event_ids),
        "acknowledged_events_missing": missing_events,
        "reloads": {
            "done": len(log.reloads),
            "retried": sum(1 for r in log.reloads if "first_error" in r),
            "failed": reload_failures,
            "each": log.reloads,
        },
        "kills": {"done": len(log.kills), "each": log.kills},
        "latency_overall": {
            "p50_ms": round(float(np.percentile(latencies, 50)), 3),
            "p99_ms": round(float(np.percentile(latencies, 99)), 3),
            "max_ms": round(float(np.max(latencies)), 3),
        },
        "send_lateness_ms": {
            "p50": round(float(np.percentile(lateness, 50)), 3),
            "p99": round(float(np.percentile(lateness, 99)), 3),
            "max": round(float(lateness.max()), 3),
        },
        "windows": latency_windows(log.calls, window_s),
        "rss": {
            "target_mb_per_10min": RSS_TARGET_MB_PER_10_MIN,
            "warmup_s": warmup_s,
            "max_slope_mb_per_10min": max(slopes) if slopes else None,
            "series": series,
            "samples": {str(pid): samples for pid, samples in log.rss.items()},
        },
        "verdicts": verdicts,
        "passed": all(verdicts.values()),
    }


# -- output ----------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def print_report(result: dict[str, Any], console: Console) -> None:
    calls = result["calls"]
    table = Table(
        title=f"soak: {result['settings']['rate']:g} calls/s for {result['settings']['duration_s']:g} s"
    )
    table.add_column("count")
    table.add_column("value", justify="right")
    rows = [
        ("calls sent", calls["sent"]),
        ("  " + ", ".join(f"{k} {v}" for k, v in calls["sent_by_rpc"].items()), ""),
        ("succeeded first time", calls["succeeded_first_time"]),
        ("failed first time", calls["failed_first_time"]),
        ("  codes", ", ".join(f"{k} {v}" for k, v in calls["first_failure_codes"].items()) or "-"),
        ("retried", calls["retried"]),
        ("retry succeeded", calls["retry_succeeded"]),
        ("retry failed (must be 0)", calls["retry_failed"]),
        ("failed not at a kill (must be 0)", calls["failed_not_at_a_kill"]),
        ("acknowledged events", result["acknowledged_events"]),
        ("acknowledged events missing (must be 0)", result["acknowledged_events_missing"]),
        (
            "reloads done / retried / failed",
            " / ".join(str(result["reloads"][k]) for k in ("done", "retried", "failed")),
        ),
        ("workers killed", result["kills"]["done"]),
        (
            "worker restart s",
            ", ".join(_cell(k.get("restart_s")) for k in result["kills"]["each"]) or "-",
        ),
        ("p50 / p99 / max ms", " / ".join(_cell(v) for v in result["latency_overall"].values())),
        ("send lateness p99 ms", _cell(result["send_lateness_ms"]["p99"])),
    ]
    for name, value in rows:
        table.add_row(name, _cell(value))
    console.print(table)
    windows = Table(title=f"latency per {result['settings']['window_s']:g} s of send time")
    for column in ("start s", "calls", "first failures", "failed", "p50 ms", "p99 ms", "max ms"):
        windows.add_column(column, justify="right")
    for w in result["windows"]:
        windows.add_row(
            *(
                _cell(w[k])
                for k in ("start_s", "calls", "first_failures", "failed", "p50_ms", "p99_ms", "max_ms")
            )
        )
    console.print(windows)
    rss = Table(title=f"worker RSS (slope after {result['rss']['warmup_s']:g} s of each worker's life)")
    for column in ("pid", "from s", "to s", "first MB", "last MB", "peak MB", "fitted", "MB / 10 min"):
        rss.add_column(column, justify="right")
    for s in result["rss"]["series"]:
        rss.add_row(
            *(
                _cell(s.get(k))
                for k in (
                    "pid",
                    "first_s",
                    "last_s",
                    "first_mb",
                    "last_mb",
                    "peak_mb",
                    "fitted",
                    "slope_mb_per_10min",
                )
            )
        )
    console.print(rss)
    verdicts = ", ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok in result["verdicts"].items())
    console.print(f"{'PASS' if result['passed'] else 'FAIL'}: {verdicts}")


_HISTORY_HEADER: Final = (
    "time", "rate/s", "duration s", "calls", "failed first", "retried", "retry failed", "failed not at kill",
    "acked events missing", "reloads (failed)", "kills", "p99 ms", "worst minute p99 ms",
    "max RSS slope MB/10min", "passed",
)  # fmt: skip


def write_results(result: dict[str, Any], folder: Path = RESULTS_DIR) -> Path:
    """The JSON document and a history row; returns the JSON path."""
    calls = result["calls"]
    p99s = [w["p99_ms"] for w in result["windows"] if w["p99_ms"] is not None]
    cells = [
        result["started_utc"][:19],
        f"{result['settings']['rate']:g}",
        f"{result['settings']['duration_s']:g}",
        calls["sent"],
        calls["failed_first_time"],
        calls["retried"],
        calls["retry_failed"],
        calls["failed_not_at_a_kill"],
        result["acknowledged_events_missing"],
        f"{result['reloads']['done']} ({result['reloads']['failed']})",
        result["kills"]["done"],
        _cell(result["latency_overall"]["p99_ms"]),
        _cell(max(p99s) if p99s else None),
        _cell(result["rss"]["max_slope_mb_per_10min"]),
        "yes" if result["passed"] else "no",
    ]
    return write_result(
        folder, "soak", utc_stamp(result["started_utc"]), result, _HISTORY_HEADER, [cells],
        title="# Soak runs (`make bench-soak`, benchmarks/soak.py)", indent=1,
    )  # fmt: skip
