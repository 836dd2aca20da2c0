"""The serving benchmark's mixed workload: Personalize reads with a share of RecordEvents writes, on a
server with an event log, every write new so that each one is a durable commit.

The open-loop comparison (Personalize's p99 with writes against without) is made within one open
phase on that server: the phase is cut into slices of ``SLICE_S`` and writes go out in every other
slice only (``benchmarks.load_generator``, ``mixed_slice_s``), so the reads of the read-only and the
mixed slices interleave second by second; the p99s are of the pooled reads of each kind. Why: this
machine's speed moves by tens of percent from minute to minute and it stalls for 17-40 ms about once
a minute, so two p99s taken minutes apart compare the machine's phases as much as the writes. Ten-second
phases alternating in three rounds on the same server read ratios of 0.91 to 4.33 with the same code
(single rounds 0.35 to 5.82; benchmarks/README.md). Reads sent in the first ``SLICE_GUARD_S`` of each
slice are left out of both kinds, so that writes still in flight when a mixed slice ends, or not yet
under way when it starts, count for neither. ``OPEN_ROUNDS`` equal parts of the phase give the
per-round ratios that show how steady the pooled one is.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from google.protobuf.message import Message

from benchmarks.latency_statistics import NAN, MetricsSnapshot, latency_summary, server_side
from benchmarks.linux_processes import cpu_seconds
from benchmarks.load_generator import PhaseSpec, in_mixed_slice, write_requests
from benchmarks.load_generator_client import LoadGenerator
from benchmarks.load_phases import (
    LoadSettings,
    connect,
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
OPEN_ROUNDS: Final = 3  # parts of the interleaved open phase, each with its own ratio (module doc)
SLICE_S: Final = 1.0  # read-only and mixed slices of the open phase alternate this often
SLICE_GUARD_S: Final = 0.1  # reads sent this soon after a slice begins count for neither kind


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
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One mixed warm-up plus measured phase: client and server figures per RPC, and the generator's
    result (Personalize's client latencies and their send offsets, for splitting by slice)."""
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
    return out, result


def paired_open_p99(rounds: list[tuple[list[float], list[float]]]) -> dict[str, Any]:
    """Personalize's p99 alone and with writes, each over the pooled calls of ``rounds`` (read-only and
    mixed client latencies of each part of the open comparison), their ratio, and each round's."""
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


def _placed(offset_s: float, duration_s: float, rounds: int, slice_s: float) -> tuple[int, int]:
    """Which of ``rounds`` equal parts of an interleaved phase a moment ``offset_s`` into it falls in,
    and which kind of slice (0 read-only, 1 mixed)."""
    return min(int(offset_s * rounds // duration_s), rounds - 1), int(in_mixed_slice(offset_s, slice_s))


def interleaved_open_p99(
    latencies_ms: Sequence[float],
    offsets_s: Sequence[float],
    duration_s: float,
    *,
    rounds: int = OPEN_ROUNDS,
    slice_s: float = SLICE_S,
    guard_s: float = SLICE_GUARD_S,
) -> dict[str, Any]:
    """``paired_open_p99`` of one interleaved phase: each read (latency, send offset from the phase
    start) goes to its slice's kind (``load_generator.in_mixed_slice``) and to one of ``rounds`` equal
    parts of ``duration_s``; reads in a slice's first ``guard_s`` are left out."""
    parts: list[tuple[list[float], list[float]]] = [([], []) for _ in range(rounds)]
    for ms, offset in zip(latencies_ms, offsets_s, strict=True):
        if offset % slice_s < guard_s:
            continue
        part, kind = _placed(offset, duration_s, rounds, slice_s)
        parts[part][kind].append(ms)
    return {**paired_open_p99(parts), "slice_s": slice_s, "guard_s": guard_s}


def slice_stalls(
    stalls: Sequence[Sequence[float]], paired: Mapping[str, Any]
) -> list[list[dict[str, float]]]:
    """The machine's stalls (epoch end, ms) in each round of an interleaved phase, as ``[read-only,
    mixed]`` summaries (count, longest ms): a stall counts for the slice its middle fell in, guard or
    not (it delays the reads after it either way)."""
    start, duration = paired["start_epoch_s"], paired["duration_s"]
    rounds, slice_s = paired["rounds"], paired["slice_s"]
    found: list[list[list[float]]] = [[[], []] for _ in range(rounds)]
    for ended, ms in stalls:
        offset = ended - ms / 2000 - start
        if 0 <= offset < duration:
            part, kind = _placed(offset, duration, rounds, slice_s)
            found[part][kind].append(ms)
    return [[{"count": len(k), "longest_ms": max(k, default=0.0)} for k in part] for part in found]


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

        def spec(
            name: str, mode: str, seed: int, writes: list[bytes], duration_s: float, slice_s: float = 0.0
        ) -> PhaseSpec:
            """A Personalize phase with that share of its sends the given writes (in every other slice
            of ``slice_s``, when given)."""
            writes_file = workdir / f"mixed-writes-{workers}w-{name.replace(' ', '-')}.bin"
            write_requests(writes_file, writes)
            return PhaseSpec(
                name=name,
                method=f"/{SERVICE}/Personalize",
                requests_file=str(reads_file),
                mode=mode,
                duration_s=duration_s,
                max_requests=load.max_requests,
                warmup_s=load.warmup_s,
                concurrency=load.concurrency,
                rate=plan.rate,
                arrivals=load.arrivals,
                timeout_s=load.timeout_s,
                seed=seed,
                mixed_method=f"/{SERVICE}/RecordEvents",
                mixed_requests_file=str(writes_file),
                mixed_share=plan.share,
                mixed_slice_s=slice_s,
            )

        stderr_console.print(f"load: mixed closed ({workers} worker(s)), {plan.share:.0%} RecordEvents")
        closed = spec("mixed closed", "closed", 100, plan.writes["closed"], load.duration_s)
        phases["closed"], _ = run_mixed_phase(generator, server, closed, plan.write_batch)
        # the read-only and the mixed phase of each of OPEN_ROUNDS rounds, interleaved
        interleaved = spec(
            "interleaved open", "open", 101, plan.writes["open"], 2 * OPEN_ROUNDS * load.duration_s, SLICE_S
        )
        stderr_console.print(
            f"load: open, read-only and mixed slices of {SLICE_S:g} s interleaved for "
            f"{interleaved.duration_s:g} s ({workers} worker(s))"
        )
        phases["open"], sent = run_mixed_phase(generator, server, interleaved, plan.write_batch)
        paired = {
            **interleaved_open_p99(sent["latencies_ms"], sent["send_offsets_s"], interleaved.duration_s),
            "start_epoch_s": sent["start_epoch_s"],
            "duration_s": interleaved.duration_s,
        }
    finally:
        stop_processes(server, generator)
    with EventLog.open(log_path) as log:
        counts = log.counts()
    return {
        "workers": workers,
        "threads": threads,
        "phases": phases,
        "open_paired": paired,
        "event_log_rows": counts,
    }
