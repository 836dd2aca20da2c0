"""A port someone else listens on: ``persona-engine serve`` says which flag and port, before it loads the
artifact, in one line without gRPC core's log, and exits 2; a multi-worker server the same way."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from serving.event_loop import EventLoopThread
from serving.metrics import ServingMetrics
from serving.model_holder import ModelHolder, load_model
from serving.server import create_server
from serving.server_process import SOURCE_ROOT, child_environment
from serving.settings import ENV_METRICS_PORT
from tests.serving.server_harness import TrainedArtifacts, trained_artifacts


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> TrainedArtifacts:
    return trained_artifacts(tmp_path_factory)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another program listens on for the test's length."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def _serve(artifact: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serving.server", "--artifact", str(artifact), *args],
        cwd=SOURCE_ROOT,
        env=child_environment(extra=env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _assert_one_clear_line(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: persona-engine serve: {expected} (see 'persona-engine serve --help')"
    ], result.stderr
    for noise in ("add_port.cc", "GRPC_VERBOSITY", "Traceback", "drift threshold", "unsigned"):
        assert noise not in result.stderr + result.stdout  # no gRPC core log, no artifact load


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_busy_grpc_port_names_address_before_loading_the_artifact(
    artifacts: TrainedArtifacts, busy_port: int, workers: str
) -> None:
    address = f"127.0.0.1:{busy_port}"
    result = _serve(artifacts.older, "--address", address, "--metrics-port", "0", "--workers", workers)
    _assert_one_clear_line(result, f"--address {address}: address already in use (another server?)")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_busy_metrics_port_names_metrics_port_before_loading_the_artifact(
    artifacts: TrainedArtifacts, busy_port: int, workers: str
) -> None:
    result = _serve(
        artifacts.older, "--address", "127.0.0.1:0", "--metrics-port", str(busy_port), "--workers", workers
    )
    _assert_one_clear_line(result, f"--metrics-port {busy_port}: address already in use (another server?)")


def test_a_busy_port_from_the_environment_names_the_variable(
    artifacts: TrainedArtifacts, busy_port: int
) -> None:
    result = _serve(artifacts.older, "--address", "127.0.0.1:0", env={ENV_METRICS_PORT: str(busy_port)})
    _assert_one_clear_line(
        result, f"{ENV_METRICS_PORT} {busy_port}: address already in use (another server?)"
    )


def test_the_metrics_port_may_not_be_the_grpc_port(artifacts: TrainedArtifacts) -> None:
    result = _serve(artifacts.older, "--address", "127.0.0.1:50999", "--metrics-port", "50999")
    _assert_one_clear_line(
        result,
        "--metrics-port 50999: the port --address 127.0.0.1:50999 serves gRPC on; give the metrics "
        "endpoint another (or 0 to disable it)",
    )


def test_a_port_taken_after_the_check_is_refused_saying_why(
    artifacts: TrainedArtifacts, busy_port: int
) -> None:
    """The late failure (the port taken between the check and the bind) says why, where gRPC's own
    error only said to set GRPC_VERBOSITY=debug."""
    loaded = load_model(artifacts.older)
    holder = ModelHolder(loaded.personalizer, loaded.path)
    loop = EventLoopThread(threads=1, name="busy-port")
    try:
        with pytest.raises(OSError) as error:
            loop.run(
                create_server(holder, ServingMetrics(CollectorRegistry()), address=f"127.0.0.1:{busy_port}")
            )
    finally:
        loop.close()
    assert str(error.value) == (
        f"cannot listen on 127.0.0.1:{busy_port}: address already in use (another server?)"
    )
