"""The serving benchmark's report: terminal tables, the JSON result file and the Markdown history.

Other tools read the JSON documents in ``benchmarks/results/``, so their keys are a contract; the
tables and the history rows are built from the same rows.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from rich.text import Text

from benchmarks.latency_statistics import NAN
from benchmarks.mixed_workload import MIXED_RPCS
from benchmarks.serving_artifact_cache import BENCHMARKS_DIR
from benchmarks.serving_targets import (
    RATIO_KEYS,
    Capacity,
    closed_capacity,
    closed_phases,
    floor_run,
    ratios,
    target_rows,
    targets_title,
    verdict_summary,
)
from benchmarks.serving_workloads import K
from training.console_output import print_table, stderr_console, stdout_console

RESULTS_DIR: Final = BENCHMARKS_DIR / "results"


def _g(summary: Mapping[str, Any], key: str) -> float:
    value = summary.get(key, NAN)
    return float(value) if isinstance(value, int | float) else NAN


def phase_label(result: Mapping[str, Any], mode: str, phase: Mapping[str, Any], rate: float) -> str:
    """``closed c=16`` or ``open 300/s``: a phase's mode as the tables and the Markdown history show it."""
    if mode.startswith("closed"):
        return f"closed c={phase.get('concurrency', result['load']['concurrency'])}"
    return f"open {phase.get('rate', rate):g}/s"


