"""The gRPC server process: ``persona-engine serve`` (or ``python -m serving.server``).

Startup verifies every checksum of the artifact and loads it before the port is bound, so a server
that accepts connections always has a whole model, and the standard health service reports SERVING
(for ``""`` and ``persona.v1.PersonalizationService``) from then on. Server reflection lists every
service, so ``grpcurl`` and similar tools work without the .proto files.

SIGTERM or SIGINT starts a graceful stop: health turns NOT_SERVING (health watchers are told at
once), the port stops accepting, calls in flight get ``--grace-seconds`` to finish, and the process
exits 0. Open health ``Watch`` streams count as in flight, so a watcher that does not hang up holds the
stop for the whole grace period.

One process serves with a thread pool; Python threads share one interpreter lock, so CPU-bound
scoring scales with processes. ``--workers N`` follows gRPC's multiprocessing example: the parent
reserves the port with SO_REUSEPORT and starts N worker processes (fresh interpreters, started before
and without any gRPC object in the parent), each of which binds the same port with
``grpc.so_reuseport``; the kernel spreads connections over them. The parent creates no gRPC object at
all. It owns a run directory shared with the workers: ``metrics/`` is their
``PROMETHEUS_MULTIPROC_DIR`` (the parent exports the merged metrics), and the model state files keep
every worker on the same artifact after a ReloadModel (see ``serving.model_holder``). The parent
forwards SIGTERM to the workers, waits for them to drain, and exits after them; if a worker dies on
its own, the parent stops the others and exits non-zero, leaving restarts to the supervisor (systemd,
Kubernetes) that started it.

``--event-log PATH`` enables the live loop: RecordEvents appends to that SQLite event log
(``engine.live.event_log``) and every served offer and layout is logged there too. All workers open the
same file; SQLite's WAL mode lets them write it concurrently and training read it while they do.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Final

from engine.errors import PersonaEngineError

# One BLAS thread per handler thread: requests already run in parallel, and OpenBLAS threads started
# inside each of them would oversubscribe the cores. Set before numpy loads (via the imports below).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection  # type: ignore[import-untyped]  # no stubs in dev deps
from prometheus_client import CollectorRegistry, disable_created_metrics

from engine.decisions.experiment import ExperimentError, load_experiment
from engine.decisions.online_bandit import BanditConfig, OnlineBanditError, load_bandit_config
from engine.live.decision_log_writer import DecisionLogWriter
from engine.live.decisions import LiveDecisions
from engine.live.event_log import EventLog, EventLogError
from engine.live.events import LiveEventObserver
from engine.live.live_loop import LiveLoop
from engine.live.live_state import LiveState
from engine.live.state_store import StateStore
from serving.admin_servicer import AdminServicer
from serving.generated.persona.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    personalization_service_pb2,
    personalization_service_pb2_grpc,
)
from serving.heap_freeze import settle_heap, settle_heap_later
from serving.interceptors import ObservabilityInterceptor
from serving.metrics import (
    MULTIPROC_DIR_ENV,
    MetricsEndpoint,
    ServingMetrics,
    mark_worker_dead,
    multiprocess_registry,
)
from serving.model_holder import (
    ModelHolder,
    ModelReloader,
    SharedModelState,
    load_model,
    publish_model_metrics,
    resolve_artifact_path,
)
from serving.personalization_servicer import PersonalizationServicer
from serving.redis_state_store import MEMORY, StateStoreError, open_state_store

LOGGER = logging.getLogger("persona_engine.server")

ENV_ADDRESS: Final = "PERSONA_ENGINE_ADDRESS"
ENV_METRICS_PORT: Final = "PERSONA_ENGINE_METRICS_PORT"
ENV_WORKERS: Final = "PERSONA_ENGINE_WORKERS"
ENV_ADMIN_TOKEN: Final = "PERSONA_ENGINE_ADMIN_TOKEN"
ENV_STATE: Final = "PERSONA_ENGINE_STATE"
ENV_EVENT_LOG: Final = "PERSONA_ENGINE_EVENT_LOG"
DEFAULT_ADDRESS: Final = "0.0.0.0:50051"
DEFAULT_METRICS_PORT: Final = 9464
DEFAULT_WORKERS: Final = 1
DEFAULT_THREADS: Final = 16
# Successful calls logged: one in this many (failed and slow calls always); see serving.interceptors.
DEFAULT_ACCESS_LOG_EVERY: Final = 100
DEFAULT_GRACE_SECONDS: Final = 10.0
MAX_WORKERS: Final = 64

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2

PERSONALIZATION_SERVICE: Final = personalization_service_pb2.DESCRIPTOR.services_by_name[
    "PersonalizationService"
].full_name
ADMIN_SERVICE: Final = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
HEALTH_SERVICE: Final = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SERVICE_NAMES: Final = (PERSONALIZATION_SERVICE, ADMIN_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME)
# Health reports for the whole server ("") and for the API clients call.
HEALTH_REPORTED: Final = ("", PERSONALIZATION_SERVICE)

_METRICS_SUBDIR: Final = "metrics"
_PARENT_POLL_S: Final = 0.2
# After the grace period a worker still needs a moment to close its server and files.
_WORKER_EXIT_MARGIN_S: Final = 10.0

SERVE_EXAMPLES: Final = f"""
    examples:
      persona-engine serve --artifact artifacts/latest
      persona-engine serve --artifact artifacts/latest --address 127.0.0.1:50051 --metrics-port 0
      persona-engine serve --artifact artifacts/latest --workers 4 --admin-token-file /run/secrets/admin
      persona-engine serve --artifact artifacts/latest --tls-cert server.pem --tls-key server.key \\
          --tls-client-ca clients-ca.pem
      {ENV_WORKERS}=2 {ENV_ADMIN_TOKEN}=s3cret persona-engine serve --artifact artifacts/latest
      persona-engine serve --artifact artifacts/latest --workers 4 --state redis://127.0.0.1:6379/0
      persona-engine serve --artifact artifacts/latest --workers 4 --event-log /var/lib/persona/events.db

    environment (a flag given on the command line wins):
      {ENV_ADDRESS}       like --address
      {ENV_METRICS_PORT}  like --metrics-port
      {ENV_WORKERS}       like --workers
      {ENV_ADMIN_TOKEN}   the admin token itself (--admin-token-file wins)
      {ENV_STATE}         like --state
      {ENV_EVENT_LOG}    like --event-log

    admin calls carry the metadata 'authorization: Bearer <token>'. A server started without a token
    refuses every admin call with PERMISSION_DENIED; a call without the metadata gets UNAUTHENTICATED, a wrong
    token PERMISSION_DENIED. ReloadModel switches to exactly the artifact it names, so naming an older
    version is a rollback; with several workers it returns once all of them serve it.

    SIGTERM or SIGINT: health turns NOT_SERVING, calls in flight get --grace-seconds, exit status 0.
    """


class ServeConfigError(PersonaEngineError, ValueError):
    """An invalid serve flag or environment variable; the message names it."""


@dataclass(frozen=True)
class TlsConfig:
    """The server's certificate and key (PEM); with ``client_ca``, clients must present a certificate
    signed by it (mutual TLS)."""

    certificate_chain: bytes
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = None

    @classmethod
    def from_files(cls, certificate: Path, key: Path, client_ca: Path | None = None) -> TlsConfig:
        def read(path: Path, flag: str) -> bytes:
            try:
                data = Path(path).read_bytes()
            except OSError as error:
                raise ServeConfigError(f"{flag} {path}: cannot read ({error.strerror})") from None
            if b"-----BEGIN" not in data:
                raise ServeConfigError(f"{flag} {path}: not a PEM file")
            return data

        return cls(
            read(certificate, "--tls-cert"),
            read(key, "--tls-key"),
            None if client_ca is None else read(client_ca, "--tls-client-ca"),
        )

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


def unary_methods() -> list[str]:
    """Full names of the unary methods the interceptor measures, for up-front metric series."""
    names = [
        f"/{service.full_name}/{method.name}"
        for file in (personalization_service_pb2.DESCRIPTOR, admin_service_pb2.DESCRIPTOR)
        for service in file.services_by_name.values()
        for method in service.methods
        if not method.client_streaming and not method.server_streaming
    ]
    return [*names, f"/{HEALTH_SERVICE}/Check"]


def create_server(
    holder: ModelHolder,
    metrics: ServingMetrics,
    *,
    address: str = "127.0.0.1:0",
    admin_token: str | None = None,
    tls: TlsConfig | None = None,
    max_workers: int = DEFAULT_THREADS,
    access_log_every: int = 1,
    reuse_port: bool = False,
    health_servicer: health.HealthServicer | None = None,
    reloader: ModelReloader | None = None,
    event_log: EventLog | None = None,
    decision_writer: DecisionLogWriter | None = None,
    observers: Sequence[LiveEventObserver] = (),
    live: LiveDecisions | None = None,
) -> tuple[grpc.Server, int]:
    """A bound, not yet started server with every service; returns it and the port it bound.

    Health is SERVING for ``""`` and PersonalizationService as soon as the server starts, since the
    holder already has a verified model. ``reuse_port`` lets several processes bind one port (workers);
    it is off otherwise so that a second server on a busy port fails instead of silently sharing it.
    Pass ``health_servicer`` to keep control of health (to report NOT_SERVING when stopping) and
    ``reloader`` when workers share reloads; the default reloads this process only. ``event_log``
    enables RecordEvents, ``decision_writer`` logs served decisions, and ``observers`` are told of
    every newly accepted batch (the caller owns and closes the log and the writer). ``live`` adds
    experiments, journey stages and the online bandit (and the admin experiment calls).
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="persona-grpc"),
        interceptors=[ObservabilityInterceptor(metrics, access_log_every=access_log_every)],
        options=[("grpc.so_reuseport", 1 if reuse_port else 0)],
    )
    personalization_service_pb2_grpc.add_PersonalizationServiceServicer_to_server(
        PersonalizationServicer(
            holder,
            metrics,
            LiveLoop(
                decisions=live, event_log=event_log, decision_writer=decision_writer, observers=observers
            ),
        ),
        server,
    )
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminServicer(
            holder,
            reloader or ModelReloader(holder, metrics),
            admin_token,
            live.experiment if live is not None else None,
        ),
        server,
    )
    health_servicer = health_servicer or health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(SERVICE_NAMES, server)
    metrics.declare_methods(unary_methods())
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, tls.server_credentials())
    except RuntimeError as error:
        raise OSError(f"cannot listen on {address}: {error}") from None
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    for name in HEALTH_REPORTED:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


