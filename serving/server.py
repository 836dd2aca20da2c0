"""The gRPC server process: ``persona-engine serve`` (or ``python -m serving.server``).

Startup verifies every checksum of the artifact and loads it before the port is bound, so a server
that accepts connections always has a whole model, and the standard health service reports SERVING
(for ``""`` and ``persona.v1.PersonalizationService``) from then on. Server reflection lists every
service, so ``grpcurl`` and similar tools work without the .proto files.

SIGTERM or SIGINT starts a graceful stop: health turns NOT_SERVING (health watchers are told at
once), the calls in flight finish and their responses reach their callers while the connections stay
open (``serving.response_drain``), then the port stops accepting and the connections close; all of it
within ``--grace-seconds``, and the process exits 0. Open health ``Watch`` streams are sent
NOT_SERVING and then ended (``serving.health_service``), so a watcher does not hold the stop.

This module is one serving process: ``create_server`` builds the ``grpc.aio`` server with every
service, and ``serve`` runs it on one event loop (``serving.event_loop``) until told to stop, alone or
as one of the workers that ``--workers N`` starts (``serving.worker_supervisor``); flags and
environment are resolved in ``serving.settings``. Page renders run on the loop; whatever waits (event
log commits, Redis round trips, reloads, big batches) runs in the loop's ``--threads`` blocking-work
threads (``serving.engine_calls``). With ``--ready-file`` a process serving alone writes the ready
file (``serving.ready_file``) once it serves; under a supervisor the supervisor writes it.

``--event-log PATH`` enables the live loop: RecordEvents appends to that SQLite event log
(``engine.live.event_log``) and every served offer and layout is logged there too. All workers open the
same file; SQLite's WAL mode lets them write it concurrently and training read it while they do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import logging.handlers
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

# One BLAS thread per process: requests already run in parallel across worker processes, and
# OpenBLAS threads started by each call would oversubscribe the cores. Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection  # type: ignore[import-untyped]  # no stubs in dev deps
from prometheus_client import CollectorRegistry, disable_created_metrics

from engine.decisions.experiment import Experiment, ExperimentError, load_experiment
from engine.live.decision_log_writer import DecisionLogWriter
from engine.live.decisions import LiveDecisions
from engine.live.event_log import EventLog, EventLogError
from engine.live.event_store import EventStore
from engine.live.events import LiveEventObserver
from engine.live.live_loop import LiveLoop
from engine.live.live_state import LiveState
from engine.live.live_state_snapshot import snapshot_folder
from engine.live.redis_event_log import RedisEventLog
from engine.live.state_store import StateStore
from engine.personalizer import Personalizer
from serving import event_loop
from serving.admin_servicer import AdminServicer
from serving.batched_calls import BatchSettings
from serving.benchmark_floor import FloorPersonalizationServicer
from serving.cpu_affinity import pin_worker
from serving.engine_calls import EngineCalls
from serving.generated.persona.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    personalization_service_pb2,
    personalization_service_pb2_grpc,
)
from serving.glibc_malloc import limit_malloc_arenas
from serving.health_service import StoppingHealthServicer
from serving.heap_freeze import settle_heap, settle_heap_later
from serving.helper_threads import keep_helper_threads_yielding, supported
from serving.interceptors import ObservabilityInterceptor
from serving.item_messages import prepare_items
from serving.metrics import MetricsEndpoint, ServingMetrics
from serving.model_holder import (
    ModelHolder,
    ModelReloader,
    SharedModelState,
    load_model,
    publish_model_metrics,
)
from serving.personalization_servicer import PersonalizationServicer
from serving.port_check import describe_bind_failure, refuse_ports_in_use
from serving.process_lifecycle import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    STOP_CHECK_S,
    stop_on_signals,
    supervisor_gone,
    supervisor_pid,
)
from serving.ready_file import ServerReady, remove_ready_file, remove_stale_ready_file, write_ready_file
from serving.redis_state_store import MEMORY, StateStoreError, open_state_store
from serving.response_drain import ResponseDrain
from serving.settings import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    ServeConfigError,
    ServeSettings,
    TlsConfig,
    add_serve_arguments,
    bare_host,
    settings_from_args,
)
from serving.undecodable_requests import UndecodableRequestInterceptor
from serving.upkeep_process import UpkeepChild, run_upkeep_process
from serving.worker_supervisor import supervise

LOGGER = logging.getLogger("persona_engine.server")
LOG_FORMAT: Final = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"

PERSONALIZATION_SERVICE: Final = personalization_service_pb2.DESCRIPTOR.services_by_name[
    "PersonalizationService"
].full_name
ADMIN_SERVICE: Final = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
HEALTH_SERVICE: Final = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SERVICE_NAMES: Final = (PERSONALIZATION_SERVICE, ADMIN_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME)
# Health reports for the whole server ("") and for each service of ours: a client or load balancer
# that checks the service it calls by name gets an answer, where an unlisted name is NOT_FOUND. The
# admin service is always there (without --admin-token it answers PERMISSION_DENIED), so it is listed.
HEALTH_REPORTED: Final = ("", PERSONALIZATION_SERVICE, ADMIN_SERVICE)
# After an aged connection's GOAWAY, how long its calls in flight may still run (every call here is
# unary and answers within its deadline: this only bounds a stuck one).
CONNECTION_AGE_GRACE_S: Final = 30.0


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


async def create_server(
    holder: ModelHolder,
    metrics: ServingMetrics,
    *,
    address: str = "127.0.0.1:0",
    admin_token: str | None = None,
    tls: TlsConfig | None = None,
    access_log_every: int = 1,
    reuse_port: bool = False,
    health_servicer: health.aio.HealthServicer | None = None,
    reloader: ModelReloader | None = None,
    event_log: EventStore | None = None,
    decision_writer: DecisionLogWriter | None = None,
    observers: Sequence[LiveEventObserver] = (),
    live: LiveDecisions | None = None,
    blocking_state: bool = False,
    benchmark_floor: bool = False,
    batching: BatchSettings | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_response_bytes: int | None = DEFAULT_MAX_RESPONSE_BYTES,
    state_store: StateStore | None = None,
    max_connection_age_s: float = 0.0,
    drain: ResponseDrain | None = None,
) -> tuple[grpc.aio.Server, int]:
    """A bound, not yet started server with every service; returns it and the port it bound.

    Call on the event loop that will run it. Health is SERVING for ``""`` and PersonalizationService
    as soon as the server starts, since the holder already has a verified model. ``reuse_port`` lets
    several processes bind one port (workers); it is off otherwise so that a second server on a busy
    port fails instead of silently sharing it. Pass ``health_servicer`` to keep control of health (to
    report NOT_SERVING when stopping) and ``reloader`` when workers share reloads; the default reloads
    this process only. ``event_log`` enables RecordEvents, ``decision_writer`` logs served decisions,
    and ``observers`` are told of every newly accepted batch (the caller owns and closes the log and
    the writer). ``live`` adds experiments, journey stages and the online bandit (and the admin
    experiment calls). ``blocking_state`` says live state is in a network store: every engine call
    then runs in a thread (``serving.engine_calls``). ``benchmark_floor`` makes Personalize answer one
    prepared response (``serving.benchmark_floor``). ``batching`` sets the dynamic batching of page
    renders (``serving.batched_calls``; default: its defaults). A request larger than
    ``max_request_bytes`` is refused with RESOURCE_EXHAUSTED before it is decoded
    (``--max-request-bytes``), and a RecommendProducts response larger than ``max_response_bytes`` is
    not sent but answered RESOURCE_EXHAUSTED (``--max-response-bytes``; None: no limit).
    ``state_store`` is the live loop's store, whose availability RecordEvents checks and the metrics report.
    ``max_connection_age_s`` closes client connections at that age (0: never; ``--max-connection-age``).
    ``drain`` counts the calls in flight for a stop that waits for their responses
    (``serving.response_drain``; ``serve`` passes its own).
    """
    ages: list[tuple[str, int]] = []
    if max_connection_age_s > 0:
        ages = [
            ("grpc.max_connection_age_ms", round(max_connection_age_s * 1000)),
            # Calls in flight at the GOAWAY get this long to finish before the connection is cut.
            ("grpc.max_connection_age_grace_ms", round(CONNECTION_AGE_GRACE_S * 1000)),
        ]
    server = grpc.aio.server(
        # Observability first: it then sees the INVALID_ARGUMENT of an undecodable request.
        interceptors=[
            ObservabilityInterceptor(metrics, access_log_every=access_log_every, drain=drain),
            UndecodableRequestInterceptor(metrics),
        ],
        options=[
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            ("grpc.max_receive_message_length", max_request_bytes),
            *ages,
        ],
    )
    servicer = FloorPersonalizationServicer if benchmark_floor else PersonalizationServicer
    personalization_service_pb2_grpc.add_PersonalizationServiceServicer_to_server(
        servicer(
            holder,
            metrics,
            LiveLoop(
                decisions=live, event_log=event_log, decision_writer=decision_writer, observers=observers
            ),
            EngineCalls(blocking_state=blocking_state),
            batching,
            state_store,
            max_response_bytes,
        ),
        server,
    )
    reloader = reloader or ModelReloader(holder, metrics)
    if live is not None:  # a reload must keep every arm of the running experiment servable
        reloader.experiment = live.experiment
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminServicer(holder, reloader, admin_token, live.experiment if live is not None else None),
        server,
    )
    health_servicer = health_servicer or StoppingHealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(SERVICE_NAMES, server)
    metrics.declare_methods(unary_methods())
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, tls.server_credentials())
    except RuntimeError as error:  # gRPC's text only says to turn on its debug log: say why instead
        host, _, port_text = address.rpartition(":")
        raise OSError(
            f"cannot listen on {address}: {describe_bind_failure(host, int(port_text), error)}"
        ) from None
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    for name in HEALTH_REPORTED:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


@dataclass
class _Process:
    """What one serving process holds besides its gRPC server: built before the event loop starts
    (loading blocks, and nothing serves yet), closed after it ended."""

    holder: ModelHolder
    metrics: ServingMetrics
    live_state: LiveState
    reloader: ModelReloader
    live: LiveDecisions
    shared: SharedModelState | None = None
    event_log: EventStore | None = None
    decision_writer: DecisionLogWriter | None = None
    endpoint: MetricsEndpoint | None = None
    upkeep: UpkeepChild | None = None
    following: threading.Event = field(default_factory=threading.Event)
    follower: threading.Thread | None = None
    started: bool = False  # the gRPC server started (and so is "stopped" at the end)

    def start_follower(self) -> None:
        """A worker applies the reloads its peers publish, loading on a thread of its own."""
        if self.shared is not None:
            self.follower = threading.Thread(
                target=self.reloader.follow, args=(self.following,), name="model-follower", daemon=True
            )
            self.follower.start()

    def close(self) -> None:
        if self.upkeep is not None:
            self.upkeep.close()
        self.following.set()
        if self.follower is not None:
            self.follower.join(timeout=5)
        if self.endpoint is not None:
            self.endpoint.close()
        _close_event_log(self.event_log, self.decision_writer)


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
    the server is serving (called on the event loop); ``on_live_state`` the live customer state before
    that. ``observers`` learn from RecordEvents batches (with ``settings.event_log``), after the live
    customer state. May run on any thread; signals are handled only on the main thread.
    """
    stop = stop or threading.Event()
    if settings.ready_file is not None and settings.worker_index is None:
        remove_stale_ready_file(settings.ready_file)
    with stop_on_signals(stop):
        process = _prepare(settings, on_live_state, state_store, stop)
        if isinstance(process, int):
            return process
        if stop.is_set():  # asked to stop while starting: nothing serves yet, nothing to drain
            process.close()
            LOGGER.info("stopped during start-up")
            return EXIT_OK
        try:
            return event_loop.run(
                _serve(settings, process, stop, on_ready, observers),
                kind=settings.event_loop,
                threads=settings.threads,
            )
        finally:
            process.close()
            if process.started:
                LOGGER.info("stopped")


