"""Workers pinned to a CPU each (``serve --workers N --pin-workers``)."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import threading
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from serving.cpu_affinity import pin_worker, worker_cpu
from serving.server_process import running_server
from serving.settings import (
    ENV_PIN_WORKERS,
    ServeConfigError,
    add_serve_arguments,
    settings_from_args,
)
from serving.worker_supervisor import worker_command
from tests.serving.server_harness import trained_artifacts

needs_affinity = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity"), reason="this platform cannot set CPU affinities"
)


def test_workers_take_the_allowed_cpus_in_order_and_wrap_around() -> None:
    allowed = {5, 2, 9}
    assert [worker_cpu(i, allowed) for i in range(5)] == [2, 5, 9, 2, 5]
    with pytest.raises(ValueError, match="no CPU"):
        worker_cpu(0, set())


def _settings(tmp_path: Path, flags: list[str], environ: dict[str, str]) -> bool:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    settings = settings_from_args(parser.parse_args(["--artifact", str(tmp_path), *flags]), environ)
    assert ("--pin-workers" in worker_command(settings, "127.0.0.1:0", tmp_path, 0)) == settings.pin_workers
    return settings.pin_workers


def test_pinning_is_off_unless_asked_for_and_reaches_the_workers(tmp_path: Path) -> None:
    assert _settings(tmp_path, [], {}) is False
    assert _settings(tmp_path, ["--pin-workers"], {}) is True
    assert _settings(tmp_path, [], {ENV_PIN_WORKERS: "1"}) is True
    assert _settings(tmp_path, [], {ENV_PIN_WORKERS: "0"}) is False
    with pytest.raises(ServeConfigError, match=f"{ENV_PIN_WORKERS}='maybe': expected 1 or 0"):
        _settings(tmp_path, [], {ENV_PIN_WORKERS: "maybe"})


def _pinned_child(index: int, out: Connection) -> None:
    cpu = pin_worker(index)
    seen: list[set[int]] = []
    thread = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))
    thread.start()
    thread.join()
    out.send((cpu, os.sched_getaffinity(0), seen[0]))


@needs_affinity
def test_a_pinned_process_and_the_threads_it_starts_stay_on_its_cpu() -> None:
    allowed = os.sched_getaffinity(0)
    receive, send = multiprocessing.get_context("fork").Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=_pinned_child, args=(1, send))
    child.start()
    cpu, process_cpus, thread_cpus = receive.recv()
    child.join()
    assert cpu == worker_cpu(1, allowed)
    assert process_cpus == thread_cpus == {cpu}
    assert os.sched_getaffinity(0) == allowed, "the parent is left alone"


def _allowed_cpus(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no Cpus_allowed_list for pid {pid}")


@needs_affinity
def test_each_worker_of_a_pinned_server_runs_on_a_cpu_of_its_own(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        pytest.skip("needs at least 2 CPUs to see the workers apart")
    artifact = trained_artifacts(tmp_path_factory).older
    extra = ["--pin-workers"]
    with running_server(artifact, tmp_path, workers=2, metrics=False, extra_args=extra) as server:
        with server.client() as client:
            assert client.personalize("c0000001").items
        pinned = sorted(_allowed_cpus(pid) for pid in server.worker_pids)
    assert pinned == sorted(str(worker_cpu(i, allowed)) for i in range(2))
    assert server.log().count("runs on CPU") == 2