@dataclass(frozen=True)
class ServeSettings:
    """Everything ``serve`` and the worker supervisor need, resolved from flags and environment."""

    artifact: Path
    model_name: str | None = None
    address: str = DEFAULT_ADDRESS
    metrics_port: int = DEFAULT_METRICS_PORT
    workers: int = DEFAULT_WORKERS
    threads: int = DEFAULT_THREADS
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    tls: TlsConfig | None = None
    admin_token: str | None = field(default=None, repr=False)
    run_dir: Path | None = None
    worker_index: int | None = None  # set only in a worker process started by the supervisor
    tls_files: tuple[str, ...] = ()  # the TLS flags as given, passed on to workers
    log_level: str = "info"
    state: str = MEMORY  # where live customer state is kept: "memory" or a redis:// URL
    event_log: Path | None = None
    experiment: Path | None = None  # TOML file with an [experiment] section, validated at start
    bandit: BanditConfig | None = None  # the online bandit's exploration and offer budgets ([bandit])
    bandit_file: Path | None = None  # where ``bandit`` came from, passed on to worker processes
    access_log_every: int = DEFAULT_ACCESS_LOG_EVERY

    @property
    def host(self) -> str:
        return split_address(self.address)[0]


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[::]:50051`` for IPv6) -> host and port; the error names the flag."""
    host, _, port_text = address.rpartition(":")
    if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ServeConfigError(f"--address {address!r}: expected host:port, e.g. 0.0.0.0:50051")
    return host, int(port_text)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` (main thread only; elsewhere the caller owns ``stop``)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        LOGGER.info("received %s", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(
    settings: ServeSettings,
    *,
    stop: threading.Event | None = None,
    on_ready: Callable[[int], None] | None = None,
    on_live_state: Callable[[LiveState], None] | None = None,
    observers: Sequence[LiveEventObserver] = (),
    state_store: StateStore | None = None,
) -> int:
    """Serve one process until SIGTERM/SIGINT (or ``stop`` is set); returns the exit status.

    ``state_store`` holds the live loop's shared state (customer sessions, bandit statistics, budgets,
    journeys, the running experiment); the default is the store ``settings.state`` names (``--state``:
    this process's memory, or Redis so that several workers or replicas agree).

    In a worker (``settings.worker_index`` set) the model comes from the run directory's shared state,
    the port is shared and metrics go to the multiprocess files. ``on_ready`` gets the bound port once
    the server is serving; ``on_live_state`` the live customer state before that. ``observers`` learn
    from RecordEvents batches (with ``settings.event_log``), after the live customer state.
    """
    stop = stop or threading.Event()
    with _stop_on_signals(stop):
        shared = (
            SharedModelState(settings.run_dir)
            if settings.worker_index is not None and settings.run_dir is not None
            else None
        )
        artifact, model_name, generation = settings.artifact, settings.model_name, 0
        if shared is not None:
            desired = shared.read()
            artifact, model_name, generation = (
                Path(desired.artifact_path),
                desired.model_name or None,
                desired.generation,
            )
        try:
            loaded = load_model(artifact, model_name)
        except Exception as error:  # the message names the artifact and the bad file or model
            LOGGER.error("cannot serve %s: %s", artifact, error)
            return EXIT_USAGE
        disable_created_metrics()  # *_created series double the output and nothing here reads them
        metrics = ServingMetrics(CollectorRegistry())
        try:
            live_state = LiveState(state_store or open_state_store(settings.state), metrics)
            holder = ModelHolder(
                loaded.personalizer, loaded.path, load_seconds=loaded.load_seconds, prepare=live_state.attach
            )
        except StateStoreError as error:
            LOGGER.error("%s", error)
            return EXIT_USAGE
        if on_live_state is not None:
            on_live_state(live_state)
        publish_model_metrics(metrics, holder.snapshot())
        reloader = ModelReloader(
            holder, metrics, shared, applied_generation=generation, after_swap=settle_heap_later
        )
        health_servicer = health.HealthServicer()
        endpoint: MetricsEndpoint | None = None
        event_log: EventLog | None = None
        decision_writer: DecisionLogWriter | None = None
        if settings.event_log is not None:
            try:
                event_log = EventLog.open(settings.event_log)
                decision_writer = DecisionLogWriter(
                    settings.event_log, on_commit=metrics.record_decisions_logged
                )
            except EventLogError as error:
                LOGGER.error("--event-log: %s", error)
                if event_log is not None:
                    event_log.close()
                return EXIT_USAGE
            if live_state.is_process_local:
                started = time.perf_counter()
                replayed = live_state.catch_up(event_log)
                LOGGER.info(
                    "live state rebuilt from %d logged events in %.1fs",
                    replayed,
                    time.perf_counter() - started,
                )
        live = LiveDecisions(live_state.store, config=settings.bandit)
        if settings.experiment is not None:
            try:
                live.experiment.set(load_experiment(settings.experiment))
            except ExperimentError as error:
                LOGGER.error("--experiment: %s", error)
                _close_event_log(event_log, decision_writer)
                return EXIT_USAGE
        try:
            server, port = create_server(
                holder,
                metrics,
                address=settings.address,
                admin_token=settings.admin_token,
                tls=settings.tls,
                max_workers=settings.threads,
                access_log_every=settings.access_log_every,
                reuse_port=shared is not None,
                health_servicer=health_servicer,
                reloader=reloader,
                event_log=event_log,
                decision_writer=decision_writer,
                observers=(live_state, *observers),
                live=live,
            )
            if settings.metrics_port and shared is None:
                endpoint = MetricsEndpoint(metrics.registry, _bare_host(settings.host), settings.metrics_port)
        except OSError as error:
            LOGGER.error("%s", error)
            _close_event_log(event_log, decision_writer)
            return EXIT_USAGE
        LOGGER.info("heap settled in %.3fs (the model is kept out of full collections)", settle_heap())
        server.start()
        reloader.report()
        following = threading.Event()
        follower = None
        if shared is not None:
            follower = threading.Thread(
                target=reloader.follow, args=(following,), name="model-follower", daemon=True
            )
            follower.start()
        LOGGER.info(
            "listening on %s:%d (%s) serving artifact %s, model %s%s%s",
            settings.host,
            port,
            "tls" if settings.tls else "plaintext",
            holder.snapshot().version,
            holder.snapshot().model_name,
            f", metrics on port {endpoint.port}" if endpoint else "",
            f", worker {settings.worker_index}" if settings.worker_index is not None else "",
        )
        if event_log is not None:
            LOGGER.info("recording events and served decisions in %s", event_log.path)
        if on_ready is not None:
            on_ready(port)
        parent = os.getppid()
        while not stop.wait(_PARENT_POLL_S):
            if shared is not None and os.getppid() != parent:
                LOGGER.error("the supervising process exited; stopping this worker")
                break
        LOGGER.info("stopping: NOT_SERVING, up to %.1fs for calls in flight", settings.grace_seconds)
        health_servicer.enter_graceful_shutdown()
        server.stop(settings.grace_seconds).wait()
        following.set()
        if follower is not None:
            follower.join(timeout=5)
        if endpoint is not None:
            endpoint.close()
        _close_event_log(event_log, decision_writer)
        LOGGER.info("stopped")
        return EXIT_OK


def _close_event_log(event_log: EventLog | None, decision_writer: DecisionLogWriter | None) -> None:
    """After the server stopped: write the decisions still queued, then close the log."""
    if decision_writer is not None:
        decision_writer.close()
    if event_log is not None:
        event_log.close()


def _bare_host(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) a SO_REUSEPORT socket so the workers share a known, held port.

    The socket never accepts connections; it keeps an ephemeral port (``:0``) from being taken by
    someone else between the workers' binds, as in gRPC's multiprocessing example.
    """
    bare = _bare_host(host)
    sock = socket.socket(socket.AF_INET6 if ":" in bare else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((bare, port))
    except OSError as error:
        sock.close()
        raise OSError(f"cannot reserve {host}:{port} for the workers: {error.strerror or error}") from None
    return sock


def _worker_command(settings: ServeSettings, address: str, run_dir: Path, index: int) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "serving.server",
        "--artifact",
        str(settings.artifact),
        "--address",
        address,
        "--metrics-port",
        "0",
        "--workers",
        "1",
        "--threads",
        str(settings.threads),
        "--grace-seconds",
        repr(settings.grace_seconds),
        "--run-dir",
        str(run_dir),
        "--worker-index",
        str(index),
        "--log-level",
        settings.log_level,
        "--state",
        settings.state,
        "--access-log-every",
        str(settings.access_log_every),
        *settings.tls_files,
    ]
    if settings.model_name:
        command += ["--model", settings.model_name]
    if settings.event_log is not None:
        command += ["--event-log", str(settings.event_log)]
    if settings.experiment is not None:
        command += ["--experiment", str(settings.experiment)]
    if settings.bandit_file is not None:
        command += ["--bandit", str(settings.bandit_file)]
    return command


def _worker_environment(settings: ServeSettings, metrics_dir: Path) -> dict[str, str]:
    """The parent's environment plus the metrics directory; the token travels here, never in argv
    (which every user of the machine can read)."""
    environment = dict(os.environ)
    environment[MULTIPROC_DIR_ENV] = str(metrics_dir)
    environment.pop(ENV_ADMIN_TOKEN, None)
    if settings.admin_token is not None:
        environment[ENV_ADMIN_TOKEN] = settings.admin_token
    # ``-m serving.server`` must import this checkout even when it is not installed.
    source_root = str(Path(__file__).resolve().parents[1])
    environment["PYTHONPATH"] = os.pathsep.join(
        [source_root, *([environment["PYTHONPATH"]] if environment.get("PYTHONPATH") else [])]
    )
    return environment


def supervise(settings: ServeSettings, *, stop: threading.Event | None = None) -> int:
    """Run ``settings.workers`` worker processes on one port until SIGTERM/SIGINT; returns the exit status."""
    stop = stop or threading.Event()
    with _stop_on_signals(stop):
        created = settings.run_dir is None
        run_dir = (
            Path(tempfile.mkdtemp(prefix="persona-engine-")) if settings.run_dir is None else settings.run_dir
        )
        try:
            return _supervise(settings, run_dir, stop)
        finally:
            if created:
                shutil.rmtree(run_dir, ignore_errors=True)


def _supervise(settings: ServeSettings, run_dir: Path, stop: threading.Event) -> int:
    host, port = split_address(settings.address)
    metrics_dir = run_dir / _METRICS_SUBDIR
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):  # a reused run directory must not add an old run's counts
        stale.unlink()
    shared = SharedModelState.create(
        run_dir, resolve_artifact_path(settings.artifact), settings.model_name or ""
    )
    try:
        reserved = _reserve_port(host, port)
    except OSError as error:
        LOGGER.error("%s", error)
        return EXIT_USAGE
    with reserved:
        address = f"{host}:{reserved.getsockname()[1]}"
        environment = _worker_environment(settings, metrics_dir)
        workers = [
            subprocess.Popen(_worker_command(settings, address, run_dir, index), env=environment)
            for index in range(settings.workers)
        ]
        LOGGER.info(
            "listening on %s with %d workers (pids %s), run directory %s",
            address,
            len(workers),
            ", ".join(str(w.pid) for w in workers),
            run_dir,
        )
        endpoint: MetricsEndpoint | None = None
        status = EXIT_OK
        try:
            if settings.metrics_port:
                endpoint = MetricsEndpoint(
                    multiprocess_registry(metrics_dir), _bare_host(host), settings.metrics_port
                )
                LOGGER.info("metrics of all workers on port %d", endpoint.port)
        except OSError as error:
            LOGGER.error("cannot serve metrics on port %d: %s", settings.metrics_port, error)
            status = EXIT_USAGE
        if status == EXIT_OK:
            status = _watch_workers(workers, shared, stop, address)
        status = _stop_workers(workers, settings.grace_seconds, metrics_dir, shared, status)
        if endpoint is not None:
            endpoint.close()
    LOGGER.info("stopped")
    return status


