"""The serving benchmark's judgement of a run: the ratios other tools read, and the issue's targets.

Pure functions of a result document (``benchmarks.serving_latency``'s JSON), so that a stored result
can be judged again and the rules are tested without a server. Missing figures (a skipped floor, an
RPC left out with ``--rpcs``, no mixed workload) give ``None``, never a made-up number: a ratio against
nothing is not 0, and a target not measured is neither met nor missed.

``ratios`` (keys read by other tools; keep them exactly)::

    {"workers": 2,                                   # the worker count the top-level keys describe
     "personalize_vs_floor_throughput": 0.61,        # closed-loop Personalize calls/s / floor calls/s
                                                     # (both at --concurrency)
     "personalize_vs_floor_capacity": 0.63,          # the same at each one's best closed-loop
                                                     # concurrency (--personalize-extra-concurrency)
     "server_cpu_vs_servicer": 1.4,                  # server CPU ms per call / in-process servicer mean
     "personalize_share_within_5ms_at_300": 0.993,   # server side, open loop 300/s
     "mixed_personalize_p99_vs_read_only": 1.1,      # open loop, 10% RecordEvents / Personalize alone,
                                                     # p99s of the pooled reads of each kind (mixed_workload)
     "by_workers": {"1": {...same keys...}, "2": {...}}}

Capacity: a server that batches gets cheaper per call as more calls are in flight (batches of 4-5 at 16
callers over 2 workers, of 5-8 at 32), while the floor is as cheap at any concurrency. One
concurrency therefore compares a batching server below its capacity with a floor at its own, so the
benchmark also runs Personalize closed loop at further concurrencies on both servers and compares
each one's best: ``closed_capacity``. The targets table judges the throughput targets both ways.

The targets are set for the large shop (1M customers x 100k items) at 2 workers; they are judged on
the run with 2 workers (or the largest worker count run) whatever the shop, and the table says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from benchmarks.load_phases import closed_concurrency, open_phase_key

TARGET_WORKERS: Final = 2
TARGET_SHOP: Final = (1_000_000, 100_000)  # customers, items
LOW_RATE: Final = 300.0  # open-loop Personalize calls/s of the latency targets
HIGH_RATE: Final = 1000.0
# Personalize's further closed-loop concurrencies by default, beside --concurrency (16): capacity.
CAPACITY_CONCURRENCIES: Final = (32, 64)
SERVER_P99_MS: Final = 5.0
QUANTILE_SHARE: Final = 0.99  # "p99 <= bound" holds when at least this share of calls is within it
RATIO_KEYS: Final = (
    "personalize_vs_floor_throughput",
    "server_cpu_vs_servicer",
    "personalize_share_within_5ms_at_300",
    "mixed_personalize_p99_vs_read_only",
    "personalize_vs_floor_capacity",
)

Number = float | None


def _number(value: Any) -> Number:
    """A finite number, or None for anything else (missing, NaN, null)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _ratio(numerator: Any, denominator: Any) -> Number:
    a, b = _number(numerator), _number(denominator)
    return a / b if a is not None and b is not None and b > 0 else None


def open_phase(result: Mapping[str, Any], run: Mapping[str, Any], rpc: str, rate: float) -> Any:
    """The run's open-loop phase of ``rpc`` at ``rate`` calls/s, or None when it was not run."""
    base = result.get("rates", {}).get(rpc)
    phases = run.get("phases") or {}
    return phases.get(open_phase_key(rpc, rate, base if base is not None else math.nan))


def floor_run(result: Mapping[str, Any], workers: int) -> Any:
    """The floor run with ``workers`` workers, or None."""
    runs = (result.get("floor") or {}).get("runs") or []
    return next((r for r in runs if r.get("workers") == workers), None)


@dataclass(frozen=True)
class Capacity:
    """The best closed-loop throughput of one RPC on one server, the concurrency it was reached at, and
    the concurrencies tried."""

    calls_per_s: float
    concurrency: int
    tried: tuple[int, ...]


def closed_phases(result: Mapping[str, Any], run: Mapping[str, Any], rpc: str) -> dict[int, Any]:
    """The run's closed-loop phases of ``rpc`` by concurrency (``rpc|closed`` at ``load.concurrency``)."""
    base = (result.get("load") or {}).get("concurrency")
    out: dict[int, Any] = {}
    for key, phase in (run.get("phases") or {}).items():
        if key == f"{rpc}|closed" and isinstance(base, int):
            out[base] = phase
        elif key.startswith(f"{rpc}|") and (concurrency := closed_concurrency(key)) is not None:
            out[concurrency] = phase
    return dict(sorted(out.items()))