def _preparation(live_state: LiveState) -> Callable[[Personalizer], None]:
    """What every model gets before it serves (at start and on each reload): the live state, and its
    items' response fragments built now rather than by the first request (~0.2 s at 100k items)."""

    def prepare(personalizer: Personalizer) -> None:
        live_state.attach(personalizer)
        prepare_items(personalizer)

    return prepare


def _prepare(
    settings: ServeSettings,
    on_live_state: Callable[[LiveState], None] | None,
    state_store: StateStore | None,
    stop: threading.Event,
) -> _Process | int:
    """Load the model, open the state store and the event log, rebuild in-memory live state; an exit
    status when that fails, or when ``stop`` is set during the rebuild (a SIGTERM while starting)."""
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
        loaded = load_model(artifact, model_name, settings.artifact_verifier)
    except Exception as error:  # the message names the artifact and the bad file or model
        LOGGER.error("cannot serve %s: %s", artifact, error)
        return EXIT_USAGE
    disable_created_metrics()  # *_created series double the output and nothing here reads them
    metrics = ServingMetrics(CollectorRegistry())
    try:
        # A worker replacing one that died (its peers serve) starts even while Redis is away.
        replacing = shared is not None and bool(shared.reports())
        live_state = LiveState(
            state_store or open_state_store(settings.state, must_answer=not replacing), metrics
        )
        holder = ModelHolder(
            loaded.personalizer,
            loaded.path,
            load_seconds=loaded.load_seconds,
            prepare=_preparation(live_state),
        )
    except StateStoreError as error:
        LOGGER.error("%s", error)
        return EXIT_USAGE
    if on_live_state is not None:
        on_live_state(live_state)
    publish_model_metrics(metrics, holder.snapshot())
    # A one-process server runs its event log's upkeep in a child process; workers leave it to the
    # supervisor's (serving.upkeep_process).
    upkeep = (
        UpkeepChild(settings, loaded.path, holder.snapshot().personalizer.model_name)
        if settings.event_log is not None and settings.worker_index is None
        else None
    )

    def after_swap() -> None:
        settle_heap_later()
        if upkeep is not None:  # the child snapshots with the artifact the server serves
            served = holder.snapshot()
            upkeep.follow(served.path, served.personalizer.model_name, served.personalizer.version)

    reloader = ModelReloader(
        holder,
        metrics,
        shared,
        applied_generation=generation,
        after_swap=after_swap,
        verifier=settings.artifact_verifier,
    )
    event_log: EventStore | None = None
    decision_writer: DecisionLogWriter | None = None
    if settings.event_log_url is not None:  # the fleet's shared log; live state is shared too (settings)
        try:
            event_log = RedisEventLog.open(settings.event_log_url)
            decision_writer = DecisionLogWriter(
                settings.event_log_url, on_commit=metrics.record_decisions_logged
            )
        except EventLogError as error:
            LOGGER.error("--event-log: %s", error)
            _close_event_log(event_log, None)
            return EXIT_USAGE
    if settings.event_log is not None:
        try:
            sqlite_log = EventLog.open(settings.event_log)
            event_log = sqlite_log
            decision_writer = DecisionLogWriter(settings.event_log, on_commit=metrics.record_decisions_logged)
        except EventLogError as error:
            LOGGER.error("--event-log: %s", error)
            if event_log is not None:
                event_log.close()
            return EXIT_USAGE
        if live_state.is_process_local and not stop.is_set():
            started = time.perf_counter()
            LOGGER.info("rebuilding live state from the event log %s", settings.event_log)
            caught_up = live_state.catch_up(
                sqlite_log, snapshots=snapshot_folder(settings.event_log), stop=stop
            )
            if caught_up.stopped:
                LOGGER.info("asked to stop while rebuilding live state; the log is unchanged")
                _close_event_log(event_log, decision_writer)
                return EXIT_OK
            LOGGER.info(
                "live state rebuilt in %.1fs: %d customers from the snapshot through event %d, then %d "
                "logged events replayed",
                time.perf_counter() - started,
                caught_up.restored,
                caught_up.snapshot_rowid,
                caught_up.replayed,
            )
    live = LiveDecisions(live_state.store, config=settings.bandit)
    if settings.experiment is not None:
        try:
            experiment = load_experiment(settings.experiment)
            _check_experiment_models(experiment, settings.experiment, holder.current())
            live.experiment.set(experiment)
            LOGGER.info("%s", _describe_experiment(experiment))
        except ExperimentError as error:
            LOGGER.error("--experiment: %s", error)
            _close_event_log(event_log, decision_writer)
            return EXIT_USAGE
    process = _Process(holder, metrics, live_state, reloader, live, shared, event_log, decision_writer)
    process.upkeep = upkeep  # started once the server serves
    return process


