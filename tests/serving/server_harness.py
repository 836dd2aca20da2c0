"""What the serving tests need besides a server process: small trained artifacts, a throwaway PKI for
TLS, and servers started with ``create_server`` in the test process (on an event loop of their own,
in a background thread: ``serving.event_loop.EventLoopThread``).

Server subprocesses come from ``serving.server_process`` (the helper the benchmarks use too); the
in-process server here is for tests that need the server's metrics registry or holder directly.
Artifacts are trained once per test session from a small synthetic shop and shared by every module
that asks.

Typical use::

    artifacts = trained_artifacts(tmp_path_factory)
    with running_server(artifacts.older, tmp_path, admin_token="t" * 32) as server:  # serving.server_process
        with server.client() as client:
            client.personalize("c0000001")
        server.metric("persona_engine_requests_total", method="Personalize")
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from serving.event_loop import EventLoopThread
from serving.metrics import ServingMetrics
from serving.model_holder import ModelHolder, load_model
from serving.server import create_server
from serving.server_process import ServerProcess
from training.config import parse_config
from training.synthetic_shop import ShopConfig, generate_shop
from training.train_job import run_training

FAST_MODELS: dict[str, dict[str, Any]] = {
    "popularity": {},
    "persona_popularity": {},
    "als": {"factors": 8, "iterations": 3},
}
SHOP = ShopConfig(customers=600, items=300, events=24_000, seed=5)


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


SERVER_WAIT_S = 60.0


def wait_for_server(condition: Callable[[], object], what: str, server: ServerProcess) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` (with the log) if the server exits or
    ``SERVER_WAIT_S`` pass first."""
    deadline = time.monotonic() + SERVER_WAIT_S
    while not condition():
        assert server.process.poll() is None, f"the server exited while waiting for {what}:\n{server.log()}"
        assert time.monotonic() < deadline, f"no {what} after {SERVER_WAIT_S}s:\n{server.log_tail()}"
        time.sleep(0.05)


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


# -- in-process servers --------------------------------------------------------------------------------


@dataclass
class InProcessServer:
    """A server started with ``create_server`` in the test process, with its registry and holder."""

    server: grpc.aio.Server
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
def in_process_server(
    artifact: Path, *, threads: int = 4, **create_server_kwargs: Any
) -> Iterator[InProcessServer]:
    """``create_server`` on ``127.0.0.1:0`` in this process, started on an event loop thread with
    ``threads`` blocking-work threads; stopped at the end of the block."""
    loaded = load_model(artifact)
    registry = CollectorRegistry()
    metrics = ServingMetrics(registry)
    holder = ModelHolder(loaded.personalizer, loaded.path, load_seconds=loaded.load_seconds)
    loop = EventLoopThread(threads=threads, name="in-process-server")
    try:
        server, port = loop.run(create_server(holder, metrics, address="127.0.0.1:0", **create_server_kwargs))
        loop.run(server.start())
        try:
            yield InProcessServer(server, port, holder, metrics, registry)
        finally:
            loop.run(server.stop(0))
    finally:
        loop.close()
