"""What a call costs while the Redis state store is down: a real server and a real redis-server.

``python -m benchmarks.state_store_outage`` starts redis-server on a free port and a 2-worker server
with ``--state redis://...`` and an event log, then sends the same Personalize calls (one at a time,
so each latency is one call's cost) in four phases:

- ``up``: Redis answers (the same-run baseline every other phase is compared with);
- ``down``: redis-server stopped (connections refused at once);
- ``hung``: redis-server restarted, then frozen with SIGSTOP (connections open, nothing answers: the
  worst case, where only the socket timeout ends a wait);
- ``back``: SIGCONT; the server finds Redis again by itself.

It prints p50/p95/p99/max per phase with the ratio to ``up``, the share of answers that said they
were served without live state (``degraded_reason``), errors by code, and how long RecordEvents took
to refuse a batch while Redis was down; the JSON goes under
``benchmarks/results/state_store_outage-<timestamp>.json`` with a row in ``state_store_outage.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import grpc
import numpy as np
import redis
from rich.console import Console
from rich.table import Table

from benchmarks.result_files import RESULTS_DIR, write_result
from benchmarks.serving_artifact_cache import BENCHMARKS_DIR, ShopSize, ensure_artifact
from engine.live.events import BehaviorEvent
from serving.client import PersonaEngineClient
from serving.model_holder import load_model
from serving.server_process import start_server
from training.console_output import stderr_console

QUICK_CONFIG: Final = BENCHMARKS_DIR / "configs" / "serving_quick.toml"
PHASES: Final = ("up", "down", "hung", "back")


class RedisServer:
    """redis-server on one port, without persistence, that can be stopped, started, frozen and thawed."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found on PATH; run scripts/install-redis.sh")
        self.binary = binary
        self.folder = folder
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)