def _check_experiment_models(experiment: Experiment, path: Path, serving: Personalizer) -> None:
    """An arm must name a model of the artifact the server starts with (``ReloadModel`` keeps it so)."""
    for arm in experiment.arms:
        if not arm.servable_by(serving.model_names):
            raise ExperimentError(
                f"{path}: experiment.arms.{arm.name}.model: artifact {serving.version} has no model "
                f"{arm.model!r} (it has {', '.join(serving.model_names)})"
            )


def _describe_experiment(experiment: Experiment) -> str:
    """The start-up log's line: ``experiment NAME running: control C; arms A 50% (artifact policy), ...``."""
    arms = ", ".join(
        f"{arm.name} {arm.share:.0%} ({arm.policy.value} policy"
        + (f", model {arm.model})" if arm.model else ")")
        for arm in experiment.arms
    )
    return f"experiment {experiment.name} running: control {experiment.control}; arms {arms}"


async def _serve(
    settings: ServeSettings,
    process: _Process,
    stop: threading.Event,
    on_ready: Callable[[int], None] | None,
    observers: Sequence[LiveEventObserver],
) -> int:
    """The event loop's part: build and start the server, serve until ``stop``, drain, stop."""
    health_servicer = StoppingHealthServicer()
    drain = ResponseDrain()
    holder = process.holder
    # Settled before the port is added: gRPC listens from ``add_*_port`` on, so connections the kernel
    # accepts in between (a killed worker's clients reconnecting to its replacement) would wait
    # unanswered until ``start`` for the whole settling (a full collection over the rebuilt live state,
    # then the heap trim).
    LOGGER.info("heap settled in %.3fs (the model is kept out of full collections)", settle_heap())
    try:
        server, port = await create_server(
            holder,
            process.metrics,
            address=settings.address,
            admin_token=settings.admin_token,
            tls=settings.tls,
            access_log_every=settings.access_log_every,
            reuse_port=process.shared is not None,
            health_servicer=health_servicer,
            reloader=process.reloader,
            event_log=process.event_log,
            decision_writer=process.decision_writer,
            observers=(process.live_state, *observers),
            live=process.live,
            blocking_state=not process.live_state.is_process_local,
            benchmark_floor=settings.benchmark_floor,
            batching=settings.batching,
            max_request_bytes=settings.max_request_bytes,
            max_response_bytes=settings.max_response_bytes,
            state_store=process.live_state.store,
            max_connection_age_s=settings.max_connection_age_s,
            drain=drain,
        )
    except OSError as error:  # the port was taken after serve's check, or this is embedded code's call
        LOGGER.error("%s: %s", settings.address_source, error)
        return EXIT_USAGE
    if settings.metrics_port and process.shared is None:
        try:
            process.endpoint = MetricsEndpoint(
                process.metrics.registry, bare_host(settings.host), settings.metrics_port
            )
        except OSError as error:
            LOGGER.error(
                "%s %d: %s",
                settings.metrics_port_source,
                settings.metrics_port,
                describe_bind_failure(settings.host, settings.metrics_port, error),
            )
            return EXIT_USAGE
    endpoint = process.endpoint
    await server.start()
    process.started = True
    process.reloader.report()
    process.start_follower()
    if process.upkeep is not None:
        process.upkeep.start()
    helpers = _yielding_helper_threads(settings.helper_threads)
    LOGGER.info(
        "listening on %s:%d (%s) serving artifact %s, model %s%s%s, %s event loop",
        settings.host,
        port,
        "tls" if settings.tls else "plaintext",
        holder.snapshot().version,
        holder.snapshot().model_name,
        f", metrics on port {endpoint.port}" if endpoint else "",
        f", worker {settings.worker_index}" if settings.worker_index is not None else "",
        settings.event_loop,
    )
    if settings.benchmark_floor:
        LOGGER.warning(
            "benchmark floor: Personalize answers one response prepared at start, without the engine; "
            "for benchmarks only"
        )
    if process.event_log is not None:
        LOGGER.info("recording events and served decisions in %s", process.event_log.path)
    if on_ready is not None:
        on_ready(port)
    # A worker leaves the ready file to its supervisor, which writes it once all workers serve.
    ready_file = settings.ready_file if settings.worker_index is None else None
    status = EXIT_OK
    try:
        if ready_file is not None:
            status = await asyncio.to_thread(_write_ready_file, ready_file, settings, port, endpoint)
        if status == EXIT_OK:
            await _wait_for_stop(stop, supervised=process.shared is not None)
    finally:
        if helpers is not None:
            helpers.cancel()
        if ready_file is not None:
            remove_ready_file(ready_file, os.getpid())
    LOGGER.info("stopping: NOT_SERVING, up to %.1fs for calls in flight", settings.grace_seconds)
    await health_servicer.enter_graceful_shutdown()
    running, waited = await drain.drain(settings.grace_seconds)
    if running:
        LOGGER.info(
            "%d call(s) in flight at the stop answered in %.2fs; closing connections",
            running,
            waited,
        )
    await server.stop(max(settings.grace_seconds - waited, 0.0))
    return status


