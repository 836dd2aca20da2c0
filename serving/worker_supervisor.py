"""Several worker processes on one port: ``persona-engine serve --workers N``.

One process serves on one event loop; Python threads share one interpreter lock, so CPU-bound
scoring scales with processes. This follows gRPC's multiprocessing example: the parent reserves the
port with SO_REUSEPORT and forks N worker processes, each of which binds the same port with
``grpc.so_reuseport``; the kernel spreads connections over them. The parent creates no gRPC object at
all (gRPC's rule for forking), so a forked worker starts from a clean gRPC core. Forking rather than
starting fresh interpreters is what keeps start-up short: the parent has imported every module once
(about a second of CPU), and each worker begins from that instead of importing again while the others
do the same on the same cores. A forked worker runs exactly what ``python -m serving.server`` with the
worker's arguments runs (``worker_command``), after dropping what it must not share with the parent:
the parent's log handler (its writer thread did not survive the fork), its signal handlers and the
reserved socket, and with Prometheus switched to multiprocess mode for the metrics directory.

The parent owns a run directory shared with the workers: ``metrics/`` is their
``PROMETHEUS_MULTIPROC_DIR`` (the parent exports the merged metrics), and the model state files keep
every worker on the same artifact after a ReloadModel (see ``serving.model_holder``). Once every worker
reports that it serves, the parent writes the ready file (``serving.ready_file``) if asked to. It
forwards SIGTERM to the workers, waits for them to drain, and exits after them.

A worker that dies on its own (killed, crashed, out of memory) is replaced: the parent logs its pid,
exit status and the new pid, counts it in ``persona_engine_worker_restarts_total``, drops the dead
worker's live gauges and its model report, and starts a new worker with the same index, which loads
the model the others serve now (the shared state's latest generation). The other workers keep
serving meanwhile; the ready file lists the workers serving at each moment, so it loses the dead pid
at once and gains the new one when it serves. Two cases stop the whole server instead, leaving it to
whatever started it (systemd, Kubernetes): a worker that exits with status 2 cannot start with this
configuration (a replacement would fail the same way), and more than ``MAX_RESTARTS`` deaths within
``RESTART_WINDOW_S`` seconds are a crash loop (exit status 1, with the reason in the log).
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
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, NoReturn, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter
from prometheus_client import values as prometheus_values

from serving.metrics import (
    MULTIPROC_DIR_ENV,
    MetricsEndpoint,
    mark_worker_dead,
    multiprocess_registry,
    worker_restarts_counter,
)
from serving.model_holder import SharedModelState, resolve_artifact_path
from serving.port_check import describe_bind_failure, why_not_bindable
from serving.process_lifecycle import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    POLL_S,
    stop_on_signals,
    supervisor_environment,
)
from serving.ready_file import ServerReady, remove_ready_file, remove_stale_ready_file, write_ready_file
from serving.settings import ENV_ADMIN_TOKEN, ENV_READY_FILE, ServeSettings, bare_host, split_address

LOGGER = logging.getLogger("persona_engine.server")

_METRICS_SUBDIR: Final = "metrics"
# After the grace period a worker still needs a moment to close its server and files.
_WORKER_EXIT_MARGIN_S: Final = 10.0
_WAIT_POLL_S: Final = 0.01
_STARTING_POLL_S: Final = 0.02
# More worker deaths than this within the window are a crash loop: the server stops.
MAX_RESTARTS: Final = 5
RESTART_WINDOW_S: Final = 60.0


def _reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) a SO_REUSEPORT socket so the workers share a known, held port.

    The socket never accepts connections; it keeps an ephemeral port (``:0``) from being taken by
    someone else between the workers' binds, as in gRPC's multiprocessing example. SO_REUSEADDR as
    gRPC's own listeners have it: a server restarted at once finds the connections its predecessor
    closed still in TIME_WAIT on the port, and without it the reservation failed with "Address already
    in use" (fuzz pass). On Linux it never lets two listeners share a port; SO_REUSEPORT does that.
    """
    bare = bare_host(host)
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    # SO_REUSEPORT lets any socket of the same user join a port whose sockets all have it, so a second
    # multi-worker server on a busy port would otherwise share it with the first, each answering part
    # of the calls (found on re-checking the fuzz pass); the probe has no SO_REUSEPORT and so cannot
    # bind where anyone listens (serving.port_check).
    reason = why_not_bindable(host, port)
    if reason is not None:
        raise OSError(f"cannot reserve {host}:{port} for the workers: {reason}")
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((bare, port))
    except OSError as error:
        sock.close()
        raise OSError(f"cannot reserve {host}:{port} for the workers: {error.strerror or error}") from None
    return sock


