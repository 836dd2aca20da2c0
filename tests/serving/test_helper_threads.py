"""Helper threads that wait for the event loop (``serve --helper-threads batch``, the default)."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import queue
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from serving.helper_threads import (
    SWEEP_INTERVAL_S,
    keep_helper_threads_yielding,
    supported,
    yield_helper_threads,
)
from serving.server import serve
from serving.server_process import running_server
from serving.settings import (
    ENV_HELPER_THREADS,
    ServeConfigError,
    add_serve_arguments,
    settings_from_args,
)
from serving.worker_supervisor import worker_command
from tests.serving.server_harness import trained_artifacts

needs_batch_policy = pytest.mark.skipif(not supported(), reason="this platform has no SCHED_BATCH")
_POLICY_FIELD = 38  # /proc/<pid>/task/<tid>/stat: field 41 (policy), counted after the command's ")"


class _Waiting:
    """A thread that waits until released, so its policy can be read and changed meanwhile."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.thread = threading.Thread(target=self.release.wait, daemon=True)
        self.thread.start()

    @property
    def tid(self) -> int:
        assert self.thread.native_id is not None
        return self.thread.native_id

    def stop(self) -> None:
        self.release.set()
        self.thread.join()


@needs_batch_policy
def test_helpers_become_batch_threads_and_the_loop_thread_keeps_its_policy() -> None:
    loop_thread = threading.get_native_id()
    helpers = [_Waiting(), _Waiting()]
    try:
        changed = yield_helper_threads(loop_thread, [loop_thread, *(h.tid for h in helpers)])
        assert changed == 2
        assert [os.sched_getscheduler(h.tid) for h in helpers] == [os.SCHED_BATCH] * 2
        assert os.sched_getscheduler(loop_thread) == os.SCHED_OTHER
        assert yield_helper_threads(loop_thread, [h.tid for h in helpers]) == 0, "already batch threads"
    finally:
        for helper in helpers:
            helper.stop()


@needs_batch_policy
def test_ended_threads_and_threads_given_another_policy_are_left_alone() -> None:
    ended = _Waiting()
    ended_tid = ended.tid
    ended.stop()
    idle = _Waiting()
    try:
        os.sched_setscheduler(idle.tid, os.SCHED_IDLE, os.sched_param(0))
        assert yield_helper_threads(threading.get_native_id(), [ended_tid, idle.tid]) == 0
        assert os.sched_getscheduler(idle.tid) == os.SCHED_IDLE
    finally:
        idle.stop()


def _sweeping_child(out: Connection) -> None:
    """In a process of its own (the sweep changes every thread of it): the threads there at start and
    one started while the sweeper runs."""

    async def main() -> tuple[int, int, int]:
        early = _Waiting()
        sweeper = asyncio.get_running_loop().create_task(
            keep_helper_threads_yielding(threading.get_native_id(), interval_s=0.02)
        )
        await asyncio.sleep(0.05)
        late = _Waiting()
        await asyncio.sleep(0.2)
        sweeper.cancel()
        policies = (
            os.sched_getscheduler(early.tid),
            os.sched_getscheduler(late.tid),
            os.sched_getscheduler(threading.get_native_id()),
        )
        early.stop()
        late.stop()
        return policies

    out.send(asyncio.run(main()))


@needs_batch_policy
def test_the_sweeper_also_catches_threads_started_after_it() -> None:
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_sweeping_child, args=(send,))
    child.start()
    early, late, loop = receive.recv()
    child.join()
    assert (early, late, loop) == (os.SCHED_BATCH, os.SCHED_BATCH, os.SCHED_OTHER)


def _setting(tmp_path: Path, flags: list[str], environ: dict[str, str]) -> str:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    settings = settings_from_args(parser.parse_args(["--artifact", str(tmp_path), *flags]), environ)
    command = worker_command(settings, "127.0.0.1:0", tmp_path, 0)
    assert command[command.index("--helper-threads") + 1] == settings.helper_threads
    return settings.helper_threads


def test_batch_is_the_default_and_the_setting_reaches_the_workers(tmp_path: Path) -> None:
    assert _setting(tmp_path, [], {}) == "batch"
    assert _setting(tmp_path, ["--helper-threads", "normal"], {}) == "normal"
    assert _setting(tmp_path, [], {ENV_HELPER_THREADS: "normal"}) == "normal"
    assert _setting(tmp_path, ["--helper-threads", "batch"], {ENV_HELPER_THREADS: "normal"}) == "batch"
    with pytest.raises(ServeConfigError, match=f"{ENV_HELPER_THREADS}='idle': expected one of batch, normal"):
        _setting(tmp_path, [], {ENV_HELPER_THREADS: "idle"})


def _policies(pid: int) -> dict[int, int]:
    """Each thread's scheduling policy, by thread id."""
    policies = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        policies[int(task.name)] = int(stat.rsplit(")", 1)[1].split()[_POLICY_FIELD])
    return policies


@needs_batch_policy
def test_every_thread_of_a_serving_worker_but_its_loop_is_a_batch_thread(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    artifact = trained_artifacts(tmp_path_factory).older
    with running_server(artifact, tmp_path, workers=2, metrics=False) as server:
        with server.client() as client:
            assert client.personalize("c0000001").items
        # a thread started by that call is swept within a second
        deadline = time.monotonic() + 10 * SWEEP_INTERVAL_S
        while True:
            workers = {pid: _policies(pid) for pid in server.worker_pids}
            helpers = [p for pid, policies in workers.items() for t, p in policies.items() if t != pid]
            if set(helpers) == {os.SCHED_BATCH} or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    for pid, policies in workers.items():
        assert policies.pop(pid) == os.SCHED_OTHER, "the event loop runs on the worker's main thread"
        assert len(policies) >= 3, "gRPC's poller and pools, the executor"
        assert set(policies.values()) == {os.SCHED_BATCH}, policies
    assert server.log().count("helper threads run as SCHED_BATCH") == 2


@needs_batch_policy
def test_a_server_embedded_on_a_thread_leaves_the_programs_threads_alone(
    tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    artifact = trained_artifacts(tmp_path_factory).older
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    flags = ["--artifact", str(artifact), "--address", "127.0.0.1:0", "--metrics-port", "0"]
    settings = settings_from_args(parser.parse_args(flags), {})
    bystander = _Waiting()
    stop, ready = threading.Event(), queue.Queue[int]()
    server = threading.Thread(target=serve, args=(settings,), kwargs={"stop": stop, "on_ready": ready.put})
    caplog.set_level("INFO", logger="persona_engine.server")
    server.start()
    try:
        ready.get(timeout=60)
        time.sleep(2 * SWEEP_INTERVAL_S)  # a sweeper, had one started, would have run twice
        policies = (os.sched_getscheduler(0), os.sched_getscheduler(bystander.tid))
    finally:
        stop.set()
        server.join(timeout=30)
        bystander.stop()
    assert policies == (os.SCHED_OTHER, os.SCHED_OTHER)
    assert "the server does not own this process" in caplog.text