def _yielding_helper_threads(policy: str) -> asyncio.Task[None] | None:
    """With ``--helper-threads batch`` (the default), the task that keeps every thread but the loop's a
    batch thread while the server runs (``serving.helper_threads``); None otherwise, and when the loop
    is not the process's main thread: then the server is embedded, and the other threads belong to the
    program that embeds it."""
    if policy != "batch":
        return None
    if threading.current_thread() is not threading.main_thread():
        # embedded in another program (``serve`` on one of its threads): its threads are not ours
        LOGGER.info("helper threads keep their scheduling: the server does not own this process")
        return None
    if not supported():
        LOGGER.info("helper threads keep their scheduling: this platform has no SCHED_BATCH")
        return None
    return asyncio.get_running_loop().create_task(keep_helper_threads_yielding(threading.get_native_id()))


async def _wait_for_stop(stop: threading.Event, *, supervised: bool) -> None:
    """Until ``stop`` is set (by a signal or the caller); a worker also stops when its supervisor is
    gone (it was reparented), rather than serving on unsupervised."""
    supervisor = supervisor_pid()
    while not stop.is_set():
        # A signal does not wake the loop (the handler only sets ``stop``), so the check is frequent:
        # calls in flight at SIGTERM must see the stop begin while they are still running.
        await asyncio.sleep(STOP_CHECK_S)
        if supervised and supervisor_gone(supervisor):
            LOGGER.error("the supervising process exited; stopping this worker")
            return