def closed_capacity(result: Mapping[str, Any], run: Mapping[str, Any], rpc: str) -> Capacity | None:
    """The best closed-loop calls/s of ``rpc`` in ``run`` over its concurrencies, or None when no
    closed phase measured it. A phase with failed calls does not count: capacity is what is served."""
    best: Capacity | None = None
    phases = closed_phases(result, run, rpc)
    tried = tuple(phases)
    for concurrency, phase in phases.items():
        client = phase.get("client") or {}
        calls = _number(client.get("calls_per_s"))
        if calls is None or sum((client.get("errors") or {}).values()) > 0:
            continue
        if best is None or calls > best.calls_per_s:
            best = Capacity(calls, concurrency, tried)
    return best


def capacity_ratio(result: Mapping[str, Any], run: Mapping[str, Any]) -> Number:
    """Personalize's capacity over the floor's with the same workers; None unless both ran more than
    one closed-loop concurrency (with one, the capacity is ``personalize_vs_floor_throughput``)."""
    mine = closed_capacity(result, run, "Personalize")
    floor = closed_capacity(result, floor_run(result, run["workers"]) or {}, "Personalize")
    if mine is None or floor is None or len(mine.tried) < 2 or len(floor.tried) < 2:
        return None
    return _ratio(mine.calls_per_s, floor.calls_per_s)


def _server_cpu_ms(phase: Mapping[str, Any]) -> Any:
    # Results from before the supervisor was counted have only the workers' figure.
    return phase.get("server_cpu_ms_per_call_with_supervisor", phase.get("server_cpu_ms_per_call"))


def run_ratios(result: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Number]:
    """The ratios of one worker count (module docstring)."""
    workers = run["workers"]
    phases = run.get("phases") or {}
    closed = phases.get("Personalize|closed") or {}
    floor = floor_run(result, workers) or {}
    servicer = result.get("in_process", {}).get("Personalize", {}).get("servicer", {})
    low = open_phase(result, run, "Personalize", LOW_RATE) or {}
    within = (low.get("server") or {}).get("share_within_ms", {}).get(f"{SERVER_P99_MS:g}")
    mixed = next((m for m in result.get("mixed_runs", []) if m.get("workers") == workers), None)
    mixed_open = ((mixed or {}).get("phases") or {}).get("open") or {}
    alone_open = phases.get("Personalize|open") or {}
    return {
        "personalize_vs_floor_throughput": _ratio(
            (closed.get("client") or {}).get("calls_per_s"), floor.get("calls_per_s")
        ),
        "server_cpu_vs_servicer": _ratio(_server_cpu_ms(closed), servicer.get("mean_ms")),
        "personalize_share_within_5ms_at_300": _number(within),
        "mixed_personalize_p99_vs_read_only": _mixed_ratio(mixed or {}, mixed_open, alone_open),
        "personalize_vs_floor_capacity": capacity_ratio(result, run),
    }


def _mixed_ratio(
    mixed: Mapping[str, Any], mixed_open: Mapping[str, Any], alone_open: Mapping[str, Any]
) -> Number:
    """Personalize's open-loop p99 with writes over its p99 alone: of the pooled reads of each kind on
    the mixed workload's server (``benchmarks.mixed_workload``: interleaved slices, alternating phases in
    results of 2026-12-05 and 06); older results compare the mixed phase with the main runs' read-only
    phase."""
    paired = mixed.get("open_paired")
    if paired is not None:
        return _number(paired.get("ratio"))
    return _ratio(
        ((mixed_open.get("Personalize") or {}).get("client") or {}).get("p99_ms"),
        (alone_open.get("client") or {}).get("p99_ms"),
    )


def ratios(result: Mapping[str, Any]) -> dict[str, Any]:
    """The result document's ``ratios``: per worker count, and the largest count's at the top level."""
    by_workers = {str(run["workers"]): run_ratios(result, run) for run in result.get("server_runs", [])}
    if not by_workers:
        return {"workers": None, **dict.fromkeys(RATIO_KEYS), "by_workers": {}}
    top = max(int(w) for w in by_workers)
    return {"workers": top, **by_workers[str(top)], "by_workers": by_workers}


