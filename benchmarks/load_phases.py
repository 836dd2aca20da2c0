"""The end-to-end part of the serving benchmark: a real server under closed- and open-loop load.

The server is started through ``serving.server_process`` (the helper the tests use too) and driven
by the load generator; around each measured phase its metrics are scraped and the CPU time of its
workers (and of the supervisor above them) read from ``/proc``, and with ``--profile`` one more phase
runs under py-spy. The gRPC floor (``benchmarks.floor_phase``) runs through the same functions on a
server started with one more flag, so that both are measured the same way, and its phases run right
after Personalize's of the same settings (``paired``), so that each pair sees the same machine.

Phase keys are ``"<rpc>|closed"`` (at ``--concurrency``), ``"<rpc>|open"`` (at the RPC's own
``--rate``), ``"<rpc>|open@<rate>"`` for Personalize's further open-loop rates and
``"<rpc>|closed@<concurrency>"`` for its further closed-loop concurrencies; every open phase records
its rate and every closed phase its concurrency.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
import numpy as np
from rich.text import Text

from benchmarks.latency_statistics import NAN, MetricsSnapshot, latency_summary, server_side
from benchmarks.linux_processes import cpu_seconds, frozen, process_tree
from benchmarks.load_generator import PhaseSpec, write_requests
from benchmarks.load_generator_client import LoadGenerator
from benchmarks.server_profile import PROFILE_RATE_HZ, categorize_profile, profiling
from benchmarks.serving_artifact_cache import CACHE_DIR
from benchmarks.serving_workloads import Workload
from serving.client import PersonaEngineClient
from serving.server_process import ServerProcess, ServerTimeoutError, start_server
from training.console_output import stderr_console

SERVER_READY_TIMEOUT_S: Final = 600.0  # a large artifact is verified (every checksum) before it serves
SERVER_STOP_TIMEOUT_S: Final = 30.0
# End-to-end bounds whose exact share of calls (failed and dropped calls counting as late) each phase
# records: the targets' p99 bounds are checked on these shares, not on interpolated quantiles.
CLIENT_SHARE_BOUNDS_MS: Final = (5.0, 10.0, 25.0)
# The bound of the older ``share_within_target`` field, kept for the tools reading earlier results.
E2E_SHARE_TARGET_MS: Final = 10.0


def open_phase_key(rpc: str, rate: float, base_rate: float) -> str:
    """The key of an open-loop phase: ``rpc|open`` at the RPC's own rate, ``rpc|open@1000`` otherwise."""
    return f"{rpc}|open" if rate == base_rate else f"{rpc}|open@{rate:g}"


def closed_phase_key(rpc: str, concurrency: int, base_concurrency: int) -> str:
    """The key of a closed-loop phase: ``rpc|closed`` at ``--concurrency``, ``rpc|closed@32`` otherwise."""
    return f"{rpc}|closed" if concurrency == base_concurrency else f"{rpc}|closed@{concurrency}"


def closed_concurrency(key: str) -> int | None:
    """The concurrency named by a phase key of the ``rpc|closed@32`` form; None for any other key
    (``rpc|closed`` runs at the result's ``load.concurrency``)."""
    mode = key.partition("|")[2]
    if not mode.startswith("closed@"):
        return None
    return int(mode.removeprefix("closed@"))


def server_pids(server: ServerProcess) -> tuple[list[int], int | None]:
    """The processes serving calls, and the supervisor above them (None when the server serves alone).

    The supervisor spends CPU on the whole server's behalf (merging the workers' metrics, watching
    them), so a CPU cost per call that leaves it out flatters a multi-worker server.
    """
    workers = server.worker_pids
    supervisor = server.process.pid
    return workers, (None if supervisor in workers else supervisor)


@dataclass(frozen=True)
class LoadSettings:
    concurrency: int
    arrivals: str
    duration_s: float
    warmup_s: float
    max_requests: int
    timeout_s: float
    channels: int
    # flags every server of the run is started with besides its own (``--pin-workers``)
    server_flags: tuple[str, ...] = ()


def start_benchmark_server(
    artifact: Path, model: str, workers: int, threads: int, workdir: Path, extra_args: Sequence[str] = ()
) -> ServerProcess:
    """``persona-engine serve`` as in production (sampled access log) on an ephemeral loopback port,
    with metrics; returns once its ready file and health say it serves."""
    return start_server(
        artifact,
        workdir,
        workers=workers,
        model=model,
        threads=threads,
        grace_seconds=2.0,
        access_log_every=None,
        extra_args=extra_args,
        ready_timeout_s=SERVER_READY_TIMEOUT_S,
        name=f"server-{workers}w{'-' + extra_args[0].strip('-') if extra_args else ''}",
    )