def report_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per RPC and mode: the terminal tables and the Markdown history share these."""
    rows: list[dict[str, Any]] = []
    for rpc, kinds in result["in_process"].items():
        for kind, label in (("engine", "engine"), ("servicer", "servicer"), ("baseline", "numpy top-k")):
            if kind in kinds:
                rows.append({"rpc": rpc, "mode": label, "workers": "-", **kinds[kind], "errors": 0})
    for run in result["server_runs"]:
        for key, phase in run["phases"].items():
            rpc, mode = key.split("|")
            if mode == "closed-profiled":
                continue
            c = phase["client"]
            label = phase_label(result, mode, phase, result["rates"][rpc])
            rows.append(
                {
                    "rpc": rpc,
                    "mode": label,
                    "workers": run["workers"],
                    **c,
                    "errors": sum(c["errors"].values()) + c["dropped"],
                    "server_p50_ms": phase["server"].get("p50_ms", NAN),
                    "server_p95_ms": phase["server"].get("p95_ms", NAN),
                    "server_p99_ms": phase["server"].get("p99_ms", NAN),
                    "server_mean_ms": phase["server"].get("mean_ms", NAN),
                    "mean_batch_size": phase["server"].get("mean_batch_size", NAN),
                    "batch_cpu_ms_per_call": phase["server"].get("batch_cpu_ms_per_call", NAN),
                    "server_cpu_ms_per_call": phase["server_cpu_ms_per_call"],
                    "server_cpu_cores": phase["server_cpu_cores"],
                    "client_cpu_cores": c["client_cpu_cores"],
                    "send_lateness_p99_ms": c.get("send_lateness_ms", {}).get("p99", NAN),
                }
            )
    return rows


def short_rpc(rpc: str) -> str:
    """RPC names short enough for the wide tables of a 120-column terminal."""
    return rpc.replace("RecommendProducts", "Recommend").replace("GetPersonaProfile", "Profile")


def ratio_rows(result: Mapping[str, Any]) -> list[list[Any]]:
    """Per RPC and worker count: open-loop end-to-end p50 against in-process and the numpy baseline."""
    rows: list[list[Any]] = []
    for run in result["server_runs"]:
        for rpc, kinds in result["in_process"].items():
            phase = run["phases"].get(f"{rpc}|open")
            if phase is None:
                continue
            e2e = _g(phase["client"], "p50_ms")
            server = _g(phase["server"], "mean_ms")
            engine = _g(kinds["engine"], "p50_ms")
            servicer = _g(kinds["servicer"], "p50_ms")
            base = _g(kinds.get("baseline", {}), "p50_ms")
            rows.append(
                [
                    short_rpc(rpc),
                    run["workers"],
                    e2e,
                    server,
                    servicer,
                    engine,
                    base,
                    e2e / engine,
                    servicer / engine,
                    engine / base,
                ]
            )
    return rows


def print_report(result: Mapping[str, Any]) -> None:
    size = result["size"]
    build = result["build"]
    stderr_console.print()
    title = (
        f"artifact: {size['customers']:,} customers x {size['items']:,} items, {size['events']:,} events "
        f"(model {result['model']}{', cached build' if build.get('cached') else ''})"
    )
    if "train_seconds" in build:
        steps = [["generate shop", build["generate_seconds"], build["generate_peak_rss_mb"]]]
        steps += [
            [f"  train: {name}", seconds, NAN] for name, seconds in build["train_steps_seconds"].items()
        ]
        steps += [["train, total", build["train_seconds"], build["train_peak_rss_mb"]]]
        print_table(title, ["build step", "seconds", "peak RSS MB"], steps)
    else:
        stdout_console.print(Text.assemble((title, "bold"), ": built elsewhere, no build figures"))
    rows = report_rows(result)
    client_keys = ["calls", "errors", "p50_ms", "p95_ms", "p99_ms", "max_ms", "calls_per_s"]
    print_table(
        f"latency per call as the caller sees it (k={K}; in-process kinds run one call at a time)",
        ["rpc", "mode", "workers", "calls", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms", "calls/s"],
        [[r["rpc"], r["mode"], str(r["workers"]), *(r.get(k, NAN) for k in client_keys)] for r in rows],
    )
    served = [r for r in rows if r["workers"] != "-"]
    latency_keys = ["server_p50_ms", "server_p95_ms", "server_p99_ms", "server_mean_ms", "mean_batch_size",
                    "send_lateness_p99_ms"]  # fmt: skip
    print_table(
        "server side of the load phases (quantiles estimated from the histogram buckets, mean exact; "
        "batch: calls per dynamic batch, on average; late: p99 ms by which the load generator sent later "
        "than scheduled)",
        ["rpc", "mode", "workers", "p50 ms", "p95 ms", "p99 ms", "mean ms", "batch", "late p99"],
        [
            [short_rpc(r["rpc"]), r["mode"], str(r["workers"]), *(r.get(k, NAN) for k in latency_keys)]
            for r in served
        ],
    )
    cpu_keys = ["batch_cpu_ms_per_call", "server_cpu_ms_per_call", "server_cpu_cores", "client_cpu_cores"]
    print_table(
        "CPU of the load phases (scoring: CPU ms per call the event loop's thread spent scoring the dynamic "
        "batches, the engine inside the server, against the in-process rows above; server: every server "
        "process's CPU ms per call; cores used by the server and by the load generator)",
        ["rpc", "mode", "workers", "scoring ms", "server ms", "server cores", "generator cores"],
        [
            [short_rpc(r["rpc"]), r["mode"], str(r["workers"]), *(r.get(k, NAN) for k in cpu_keys)]
            for r in served
        ],
    )
    print_table(
        "p50 ratios: end to end (open loop) / servicer / engine / numpy top-k",
        [
            "rpc",
            "workers",
            "e2e ms",
            "srv mean",
            "servicer",
            "engine ms",
            "numpy ms",
            "e2e/eng",
            "svc/eng",
            "eng/numpy",
        ],
        ratio_rows(result),
    )
    quality = result.get("candidate_index", {})
    if quality.get("queries"):
        print_table(
            f"candidate index ({quality['lists']} lists, at most {quality['max_probe']} probed, built in "
            f"{quality['build_seconds']:.1f} s) against the exact full scan, {quality['queries']} customers",
            ["recall@k", "certified", "candidates p50", "candidates p99", "search p50 ms", "search p99 ms",
             "full scan p50 ms", "full scan p99 ms"],
            [[quality["recall_at_k"], quality["certified_share"], quality["candidates_p50"],
              quality["candidates_p99"], quality["search_p50_ms"], quality["search_p99_ms"],
              quality["full_scan_p50_ms"], quality["full_scan_p99_ms"]]],
        )  # fmt: skip
    elif quality:
        stdout_console.print(
            "candidate index: not used (exact full scan; catalogs from "
            f"{quality['min_items']:,} items get one)"
        )
    if result.get("mixed_runs"):
        print_mixed_report(result)
    for run in result["server_runs"]:
        profiled = run["phases"].get("Personalize|closed-profiled")
        if profiled is None:
            continue
        cpu_ms = profiled["server_cpu_ms_per_call"]
        gil_ms = profiled["profile"]["gil_ms_per_call"]
        shares = profiled["profile"]["categories"]
        print_table(
            f"where a Personalize call's GIL time goes ({run['workers']} worker(s), py-spy --gil"
            f"{' --native' if profiled['profile'].get('native') else ''}, "
            f"{profiled['profile']['samples']:,} samples): {gil_ms:.2f} ms with the GIL of "
            f"{cpu_ms:.2f} CPU ms per call",
            ["part", "share of samples", "~CPU ms per call"],
            # Scaled by CPU time, not by GIL time: a thread keeps the GIL while the OS has it
            # descheduled, so on a busy machine GIL time runs ahead of the CPU time actually spent.
            [[name, share, share * cpu_ms] for name, share in shares.items()],
        )
    print_verdicts(result)


def print_verdicts(result: Mapping[str, Any]) -> None:
    """The gRPC floor, the ratios and the targets' verdicts: the last tables, the ones to read first."""
    print_floor_report(result)
    print_capacity_report(result)
    by_workers = ratios(result)["by_workers"]
    if by_workers:
        print_table(
            f"ratios (JSON 'ratios': {', '.join(RATIO_KEYS)}; the top-level keys are the "
            f"{max(int(w) for w in by_workers)}-worker run's)",
            [
                "workers",
                "Personalize/floor calls/s",
                "server CPU/servicer",
                "srv <= 5 ms at 300/s",
                "mixed p99/alone",
                "Pers./floor capacity",
            ],
            [[w, *(NAN if v.get(k) is None else v[k] for k in RATIO_KEYS)] for w, v in by_workers.items()],
        )
    rows = target_rows(result)
    print_table(
        targets_title(result),
        ["target", "workers", "measured", "target", "verdict"],
        [r.cells() for r in rows],
    )
    stdout_console.print(f"targets: {verdict_summary(rows)}", highlight=False)
    stalls = stalls_line(result)
    if stalls is not None:  # read the tail figures with it: a stall delays every call in flight
        stdout_console.print(stalls, highlight=False)


