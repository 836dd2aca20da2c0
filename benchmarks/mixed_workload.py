"""The serving benchmark's mixed workload: Personalize reads with a share of RecordEvents writes, on a
server with an event log, every write new so that each one is a durable commit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from google.protobuf.message import Message

from benchmarks.latency_statistics import NAN, MetricsSnapshot, latency_summary, server_side
from benchmarks.load_generator import PhaseSpec, write_requests
from benchmarks.load_generator_client import LoadGenerator
from benchmarks.load_phases import (
    LoadSettings,
    connect,
    cpu_seconds,
    metrics_port,
    start_benchmark_server,
    stop_processes,
)
from benchmarks.serving_workloads import SERVICE, sample_customers
from engine.live.event_log import EventLog
from engine.personalizer import Personalizer
from serving.generated.persona.v1 import personalization_service_pb2 as pb
from serving.server_process import ServerProcess
from training.console_output import stderr_console

MAX_WRITE_BATCH: Final = 1000
MIXED_RPCS: Final = ("Personalize", "RecordEvents")


@dataclass(frozen=True)
class MixedPlan:
    """The mixed workload: Personalize requests, a share of writes, and one pool of new writes per phase."""

    share: float
    write_batch: int
    rate: float
    reads: list[Message]
    writes: dict[str, list[bytes]]  # phase mode -> serialized RecordEventsRequest, every event id new

    @classmethod
    def build(
        cls,
        personalizer: Personalizer,
        rng: np.random.Generator,
        *,
        share: float,
        write_batch: int,
        pool: int,
        rate: float,
        reads: list[Message],
    ) -> MixedPlan:
        """Writes of ``write_batch`` view/cart/purchase events of sampled customers and catalog items."""
        customers = sample_customers(personalizer, 2_000, rng)
        items = personalizer.items.ids
        kinds = (pb.EVENT_TYPE_VIEW, pb.EVENT_TYPE_VIEW, pb.EVENT_TYPE_VIEW, pb.EVENT_TYPE_CART,
                 pb.EVENT_TYPE_PURCHASE)  # fmt: skip
        now = dt.datetime.now(dt.UTC)
        run = now.strftime("%Y%m%dT%H%M%S")
        writes: dict[str, list[bytes]] = {}
        for mode in ("closed", "open"):
            requests = []
            for n in range(pool):
                events = []
                for j in range(write_batch):
                    event = pb.BehaviorEvent(
                        event_id=f"bench-{run}-{mode}-{n:07d}-{j:04d}",
                        customer_id=customers[int(rng.integers(len(customers)))],
                        item_id=str(items[int(rng.integers(len(items)))]),
                        event_type=kinds[int(rng.integers(len(kinds)))],
                        channel="web",
                        device="mobile",
                    )
                    event.timestamp.FromDatetime(now)
                    events.append(event)
                requests.append(pb.RecordEventsRequest(events=events).SerializeToString())
            writes[mode] = requests
        return cls(share, write_batch, rate, reads, writes)

    def describe(self) -> dict[str, Any]:
        return {
            "write_share": self.share,
            "events_per_write": self.write_batch,
            "open_rate": self.rate,
            "writes_per_phase_prepared": len(self.writes["closed"]),
        }


def run_mixed_phase(
    generator: LoadGenerator, server: ServerProcess, spec: PhaseSpec, write_batch: int
) -> dict[str, Any]:
    """One mixed warm-up plus measured phase; client and server figures per RPC."""
    generator.send({"command": "phase", "spec": spec.__dict__})
    generator.expect("warm", spec.warmup_s + spec.timeout_s + 60)
    before = MetricsSnapshot.scrape(metrics_port(server))
    cpu_before = cpu_seconds(server.worker_pids)
    generator.send({"command": "go"})
    result = generator.expect("result", spec.duration_s + spec.timeout_s + 60)
    after = MetricsSnapshot.scrape(metrics_port(server))
    cpu_after = cpu_seconds(server.worker_pids)
    zero = (0.0, 0.0)
    cpu = sum(sum(cpu_after.get(pid, zero)) - sum(cpu_before.get(pid, zero)) for pid in server.worker_pids)
    out: dict[str, Any] = {"server_cpu_cores": cpu / result["wall_s"]}
    for rpc, latencies, errors, sent, per_call in (
        ("Personalize", result["latencies_ms"], result["errors"], result["sent"], 1),
        (
            "RecordEvents",
            result["mixed_latencies_ms"],
            result["mixed_errors"],
            result["mixed_sent"],
            write_batch,
        ),
    ):
        client = latency_summary(latencies, result["wall_s"], per_call)
        client["errors"] = errors
        client["sent"] = sent
        client["dropped"] = 0
        out[rpc] = {"client": client, "server": server_side(before, after, rpc)}
    out["RecordEvents"]["client"]["reused_writes"] = result["mixed_reused"]
    out["RecordEvents"]["client"]["dropped"] = result["dropped"]  # open loop drops are not split by RPC
    total = result["sent"] + result["mixed_sent"]
    out["write_share_measured"] = result["mixed_sent"] / total if total else NAN
    return out


def run_mixed_phases(
    artifact: Path, model: str, workers: int, threads: int, plan: MixedPlan, load: LoadSettings, workdir: Path
) -> dict[str, Any]:
    """A server with a fresh event log; closed and open mixed phases; then the log is checked."""
    log_path = workdir / f"events-{workers}w.db"
    stderr_console.print(f"starting the server with {workers} worker(s) and an event log ({log_path})")
    server = start_benchmark_server(
        artifact, model, workers, threads, workdir, ["--event-log", str(log_path)]
    )
    generator: LoadGenerator | None = None
    phases: dict[str, dict[str, Any]] = {}
    try:
        generator = LoadGenerator(workdir)
        connect(generator, server, load, workers)
        reads_file = workdir / "mixed-reads.bin"
        write_requests(reads_file, [r.SerializeToString() for r in plan.reads])
        for index, mode in enumerate(("closed", "open")):
            writes_file = workdir / f"mixed-writes-{workers}w-{mode}.bin"
            write_requests(writes_file, plan.writes[mode])
            spec = PhaseSpec(
                name=f"mixed {mode}",
                method=f"/{SERVICE}/Personalize",
                requests_file=str(reads_file),
                mode=mode,
                duration_s=load.duration_s,
                max_requests=load.max_requests,
                warmup_s=load.warmup_s,
                concurrency=load.concurrency,
                rate=plan.rate,
                arrivals=load.arrivals,
                timeout_s=load.timeout_s,
                seed=100 + index,
                mixed_method=f"/{SERVICE}/RecordEvents",
                mixed_requests_file=str(writes_file),
                mixed_share=plan.share,
            )
            stderr_console.print(f"load: mixed {mode} ({workers} worker(s)), {plan.share:.0%} RecordEvents")
            phases[mode] = run_mixed_phase(generator, server, spec, plan.write_batch)
    finally:
        stop_processes(server, generator)
    with EventLog.open(log_path) as log:
        counts = log.counts()
    return {"workers": workers, "threads": threads, "phases": phases, "event_log_rows": counts}
