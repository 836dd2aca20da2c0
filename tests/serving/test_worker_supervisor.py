"""The worker supervisor replaces a worker that dies, and stops a server whose workers crash-loop."""

from __future__ import annotations

import functools
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from serving.process_lifecycle import EXIT_FAILURE
from serving.ready_file import read_ready_file
from serving.server_process import ServerProcess, running_server, start_server
from serving.worker_supervisor import (
    MAX_RESTARTS,
    ForkedProcess,
    RestartBudget,
    _reserve_port,
    exit_description,
)
from tests.serving.server_harness import SERVER_WAIT_S, TrainedArtifacts, trained_artifacts, wait_for_server


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> TrainedArtifacts:
    return trained_artifacts(tmp_path_factory)


def _restarted_as(server: ServerProcess, pid: int) -> int | None:
    line = rf"worker {pid} \(index \d\) exited with [^;]+; restarted as worker (\d+)"
    found = re.search(line, server.log())
    return int(found.group(1)) if found else None


def test_a_killed_worker_is_replaced_and_the_server_keeps_answering(
    artifacts: TrainedArtifacts, tmp_path: Path
) -> None:
    with running_server(artifacts.older, tmp_path, workers=2, access_log_every=None) as server:
        before = server.worker_pids
        assert server.metric("persona_engine_worker_restarts_total") == 0
        victim, survivor = before
        os.kill(victim, signal.SIGKILL)
        wait_for_server(lambda: _restarted_as(server, victim), "restart log line", server)
        for _ in range(10):  # new connections while the replacement loads: the survivor answers
            with server.client(timeout_s=10) as client:
                assert client.personalize("c0000001").items
        replacement = _restarted_as(server, victim)
        assert replacement is not None and replacement not in before

        def ready_pids() -> list[int]:
            ready = read_ready_file(server.ready_path)
            return [] if ready is None else list(ready.worker_pids)

        wait_for_server(
            lambda: ready_pids() == [replacement, survivor], "ready file with the new worker", server
        )
        assert server.metric("persona_engine_worker_restarts_total") == 1
        model_info = server.metrics()["persona_engine_model_info"]
        assert {int(s.labels["pid"]) for s in model_info.samples if s.value == 1} == {replacement, survivor}
        assert f"worker {victim} (index 0) exited with signal SIGKILL; restarted as worker {replacement}" in (
            server.log()
        )
        for _ in range(6):
            with server.client(timeout_s=10) as client:
                assert client.personalize("c0000002").items
        assert server.stop() == 0
    assert server.log().count("stopped") == 3  # the two workers serving at the end, and the parent


def test_workers_dying_again_and_again_stop_the_server_with_the_reason(
    artifacts: TrainedArtifacts, tmp_path: Path
) -> None:
    server = start_server(artifacts.older, tmp_path, workers=2, metrics=False)
    try:
        victim = server.worker_pids[0]
        for _ in range(MAX_RESTARTS):
            os.kill(victim, signal.SIGKILL)
            wait_for_server(functools.partial(_restarted_as, server, victim), "restart log line", server)
            replacement = _restarted_as(server, victim)
            assert replacement is not None
            victim = replacement
        os.kill(victim, signal.SIGKILL)
        assert server.process.wait(timeout=SERVER_WAIT_S) == EXIT_FAILURE
    finally:
        server.stop(signal.SIGKILL)
    assert f"worker {victim} (index 0) exited with signal SIGKILL; 6 worker deaths within 60s" in server.log()
    assert "a crash loop, stopping the server" in server.log()
    assert not server.ready_path.exists()


def test_the_restart_budget_allows_five_deaths_a_minute() -> None:
    now = [0.0]
    budget = RestartBudget(clock=lambda: now[0])
    for _ in range(MAX_RESTARTS):
        assert budget.allow()
        now[0] += 10.0  # five deaths, ten seconds apart
    assert not budget.allow()  # the sixth within 60 s is a crash loop
    now[0] += 30.0
    assert budget.allow()  # older deaths left the window
    assert budget.recent_deaths == 4


def test_exit_statuses_are_described_for_the_log() -> None:
    assert exit_description(3) == "status 3"
    assert exit_description(-signal.SIGKILL) == "signal SIGKILL"
    assert exit_description(-200) == "signal 200"


def _forked(body: Callable[[], int]) -> ForkedProcess:
    pid = os.fork()
    if pid == 0:  # the child runs ``body`` and exits with its status, whatever happens
        status = 1
        try:
            status = body()
        finally:
            os._exit(status)
    return ForkedProcess(pid)


def test_a_forked_worker_reports_its_exit_like_popen() -> None:
    """The pool reads exit codes as Popen gives them: a status, or minus the signal that ended it."""
    assert _forked(lambda: 3).wait(timeout=10) == 3
    sleeper = _forked(lambda: time.sleep(30) or 0)
    assert sleeper.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        sleeper.wait(timeout=0.05)
    sleeper.kill()
    assert sleeper.wait(timeout=10) == -signal.SIGKILL
    assert exit_description(sleeper.wait()) == "signal SIGKILL"
    sleeper.send_signal(signal.SIGTERM)  # a process already reaped is left alone


def test_the_port_is_reserved_while_its_last_connections_wait_in_time_wait() -> None:
    """A multi-worker server restarted at once failed: the connections its predecessor closed kept the
    port in TIME_WAIT, and the reservation lacked SO_REUSEADDR (fuzz pass). A listener still holding
    the port keeps it from anyone else."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    connection, _ = listener.accept()
    connection.close()  # the server's side closes first, so the port's end of it waits in TIME_WAIT
    assert client.recv(1) == b""
    client.close()
    with pytest.raises(OSError, match=r"cannot reserve .* address already in use \(another server\?\)"):
        _reserve_port("127.0.0.1", port)  # the listener is still there
    listener.close()
    _reserve_port("127.0.0.1", port).close()


def test_a_port_another_multi_worker_server_listens_on_is_refused() -> None:
    """SO_REUSEPORT let a second ``--workers 2`` server join a port the first one served (both then
    answered part of the calls); the reservation now refuses it, as a single-worker server's bind does."""
    workers_socket = socket.socket()
    workers_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    workers_socket.bind(("127.0.0.1", 0))
    workers_socket.listen()
    port = workers_socket.getsockname()[1]
    with pytest.raises(OSError, match=r"cannot reserve .* address already in use \(another server\?\)"):
        _reserve_port("127.0.0.1", port)
    workers_socket.close()
    _reserve_port("127.0.0.1", port).close()
