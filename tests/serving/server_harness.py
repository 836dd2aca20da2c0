"""Real persona-engine servers for tests: small trained artifacts, server subprocesses, in-process servers.

Everything here runs the production code paths: ``python -m serving.server`` in a subprocess on an
ephemeral loopback port (stdout and stderr go to a log file the test can read), or ``create_server`` in
the test process when a test needs the server's metrics registry or holder directly. Artifacts are
trained once per test session from a small synthetic shop and shared by every module that asks.

Typical use::

    artifacts = trained_artifacts(tmp_path_factory)
    with running_server(artifacts.older, tmp_path, admin_token="t" * 32) as server:
        with server.client() as client:
            client.personalize("c0000001")
        server.metric("persona_engine_requests_total", method="Personalize")
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from serving.client import PersonaEngineClient
from serving.metrics import ServingMetrics
from serving.model_holder import ModelHolder, load_model
from serving.server import create_server
from training.config import parse_config
from training.synthetic_shop import ShopConfig, generate_shop
from training.train_job import run_training

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
FAST_MODELS: dict[str, dict[str, Any]] = {
    "popularity": {},
    "persona_popularity": {},
    "als": {"factors": 8, "iterations": 3},
}
SHOP = ShopConfig(customers=600, items=300, events=24_000, seed=5)
_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
_ALL_WORKERS = re.compile(r"all (\d+) workers serving on 127\.0\.0\.1:(\d+)")
_SERVER_ENV = ("PERSONA_ENGINE_ADDRESS", "PERSONA_ENGINE_METRICS_PORT", "PERSONA_ENGINE_WORKERS")


# -- artifacts ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainedArtifacts:
    """Two versions trained from the same shop (``older`` < ``newer``) under one artifact root."""

    shop: Path
    root: Path
    older: Path
    newer: Path


def train_artifacts(directory: Path) -> TrainedArtifacts:
    shop = directory / "shop"
    generate_shop(shop, SHOP)
    config = parse_config(
        {
            "data": {"path": str(shop)},
            "split": {"test_days": 28, "cold_start_share": 0.15},
            "models": FAST_MODELS,
            "output": {"root": str(directory / "artifacts")},
        }
    )
    older = run_training(config, show_progress=False).artifact_path
    newer = run_training(config, show_progress=False).artifact_path
    assert older.name < newer.name, (older, newer)
    return TrainedArtifacts(shop, directory / "artifacts", older, newer)


def trained_artifacts(tmp_path_factory: pytest.TempPathFactory) -> TrainedArtifacts:
    """The session's artifacts, trained by the first module that asks (about 2 s)."""
    directory = tmp_path_factory.getbasetemp() / "serving-artifacts"
    marker = directory / "trained.json"
    if marker.is_file():
        paths = json.loads(marker.read_text(encoding="utf-8"))
        return TrainedArtifacts(*(Path(paths[key]) for key in ("shop", "root", "older", "newer")))
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    artifacts = train_artifacts(directory)
    marker.write_text(
        json.dumps({key: str(getattr(artifacts, key)) for key in ("shop", "root", "older", "newer")}),
        encoding="utf-8",
    )
    return artifacts


def corrupt_copy(artifact: Path, destination: Path, relative: str = "customers/mix_overall.npy") -> Path:
    """A copy of ``artifact`` (same version name) with the last byte of ``relative`` flipped."""
    copy = destination / artifact.name
    shutil.copytree(artifact, copy)
    target = copy / relative
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    return copy


# -- TLS ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThrowawayPki:
    """A throwaway CA with a server certificate for 127.0.0.1/localhost and one client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_test_pki(directory: Path) -> ThrowawayPki:
    """Generate the PKI with the ``openssl`` command line (EC P-256 keys, valid for one day)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req",
        "-x509",
        *key,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        cwd=directory,
    )
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n", encoding="utf-8")
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n", encoding="utf-8")
    for name in ("server", "client"):
        _openssl(
            "req",
            *key,
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            cwd=directory,
        )
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext", cwd=directory,
        )  # fmt: skip
    return ThrowawayPki(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "client.pem",
        directory / "client.key",
    )


# -- metrics ------------------------------------------------------------------------------------------