def worker_command(settings: ServeSettings, address: str, run_dir: Path, index: int) -> list[str]:
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
        "--max-connection-age",
        repr(settings.max_connection_age_s),
        "--event-loop",
        settings.event_loop,
        "--batch-max-size",
        str(settings.batching.max_size),
        "--batch-preferred-size",
        str(settings.batching.preferred_size),
        "--batch-wait-ms",
        repr(settings.batching.max_wait_s * 1000),
        "--max-request-bytes",
        str(settings.max_request_bytes),
        "--max-response-bytes",
        str(settings.max_response_bytes),
        "--helper-threads",
        settings.helper_threads,
        *settings.tls_files,
    ]
    if settings.model_name:
        command += ["--model", settings.model_name]
    if settings.event_log is not None:
        command += ["--event-log", str(settings.event_log)]
    if settings.forget_archived_ids_after_days is not None:
        command += ["--forget-archived-ids-after-days", repr(settings.forget_archived_ids_after_days)]
    if settings.event_log_url is not None:
        command += ["--event-log", settings.event_log_url]
    if settings.experiment is not None:
        command += ["--experiment", str(settings.experiment)]
    if settings.bandit_file is not None:
        command += ["--bandit", str(settings.bandit_file)]
    if settings.artifact_key is not None:
        command += ["--artifact-key", str(settings.artifact_key)]
    if settings.benchmark_floor:
        command += ["--benchmark-floor"]
    if settings.pin_workers:
        command += ["--pin-workers"]
    return command


def _worker_environment(settings: ServeSettings, metrics_dir: Path) -> dict[str, str]:
    """The parent's environment plus the metrics directory, for a worker; the token travels here,
    never in arguments."""
    environment = dict(os.environ)
    environment.update(supervisor_environment())  # the workers and the upkeep stop without this process
    environment[MULTIPROC_DIR_ENV] = str(metrics_dir)
    environment.pop(ENV_ADMIN_TOKEN, None)
    environment.pop(ENV_READY_FILE, None)  # the parent writes it, once all workers serve
    if settings.admin_token is not None:
        environment[ENV_ADMIN_TOKEN] = settings.admin_token
    return environment


def _run_forked_worker(
    arguments: Sequence[str], environment: dict[str, str], inherited: Sequence[socket.socket]
) -> NoReturn:
    """The body of a forked worker: ``python -m serving.server <arguments>`` in this process, then exit
    without running anything the parent registered to run at its own exit."""
    status = EXIT_FAILURE
    try:
        for held in inherited:
            held.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)  # until the worker installs its own
        os.environ.clear()
        os.environ.update(environment)
        logging.getLogger().handlers.clear()  # the parent's handler queues for a thread not forked
        prometheus_values.ValueClass = prometheus_values.get_value_class()  # multiprocess from here
        from serving.server import main  # the server module imports this one

        status = main(list(arguments))
    except SystemExit as exit_request:
        status = exit_request.code if isinstance(exit_request.code, int) else EXIT_FAILURE
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


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