def _watch_workers(
    workers: Sequence[subprocess.Popen[bytes]], shared: SharedModelState, stop: threading.Event, address: str
) -> int:
    """Wait for a stop request; a worker exiting on its own ends the wait with a failure status."""
    announced = False
    while not stop.wait(_PARENT_POLL_S):
        for worker in workers:
            code = worker.poll()
            if code is not None:
                LOGGER.error("worker %d exited with status %d; stopping the server", worker.pid, code)
                return code if code > 0 else EXIT_FAILURE
        if not announced and len(shared.reports()) == len(workers):
            LOGGER.info("all %d workers serving on %s", len(workers), address)
            announced = True
    return EXIT_OK


def _stop_workers(
    workers: Sequence[subprocess.Popen[bytes]],
    grace_seconds: float,
    metrics_dir: Path,
    shared: SharedModelState,
    status: int,
) -> int:
    """SIGTERM every worker, wait for them to drain, and clean up after each; returns the exit status."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds + _WORKER_EXIT_MARGIN_S
    for worker in workers:
        try:
            code = worker.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            LOGGER.error("worker %d did not stop in time; killing it", worker.pid)
            worker.kill()
            code = worker.wait()
        if code != 0 and status == EXIT_OK:
            status = EXIT_FAILURE
        mark_worker_dead(worker.pid, metrics_dir)
        shared.forget(worker.pid)
    return status


# -- command line -----------------------------------------------------------------------------------


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``persona-engine serve``; environment variables fill in flags not given."""
    if parser.epilog is None:
        parser.epilog = textwrap.dedent(SERVE_EXAMPLES)
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--artifact",
        type=Path,
        required=True,
        help="artifact to serve: ROOT (its latest), ROOT/latest or ROOT/<version>; every checksum is "
        "verified before the port opens",
    )
    parser.add_argument("--model", help="model of the artifact to serve (default: the artifact's best)")
    parser.add_argument(
        "--address",
        help=f"host:port to listen on (env {ENV_ADDRESS}; default {DEFAULT_ADDRESS}); "
        "port 0 picks a free one",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        help=f"port of the Prometheus /metrics endpoint, on the --address host (env {ENV_METRICS_PORT}; "
        f"default {DEFAULT_METRICS_PORT}; 0 disables it)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help=f"worker processes sharing the port via SO_REUSEPORT (env {ENV_WORKERS}; default "
        f"{DEFAULT_WORKERS}; at most {MAX_WORKERS}); use about one per CPU core",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help=f"request handler threads per process (default {DEFAULT_THREADS})",
    )
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=DEFAULT_GRACE_SECONDS,
        help="on SIGTERM/SIGINT, how long calls in flight may take to finish "
        f"(default {DEFAULT_GRACE_SECONDS:g})",
    )
    parser.add_argument(
        "--tls-cert", type=Path, help="server certificate chain (PEM); enables TLS with --tls-key"
    )
    parser.add_argument("--tls-key", type=Path, help="private key of --tls-cert (PEM)")
    parser.add_argument(
        "--tls-client-ca",
        type=Path,
        help="CA certificates (PEM) that client certificates must chain to; clients without one are refused",
    )
    parser.add_argument(
        "--admin-token-file",
        type=Path,
        help=f"file holding the AdminService token (env {ENV_ADMIN_TOKEN} holds the token itself); "
        "without a token every admin call is refused",
    )
    parser.add_argument(
        "--state",
        help=f"where live customer state (session mixes, drift) is kept (env {ENV_STATE}): 'memory' "
        "(default; per process) or redis://host:port/db, shared by all workers and replicas",
    )
    parser.add_argument(
        "--event-log",
        type=Path,
        help=f"SQLite event log (created if missing) for RecordEvents and served decisions (env "
        f"{ENV_EVENT_LOG}); without it RecordEvents is refused. Training reads it with [data] event_log",
    )
    parser.add_argument(
        "--experiment",
        type=Path,
        help="TOML file with an [experiment] section (named arms, shares, control; see "
        "engine/decisions/experiment.py) to run from the start; the admin service's SetExperiment "
        "changes it live",
    )
    parser.add_argument(
        "--bandit",
        type=Path,
        help="TOML file with a [bandit] section: exploration_floor, thompson_draws, seed_strength, "
        "decision_ttl_hours, budget_period_hours and [bandit.budgets] offer_id = cost cap per period",
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        help="with --workers > 1: directory the workers share (metrics files, reload state); "
        "default: a new temporary directory, removed at exit",
    )
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="info", help="default: info"
    )
    parser.add_argument(
        "--access-log-every",
        type=int,
        default=DEFAULT_ACCESS_LOG_EVERY,
        metavar="N",
        help="log one in N successful calls; failed calls and calls slower than 100 ms are always "
        f"logged, and Prometheus counts every call (default {DEFAULT_ACCESS_LOG_EVERY}; 1 logs every call)",
    )
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)


