"""The serving benchmark's mixed workload: Personalize reads with a share of RecordEvents writes, on a
server with an event log, every write new so that each one is a durable commit.

The open-loop comparison (Personalize's p99 with writes against without) is made on the same server,
read-only and mixed phases alternating for ``OPEN_ROUNDS`` rounds, and the p99s are of the pooled
calls of each kind. The read-only phase of the main runs came minutes earlier on another server, and
this machine's speed moves by tens of percent from minute to minute; and a p99 of one ten-second
phase at 300 calls/s is about its 30th slowest call. In four runs of the same code the ratio of two
such figures read 1.33 and 1.46 (large shop), 1.38 and 0.74 (quick shop); pooled over alternating
rounds, both p99s see the same machine and three times the calls.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
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
OPEN_ROUNDS: Final = 3  # alternating read-only and mixed open phases (module doc)


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
) -> tuple[dict[str, Any], list[float]]:
    """One mixed warm-up plus measured phase: client and server figures per RPC, and Personalize's
    client latencies (ms) for pooling across phases. A phase without writes (``mixed_share`` 0) is the
    read-only phase it is compared with."""
    generator.send({"command": "phase", "spec": spec.__dict__})
    generator.expect("warm", spec.warmup_s + spec.timeout_s + 60)
    before = MetricsSnapshot.scrape(metrics_port(server))
    cpu_before = cpu_seconds(server.worker_pids)
    measured_from = time.time()
    generator.send({"command": "go"})
    result = generator.expect("result", spec.duration_s + spec.timeout_s + 60)
    measured_to = time.time()
    after = MetricsSnapshot.scrape(metrics_port(server))
    cpu_after = cpu_seconds(server.worker_pids)
    zero = (0.0, 0.0)
    cpu = sum(sum(cpu_after.get(pid, zero)) - sum(cpu_before.get(pid, zero)) for pid in server.worker_pids)
    # epoch seconds around the measured part, to match it with the machine's stalls (machine_stalls)
    out: dict[str, Any] = {
        "server_cpu_cores": cpu / result["wall_s"],
        "window_s": [measured_from, measured_to],
    }
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
    return out, list(result["latencies_ms"])


def paired_open_p99(rounds: list[tuple[list[float], list[float]]]) -> dict[str, Any]:
    """Personalize's p99 alone and with writes, each over the pooled calls of the alternating open
    phases (``rounds`` of (read-only, mixed) client latencies), their ratio, and each round's."""
    alone = [ms for read_only, _ in rounds for ms in read_only]
    mixed = [ms for _, with_writes in rounds for ms in with_writes]

    def p99(samples: list[float]) -> float:
        return float(np.percentile(samples, 99)) if samples else NAN

    return {
        "rounds": len(rounds),
        "read_only_calls": len(alone),
        "mixed_calls": len(mixed),
        "read_only_p99_ms": p99(alone),
        "mixed_p99_ms": p99(mixed),
        "ratio": p99(mixed) / p99(alone) if alone and mixed else NAN,
        "round_ratios": [p99(m) / p99(a) if a and m else NAN for a, m in rounds],
    }


def run_mixed_phases(
    artifact: Path, model: str, workers: int, threads: int, plan: MixedPlan, load: LoadSettings, workdir: Path
) -> dict[str, Any]:
    """A server with a fresh event log; closed and open mixed phases; then the log is checked."""
    log_path = workdir / f"events-{workers}w.db"
    stderr_console.print(f"starting the server with {workers} worker(s) and an event log ({log_path})")
    server = start_benchmark_server(
        artifact, model, workers, threads, workdir, ["--event-log", str(log_path), *load.server_flags]
    )
    generator: LoadGenerator | None = None
    phases: dict[str, dict[str, Any]] = {}
    try:
        generator = LoadGenerator(workdir)
        connect(generator, server, load, workers)
        reads_file = workdir / "mixed-reads.bin"
        write_requests(reads_file, [r.SerializeToString() for r in plan.reads])

        def spec(name: str, mode: str, seed: int, writes: list[bytes] | None) -> PhaseSpec:
            """A Personalize phase; with ``writes``, that share of its sends are those writes."""
            reads = PhaseSpec(
                name=name,
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
                seed=seed,
            )
            if writes is None:
                return reads
            writes_file = workdir / f"mixed-writes-{workers}w-{name.replace(' ', '-')}.bin"
            write_requests(writes_file, writes)
            return dataclasses.replace(
                reads,
                mixed_method=f"/{SERVICE}/RecordEvents",
                mixed_requests_file=str(writes_file),
                mixed_share=plan.share,
            )

        stderr_console.print(f"load: mixed closed ({workers} worker(s)), {plan.share:.0%} RecordEvents")
        phases["closed"], _ = run_mixed_phase(
            generator, server, spec("mixed closed", "closed", 100, plan.writes["closed"]), plan.write_batch
        )
        # every round's writes new (every OPEN_ROUNDS-th of the open pool): a repeated write is a deduplicated
        # no-op, not the durable commit being measured
        rounds: list[tuple[list[float], list[float]]] = []
        windows: list[list[list[float]]] = []  # per round: the read-only and the mixed phase's window
        for r in range(OPEN_ROUNDS):
            stderr_console.print(
                f"load: read-only and mixed open, round {r + 1} of {OPEN_ROUNDS} ({workers} worker(s))"
            )
            alone, alone_ms = run_mixed_phase(
                generator, server, spec(f"read-only open {r + 1}", "open", 200 + r, None), plan.write_batch
            )
            writes = plan.writes["open"][r::OPEN_ROUNDS]
            mixed, mixed_ms = run_mixed_phase(
                generator, server, spec(f"mixed open {r + 1}", "open", 101 + r, writes), plan.write_batch
            )
            rounds.append((alone_ms, mixed_ms))
            windows.append([alone["window_s"], mixed["window_s"]])
            if r == 0:
                phases["open"] = mixed  # the first round's figures; the pooled p99s are open_paired's
    finally:
        stop_processes(server, generator)
    with EventLog.open(log_path) as log:
        counts = log.counts()
    return {
        "workers": workers,
        "threads": threads,
        "phases": phases,
        "open_paired": {**paired_open_p99(rounds), "round_windows_s": windows},
        "event_log_rows": counts,
    }