def metrics_port(server: ServerProcess) -> int:
    if server.metrics_port is None:
        raise RuntimeError("the benchmark's servers are started with metrics")
    return server.metrics_port


def connect(
    generator: LoadGenerator, server: ServerProcess, load: LoadSettings, workers: int
) -> dict[str, Any]:
    """Open the generator's channels, a multiple of the worker count, spread evenly over the workers."""
    channels = max(load.channels, workers)
    channels -= channels % workers
    generator.send(
        {
            "command": "connect",
            "target": server.address,
            "channels": channels,
            "server_pids": server.worker_pids if workers > 1 else [],
        }
    )
    return generator.expect("connected", 120)


def stop_processes(server: ServerProcess, generator: LoadGenerator | None) -> None:
    """Stop the generator and the server whatever happened; a server that fails to stop cleanly is
    reported, not raised, so the run's other results are kept."""
    if generator is not None:
        generator.stop()
    try:
        status = server.stop(timeout_s=SERVER_STOP_TIMEOUT_S)
    except ServerTimeoutError:
        status = -signal.SIGKILL
    if status != 0:
        stderr_console.print(
            Text(f"server exited with status {status}; log: {server.log_path}", style="yellow")
        )


def run_phase(
    generator: LoadGenerator,
    server: ServerProcess,
    spec: PhaseSpec,
    targets_per_call: int,
    profile_folder: Path | None = None,
    native: bool = False,
) -> dict[str, Any]:
    """One warm-up plus measured phase; client and server figures of the measured part.

    With ``profile_folder`` the workers are sampled with py-spy meanwhile (``native``: C frames too)."""
    generator.send({"command": "phase", "spec": spec.__dict__})
    generator.expect("warm", spec.warmup_s + spec.timeout_s + 60)
    workers, supervisor = server_pids(server)
    watched = [*workers, *([supervisor] if supervisor is not None else [])]
    before = MetricsSnapshot.scrape(metrics_port(server))
    cpu_before = cpu_seconds(watched)
    method = spec.method.rsplit("/", 1)[1]
    with contextlib.ExitStack() as stack:
        outputs = (
            stack.enter_context(profiling(server.worker_pids, spec.duration_s, profile_folder, native=native))
            if profile_folder is not None
            else []
        )
        generator.send({"command": "go"})
        result = generator.expect("result", spec.duration_s + spec.timeout_s + 60)
    # CPU before the scrape: with one worker the worker itself serves /metrics, and the scrape is not
    # part of the load.
    cpu_after = cpu_seconds(watched)
    after = MetricsSnapshot.scrape(metrics_port(server))
    client: dict[str, Any] = dict(latency_summary(result["latencies_ms"], result["wall_s"], targets_per_call))
    client["errors"] = result["errors"]
    attempted = result["sent"] + result["dropped"]
    latencies = np.asarray(result["latencies_ms"], dtype=np.float64)
    # Failed and dropped calls count as late: a caller that got an error did not get its page.
    client["share_within_ms"] = {
        f"{bound:g}": int((latencies <= bound).sum()) / attempted if attempted else NAN
        for bound in CLIENT_SHARE_BOUNDS_MS
    }
    client["share_within_target"] = (
        int((latencies <= E2E_SHARE_TARGET_MS).sum()) / attempted if attempted else NAN
    )
    client["sent"] = result["sent"]
    client["dropped"] = result["dropped"]
    client["client_cpu_cores"] = result["client_cpu_s"] / result["wall_s"]
    if result["send_lateness_ms"]:
        client["send_lateness_ms"] = result["send_lateness_ms"]
    zero = (0.0, 0.0)
    used = {
        pid: tuple(a - b for a, b in zip(cpu_after.get(pid, zero), cpu_before.get(pid, zero), strict=True))
        for pid in workers
    }
    worker_cpu = {pid: user + system for pid, (user, system) in used.items()}
    supervisor_cpu = (
        sum(cpu_after.get(supervisor, zero)) - sum(cpu_before.get(supervisor, zero))
        if supervisor is not None
        else 0.0
    )
    calls = max(client.get("calls", 0), 1)
    out: dict[str, Any] = {
        "mode": spec.mode,
        **({"rate": spec.rate} if spec.mode == "open" else {"concurrency": spec.concurrency}),
        "client": client,
        "server": server_side(before, after, method),
        "server_cpu_cores": sum(worker_cpu.values()) / result["wall_s"],
        "server_cpu_share_per_worker": [
            round(v / max(sum(worker_cpu.values()), 1e-9), 3) for v in worker_cpu.values()
        ],
        "server_cpu_ms_per_call": sum(worker_cpu.values()) * 1000.0 / calls,
        # The whole server: workers and supervisor (0 when the server serves alone).
        "supervisor_cpu_ms_per_call": supervisor_cpu * 1000.0 / calls,
        "server_cpu_ms_per_call_with_supervisor": (sum(worker_cpu.values()) + supervisor_cpu)
        * 1000.0
        / calls,
        # Kernel time: page faults of fresh large arrays, thread wake-ups, socket I/O.
        "server_cpu_system_share": sum(system for _, system in used.values())
        / max(sum(worker_cpu.values()), 1e-9),
    }
    if outputs:
        raw = "\n".join(p.read_text(encoding="utf-8") for p in outputs if p.is_file())
        out["profile"] = categorize_profile(raw)
        out["profile"]["gil_ms_per_call"] = (
            out["profile"]["samples"] / PROFILE_RATE_HZ * 1000.0 / max(client.get("calls", 0), 1)
        )
        out["profile"]["raw_files"] = [str(p) for p in outputs]
        out["profile"]["native"] = native
    return out


