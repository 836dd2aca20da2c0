"""Several worker processes on one port: ``persona-engine serve --workers N``.

One process serves with a thread pool; Python threads share one interpreter lock, so CPU-bound
scoring scales with processes. This follows gRPC's multiprocessing example: the parent reserves the
port with SO_REUSEPORT and starts N worker processes (fresh interpreters running ``python -m
serving.server``, started before and without any gRPC object in the parent), each of which binds the
same port with ``grpc.so_reuseport``; the kernel spreads connections over them. The parent creates no
gRPC object at all. It owns a run directory shared with the workers: ``metrics/`` is their
``PROMETHEUS_MULTIPROC_DIR`` (the parent exports the merged metrics), and the model state files keep
every worker on the same artifact after a ReloadModel (see ``serving.model_holder``). Once every worker
reports that it serves, the parent writes the ready file (``serving.ready_file``) if asked to. It
forwards SIGTERM to the workers, waits for them to drain, and exits after them; if a worker dies on its
own, the parent stops the others and exits non-zero, leaving restarts to the supervisor (systemd,
Kubernetes) that started it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from serving.metrics import MULTIPROC_DIR_ENV, MetricsEndpoint, mark_worker_dead, multiprocess_registry
from serving.model_holder import SharedModelState, resolve_artifact_path
from serving.process_lifecycle import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, POLL_S, stop_on_signals
from serving.ready_file import ServerReady, remove_ready_file, remove_stale_ready_file, write_ready_file
from serving.settings import ENV_ADMIN_TOKEN, ENV_READY_FILE, ServeSettings, bare_host, split_address

LOGGER = logging.getLogger("persona_engine.server")

_METRICS_SUBDIR: Final = "metrics"
# After the grace period a worker still needs a moment to close its server and files.
_WORKER_EXIT_MARGIN_S: Final = 10.0


def _reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) a SO_REUSEPORT socket so the workers share a known, held port.

    The socket never accepts connections; it keeps an ephemeral port (``:0``) from being taken by
    someone else between the workers' binds, as in gRPC's multiprocessing example.
    """
    bare = bare_host(host)
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
    environment.pop(ENV_READY_FILE, None)  # the parent writes it, once all workers serve
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
    if settings.ready_file is not None:
        remove_stale_ready_file(settings.ready_file)
    with stop_on_signals(stop):
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
                    multiprocess_registry(metrics_dir), bare_host(host), settings.metrics_port
                )
                LOGGER.info("metrics of all workers on port %d", endpoint.port)
        except OSError as error:
            LOGGER.error("cannot serve metrics on port %d: %s", settings.metrics_port, error)
            status = EXIT_USAGE
        ready = ServerReady(
            address=address,
            port=reserved.getsockname()[1],
            metrics_port=endpoint.port if endpoint is not None else None,
            pid=os.getpid(),
            worker_pids=tuple(worker.pid for worker in workers),
        )
        try:
            if status == EXIT_OK:
                status = _watch_workers(workers, shared, stop, lambda: _announce(ready, settings.ready_file))
        finally:
            if settings.ready_file is not None:
                remove_ready_file(settings.ready_file, ready.pid)
        status = _stop_workers(workers, settings.grace_seconds, metrics_dir, shared, status)
        if endpoint is not None:
            endpoint.close()
    LOGGER.info("stopped")
    return status


def _watch_workers(
    workers: Sequence[subprocess.Popen[bytes]],
    shared: SharedModelState,
    stop: threading.Event,
    announce: Callable[[], None],
) -> int:
    """Wait for a stop request; a worker exiting on its own ends the wait with a failure status.
    ``announce`` runs once, when every worker has reported that it serves."""
    announced = False
    while not stop.wait(POLL_S):
        for worker in workers:
            code = worker.poll()
            if code is not None:
                LOGGER.error("worker %d exited with status %d; stopping the server", worker.pid, code)
                return code if code > 0 else EXIT_FAILURE
        if not announced and len(shared.reports()) == len(workers):
            try:
                announce()
            except OSError as error:
                LOGGER.error("cannot write the ready file: %s; stopping the server", error)
                return EXIT_FAILURE
            announced = True
    return EXIT_OK


def _announce(ready: ServerReady, ready_file: Path | None) -> None:
    """Every worker serves: say so in the log and, when asked, in the ready file."""
    LOGGER.info("all %d workers serving on %s", len(ready.worker_pids), ready.address)
    if ready_file is not None:
        write_ready_file(ready_file, ready)
        LOGGER.info("ready file written: %s", ready_file)


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