def _int_setting(
    given: int | None, environ: Mapping[str, str], variable: str, flag: str, default: int, low: int, high: int
) -> int:
    if given is not None:
        value, source = given, flag
    elif variable in environ:
        source = variable
        try:
            value = int(environ[variable])
        except ValueError:
            raise ServeConfigError(f"{variable}={environ[variable]!r}: not a whole number") from None
    else:
        return default
    if not low <= value <= high:
        raise ServeConfigError(f"{source} {value}: must be between {low} and {high}")
    return value


def _admin_token(path: Path | None, environ: Mapping[str, str]) -> str | None:
    """The admin token from the file (flag) or the environment; errors name the source, never the token."""
    if path is not None:
        source = f"--admin-token-file {path}"
        try:
            text = path.read_text(encoding="utf-8")
            shared_with_others = path.stat().st_mode & 0o077
        except (OSError, UnicodeDecodeError) as error:
            raise ServeConfigError(f"{source}: cannot read ({error})") from None
        if shared_with_others:
            LOGGER.warning("%s: other users may read this file; restrict it with chmod 600", source)
    elif ENV_ADMIN_TOKEN in environ:
        source, text = ENV_ADMIN_TOKEN, environ[ENV_ADMIN_TOKEN]
    else:
        return None
    token = text.strip()
    if not token:
        raise ServeConfigError(f"{source}: the admin token is empty")
    if not all(33 <= ord(character) < 127 for character in token):
        raise ServeConfigError(f"{source}: the admin token must be printable ASCII without spaces")
    if len(token) < 16:
        LOGGER.warning("%s: the admin token has fewer than 16 characters; use a long random one", source)
    return token


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ServeSettings:
    """Resolve flags, then environment variables, then defaults; raises ServeConfigError naming the flag."""
    environ = os.environ if environ is None else environ
    artifact: Path = args.artifact
    if not artifact.exists():
        raise ServeConfigError(f"--artifact {artifact}: no such folder")
    address = args.address or environ.get(ENV_ADDRESS) or DEFAULT_ADDRESS
    split_address(address)
    if args.worker_index is not None and args.run_dir is None:
        raise ServeConfigError("--worker-index is set by the supervising process, together with --run-dir")
    if args.access_log_every < 1:
        raise ServeConfigError(f"--access-log-every {args.access_log_every}: must be at least 1")
    if args.threads < 1:
        raise ServeConfigError(f"--threads {args.threads}: must be at least 1")
    if not args.grace_seconds >= 0:
        raise ServeConfigError(f"--grace-seconds {args.grace_seconds}: must be 0 or more")
    tls: TlsConfig | None = None
    tls_files: tuple[str, ...] = ()
    if args.tls_cert is not None or args.tls_key is not None or args.tls_client_ca is not None:
        if args.tls_cert is None or args.tls_key is None:
            raise ServeConfigError("--tls-cert and --tls-key go together (and --tls-client-ca needs both)")
        tls = TlsConfig.from_files(args.tls_cert, args.tls_key, args.tls_client_ca)
        tls_files = ("--tls-cert", str(args.tls_cert.resolve()), "--tls-key", str(args.tls_key.resolve()))
        if args.tls_client_ca is not None:
            tls_files += ("--tls-client-ca", str(args.tls_client_ca.resolve()))
    event_log_text = args.event_log or environ.get(ENV_EVENT_LOG)
    event_log = None if not event_log_text else Path(event_log_text).resolve()
    if event_log is not None:
        source = "--event-log" if args.event_log else ENV_EVENT_LOG
        try:  # open once here: a bad path fails before any worker starts, and the schema exists for them
            EventLog.open(event_log).close()
        except EventLogError as error:
            raise ServeConfigError(f"{source}: {error}") from None
    experiment = None
    if args.experiment is not None:
        experiment = args.experiment.resolve()
        try:  # validated once here, so a bad file fails before any worker starts
            load_experiment(experiment)
        except ExperimentError as error:
            raise ServeConfigError(f"--experiment: {error}") from None
    bandit_file = args.bandit.resolve() if args.bandit is not None else None
    try:  # read once here, so a bad file fails before any worker starts
        bandit = load_bandit_config(bandit_file) if bandit_file is not None else None
    except OnlineBanditError as error:
        raise ServeConfigError(f"--bandit: {error}") from None
    return ServeSettings(
        artifact=artifact,
        model_name=args.model or None,
        address=address,
        metrics_port=_int_setting(
            args.metrics_port, environ, ENV_METRICS_PORT, "--metrics-port", DEFAULT_METRICS_PORT, 0, 65535
        ),
        workers=_int_setting(
            args.workers, environ, ENV_WORKERS, "--workers", DEFAULT_WORKERS, 1, MAX_WORKERS
        ),
        threads=args.threads,
        grace_seconds=args.grace_seconds,
        tls=tls,
        admin_token=_admin_token(args.admin_token_file, environ),
        run_dir=args.run_dir,
        worker_index=args.worker_index,
        tls_files=tls_files,
        log_level=args.log_level,
        state=_state_setting(getattr(args, "state", None), environ),
        event_log=event_log,
        experiment=experiment,
        bandit=bandit,
        bandit_file=bandit_file,
        access_log_every=args.access_log_every,
    )


def _state_setting(given: str | None, environ: Mapping[str, str]) -> str:
    """``--state`` or its variable; only the form is checked here, the server is reached at startup."""
    value, source = (given, "--state") if given else (environ.get(ENV_STATE), ENV_STATE)
    if not value:
        return MEMORY
    if value != MEMORY and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ServeConfigError(f"{source} {value!r}: expected 'memory' or a redis://host:port/db URL")
    return value


def run_from_args(args: argparse.Namespace) -> int:
    """``persona-engine serve``: configure logging, resolve settings, serve; returns the exit status."""
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = settings_from_args(args)
    except ServeConfigError as error:
        print(f"persona-engine serve: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if settings.workers > 1 and settings.worker_index is None:
        if settings.state == MEMORY:
            LOGGER.warning(
                "--workers %d with in-memory live state: each worker keeps its own sessions; "
                "use --state redis://... to share them",
                settings.workers,
            )
        return supervise(settings)
    return serve(settings)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="persona-engine serve",
        description="Serve a trained artifact over gRPC (PersonalizationService, AdminService, health, "
        "reflection) with Prometheus metrics.",
    )
    add_serve_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