def check_responses(server: ServerProcess, workloads: Sequence[Workload], n: int = 10) -> dict[str, Any]:
    """What the responses hold (mean over ``n`` requests per RPC), through the typed client, and their
    mean size on the wire (the gRPC floor must answer with a Personalize response of the same size)."""
    out: dict[str, Any] = {}
    with PersonaEngineClient(server.address, timeout_s=30) as client:
        for w in workloads:
            shapes = [w.check(client, i) for i in range(min(n, len(w.requests)))]
            out[w.name] = {key: float(np.mean([s[key] for s in shapes])) for key in shapes[0]}
    with grpc.insecure_channel(server.address) as channel:
        for w in workloads:
            call: grpc.UnaryUnaryMultiCallable = channel.unary_unary(w.method)  # bytes in, bytes out
            sizes = [len(call(r.SerializeToString(), timeout=30)) for r in w.requests[:n]]
            out[w.name]["response_bytes"] = float(np.mean(sizes))
    return out


@dataclass
class ServerSession:
    """A started benchmark server with its load generator connected, and the phases measured on it."""

    server: ServerProcess
    generator: LoadGenerator
    described: str  # "2 worker(s), gRPC floor": for progress lines
    connected: dict[str, Any]
    responses: dict[str, Any]
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def pids(self) -> list[int]:
        """The server's processes (supervisor, workers, their helpers) and its load generator's."""
        return [*process_tree(self.server.process.pid), self.generator.process.pid]

    def run(
        self,
        key: str,
        spec: PhaseSpec,
        targets_per_call: int,
        *,
        beside: Sequence[ServerSession] = (),
        **profile: Any,
    ) -> None:
        """Measure ``spec`` on this server as phase ``key``, the sessions ``beside`` it stopped meanwhile
        (``frozen``); ``profile``: ``run_phase``'s py-spy options."""
        what = (
            f"closed c={spec.concurrency}"
            if spec.mode == "closed"
            else f"open {spec.rate:g}/s {spec.arrivals}"
        )
        stderr_console.print(f"load: {spec.name.split(' ')[0]} ({self.described}): {what}")
        with frozen([pid for other in beside for pid in other.pids]):
            self.phases[key] = run_phase(self.generator, self.server, spec, targets_per_call, **profile)

    def figures(self, workers: int, threads: int) -> dict[str, Any]:
        """The run's section of the result document."""
        return {
            "workers": workers,
            "threads": threads,
            "responses": self.responses,
            "connections": self.connected,
            "phases": self.phases,
        }


@contextlib.contextmanager
def server_session(
    artifact: Path,
    model: str,
    workers: int,
    threads: int,
    workloads: Sequence[Workload],
    load: LoadSettings,
    workdir: Path,
    *,
    extra_args: Sequence[str] = (),
    label: str = "",
) -> Iterator[ServerSession]:
    """Start the server (``extra_args`` on its command line), check its responses to ``workloads`` and
    connect a load generator; stops both whatever happens. A server that exits before it is ready
    raises ``ServerStartError``."""
    described = f"{workers} worker(s){', ' + label if label else ''}"
    stderr_console.print(f"starting the server with {described}")
    server = start_benchmark_server(
        artifact, model, workers, threads, workdir, [*extra_args, *load.server_flags]
    )
    generator: LoadGenerator | None = None
    try:
        responses = check_responses(server, workloads)
        generator = LoadGenerator(workdir, f"load_generator-{server.log_path.stem}")
        connected = connect(generator, server, load, workers)
        yield ServerSession(server, generator, described, connected, responses)
    finally:
        stop_processes(server, generator)


