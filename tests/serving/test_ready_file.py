"""The ready file: the real bound port and pids once every worker serves, written atomically, never stale."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from serving.ready_file import (
    ReadyFileError,
    ServerReady,
    read_ready_file,
    remove_ready_file,
    write_ready_file,
)
from serving.server_process import child_environment, start_server
from serving.settings import ENV_READY_FILE, ServeConfigError, add_serve_arguments, settings_from_args
from tests.serving.server_harness import TrainedArtifacts, corrupt_copy, trained_artifacts

READY = ServerReady("127.0.0.1:41234", 41234, 9464, 4711, (4712, 4713))


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> TrainedArtifacts:
    return trained_artifacts(tmp_path_factory)


def test_two_workers_on_port_0_write_the_bound_port_and_every_pid_then_remove_it(
    artifacts: TrainedArtifacts, tmp_path: Path
) -> None:
    server = start_server(artifacts.older, tmp_path, workers=2, name="two-workers")
    try:
        ready = read_ready_file(server.ready_path)
        assert ready is not None and ready == server.ready
        assert ready.port != 0 and ready.address == f"127.0.0.1:{ready.port}"
        assert ready.pid == server.process.pid
        assert len(set(ready.worker_pids)) == 2 and ready.pid not in ready.worker_pids
        with socket.create_connection(("127.0.0.1", ready.port), timeout=5):
            pass  # the port in the file is the one the workers listen on
        with server.client() as client:
            assert len(client.list_personas().personas) == 5
        served_by = {
            s.labels["pid"] for s in server.metrics()["persona_engine_model_info"].samples if s.value
        }
        assert served_by == {str(pid) for pid in ready.worker_pids}  # metrics_port is the parent's endpoint
        assert sorted(os.listdir(tmp_path)) == ["two-workers.log", "two-workers.ready.json"]  # no temp file
    finally:
        assert server.stop() == 0
    assert not server.ready_path.exists()
    assert "ready file written" in server.log()


def test_a_stale_ready_file_is_removed_even_when_the_server_cannot_start(
    artifacts: TrainedArtifacts, tmp_path: Path
) -> None:
    ready_path = tmp_path / "ready.json"
    write_ready_file(ready_path, READY)
    broken = corrupt_copy(artifacts.older, tmp_path / "broken")
    for workers in ("1", "2"):
        command = [
            sys.executable, "-m", "serving.server", "--artifact", str(broken), "--address", "127.0.0.1:0",
            "--metrics-port", "0", "--workers", workers, "--ready-file", str(ready_path),
        ]  # fmt: skip
        finished = subprocess.run(command, env=child_environment(), capture_output=True, timeout=120)
        assert finished.returncode != 0
        assert not ready_path.exists(), f"{workers} worker(s): the stale ready file was left behind"
        write_ready_file(ready_path, READY)


def test_the_environment_variable_names_the_ready_file_and_a_missing_folder_is_refused(
    artifacts: TrainedArtifacts, tmp_path: Path
) -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    base = ["--artifact", str(artifacts.root)]
    assert settings_from_args(parser.parse_args(base), {}).ready_file is None
    from_env = settings_from_args(parser.parse_args(base), {ENV_READY_FILE: str(tmp_path / "r.json")})
    assert from_env.ready_file == tmp_path / "r.json"
    flag = parser.parse_args([*base, "--ready-file", str(tmp_path / "flag.json")])
    assert (
        settings_from_args(flag, {ENV_READY_FILE: str(tmp_path / "r.json")}).ready_file
        == tmp_path / "flag.json"
    )
    with pytest.raises(ServeConfigError, match=f"{ENV_READY_FILE} .*: no such folder"):
        settings_from_args(parser.parse_args(base), {ENV_READY_FILE: str(tmp_path / "nowhere" / "r.json")})
    with pytest.raises(ServeConfigError, match=r"--ready-file .*: is a folder"):
        settings_from_args(parser.parse_args([*base, "--ready-file", str(tmp_path)]), {})


# -- the file itself ----------------------------------------------------------------------------------


def test_writing_replaces_the_file_whole_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "ready.json"
    write_ready_file(path, READY)
    first_inode = path.stat().st_ino
    newer = ServerReady("127.0.0.1:5000", 5000, None, 99, (99,))
    write_ready_file(path, newer)
    assert read_ready_file(path) == newer
    assert path.stat().st_ino != first_inode  # renamed into place, not rewritten in place
    assert json.loads(path.read_text(encoding="utf-8"))["metrics_port"] is None
    assert os.listdir(tmp_path) == ["ready.json"]


def test_a_failed_write_keeps_the_previous_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ready.json"
    write_ready_file(path, READY)

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_ready_file(path, ServerReady("127.0.0.1:5000", 5000, None, 99, (99,)))
    assert read_ready_file(path) == READY
    assert os.listdir(tmp_path) == ["ready.json"]


def test_a_server_removes_only_the_ready_file_it_wrote(tmp_path: Path) -> None:
    path = tmp_path / "ready.json"
    write_ready_file(path, READY)
    remove_ready_file(path, pid=12345)  # another server wrote it since
    assert read_ready_file(path) == READY
    remove_ready_file(path, pid=READY.pid)
    assert read_ready_file(path) is None
    remove_ready_file(path, pid=READY.pid)  # already gone: nothing to do


def test_a_file_that_is_not_a_ready_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "ready.json"
    path.write_text("{half", encoding="utf-8")
    with pytest.raises(ReadyFileError, match=r"ready\.json: not JSON"):
        read_ready_file(path)
    path.write_text('{"port": 1}', encoding="utf-8")
    with pytest.raises(ReadyFileError, match=r"ready\.json: not a ready file"):
        read_ready_file(path)
