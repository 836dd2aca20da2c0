"""The event log's upkeep runs in a process of its own, never in a process that serves: beside the
workers of ``--workers N``, and as the child of a one-process server (on its thread, a snapshot held
the interpreter lock the request handlers need)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import signal
import time
from pathlib import Path

import pytest

from engine.live.events import BehaviorEvent
from engine.live.live_state_snapshot import newest_snapshot_rowid, snapshot_folder
from engine.personalizer import Personalizer
from serving.server_process import ServerProcess, running_server, start_server
from serving.upkeep_process import NICENESS
from tests.serving.server_harness import TrainedArtifacts, trained_artifacts, wait_for_server


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> TrainedArtifacts:
    return trained_artifacts(tmp_path_factory)


def _upkeep_pid(server: ServerProcess) -> int | None:
    """The pid the newest 'event log upkeep running' line names."""
    found = re.findall(r"event log upkeep running for .+ \(pid (\d+), nice \d+\)", server.log())
    return int(found[-1]) if found else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("workers", [1, 2])
def test_the_upkeep_process_snapshots_beside_the_workers_and_is_replaced_when_it_dies(
    artifacts: TrainedArtifacts, tmp_path: Path, workers: int
) -> None:
    log_path = tmp_path / "events.db"
    personalizer = Personalizer.from_path(artifacts.older)
    customer, item = str(personalizer.mixes.customers.ids[0]), str(personalizer.item_catalog.ids.ids[0])
    with running_server(
        artifacts.older, tmp_path, workers=workers, extra_args=["--event-log", str(log_path)]
    ) as server:
        wait_for_server(lambda: _upkeep_pid(server), "upkeep process", server)
        upkeep = _upkeep_pid(server)
        assert upkeep is not None and upkeep not in server.worker_pids and upkeep != server.process.pid
        assert os.getpriority(os.PRIO_PROCESS, upkeep) == NICENESS  # page renders come first
        now = dt.datetime.now(dt.UTC)
        with server.client(timeout_s=10) as client:
            response = client.record_events(
                [
                    BehaviorEvent(f"e{n}", customer, item, "view", now - dt.timedelta(minutes=n))
                    for n in range(3)
                ]
            )
        assert not response.errors
        # Its first snapshot comes seconds after it starts, and covers what the workers logged.
        wait_for_server(lambda: newest_snapshot_rowid(snapshot_folder(log_path)) == 3, "snapshot", server)
        for worker in server.worker_pids:
            assert f"[{worker}] persona_engine.server: live state snapshot" not in server.log()

        os.kill(upkeep, signal.SIGKILL)
        line = rf"event log upkeep process {upkeep} exited with signal SIGKILL; restarted as process (\d+)"
        wait_for_server(lambda: re.search(line, server.log()), "upkeep restart", server)
        wait_for_server(lambda: _upkeep_pid(server) != upkeep, "replacement upkeep process", server)
        replacement = _upkeep_pid(server)
        assert replacement is not None and _alive(replacement)
        with server.client(timeout_s=10) as client:  # the workers never noticed
            assert client.personalize(customer).items
        assert server.stop() == 0
    assert not _alive(replacement)
    assert f"[{replacement}] persona_engine.server: event log upkeep ended" in server.log()


def test_a_one_process_servers_upkeep_follows_a_reload(artifacts: TrainedArtifacts, tmp_path: Path) -> None:
    log_path = tmp_path / "events.db"
    newer = Personalizer.from_path(artifacts.newer).version
    token_file = tmp_path / "admin-token"
    token_file.write_text("t0ken-for-the-upkeep-test\n", encoding="utf-8")
    token_file.chmod(0o600)
    extra = ["--event-log", str(log_path), "--admin-token-file", str(token_file)]
    with running_server(artifacts.older, tmp_path, extra_args=extra) as server:
        server.admin_token = "t0ken-for-the-upkeep-test"
        wait_for_server(lambda: _upkeep_pid(server), "upkeep process", server)
        upkeep = _upkeep_pid(server)
        assert upkeep is not None and upkeep != server.process.pid
        with server.client(timeout_s=30) as client:
            assert client.reload_model(str(artifacts.newer)).new_version == newer
        wait_for_server(
            lambda: (
                f"[{upkeep}] persona_engine.server: event log upkeep follows artifact {newer}" in server.log()
            ),
            "the upkeep following the reload",
            server,
        )
        assert server.stop() == 0
    assert not _alive(upkeep)


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited orphan waits for whoever adopted it to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started that still run (Linux: every thread's children file)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found.extend(int(child) for child in (task / "children").read_text().split())
    return found


@pytest.mark.parametrize("workers", [1, 2])
def test_children_of_a_server_killed_while_they_start_stop_by_themselves(
    artifacts: TrainedArtifacts, tmp_path: Path, workers: int
) -> None:
    """SIGKILL leaves no handler to stop the children: the upkeep process (and the workers of
    ``--workers N``) must notice that the process that started them is gone, also when it died
    while they were still starting. Read at the end of their start, the parent would already be
    init, and they ran on forever (as one did after the durability test's SIGKILL)."""
    log_path = tmp_path / "events.db"
    server = start_server(
        artifacts.older, tmp_path, workers=workers, extra_args=["--event-log", str(log_path)], metrics=False
    )
    try:
        # the one-process server spawns its upkeep once it serves; a supervisor forks it with the workers
        expected = 1 if workers == 1 else workers + 1
        wait_for_server(lambda: len(_children(server.process.pid)) >= expected, "children", server)
        children = _children(server.process.pid)
    finally:
        server.stop(signal.SIGKILL)
    deadline = time.monotonic() + 60
    while any(_running(child) for child in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [child for child in children if _running(child)]
    for child in left:
        os.kill(child, signal.SIGKILL)
    assert not left, f"children {left} outlived the server that started them:\n{server.log_tail()}"