class RestartBudget:
    """Worker deaths in a sliding window: ``allow()`` records one and says whether it may be
    restarted (at most ``limit`` within ``window_s``); past that the workers are crash-looping."""

    def __init__(
        self,
        limit: int = MAX_RESTARTS,
        window_s: float = RESTART_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._deaths: deque[float] = deque()

    def allow(self) -> bool:
        now = self._clock()
        self._deaths.append(now)
        while self._deaths and self._deaths[0] <= now - self.window_s:
            self._deaths.popleft()
        return len(self._deaths) <= self.limit

    @property
    def recent_deaths(self) -> int:
        return len(self._deaths)


class ForkedProcess:
    """A forked child, answering like ``subprocess.Popen`` (``poll``, ``wait``, ``send_signal``,
    ``kill``, negative exit codes for signals) so the pool handles it the same way."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0.0)
            time.sleep(_WAIT_POLL_S)
        return code

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


@dataclass
class _Worker:
    index: int
    process: ForkedProcess

    @property
    def pid(self) -> int:
        return self.process.pid


class _Polled(Protocol):
    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...


_P = TypeVar("_P", bound=_Polled)


def restarted_upkeep(upkeep: _P | None, budget: RestartBudget, start: Callable[[], _P]) -> _P | None:
    """The upkeep process to keep: ``upkeep`` while it runs, a replacement (``start``) when it died, or
    None once it has died too often (``budget``). The server serves on either way (a start-up replays
    whatever tail the snapshots leave), so a crash-looping upkeep is given up, not the server."""
    if upkeep is None or (code := upkeep.poll()) is None:
        return upkeep
    if not budget.allow():
        LOGGER.error(
            "event log upkeep process %d exited with %s; %d deaths within %.0fs: not restarted, so "
            "live-state snapshots and event log retention stop until the server restarts",
            upkeep.pid,
            exit_description(code),
            budget.recent_deaths,
            budget.window_s,
        )
        return None
    replacement = start()
    LOGGER.error(
        "event log upkeep process %d exited with %s; restarted as process %d",
        upkeep.pid,
        exit_description(code),
        replacement.pid,
    )
    return replacement


def exit_description(code: int) -> str:
    """``status 3``, or ``signal SIGKILL`` for a process a signal ended (Popen's negative codes)."""
    if code >= 0:
        return f"status {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


class _WorkerPool:
    """The workers of one run: starts them, replaces the ones that die, and stops them all."""

    def __init__(
        self,
        settings: ServeSettings,
        address: str,
        run_dir: Path,
        shared: SharedModelState,
        restarts: Counter,
        budget: RestartBudget,
        inherited: Sequence[socket.socket] = (),
    ) -> None:
        self.settings = settings
        self.address = address
        self.run_dir = run_dir
        self.metrics_dir = run_dir / _METRICS_SUBDIR
        self.shared = shared
        self.restarts = restarts
        self.budget = budget
        self._environment = _worker_environment(settings, self.metrics_dir)
        self._inherited = inherited
        self.workers = [self._start(index) for index in range(settings.workers)]
        # The SQLite log's snapshots and retention run beside the workers (serving.upkeep_process).
        self.upkeep = self._start_upkeep() if settings.event_log is not None else None
        self._upkeep_budget = RestartBudget()

    def _start(self, index: int) -> _Worker:
        arguments = worker_command(self.settings, self.address, self.run_dir, index)[3:]
        return _Worker(index, self._fork(arguments))

    def _start_upkeep(self) -> ForkedProcess:
        arguments = [*worker_command(self.settings, self.address, self.run_dir, 0)[3:], "--upkeep-process"]
        return self._fork(arguments)

    def _fork(self, arguments: Sequence[str]) -> ForkedProcess:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            _run_forked_worker(arguments, self._environment, self._inherited)
        return ForkedProcess(pid)

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(worker.pid for worker in self.workers)

    def serving_pids(self) -> tuple[int, ...]:
        """The workers that report serving (their report is written once their server started)."""
        reported = {report.pid for report in self.shared.reports()}
        return tuple(worker.pid for worker in self.workers if worker.pid in reported)

    def replace_dead(self) -> int | None:
        """Restart every worker that exited; an exit status when the server must stop instead."""
        self._replace_dead_upkeep()
        for slot, worker in enumerate(self.workers):
            code = worker.process.poll()
            if code is None:
                continue
            self._clean_up(worker.pid)
            if code == EXIT_USAGE:
                LOGGER.error(
                    "worker %d (index %d) exited with status %d: it cannot start with this configuration; "
                    "stopping the server",
                    worker.pid,
                    worker.index,
                    code,
                )
                return EXIT_USAGE
            if not self.budget.allow():
                LOGGER.error(
                    "worker %d (index %d) exited with %s; %d worker deaths within %.0fs (at most %d are "
                    "restarted): a crash loop, stopping the server",
                    worker.pid,
                    worker.index,
                    exit_description(code),
                    self.budget.recent_deaths,
                    self.budget.window_s,
                    self.budget.limit,
                )
                return EXIT_FAILURE
            replacement = self._start(worker.index)
            self.workers[slot] = replacement
            self.restarts.inc()
            LOGGER.error(
                "worker %d (index %d) exited with %s; restarted as worker %d",
                worker.pid,
                worker.index,
                exit_description(code),
                replacement.pid,
            )
        return None

    def _replace_dead_upkeep(self) -> None:
        self.upkeep = restarted_upkeep(self.upkeep, self._upkeep_budget, self._start_upkeep)

    def _clean_up(self, pid: int) -> None:
        """A worker is gone: its live gauges stop counting, its model report goes."""
        mark_worker_dead(pid, self.metrics_dir)
        self.shared.forget(pid)

    def stop(self, grace_seconds: float, status: int) -> int:
        """SIGTERM every worker, wait for them to drain, clean up after each; returns the exit status."""
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        if self.upkeep is not None:
            self.upkeep.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds + _WORKER_EXIT_MARGIN_S
        for worker in self.workers:
            try:
                code = worker.process.wait(timeout=max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                LOGGER.error("worker %d did not stop in time; killing it", worker.pid)
                worker.process.kill()
                code = worker.process.wait()
            # A worker still importing when told to stop has no handler yet and dies of the SIGTERM
            # itself: it did what was asked, before serving anything, so that is a clean stop too.
            if code not in (EXIT_OK, -signal.SIGTERM) and status == EXIT_OK:
                status = EXIT_FAILURE
            self._clean_up(worker.pid)
        if self.upkeep is not None:
            try:  # it stops within one page of work; its status does not make the server's
                self.upkeep.wait(timeout=max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                LOGGER.error("event log upkeep process %d did not stop in time; killing it", self.upkeep.pid)
                self.upkeep.kill()
                self.upkeep.wait()
        return status


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
        LOGGER.error("%s: %s", settings.address_source, error)
        return EXIT_USAGE
    with reserved:
        address = f"{host}:{reserved.getsockname()[1]}"
        registry = multiprocess_registry(metrics_dir) if settings.metrics_port else CollectorRegistry()
        pool = _WorkerPool(
            settings,
            address,
            run_dir,
            shared,
            worker_restarts_counter(registry),
            RestartBudget(),
            inherited=(reserved,),
        )
        LOGGER.info(
            "listening on %s with %d workers (pids %s), run directory %s",
            address,
            len(pool.workers),
            ", ".join(str(pid) for pid in pool.pids),
            run_dir,
        )
        # After the fork: a worker forked with the endpoint open would inherit its listening socket and
        # keep the port after this process closed it. ``persona-engine serve`` checked the port first.
        endpoint: MetricsEndpoint | None = None
        status = EXIT_OK
        try:
            if settings.metrics_port:
                endpoint = MetricsEndpoint(registry, bare_host(host), settings.metrics_port)
                LOGGER.info("metrics of all workers on port %d", endpoint.port)
        except OSError as error:
            LOGGER.error(
                "%s %d: %s",
                settings.metrics_port_source,
                settings.metrics_port,
                describe_bind_failure(host, settings.metrics_port, error),
            )
            status = EXIT_USAGE
        ready = ServerReady(
            address=address,
            port=reserved.getsockname()[1],
            metrics_port=endpoint.port if endpoint is not None else None,
            pid=os.getpid(),
            worker_pids=pool.pids,
        )
        try:
            if status == EXIT_OK:
                status = _watch_workers(pool, stop, ready, settings.ready_file)
        finally:
            if settings.ready_file is not None:
                remove_ready_file(settings.ready_file, ready.pid)
        status = pool.stop(settings.grace_seconds, status)
        if endpoint is not None:
            endpoint.close()
    LOGGER.info("stopped")
    return status


def _watch_workers(
    pool: _WorkerPool, stop: threading.Event, ready: ServerReady, ready_file: Path | None
) -> int:
    """Replace dead workers until a stop request; returns the exit status. Once every worker serves
    the server is announced; from then on the ready file follows the set of serving workers."""
    announced: tuple[int, ...] | None = None
    # Until every worker serves the watch is quick: whoever waits for the ready file waits on it.
    while not stop.wait(POLL_S if announced is not None else _STARTING_POLL_S):
        status = pool.replace_dead()
        if status is not None:
            return status
        serving = pool.serving_pids()
        if serving == announced or (announced is None and len(serving) < len(pool.workers)):
            continue
        try:
            _announce(replace(ready, worker_pids=serving), ready_file, first=announced is None)
        except OSError as error:
            LOGGER.error("cannot write the ready file: %s; stopping the server", error)
            return EXIT_FAILURE
        announced = serving
    return EXIT_OK


def _announce(ready: ServerReady, ready_file: Path | None, *, first: bool) -> None:
    """Every worker serves (``first``), or the set of serving workers changed: say so in the log and,
    when asked, in the ready file."""
    if first:
        LOGGER.info("all %d workers serving on %s", len(ready.worker_pids), ready.address)
    else:
        LOGGER.info("workers serving: %s", ", ".join(map(str, ready.worker_pids)))
    if ready_file is not None:
        write_ready_file(ready_file, ready)
        LOGGER.info("ready file written: %s", ready_file)
