"""A real ``persona-engine serve`` process for tests and benchmarks: start it, find it, stop it.

``start_server`` runs ``python -m serving.server`` from this checkout in a subprocess on an ephemeral
loopback port (``127.0.0.1:0``), its stdout and stderr in a log file, and returns once the server's
ready file (``serving.ready_file``) says every worker serves: the bound port, the metrics port and the
pids come from that file, not from parsing the log. ``ServerProcess.stop`` sends SIGTERM (the
server's graceful stop) and kills the process if it does not exit in time. The project's own tests and
its serving benchmark start their servers here; code embedding the server in its own tests can too::

    with running_server(Path("artifacts/latest"), tmp_path) as server:
        with server.client() as client:
            client.personalize("c0000001")
        assert server.metric("persona_engine_requests_total", method="Personalize") == 1
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from engine.errors import PersonaEngineError
from serving.client import PersonaEngineClient
from serving.ready_file import ServerReady, read_ready_file
from serving.settings import ENV_ADMIN_TOKEN, SERVE_ENVIRONMENT

SOURCE_ROOT: Final = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 30.0
# How much of the log an error quotes: the end, where a failed start says why.
_LOG_TAIL_CHARS: Final = 20_000


class ServerStartError(PersonaEngineError, RuntimeError):
    """The server exited before it was ready; the message quotes its log."""


class ServerTimeoutError(PersonaEngineError, TimeoutError):
    """The server was not ready, or did not stop, in time; the message quotes its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port free at the moment of asking (for the metrics endpoint, which has no "pick one" form)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def child_environment(
    admin_token: str | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a child process running this checkout: this one's, without the serve
    variables (the caller configures a server by flags), one BLAS thread, the checkout on PYTHONPATH
    (it need not be installed), and the admin token when given (never in argv, as in production)."""
    environment = {k: v for k, v in os.environ.items() if k not in SERVE_ENVIRONMENT}
    environment["OPENBLAS_NUM_THREADS"] = "1"
    python_path = [str(SOURCE_ROOT), *([environment["PYTHONPATH"]] if environment.get("PYTHONPATH") else [])]
    environment["PYTHONPATH"] = os.pathsep.join(python_path)
    if admin_token is not None:
        environment[ENV_ADMIN_TOKEN] = admin_token
    environment.update(extra or {})
    return environment


def scrape_metrics(port: int, host: str = "127.0.0.1") -> dict[str, Metric]:
    """The /metrics page, parsed; families are keyed by name without ``_total``."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        text = response.read().decode("utf-8")
    return {family.name: family for family in text_string_to_metric_families(text)}


def metric_value(families: Mapping[str, Metric], sample_name: str, **labels: str) -> float:
    """Sum of the samples called ``sample_name`` whose labels include ``labels`` (0 when none)."""
    family = families.get(re.sub(r"(_total|_bucket|_count|_sum)$", "", sample_name))
    if family is None:
        return 0.0
    return sum(
        sample.value
        for sample in family.samples
        if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


@dataclass
class ServerProcess:
    """A server started by ``start_server``; ``ready`` is its ready file once it serves."""

    process: subprocess.Popen[bytes]
    log_path: Path
    ready_path: Path
    ready: ServerReady | None = None
    admin_token: str | None = field(default=None, repr=False)

    @property
    def _serving(self) -> ServerReady:
        if self.ready is None:
            raise RuntimeError("the server is not ready yet")
        return self.ready

    @property
    def port(self) -> int:
        return self._serving.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_port(self) -> int | None:
        return self._serving.metrics_port

    @property
    def worker_pids(self) -> list[int]:
        """The processes serving calls: the workers, or the server itself when it serves alone."""
        return list(self._serving.worker_pids)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self) -> str:
        return self.log()[-_LOG_TAIL_CHARS:]

    def client(self, **kwargs: Any) -> PersonaEngineClient:
        """A typed client of this server (its admin token, a 10 s deadline unless given)."""
        kwargs.setdefault("admin_token", self.admin_token)
        kwargs.setdefault("timeout_s", 10.0)
        return PersonaEngineClient(self.address, **kwargs)

    def metrics(self) -> dict[str, Metric]:
        if self.metrics_port is None:
            raise RuntimeError("this server was started without a metrics port")
        return scrape_metrics(self.metrics_port)

    def metric(self, sample_name: str, **labels: str) -> float:
        return metric_value(self.metrics(), sample_name, **labels)

    def wait_ready(self, timeout_s: float) -> ServerReady:
        """Wait for the ready file; a server that exits first raises ``ServerStartError``."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.ready = read_ready_file(self.ready_path)
            if self.ready is not None:
                return self.ready
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"server exited with status {self.process.returncode}; log:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise ServerTimeoutError(f"server not ready after {timeout_s}s; log:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """Signal the server (if still running) and wait for it; returns its exit status. One that
        does not exit within ``timeout_s`` is killed, and ``ServerTimeoutError`` says so."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise ServerTimeoutError(
                f"server did not stop within {timeout_s}s and was killed; log:\n{self.log_tail()}"
            ) from None


def start_server(
    artifact: Path,
    workdir: Path,
    *,
    workers: int = 1,
    model: str | None = None,
    threads: int | None = None,
    metrics: bool = True,
    grace_seconds: float = 5.0,
    access_log_every: int | None = 1,
    admin_token: str | None = None,
    extra_args: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
    wait_serving: bool = True,
    ready_timeout_s: float = READY_TIMEOUT_S,
    name: str | None = None,
) -> ServerProcess:
    """Start ``python -m serving.server`` on ``127.0.0.1:0`` in ``workdir`` and wait for its ready file.

    ``access_log_every=1`` logs every call (tests read the log); None keeps the server's default
    sampling, as in production. With ``wait_serving`` the health service is asked too, over plaintext
    (pass False for a TLS server). ``name`` names the log and ready files (default: unique). A server
    that fails to get ready is killed before the error is raised.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    name = name or f"server-{time.monotonic_ns()}"
    log_path, ready_path = workdir / f"{name}.log", workdir / f"{name}.ready.json"
    ready_path.unlink(missing_ok=True)  # an earlier server's would look ready before this one starts
    command = [
        sys.executable, "-m", "serving.server",
        "--artifact", str(artifact),
        "--address", "127.0.0.1:0",
        "--metrics-port", str(free_port() if metrics else 0),
        "--workers", str(workers),
        "--grace-seconds", repr(grace_seconds),
        "--ready-file", str(ready_path),
        *(["--model", model] if model else []),
        *(["--threads", str(threads)] if threads is not None else []),
        *(["--access-log-every", str(access_log_every)] if access_log_every is not None else []),
        *extra_args,
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=child_environment(admin_token, extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(process, log_path, ready_path, admin_token=admin_token)
    try:
        server.wait_ready(ready_timeout_s)
        if wait_serving:
            with PersonaEngineClient(server.address) as client:
                client.wait_until_serving(ready_timeout_s)
    except BaseException:
        with contextlib.suppress(ServerTimeoutError):
            server.stop(signal.SIGKILL)
        raise
    return server


@contextlib.contextmanager
def running_server(artifact: Path, workdir: Path, **kwargs: Any) -> Iterator[ServerProcess]:
    """``start_server`` for a ``with`` block; SIGTERM and wait at the end."""
    server = start_server(artifact, workdir, **kwargs)
    try:
        yield server
    finally:
        server.stop()