# -- targets -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """How a target's figures read: ``calls/s``, ``ms``, ``x`` (a ratio) or ``%`` (a share)."""

    suffix: str
    digits: int
    percent: bool = False

    def show(self, value: float) -> str:
        if self.percent:
            return f"{value * 100:.{self.digits}f}%"
        return f"{value:,.{self.digits}f} {self.suffix}".rstrip()

    def gap(self, value: float) -> str:
        return f"{value * 100:.{self.digits}f} points" if self.percent else self.show(value)


CALLS: Final = Unit("calls/s", 0)
MS: Final = Unit("ms", 2)
TIMES: Final = Unit("x", 2)
SHARE: Final = Unit("", 1, percent=True)


def verdict(
    measured: Any, bound: float, at_least: bool, unit: Unit, why_missing: str = ""
) -> tuple[bool | None, str]:
    """Met or missed, and by how much: ``(True, "met")``, ``(False, "missed by 150 calls/s (7.5%)")``,
    or ``(None, "not measured: ...")`` when there is no figure."""
    value = _number(measured)
    if value is None:
        return None, f"not measured{': ' + why_missing if why_missing else ''}"
    if (value >= bound) if at_least else (value <= bound):
        return True, "met"
    gap = bound - value if at_least else value - bound
    return False, f"missed by {unit.gap(gap)} ({gap / bound:.0%} {'short' if at_least else 'over'})"


def latency_verdict(
    phase: Any, bound_ms: float, *, server: bool = False, no_errors: bool = False, why_missing: str = ""
) -> tuple[Number, bool | None, str]:
    """A "p99 <= bound" target on a phase: the p99 shown, and the verdict from the exact share of calls
    within the bound (interpolated quantiles are only estimates; failed and dropped calls count as
    late end to end). With ``no_errors`` any failed or dropped call misses too."""
    if not phase:
        return None, None, f"not measured{': ' + why_missing if why_missing else ''}"
    side = phase.get("server" if server else "client") or {}
    p99 = _number(side.get("p99_ms"))
    share = _number((side.get("share_within_ms") or {}).get(f"{bound_ms:g}"))
    if share is None and not server and bound_ms == 10.0:
        share = _number(side.get("share_within_target"))  # results from before share_within_ms
    client = phase.get("client") or {}
    failed = sum((client.get("errors") or {}).values()) + int(client.get("dropped", 0))
    if share is None:
        met, text = verdict(p99, bound_ms, False, MS, why_missing or "no share within the bound")
    elif share >= QUANTILE_SHARE:
        met, text = True, "met"
    elif p99 is not None and p99 > bound_ms:
        met, text = False, f"missed by {MS.gap(p99 - bound_ms)} ({share:.1%} within {bound_ms:g} ms)"
    else:
        met, text = False, f"missed: {1 - share:.1%} of calls failed or later than {bound_ms:g} ms"
    if no_errors and failed:
        met = False
        text = f"{'missed' if text == 'met' else text}; {failed:,} failed or dropped"
    return p99, met, text


@dataclass(frozen=True)
class TargetRow:
    """One target judged: what, on how many workers, the figure, the bound, the verdict."""

    target: str
    workers: int | str
    measured: Number
    unit: Unit
    bound: str
    met: bool | None
    verdict: str

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "workers": self.workers,
            "measured": self.measured,
            "bound": self.bound,
            "met": self.met,
            "verdict": self.verdict,
        }

    def cells(self) -> list[str]:
        measured = "-" if self.measured is None else self.unit.show(self.measured)
        return [self.target, str(self.workers), measured, self.bound, self.verdict]


def target_run(result: Mapping[str, Any]) -> Any:
    """The run the targets are judged on: 2 workers when run, else the largest worker count."""
    runs = result.get("server_runs") or []
    if not runs:
        return None
    return next((r for r in runs if r["workers"] == TARGET_WORKERS), max(runs, key=lambda r: r["workers"]))


