"""Fuzz the real server: every RPC, fuzzed request bytes, counts by status code, health and memory after.

``python -m benchmarks.fuzz`` (``make bench-fuzz``) starts ``persona-engine serve`` the way the other
serving benchmarks do (``serving.server_process``; 2 workers, the event log and the admin token on,
the production access-log sampling) and sends it ``--requests`` requests (default 100,000) made by
``benchmarks.fuzz_requests``: every RPC of every service, health and reflection included, with valid,
field-fuzzed, mutated, random, empty, oversized and huge (1 MiB, 4 MB, over the request cap) bytes.
A warm-up part (``--warmup`` requests of the same mix) comes first, so that caches, arenas and lazily
built state exist before the measured part starts.

Every request is generated before the part that sends it (seeded, about 50 µs each), so the sending
loop is grpc calls only and the server, not the client, is the bottleneck. Admin calls carry the
token (a few carry a wrong one, or none).

Verdict: **pass** when no call got INTERNAL or UNKNOWN, health says SERVING afterwards, no worker
died, and each worker's resident memory at the end is at most ``--rss-limit`` (1.2) times what it
was when the measured part started. The table counts status codes per RPC and per request kind; the
memory of each worker is sampled ``--rss-samples`` times during the measured part so growth that
levels off can be told from growth that does not. Results go to ``benchmarks/results/fuzz-<time>.json``
and a row of ``benchmarks/results/fuzz.md``.

Examples::

    python -m benchmarks.fuzz                              # 100,000 requests, 2 workers
    python -m benchmarks.fuzz --requests 5000 --warmup 1000  # a quick look
    python -m benchmarks.fuzz --malloc-arena-max 2         # workers with MALLOC_ARENA_MAX=2
    python -m benchmarks.fuzz --artifact artifacts/latest --json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
from rich.console import Console

from benchmarks.fuzz_requests import (
    KIND_WEIGHTS,
    KINDS,
    STREAMING_BOTH,
    STREAMING_UNARY,
    FuzzTarget,
    IdPools,
    RequestFuzzer,
    fuzz_targets,
)
from benchmarks.result_files import RESULTS_DIR, utc_stamp, write_result
from benchmarks.serving_artifact_cache import BENCHMARKS_DIR, ShopSize, ensure_artifact
from serving.client import PersonaEngineClient
from serving.server_process import ServerProcess, metric_value, start_server
from training.console_output import print_table, stderr_console, stdout_console

QUICK_CONFIG: Final = BENCHMARKS_DIR / "configs" / "serving_quick.toml"
FAILURE_CODES: Final = ("INTERNAL", "UNKNOWN")
CODE_ORDER: Final = tuple(code.name for code in grpc.StatusCode)
MAX_EXAMPLES: Final = 20
SERVER_READY_TIMEOUT_S: Final = 600.0
# Health Watch never ends by itself: the call is cancelled after its first answer.
WATCH_TIMEOUT_S: Final = 2.0


@dataclass
class Tally:
    """Status codes by RPC and by request kind, and the first calls that failed the verdict."""

    by_rpc: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    by_kind: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    examples: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0

    def add(self, target: FuzzTarget, kind: str, code: str, details: str, payload: bytes) -> None:
        self.by_rpc[target.rpc][code] += 1
        self.by_kind[kind][code] += 1
        self.calls += 1
        if code in FAILURE_CODES and len(self.examples) < MAX_EXAMPLES:
            self.examples.append(
                {
                    "rpc": target.rpc,
                    "kind": kind,
                    "code": code,
                    "details": details[:500],
                    "payload_bytes": len(payload),
                    "payload_hex_head": payload[:256].hex(),
                }
            )

    def failures(self) -> dict[str, int]:
        return {code: sum(c[code] for c in self.by_rpc.values()) for code in FAILURE_CODES}

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "by_rpc": {rpc: dict(codes) for rpc, codes in sorted(self.by_rpc.items())},
            "by_kind": {kind: dict(codes) for kind, codes in sorted(self.by_kind.items())},
            "failures": self.failures(),
            "failure_examples": self.examples,
        }


Planned = tuple[FuzzTarget, str, bytes, tuple[tuple[str, str], ...]]


def plan_requests(
    fuzzer: RequestFuzzer, targets: Sequence[FuzzTarget], count: int, token: str
) -> list[Planned]:
    """``count`` requests spread evenly over the targets, each with its kind, bytes and metadata."""
    planned: list[Planned] = []
    for i in range(count):
        target = targets[i % len(targets)]
        kind, payload = fuzzer.request(target)
        metadata: tuple[tuple[str, str], ...] = ()
        if target.admin:
            roll = fuzzer.rng.random()
            if roll < 0.9:
                metadata = (("authorization", f"Bearer {token}"),)
            elif roll < 0.95:
                metadata = (("authorization", "Bearer wrong-token-0123456789"),)
        planned.append((target, kind, payload, metadata))
    return planned


async def call_once(
    channel: grpc.aio.Channel,
    target: FuzzTarget,
    payload: bytes,
    metadata: Sequence[tuple[str, str]],
    timeout_s: float,
) -> tuple[str, str]:
    """Send one fuzzed request as raw bytes; returns the status code's name and its details."""
    # No serializers: the request goes out as the fuzzed bytes and the answers stay bytes.
    try:
        if target.streaming == STREAMING_UNARY:
            unary_stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(target.path)
            stream = unary_stream(payload, timeout=WATCH_TIMEOUT_S, metadata=metadata)
            try:
                async for _ in stream:
                    break
            finally:
                stream.cancel()
        elif target.streaming == STREAMING_BOTH:
            stream_stream: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
                target.path
            )
            both = stream_stream(iter((payload,)), timeout=timeout_s, metadata=metadata)
            async for _ in both:
                pass
        else:
            unary_unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(target.path)
            await unary_unary(payload, timeout=timeout_s, metadata=metadata)
    except grpc.aio.AioRpcError as error:
        return error.code().name, error.details() or ""
    return "OK", ""