def run_server_phases(
    artifact: Path,
    model: str,
    workers: int,
    threads: int,
    workloads: Sequence[Workload],
    load: LoadSettings,
    workdir: Path,
    profile: bool,
    *,
    personalize_extra_rates: Sequence[float] = (),
    personalize_extra_concurrencies: Sequence[int] = (),
    extra_args: Sequence[str] = (),
    label: str = "",
    profile_native: bool = False,
    paired: ServerSession | None = None,
) -> dict[str, Any]:
    """Start the server, check responses, run closed and open phases per RPC; always stops both processes.

    Personalize gets one more open-loop phase per rate of ``personalize_extra_rates`` (the targets are
    set at 300 and 1,000 calls/s) and one more closed-loop phase per concurrency of
    ``personalize_extra_concurrencies``: a server that batches serves more calls per CPU second the more
    calls it has in flight, so its capacity is the best closed-loop throughput over several
    concurrencies, not the figure at one (``benchmarks.serving_targets.closed_capacity``).
    ``extra_args`` go to the server's command line and ``label`` to the
    progress lines (the gRPC floor's server is started through here too). With ``profile`` one more
    closed-loop Personalize phase runs under py-spy (``profile_native``: with C frames). A server that
    exits before it is ready raises ``ServerStartError``.

    ``paired`` (the gRPC floor's session) runs each of Personalize's closed-loop phases, and its open
    phase at its own rate, right after Personalize does, with the same settings, into its own
    ``phases``: a throughput ratio of two phases minutes apart compares the machine's phases as much as
    the servers (its speed moves by tens of percent from minute to minute). Whichever server is not
    being measured is stopped meanwhile (``frozen``), so that neither measures its idle neighbour.
    """
    with server_session(
        artifact, model, workers, threads, workloads, load, workdir, extra_args=extra_args, label=label
    ) as session:

        def beside(measured: ServerSession) -> list[ServerSession]:
            """The other server, stopped while ``measured`` is measured (``frozen``)."""
            return [s for s in (session, paired) if s is not None and s is not measured]

        for index, w in enumerate(workloads):
            requests_file = workdir / f"requests-{index}.bin"
            write_requests(requests_file, [r.SerializeToString() for r in w.requests])
            closed = PhaseSpec(
                name=f"{w.name} closed",
                method=w.method,
                requests_file=str(requests_file),
                mode="closed",
                duration_s=load.duration_s,
                max_requests=load.max_requests,
                warmup_s=load.warmup_s,
                concurrency=load.concurrency,
                timeout_s=load.timeout_s,
                seed=index,
            )
            pairs = paired if w.name == "Personalize" else None
            runs = [s for s in (session, pairs) if s is not None]
            for s in runs:
                s.run(f"{w.name}|closed", closed, w.targets_per_call, beside=beside(s))
            if w.name == "Personalize":
                for concurrency in personalize_extra_concurrencies:
                    if concurrency == load.concurrency:
                        continue
                    more = dataclasses.replace(
                        closed, name=f"{w.name} closed c={concurrency}", concurrency=concurrency
                    )
                    key = closed_phase_key(w.name, concurrency, load.concurrency)
                    for s in runs:
                        s.run(key, more, w.targets_per_call, beside=beside(s))
            rates = [w.rate]
            if w.name == "Personalize":
                rates += [r for r in personalize_extra_rates if r not in rates]
            for rate in rates:
                opened = dataclasses.replace(
                    closed, name=f"{w.name} open {rate:g}/s", mode="open", rate=rate, arrivals=load.arrivals
                )
                for s in runs if rate == w.rate else [session]:
                    s.run(open_phase_key(w.name, rate, w.rate), opened, w.targets_per_call, beside=beside(s))
            if profile and w.name == "Personalize":
                stderr_console.print(f"profile: {w.name} closed loop under py-spy")
                profiled = dataclasses.replace(closed, name=f"{w.name} closed (profiled)")
                stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
                profile_folder = CACHE_DIR / "profiles" / f"{stamp}-{workers}w"
                profile_folder.mkdir(parents=True, exist_ok=True)
                session.run(
                    f"{w.name}|closed-profiled",
                    profiled,
                    w.targets_per_call,
                    beside=beside(session),
                    profile_folder=profile_folder,
                    native=profile_native,
                )
        return session.figures(workers, threads)