def write_results(result: Mapping[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.fromisoformat(result["time"]).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"serving_latency-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    history = RESULTS_DIR / "serving_latency.md"
    if not history.exists():
        history.write_text(
            "| time | customers x items | load avg | rpc | mode | workers | calls | errors | p50 ms | p95 ms "
            "| p99 ms | max ms | calls/s | server p50 ms | server p99 ms |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
            encoding="utf-8",
        )
    size = f"{result['size']['customers']} x {result['size']['items']}"
    # The 1-minute load average when the run started: other work on the machine skews every figure.
    load = result["machine"].get("load_average_at_start", [NAN])[0]

    def cell(value: Any) -> str:
        return (
            "-"
            if isinstance(value, float) and value != value
            else f"{value:.3f}"
            if isinstance(value, float)
            else str(value)
        )

    with history.open("a", encoding="utf-8") as out:
        quality = result.get("candidate_index", {})
        if quality.get("queries"):
            out.write(
                f"| {result['time']} | {size} | {load:.1f} | candidate index | "
                f"recall@{quality['k']} {quality['recall_at_k']:.4f}, "
                f"certified {quality['certified_share']:.3f} | "
                f"- | {quality['queries']} | - | {quality['search_p50_ms']:.3f} | - | "
                f"{quality['search_p99_ms']:.3f} | - | - | - | - |\n"
            )
        for r in report_rows(result) + mixed_rows(result) + floor_rows(result):
            values = [r.get(k, NAN) for k in ("calls", "errors", "p50_ms", "p95_ms", "p99_ms", "max_ms")]
            out.write(
                f"| {result['time']} | {size} | {load:.1f} | {r['rpc']} | {r['mode']} | {r['workers']} | "
                + " | ".join(cell(v) for v in values)
                + f" | {r.get('calls_per_s', NAN):.0f} | {cell(r.get('server_p50_ms', NAN))} | "
                f"{cell(r.get('server_p99_ms', NAN))} |\n"
            )
    return path


def mixed_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per mixed phase and RPC, in the shape of ``report_rows``."""
    rows: list[dict[str, Any]] = []
    mixed: dict[str, Any] = result.get("mixed") or {}
    for run in result.get("mixed_runs", []):
        for mode, phase in run["phases"].items():
            label = (
                f"mixed closed c={result['load']['concurrency']}"
                if mode == "closed"
                else f"mixed open {mixed['open_rate']:g}/s"
            )
            for rpc in MIXED_RPCS:
                c = phase[rpc]["client"]
                name = rpc if rpc == "Personalize" else f"RecordEvents[{mixed['events_per_write']}]"
                rows.append(
                    {
                        "rpc": f"{name} ({mixed['write_share']:.0%} writes)",
                        "mode": label,
                        "workers": run["workers"],
                        **c,
                        "errors": sum(c["errors"].values()) + c["dropped"],
                        "server_p50_ms": phase[rpc]["server"].get("p50_ms", NAN),
                        "server_p99_ms": phase[rpc]["server"].get("p99_ms", NAN),
                    }
                )
    return rows


def print_mixed_report(result: Mapping[str, Any]) -> None:
    mixed = result["mixed"]
    keys = ["calls", "errors", "p50_ms", "p95_ms", "p99_ms", "calls_per_s", "server_p50_ms", "server_p99_ms"]
    print_table(
        f"mixed workload: Personalize with {mixed['write_share']:.0%} of calls RecordEvents "
        f"({mixed['events_per_write']} new events each, durable event log; served decisions logged)",
        [
            "rpc",
            "mode",
            "workers",
            "calls",
            "errors",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "calls/s",
            "srv p50",
            "srv p99",
        ],
        [
            [
                short_rpc(r["rpc"].split(" (")[0]),
                r["mode"].removeprefix("mixed "),
                str(r["workers"]),
                *(r.get(k, NAN) for k in keys),
            ]
            for r in mixed_rows(result)
        ],
    )
    ratios = []
    for run in result["mixed_runs"]:
        alone = next((r for r in result["server_runs"] if r["workers"] == run["workers"]), None)
        for mode, phase in run["phases"].items():
            reference = (alone or {}).get("phases", {}).get(f"Personalize|{mode}")
            if reference is None:
                continue
            mixed_client, alone_client = phase["Personalize"]["client"], reference["client"]
            ratios.append(
                [
                    mode,
                    str(run["workers"]),
                    _g(mixed_client, "p50_ms") / _g(alone_client, "p50_ms"),
                    _g(mixed_client, "p99_ms") / _g(alone_client, "p99_ms"),
                    _g(mixed_client, "calls_per_s") / _g(alone_client, "calls_per_s"),
                    phase["write_share_measured"],
                    run["event_log_rows"]["events"],
                ]
            )
    if ratios:
        print_table(
            "Personalize in the mixed workload / Personalize alone (same run, same load)",
            [
                "mode",
                "workers",
                "p50 ratio",
                "p99 ratio",
                "calls/s ratio",
                "write share",
                "events logged (run)",
            ],
            ratios,
        )
    paired = [run for run in result["mixed_runs"] if run.get("open_paired")]
    if paired:
        print_table(
            "Personalize p99, open loop, read-only and mixed slices interleaved on the mixed workload's "
            "server (pooled calls of each kind; the ratio is mixed_personalize_p99_vs_read_only)",
            [
                "workers",
                "rounds",
                "read-only calls",
                "read-only p99 ms",
                "mixed calls",
                "mixed p99 ms",
                "ratio",
                "per round",
                "machine stalls per round",
            ],
            [
                [
                    str(run["workers"]),
                    p["rounds"],
                    p["read_only_calls"],
                    p["read_only_p99_ms"],
                    p["mixed_calls"],
                    p["mixed_p99_ms"],
                    p["ratio"],
                    " ".join(f"{x:.2f}" for x in p["round_ratios"]),
                    _round_stalls(p),
                ]
                for run in paired
                for p in (run["open_paired"],)
            ],
        )


def _round_stalls(paired: Mapping[str, Any]) -> str:
    """Stall counts per round as "read-only/mixed" slices (phases in results from before the slices;
    "-" for results from before the stall watch)."""
    rounds = paired.get("round_stalls")
    if rounds is None:
        return "-"
    return " ".join(f"{alone['count']}/{mixed['count']}" for alone, mixed in rounds)


def stalls_line(result: Mapping[str, Any]) -> str | None:
    """One sentence on the machine's stalls during the load phases (None before the stall watch)."""
    stalls = result.get("machine_stalls")
    if not stalls:
        return None
    return (
        f"machine stalls (a sleeping process woken over {stalls['threshold_ms']:g} ms late): "
        f"{stalls['count']} in {stalls['watched_s'] / 60:.1f} min of load phases, "
        f"{stalls['per_minute']:.1f} a minute, longest {stalls['longest_ms']:.1f} ms"
    )


def floor_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per floor phase, shaped as ``report_rows``; history label ``Personalize (gRPC floor)``."""
    rows: list[dict[str, Any]] = []
    for run in (result.get("floor") or {}).get("runs", []):
        for key, phase in run.get("phases", {}).items():
            mode = key.split("|")[1]
            c = phase["client"]
            rows.append(
                {
                    "rpc": "Personalize (gRPC floor)",
                    "mode": phase_label(result, mode, phase, NAN),
                    "workers": run["workers"],
                    **c,
                    "errors": sum(c["errors"].values()) + c["dropped"],
                    "server_p50_ms": phase["server"].get("p50_ms", NAN),
                    "server_p99_ms": phase["server"].get("p99_ms", NAN),
                    "server_cpu_ms_per_call": phase["server_cpu_ms_per_call_with_supervisor"],
                }
            )
    return rows


def capacity_rows(result: Mapping[str, Any]) -> list[list[Any]]:
    """Per worker count and closed-loop concurrency: Personalize against the floor, with the batch size
    and CPU per call that explain the difference; the last column names the servers whose best
    concurrency it is."""
    rows: list[list[Any]] = []
    for run in result.get("server_runs", []):
        floor = floor_run(result, run["workers"]) or {}
        mine = closed_phases(result, run, "Personalize")
        theirs = closed_phases(result, floor, "Personalize")
        if len(mine) < 2:
            continue
        best = closed_capacity(result, run, "Personalize")
        floor_best = closed_capacity(result, floor, "Personalize")
        for concurrency in sorted(set(mine) | set(theirs)):
            phase, other = mine.get(concurrency, {}), theirs.get(concurrency, {})
            calls = _g(phase.get("client", {}), "calls_per_s")
            floor_calls = _g(other.get("client", {}), "calls_per_s")
            rows.append(
                [
                    str(run["workers"]),
                    str(concurrency),
                    calls,
                    floor_calls,
                    calls / floor_calls if floor_calls > 0 else NAN,
                    _g(phase.get("server", {}), "mean_batch_size"),
                    _g(phase, "server_cpu_ms_per_call_with_supervisor"),
                    _g(other, "server_cpu_ms_per_call_with_supervisor"),
                    _g(phase.get("client", {}), "p99_ms"),
                    _best_of(concurrency, best, floor_best),
                ]
            )
    return rows


def _best_of(concurrency: int, mine: Capacity | None, floor: Capacity | None) -> str:
    """``Pers.``, ``floor``, ``both`` or nothing: whose best concurrency this is."""
    names = [
        name for name, top in (("Pers.", mine), ("floor", floor)) if top and top.concurrency == concurrency
    ]
    return "both" if len(names) == 2 else "".join(names)


def print_capacity_report(result: Mapping[str, Any]) -> None:
    """The closed-loop capacity table, when Personalize ran at more than one concurrency."""
    rows = capacity_rows(result)
    if rows:
        print_table(
            "closed-loop capacity: Personalize and the gRPC floor at each concurrency (best: the "
            "concurrency of each one's highest calls/s, compared in 'Pers./floor capacity'); batch: calls "
            "per dynamic batch; CPU: server CPU ms per call",
            ["workers", "c", "Pers. calls/s", "floor calls/s", "Pers./floor", "batch", "Pers. CPU ms",
             "floor CPU ms", "Pers. p99 ms", "best"],
            rows,
        )  # fmt: skip


def print_floor_report(result: Mapping[str, Any]) -> None:
    """Personalize against the floor, per worker count; a skipped floor says why."""
    floor = result.get("floor")
    if not floor:
        return
    rows = []
    for run in floor["runs"]:
        if run.get("skipped"):
            stdout_console.print(
                f"gRPC floor ({run['workers']} worker(s)): skipped: {run['skipped']}", highlight=False
            )
            continue
        alone: Mapping[str, Any] = next(
            (r for r in result["server_runs"] if r["workers"] == run["workers"]), {}
        )
        closed = alone.get("phases", {}).get("Personalize|closed", {})
        opened = alone.get("phases", {}).get("Personalize|open", {})
        real_bytes = alone.get("responses", {}).get("Personalize", {}).get("response_bytes", NAN)

        def number(value: Any) -> float:
            return NAN if value is None else float(value)

        rows.append(
            [
                str(run["workers"]),
                number(run["calls_per_s"]),
                _g(closed.get("client", {}), "calls_per_s"),
                number(run["server_cpu_ms_per_call"]),
                _g(closed, "server_cpu_ms_per_call_with_supervisor"),
                number(run["server_p99_ms"]),
                _g(opened.get("server", {}), "p99_ms"),
                number(run["response_bytes"]),
                float(real_bytes),
            ]
        )
    if rows:
        print_table(
            f"gRPC floor: the same server ({floor['server_flag']}) answering Personalize with one response "
            f"prepared at start, no engine call; closed c={result['load']['concurrency']}, server p99 open "
            f"{result['rates'].get('Personalize', NAN):g}/s",
            ["workers", "floor calls/s", "Pers. calls/s", "floor CPU ms", "Pers. CPU ms", "floor srv p99",
             "Pers. srv p99", "floor bytes", "Pers. bytes"],
            rows,
        )  # fmt: skip