@contextlib.contextmanager
def running_redis(folder: Path) -> Iterator[RedisServer]:
    server = RedisServer(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def measure(client: PersonaEngineClient, customers: Sequence[str], timeout_s: float) -> dict[str, Any]:
    """Personalize for each customer in turn; latency of each, errors by code, degraded answers."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    degraded = 0
    for customer in customers:
        started = time.perf_counter()
        try:
            response = client.personalize(customer, k=20, timeout_s=timeout_s)
        except grpc.RpcError as error:
            code = error.code().name
            errors[code] = errors.get(code, 0) + 1
            continue
        latencies.append((time.perf_counter() - started) * 1000.0)
        degraded += bool(response.decision.degraded_reason)
    values = np.asarray(latencies or [np.nan])
    return {
        "calls": len(customers),
        "answered": len(latencies),
        "errors": errors,
        "degraded_share": degraded / max(len(latencies), 1),
        **{f"p{q}_ms": round(float(np.percentile(values, q)), 3) for q in (50, 95, 99)},
        "max_ms": round(float(np.max(values)), 3),
    }


def refusal_ms(client: PersonaEngineClient, customer: str, item: str) -> tuple[float, str]:
    """How long RecordEvents takes to answer while Redis is down, and its status code."""
    event = BehaviorEvent(
        f"outage-bench-{time.monotonic_ns()}", customer, item, "view", dt.datetime.now(dt.UTC), None, 0.0
    )
    started = time.perf_counter()
    try:
        client.record_events([event])
        code = "OK"
    except grpc.RpcError as error:
        code = error.code().name
    return (time.perf_counter() - started) * 1000.0, code


def run(artifact: Path, calls: int, timeout_s: float, workdir: Path) -> dict[str, Any]:
    personalizer = load_model(artifact).personalizer
    rng = np.random.default_rng(3)
    known = personalizer.customers.ids
    customers = [str(known[int(i)]) for i in rng.integers(0, len(known), calls)]
    item = str(personalizer.items.ids[0])
    del personalizer
    phases: dict[str, Any] = {}
    with running_redis(workdir) as redis_server:
        args = ["--state", redis_server.url, "--event-log", str(workdir / "events.db")]
        server = start_server(artifact, workdir, workers=2, access_log_every=None, extra_args=args)
        try:
            with PersonaEngineClient(server.address, retries=0) as client:
                measure(client, customers[: max(calls // 10, 10)], timeout_s)  # warm-up
                stderr_console.print("phase up")
                phases["up"] = measure(client, customers, timeout_s)
                redis_server.stop()
                stderr_console.print("phase down")
                phases["down"] = measure(client, customers, timeout_s)
                refusal = refusal_ms(client, customers[0], item)
                redis_server.start()
                time.sleep(3.0)  # the server finds Redis again (checked by the "back" phase)
                redis_server.signal(signal.SIGSTOP)
                stderr_console.print("phase hung")
                phases["hung"] = measure(client, customers, timeout_s)
                redis_server.signal(signal.SIGCONT)
                time.sleep(3.0)
                stderr_console.print("phase back")
                phases["back"] = measure(client, customers, timeout_s)
        finally:
            server.stop()
    base = phases["up"]
    for phase in phases.values():
        for key in ("p50_ms", "p99_ms"):
            phase[f"{key[:-3]}_ratio_to_up"] = round(phase[key] / base[key], 3) if base[key] else None
    return {
        "started_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "artifact": str(artifact),
        "calls_per_phase": calls,
        "timeout_s": timeout_s,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "phases": phases,
        "record_events_while_down": {"ms": round(refusal[0], 3), "code": refusal[1]},
    }


def print_report(result: dict[str, Any]) -> None:
    table = Table(
        title=f"Personalize while the Redis state store is down ({result['calls_per_phase']} calls each)"
    )
    for column in ("phase", "answered", "errors", "degraded", "p50 ms", "p95 ms", "p99 ms", "max ms",
                   "p50 / up", "p99 / up"):  # fmt: skip
        table.add_column(column, justify="right")
    for name in PHASES:
        p = result["phases"][name]
        table.add_row(
            name, str(p["answered"]), ", ".join(f"{k} {v}" for k, v in p["errors"].items()) or "0",
            f"{p['degraded_share']:.0%}", f"{p['p50_ms']:.2f}", f"{p['p95_ms']:.2f}", f"{p['p99_ms']:.2f}",
            f"{p['max_ms']:.2f}", f"{p['p50_ratio_to_up']}", f"{p['p99_ratio_to_up']}",
        )  # fmt: skip
    console = Console(width=max(Console().width, 120))
    console.print(table)
    refused = result["record_events_while_down"]
    console.print(f"RecordEvents while Redis was down: {refused['code']} in {refused['ms']:.2f} ms")


def write_results(result: dict[str, Any], folder: Path = RESULTS_DIR) -> Path:
    rows = []
    for name in PHASES:
        p = result["phases"][name]
        rows.append([
            result["started_utc"][:19], result["load_average"][0], name, p["answered"],
            sum(p["errors"].values()), f"{p['degraded_share']:.0%}", p["p50_ms"], p["p99_ms"], p["max_ms"],
            p["p99_ratio_to_up"],
        ])  # fmt: skip
    header = ["time", "load avg", "phase", "answered", "errors", "degraded", "p50 ms", "p99 ms", "max ms",
              "p99 / up"]  # fmt: skip
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return write_result(
        folder, "state_store_outage", stamp, result, header, rows,
        title="# Personalize while Redis is down (benchmarks/state_store_outage.py)", indent=1,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.state_store_outage",
        description="Personalize latency with the Redis state store up, stopped, hung and back.",
        epilog="example:\n  python -m benchmarks.state_store_outage --calls 500",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--artifact", type=Path, help="default: the quick serving benchmark's artifact")
    parser.add_argument("--calls", type=int, default=300, help="Personalize calls per phase")
    parser.add_argument("--timeout", type=float, default=2.0, help="deadline of each call, seconds")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--json", action="store_true", help="print the result document, no table")
    args = parser.parse_args(argv)
    if args.calls < 10 or not args.timeout > 0:
        print("state_store_outage: --calls must be at least 10 and --timeout positive", file=sys.stderr)
        return 2
    artifact = args.artifact or ensure_artifact(ShopSize(5_000, 2_000, 200_000), QUICK_CONFIG, "als")[0]
    with tempfile.TemporaryDirectory(prefix="persona-outage-") as folder:
        result = run(artifact.resolve(), args.calls, args.timeout, Path(folder))
    path = write_results(result, args.results)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_report(result)
        stderr_console.print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