def target_rows(result: Mapping[str, Any]) -> list[TargetRow]:
    """The issue's targets against this run (module docstring), one row each."""
    rows: list[TargetRow] = []
    engine = result.get("in_process", {}).get("Personalize", {}).get("engine", {}).get("p50_ms")
    met, text = verdict(engine, 0.3, False, MS, "Personalize not among --rpcs")
    rows.append(
        TargetRow("engine Personalize p50, in-process", "-", _number(engine), MS, "<= 0.30 ms", met, text)
    )
    run = target_run(result)
    if run is None:
        return rows
    w = run["workers"]
    ratio = run_ratios(result, run)
    closed = (run.get("phases") or {}).get("Personalize|closed") or {}
    concurrency = result.get("load", {}).get("concurrency", "?")

    def add(name: str, measured: Any, bound: float, at_least: bool, unit: Unit, why: str = "") -> None:
        met, text = verdict(measured, bound, at_least, unit, why)
        shown = f"{'>=' if at_least else '<='} {unit.show(bound)}"
        rows.append(TargetRow(name, w, _number(measured), unit, shown, met, text))

    calls = (closed.get("client") or {}).get("calls_per_s")
    add(f"Personalize calls/s, closed c={concurrency}", calls, 2000.0, True, CALLS, "no closed phase")
    floor = floor_run(result, w) or {}
    add(
        "Personalize / gRPC floor calls/s",
        ratio["personalize_vs_floor_throughput"],
        0.60,
        True,
        SHARE,
        "gRPC floor skipped (the floor section says why)" if floor.get("skipped") else "no floor run",
    )
    mine = closed_capacity(result, run, "Personalize")
    if mine is not None and len(mine.tried) > 1:
        tried = ", ".join(str(c) for c in mine.tried)
        add(
            f"Personalize capacity: best closed c of {tried} (c={mine.concurrency})",
            mine.calls_per_s,
            2000.0,
            True,
            CALLS,
        )
        add(
            "Personalize / gRPC floor capacity (each at its best c)",
            ratio["personalize_vs_floor_capacity"],
            0.60,
            True,
            SHARE,
            "the floor did not run the same concurrencies",
        )
    for name, rate, bound, server, no_errors in (
        (f"server p99, open {LOW_RATE:,.0f}/s", LOW_RATE, SERVER_P99_MS, True, False),
        (f"end-to-end p99, open {LOW_RATE:,.0f}/s", LOW_RATE, 10.0, False, False),
        (f"end-to-end p99 + no errors, open {HIGH_RATE:,.0f}/s", HIGH_RATE, 25.0, False, True),
    ):
        phase = open_phase(result, run, "Personalize", rate)
        p99, met, text = latency_verdict(
            phase, bound, server=server, no_errors=no_errors, why_missing=f"no open phase at {rate:g}/s"
        )
        rows.append(TargetRow(name, w, p99, MS, f"<= {MS.show(bound)}", met, text))
    add("server CPU per call / servicer mean", ratio["server_cpu_vs_servicer"], 1.3, False, TIMES)
    add(
        "mixed 10% writes: Personalize p99 / alone",
        ratio["mixed_personalize_p99_vs_read_only"],
        1.2,
        False,
        TIMES,
        "no mixed workload (--mixed-write-share 0.1)",
    )
    return rows


def targets_section(result: Mapping[str, Any]) -> dict[str, Any]:
    """The result document's ``targets``: where they are set, the run judged, and one entry per target."""
    run = target_run(result)
    return {
        "set_for": {"customers": TARGET_SHOP[0], "items": TARGET_SHOP[1], "workers": TARGET_WORKERS},
        "judged_workers": None if run is None else run["workers"],
        "rows": [row.to_json() for row in target_rows(result)],
    }


def targets_title(result: Mapping[str, Any]) -> str:
    """The targets table's title: the shop and workers they are set for against this run's."""
    size = result.get("size", {})
    run = target_run(result)
    shop = (size.get("customers"), size.get("items"))
    same = shop == TARGET_SHOP and run is not None and run["workers"] == TARGET_WORKERS
    this = f"{shop[0] or 0:,} x {shop[1] or 0:,}, {run['workers'] if run else '-'} worker(s)"
    note = "" if same else f" (this run: {this}; judged anyway)"
    return (
        f"Personalize against the issue's targets, set for {TARGET_SHOP[0]:,} customers x "
        f"{TARGET_SHOP[1]:,} items at {TARGET_WORKERS} workers{note}"
    )


def verdict_summary(rows: Sequence[TargetRow]) -> str:
    """One line under the table: ``3 met, 4 missed, 1 not measured``."""
    counts = [(sum(1 for r in rows if r.met is value), label)
              for value, label in ((True, "met"), (False, "missed"), (None, "not measured"))]  # fmt: skip
    return ", ".join(f"{n} {label}" for n, label in counts if n) or "no targets"