async def send_all(
    address: str,
    planned: Sequence[Planned],
    tally: Tally,
    *,
    concurrency: int,
    timeout_s: float,
    channels: int = 16,
    on_progress: Any = None,
) -> float:
    """Send ``planned`` with ``concurrency`` calls in flight over ``channels`` connections; seconds taken.
    The kernel spreads connections over the workers (SO_REUSEPORT): 16 leave a worker without any with
    a chance of 2 in 65,536 (with 2 workers), so every worker is warmed up and measured.
    ``on_progress(done)`` is called every 1% of the calls (memory samples, a progress line)."""
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", 64 << 20)]
    opened = [
        grpc.aio.insecure_channel(address, options=[*options, ("grpc.channel_id", i)])
        for i in range(channels)
    ]
    step = max(1, len(planned) // 100)
    cursor = iter(range(len(planned)))
    done = 0

    async def caller(index: int) -> None:
        nonlocal done
        channel = opened[index % channels]
        for i in cursor:
            target, kind, payload, metadata = planned[i]
            code, details = await call_once(channel, target, payload, metadata, timeout_s)
            tally.add(target, kind, code, details, payload)
            done += 1
            if on_progress is not None and done % step == 0:
                on_progress(done)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(caller(i) for i in range(concurrency)))
    finally:
        for channel in opened:
            await channel.close()
    return time.perf_counter() - started