def _write_ready_file(
    path: Path, settings: ServeSettings, port: int, endpoint: MetricsEndpoint | None
) -> int:
    """Tell whoever started this process where it serves; a ready file that cannot be written stops
    the server (its starter would wait for it forever)."""
    ready = ServerReady(
        address=f"{settings.host}:{port}",
        port=port,
        metrics_port=endpoint.port if endpoint is not None else None,
        pid=os.getpid(),
        worker_pids=(os.getpid(),),
    )
    try:
        write_ready_file(path, ready)
    except OSError as error:
        LOGGER.error("cannot write the ready file %s: %s; stopping the server", path, error)
        return EXIT_FAILURE
    LOGGER.info("ready file written: %s", path)
    return EXIT_OK


def _close_event_log(event_log: EventStore | None, decision_writer: DecisionLogWriter | None) -> None:
    """After the server stopped: write the decisions still queued, then close the log."""
    if decision_writer is not None:
        decision_writer.close()
    if event_log is not None:
        event_log.close()


@contextlib.contextmanager
def _logging_off_the_loop(level: str) -> Iterator[None]:
    """Log to stderr from a background thread: a handler only queues the record (its message merged),
    and the listener thread formats the line and writes it. A slow stderr (a full pipe to a log
    collector) then never blocks the event loop, and a signal handler can log without deadlocking on
    a handler's lock. The listener writes what is queued before the process exits."""
    if logging.getLogger().handlers:  # configured already (embedding code, tests): leave it alone
        yield
        return
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter(LOG_FORMAT))
    queued = logging.handlers.QueueHandler(records)
    queued.setFormatter(logging.Formatter("%(message)s"))  # the message (and traceback) only
    logging.basicConfig(level=level.upper(), handlers=[queued])
    listener = logging.handlers.QueueListener(records, stderr)
    listener.start()
    try:
        yield
    finally:
        listener.stop()


def run_from_args(args: argparse.Namespace) -> int:
    """``persona-engine serve``: configure logging, resolve settings, serve; returns the exit status."""
    with _logging_off_the_loop(args.log_level):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
        if settings.worker_index is None and not settings.upkeep_process:  # workers share a held port
            # before the artifact loads, which can take a minute: a busy port is known in milliseconds
            refuse_ports_in_use(
                settings.address,
                settings.address_source,
                settings.metrics_port,
                settings.metrics_port_source,
            )
    except ServeConfigError as error:
        # the training commands' form (cli.arguments.CommandLineParser): one line, "error:" first
        print(f"error: persona-engine serve: {error} (see 'persona-engine serve --help')", file=sys.stderr)
        return EXIT_USAGE
    limit_malloc_arenas()  # before the process starts threads; forked workers inherit it
    if settings.pin_workers and settings.worker_index is not None:  # before threads too: they inherit it
        cpu = pin_worker(settings.worker_index)
        LOGGER.info("worker %d runs on CPU %s", settings.worker_index, "?" if cpu is None else cpu)
    if settings.upkeep_process:
        return run_upkeep_process(settings)
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