def parse_metrics(text: str) -> dict[str, Metric]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def scrape(port: int) -> dict[str, Metric]:
    """The /metrics page on ``127.0.0.1:port``, parsed; families are keyed by name without ``_total``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return parse_metrics(response.read().decode("utf-8"))


def metric_value(families: Mapping[str, Metric], sample_name: str, **labels: str) -> float:
    """Sum of the samples called ``sample_name`` whose labels include ``labels`` (0 when none)."""
    family_name = re.sub(r"(_total|_bucket|_count|_sum)$", "", sample_name)
    family = families.get(family_name)
    if family is None:
        return 0.0
    return sum(
        sample.value
        for sample in family.samples
        if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


# -- server subprocesses ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """A server started by ``start_server``; ``address`` is ``127.0.0.1:<port>``."""

    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int | None
    log_path: Path
    admin_token: str | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def client(self, **kwargs: Any) -> PersonaEngineClient:
        kwargs.setdefault("admin_token", self.admin_token)
        kwargs.setdefault("timeout_s", 10.0)
        return PersonaEngineClient(self.address, **kwargs)

    def metrics(self) -> dict[str, Metric]:
        if self.metrics_port is None:
            raise RuntimeError("this server was started without a metrics port")
        return scrape(self.metrics_port)

    def metric(self, sample_name: str, **labels: str) -> float:
        return metric_value(self.metrics(), sample_name, **labels)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """Signal the server (if still running) and wait for it; returns its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"server did not stop within {timeout_s}s; log:\n{self.log()}") from None


def server_environment(admin_token: str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    environment = {
        k: v for k, v in os.environ.items() if k not in (*_SERVER_ENV, "PERSONA_ENGINE_ADMIN_TOKEN")
    }
    environment["OPENBLAS_NUM_THREADS"] = "1"
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), environment.get("PYTHONPATH")]))
    if admin_token is not None:
        environment["PERSONA_ENGINE_ADMIN_TOKEN"] = admin_token
    environment.update(extra or {})
    return environment


def start_server(
    artifact: Path,
    workdir: Path,
    *,
    admin_token: str | None = None,
    workers: int = 1,
    metrics: bool = True,
    grace_seconds: float = 5.0,
    extra_args: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
    wait_serving: bool = True,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> ServerProcess:
    """Start ``python -m serving.server`` on ``127.0.0.1:0`` and wait until it listens (and, with
    ``wait_serving``, until health reports SERVING over plaintext). The admin token goes in through
    the environment, as in production."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"server-{time.monotonic_ns()}.log"
    metrics_port = free_port() if metrics else None
    command = [
        sys.executable, "-m", "serving.server",
        "--artifact", str(artifact),
        "--address", "127.0.0.1:0",
        "--metrics-port", str(metrics_port or 0),
        "--workers", str(workers),
        "--grace-seconds", str(grace_seconds),
        # Every call in the log: tests read it line by line (the server's default samples successes).
        "--access-log-every", "1",
        *extra_args,
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=server_environment(admin_token, extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(process, 0, metrics_port, log_path, admin_token)
    try:
        server.port = _wait_until_listening(server, workers, ready_timeout_s)
        if wait_serving:
            with PersonaEngineClient(server.address) as client:
                client.wait_until_serving(ready_timeout_s)
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    return server


def _wait_until_listening(server: ServerProcess, workers: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = server.log()
        if workers > 1:
            match = _ALL_WORKERS.search(text)
            if match:
                return int(match.group(2))
        else:
            match = _LISTENING.search(text)
            if match:
                return int(match.group(1))
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with status {server.process.returncode}; log:\n{text}")
        time.sleep(0.05)
    raise TimeoutError(f"server not listening after {timeout_s}s; log:\n{server.log()}")


@contextlib.contextmanager
def running_server(artifact: Path, workdir: Path, **kwargs: Any) -> Iterator[ServerProcess]:
    """``start_server`` for a ``with`` block; SIGTERM and wait at the end."""
    server = start_server(artifact, workdir, **kwargs)
    try:
        yield server
    finally:
        server.stop()


# -- in-process servers --------------------------------------------------------------------------------


@dataclass
class InProcessServer:
    """A server started with ``create_server`` in the test process, with its registry and holder."""

    server: grpc.Server
    port: int
    holder: ModelHolder
    metrics: ServingMetrics
    registry: CollectorRegistry

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def metric(self, sample_name: str, **labels: str) -> float:
        value = 0.0
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    value += sample.value
        return value


@contextlib.contextmanager
def in_process_server(artifact: Path, **create_server_kwargs: Any) -> Iterator[InProcessServer]:
    """``create_server`` on ``127.0.0.1:0`` in this process, started; stopped at the end of the block."""
    loaded = load_model(artifact)
    registry = CollectorRegistry()
    metrics = ServingMetrics(registry)
    holder = ModelHolder(loaded.personalizer, loaded.path, load_seconds=loaded.load_seconds)
    server, port = create_server(holder, metrics, address="127.0.0.1:0", **create_server_kwargs)
    server.start()
    try:
        yield InProcessServer(server, port, holder, metrics, registry)
    finally:
        server.stop(0).wait()