def rss_mb(pid: int) -> float:
    """Resident memory of a process (``VmRSS``), in MiB; NaN when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


@dataclass
class MemoryTrace:
    """Per worker: resident memory at the start, after warm-up, during the measured part, at the end."""

    pids: list[int]
    samples: list[dict[str, Any]] = field(default_factory=list)

    def sample(self, label: str, done: int) -> None:
        self.samples.append({"label": label, "done": done, "rss_mb": {str(p): rss_mb(p) for p in self.pids}})

    def of(self, label: str) -> dict[str, float]:
        return next(s["rss_mb"] for s in self.samples if s["label"] == label)

    def per_worker(self) -> list[dict[str, Any]]:
        start, measured, end = self.of("start"), self.of("measured_start"), self.of("end")
        rows = []
        for pid in map(str, self.pids):
            series = [s["rss_mb"][pid] for s in self.samples]
            rows.append(
                {
                    "pid": int(pid),
                    "start_mb": start[pid],
                    "measured_start_mb": measured[pid],
                    "end_mb": end[pid],
                    "max_mb": max(series),
                    "ratio": end[pid] / measured[pid],
                    # growth over the second half of the measured part: near 0 when memory levelled off
                    "second_half_growth_mb": end[pid] - _midpoint(self.samples, pid),
                }
            )
        return rows


def _midpoint(samples: Sequence[dict[str, Any]], pid: str) -> float:
    measured = [s for s in samples if s["label"] in ("measured_start", "measured", "calls_ended")]
    return float(measured[len(measured) // 2]["rss_mb"][pid])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fuzz",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=100_000, help="requests in the measured part")
    parser.add_argument("--warmup", type=int, default=10_000, help="requests sent before the measured part")
    parser.add_argument("--seed", type=int, default=14, help="seed of the request generator")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline of each call, seconds")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--artifact", type=Path, help="artifact to serve (default: the cached benchmark one)")
    parser.add_argument("--model", default="als", help="model to serve (default: als)")
    parser.add_argument(
        "--malloc-arena-max",
        type=int,
        help="run the server with MALLOC_ARENA_MAX set to this (glibc malloc arenas per process)",
    )
    parser.add_argument(
        "--server-env",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="more environment of the server, e.g. MALLOC_MMAP_THRESHOLD_=131072 (memory experiments)",
    )
    parser.add_argument(
        "--rss-limit", type=float, default=1.2, help="pass: RSS at the end <= this x RSS at start"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=8.0,
        help="idle seconds before the memory is read at the start and at the end of the measured part",
    )
    parser.add_argument("--rss-samples", type=int, default=20, help="memory samples during the measured part")
    parser.add_argument("--rpcs", nargs="+", metavar="RPC", help="fuzz only these RPCs (short names)")
    parser.add_argument(
        "--kinds", nargs="+", choices=KINDS, metavar="KIND", help=f"only these kinds: {KINDS}"
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep the server's log and event log here (default: a temporary folder)"
    )
    parser.add_argument("--json", action="store_true", help="print the result document on stdout, no tables")
    parser.add_argument("--no-history", action="store_true", help="do not write the JSON and the history row")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warmup < 0 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be at least 1, --warmup at least 0")
    return args


def start_fuzz_server(args: argparse.Namespace, artifact: Path, workdir: Path, token: str) -> ServerProcess:
    env = dict(item.split("=", 1) for item in args.server_env)
    if args.malloc_arena_max:
        env["MALLOC_ARENA_MAX"] = str(args.malloc_arena_max)
    return start_server(
        artifact,
        workdir,
        workers=args.workers,
        model=args.model,
        grace_seconds=2.0,
        access_log_every=None,  # production sampling: failed calls are logged, one in 100 successful
        admin_token=token,
        extra_args=["--event-log", str(workdir / "events.db")],
        extra_env=env,
        ready_timeout_s=SERVER_READY_TIMEOUT_S,
        name="fuzz-server",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    if args.artifact is not None:
        artifact = args.artifact
    else:
        artifact, _ = ensure_artifact(ShopSize(5_000, 2_000, 200_000), QUICK_CONFIG.resolve(), args.model)
    pools = IdPools.from_artifact(artifact, args.model)
    targets = [t for t in fuzz_targets() if not args.rpcs or t.rpc in args.rpcs]
    if not targets:
        raise SystemExit(f"--rpcs: none of {args.rpcs} is one of {[t.rpc for t in fuzz_targets()]}")
    weights = {kind: w for kind, w in KIND_WEIGHTS.items() if not args.kinds or kind in args.kinds}
    fuzzer = RequestFuzzer(pools, args.seed, weights)
    token = secrets.token_hex(24)
    with tempfile.TemporaryDirectory(prefix="persona-fuzz-") as tmp:
        workdir = args.workdir.resolve() if args.workdir is not None else Path(tmp)
        server = start_fuzz_server(args, artifact, workdir, token)
        try:
            result = _fuzz(args, server, fuzzer, targets, token)
        finally:
            exit_status = server.stop()
            log = server.log()
    result.update(
        {
            "time": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            "artifact": str(Path(artifact).resolve()),
            "model": args.model,
            "seed": args.seed,
            "machine": {"cpus": os.cpu_count(), "load_average_at_start": load_at_start},
            "settings": {
                "requests": args.requests,
                "warmup": args.warmup,
                "concurrency": args.concurrency,
                "timeout_s": args.timeout,
                "workers": args.workers,
                "malloc_arena_max": args.malloc_arena_max,
                "server_env": args.server_env,
                "rss_limit": args.rss_limit,
                "settle_s": args.settle,
                "rpcs": [t.rpc for t in targets],
                "kinds": sorted(weights),
            },
            "server_exit_status": exit_status,
            "server_log": {
                "bytes": len(log.encode("utf-8")),
                "tracebacks": log.count("Traceback (most recent call last)"),
                "undecodable_lines": log.count("undecodable request to"),
            },
        }
    )
    result["verdict"] = verdict(result, args.rss_limit)
    return result


def _fuzz(
    args: argparse.Namespace,
    server: ServerProcess,
    fuzzer: RequestFuzzer,
    targets: list[FuzzTarget],
    token: str,
) -> dict[str, Any]:
    memory = MemoryTrace(server.worker_pids)
    memory.sample("start", 0)
    started = time.perf_counter()
    warmup_plan = plan_requests(fuzzer, targets, args.warmup, token)
    warmup_tally = Tally()
    stderr_console.print(f"warm-up: {len(warmup_plan):,} requests over {len(targets)} RPCs")
    warmup_seconds = asyncio.run(
        send_all(
            server.address, warmup_plan, warmup_tally, concurrency=args.concurrency, timeout_s=args.timeout
        )
    )
    del warmup_plan
    generate_started = time.perf_counter()
    plan = plan_requests(fuzzer, targets, args.requests, token)
    generate_seconds = time.perf_counter() - generate_started
    time.sleep(max(0.0, args.settle - generate_seconds))
    memory.sample("measured_start", 0)
    every = max(1, args.requests // max(1, args.rss_samples))
    tally = Tally()

    def progress(done: int) -> None:
        if done % every < max(1, args.requests // 100):
            memory.sample("measured", done)
        if done % (args.requests // 10 or 1) < max(1, args.requests // 100):
            stderr_console.print(f"  {done:,} / {len(plan):,} requests; {tally.failures()}", highlight=False)

    stderr_console.print(f"measured: {len(plan):,} requests (generated in {generate_seconds:.1f}s)")
    seconds = asyncio.run(
        send_all(
            server.address,
            plan,
            tally,
            concurrency=args.concurrency,
            timeout_s=args.timeout,
            on_progress=progress,
        )
    )
    memory.sample("calls_ended", len(plan))
    time.sleep(args.settle)
    memory.sample("end", len(plan))
    healthy = _healthy(server)
    metrics = server.metrics()
    alive = [pid for pid in server.worker_pids if rss_mb(pid) == rss_mb(pid)]
    return {
        "targets": [t.rpc for t in targets],
        "kinds": list(KINDS),
        "warmup": {**warmup_tally.to_json(), "seconds": warmup_seconds},
        "measured": {**tally.to_json(), "seconds": seconds, "calls_per_s": tally.calls / seconds},
        "generate_seconds": generate_seconds,
        "total_seconds": time.perf_counter() - started,
        "healthy_after": healthy,
        "workers_alive_after": len(alive),
        "worker_restarts": metric_value(metrics, "persona_engine_worker_restarts_total"),
        "server_counts": {
            "undecodable_requests": metric_value(metrics, "persona_engine_undecodable_requests_total"),
            "invalid_argument": metric_value(
                metrics, "persona_engine_requests_total", code="INVALID_ARGUMENT"
            ),
            "internal": metric_value(metrics, "persona_engine_requests_total", code="INTERNAL"),
            "unknown": metric_value(metrics, "persona_engine_requests_total", code="UNKNOWN"),
        },
        "memory": {"samples": memory.samples, "per_worker": memory.per_worker()},
    }


def _healthy(server: ServerProcess) -> bool:
    try:
        with PersonaEngineClient(server.address) as client:
            client.wait_until_serving(10.0)
    except TimeoutError:
        return False
    return True


def verdict(result: dict[str, Any], rss_limit: float) -> dict[str, Any]:
    failures = result["measured"]["failures"]
    warmup_failures = result["warmup"]["failures"]
    worst_ratio = max(w["ratio"] for w in result["memory"]["per_worker"])
    checks = {
        "no INTERNAL or UNKNOWN": sum(failures.values()) + sum(warmup_failures.values()) == 0,
        "healthy after (SERVING)": bool(result["healthy_after"]),
        "no worker died": result["worker_restarts"] == 0
        and result["workers_alive_after"] == result["settings"]["workers"],
        f"RSS end <= {rss_limit:g} x RSS at measured start": worst_ratio <= rss_limit,
    }
    return {"pass": all(checks.values()), "checks": checks, "worst_rss_ratio": worst_ratio}


# Column names short enough for a 120-column terminal (the JSON has the full names).
SHORT_CODES: Final = {
    "INVALID_ARGUMENT": "INVALID",
    "DEADLINE_EXCEEDED": "DEADLINE",
    "NOT_FOUND": "NOTFOUND",
    "PERMISSION_DENIED": "DENIED",
    "RESOURCE_EXHAUSTED": "EXHAUST",
    "FAILED_PRECONDITION": "PRECOND",
    "UNIMPLEMENTED": "UNIMPL",
    "UNAUTHENTICATED": "UNAUTH",
    "UNAVAILABLE": "UNAVAIL",
    "CANCELLED": "CANCEL",
}
SHORT_RPCS: Final = {
    "ServerReflection/ServerReflectionInfo": "Reflection",
    "GetPersonaProfile": "Profile",
    "RecommendProducts": "Recommend",
    "GetExperiment": "GetExperim",
    "SetExperiment": "SetExperim",
    "unknown_fields": "unknown_fld",
}


# One column per status code seen: wider than rich's default for a pipe, and never squeezed.
WIDE_CONSOLE: Final = Console(width=160)


def _short_rpc(rpc: str) -> str:
    return SHORT_RPCS.get(rpc, rpc)


def _codes(counters: Sequence[collections.Counter[str]]) -> list[str]:
    seen = set().union(*counters) | set(FAILURE_CODES) if counters else set(FAILURE_CODES)
    return [code for code in CODE_ORDER if code in seen]


def print_report(result: dict[str, Any]) -> None:
    measured = result["measured"]
    for title, table in (("RPC", measured["by_rpc"]), ("request kind", measured["by_kind"])):
        counters = [collections.Counter(v) for v in table.values()]
        codes = _codes(counters)
        rows = [
            [_short_rpc(name), sum(c.values()), *(c.get(code, 0) for code in codes)]
            for name, c in zip(table, counters, strict=True)
        ]
        total = collections.Counter[str]()
        for c in counters:
            total.update(c)
        rows.append(["all", sum(total.values()), *(total.get(code, 0) for code in codes)])
        print_table(
            f"status codes by {title}: {measured['calls']:,} fuzzed requests, "
            f"{measured['calls_per_s']:,.0f} calls/s",
            [title, "calls", *(SHORT_CODES.get(code, code) for code in codes)],
            rows,
            console=WIDE_CONSOLE,
        )
    print_table(
        "resident memory per worker (MiB): at start, when the measured part started, at its end",
        ["worker pid", "start", "measured start", "end", "max", "end / measured start", "growth 2nd half"],
        [
            [
                str(w["pid"]),
                w["start_mb"],
                w["measured_start_mb"],
                w["end_mb"],
                w["max_mb"],
                w["ratio"],
                w["second_half_growth_mb"],
            ]
            for w in result["memory"]["per_worker"]
        ],
    )
    log = result["server_log"]
    stdout_console.print(
        f"server: healthy after: {result['healthy_after']}; undecodable requests counted "
        f"{result['server_counts']['undecodable_requests']:,.0f}; log {log['bytes'] / 1e6:.2f} MB with "
        f"{log['tracebacks']} tracebacks and {log['undecodable_lines']} undecodable-request lines",
        highlight=False,
    )
    for example in measured["failure_examples"][:5]:
        stdout_console.print(f"  failed: {example}", highlight=False)
    checks = result["verdict"]["checks"]
    for name, ok in checks.items():
        stdout_console.print(f"  {'pass' if ok else 'FAIL'}: {name}", highlight=False)
    stdout_console.print(f"verdict: {'PASS' if result['verdict']['pass'] else 'FAIL'}", highlight=False)


def write_results(result: dict[str, Any]) -> Path:
    measured = result["measured"]
    invalid = sum(c.get("INVALID_ARGUMENT", 0) for c in measured["by_rpc"].values())
    rss = ", ".join(
        f"{w['measured_start_mb']:.0f} -> {w['end_mb']:.0f}" for w in result["memory"]["per_worker"]
    )
    row = [
        result["time"],
        f"{result['machine']['load_average_at_start'][0]:.1f}",
        str(result["settings"]["workers"]),
        f"{measured['calls']:,}",
        f"{measured['calls_per_s']:,.0f}",
        str(measured["failures"]["INTERNAL"]),
        str(measured["failures"]["UNKNOWN"]),
        f"{invalid:,}",
        str(result["healthy_after"]).lower(),
        f"{result['verdict']['worst_rss_ratio']:.3f}",
        rss,
        str(result["settings"]["malloc_arena_max"] or "-"),
        f"{result['server_log']['bytes'] / 1e6:.2f}",
        str(result["server_log"]["tracebacks"]),
        "pass" if result["verdict"]["pass"] else "FAIL",
    ]
    header = ["time", "load avg", "workers", "requests", "calls/s", "INTERNAL", "UNKNOWN", "INVALID_ARGUMENT",
              "healthy", "worst RSS end/start", "RSS MiB (start -> end, by worker)", "MALLOC_ARENA_MAX",
              "log MB", "tracebacks", "verdict"]  # fmt: skip
    return write_result(RESULTS_DIR, "fuzz", utc_stamp(result["time"]), result, header, [row])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    if not args.no_history:
        path = write_results(result)
        stderr_console.print(f"results: {path}")
    return 0 if result["verdict"]["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
