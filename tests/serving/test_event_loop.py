"""The serving event loop: asyncio or uvloop, its blocking-work threads, and how it is chosen."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import threading
from pathlib import Path

import pytest

from serving import event_loop
from serving.event_loop import BLOCKING_THREAD_PREFIX, EventLoopThread, new_event_loop
from serving.server_process import running_server
from serving.settings import ENV_EVENT_LOOP, ServeConfigError, add_serve_arguments, settings_from_args
from tests.serving.server_harness import trained_artifacts


async def _thread_names() -> tuple[str, str]:
    return threading.current_thread().name, await asyncio.to_thread(lambda: threading.current_thread().name)


def test_run_uses_the_blocking_work_threads_for_to_thread() -> None:
    on_loop, off_loop = event_loop.run(_thread_names(), threads=1)
    assert on_loop == threading.current_thread().name
    assert off_loop.startswith(BLOCKING_THREAD_PREFIX)


def test_an_event_loop_thread_runs_coroutines_for_synchronous_callers() -> None:
    running = EventLoopThread(threads=1, name="loop-under-test")
    try:
        on_loop, off_loop = running.run(_thread_names(), timeout_s=10)
    finally:
        running.close()
    assert (on_loop, off_loop.startswith(BLOCKING_THREAD_PREFIX)) == ("loop-under-test", True)
    assert running.loop.is_closed()
    running.close()  # a second close is harmless


def test_closing_an_event_loop_thread_cancels_the_tasks_still_on_it() -> None:
    running = EventLoopThread(threads=1, name="loop-under-test")
    cleaned_up = threading.Event()

    async def wait_forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()

    async def start() -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(wait_forever())
        await asyncio.sleep(0)  # the task reaches its wait
        return task

    task = running.run(start(), timeout_s=10)
    running.close()
    assert cleaned_up.is_set() and task.cancelled()


def test_uvloop_is_a_loop_of_its_own_kind() -> None:
    uvloop = pytest.importorskip("uvloop")
    loop = new_event_loop("uvloop")
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    with pytest.raises(ValueError, match="'trio'"):
        new_event_loop("trio")


def _parse(argv: list[str], tmp_path_factory: pytest.TempPathFactory) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(["--artifact", str(trained_artifacts(tmp_path_factory).root), *argv])


def test_the_event_loop_comes_from_the_flag_then_the_variable_then_asyncio(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings_from_args(_parse([], tmp_path_factory), {}).event_loop == "asyncio"
    flagged = _parse(["--event-loop", "asyncio"], tmp_path_factory)
    assert settings_from_args(flagged, {ENV_EVENT_LOOP: "uvloop"}).event_loop == "asyncio"
    with pytest.raises(ServeConfigError, match=f"{ENV_EVENT_LOOP} 'trio': expected one of asyncio, uvloop"):
        settings_from_args(_parse([], tmp_path_factory), {ENV_EVENT_LOOP: "trio"})
    if importlib.util.find_spec("uvloop") is not None:
        from_env = settings_from_args(_parse([], tmp_path_factory), {ENV_EVENT_LOOP: "uvloop"})
        assert from_env.event_loop == "uvloop"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real_find_spec(name, *a)
    )
    with pytest.raises(ServeConfigError, match="--event-loop uvloop: the uvloop package is not installed"):
        settings_from_args(_parse(["--event-loop", "uvloop"], tmp_path_factory), {})


def test_workers_run_the_event_loop_they_are_told(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    pytest.importorskip("uvloop")
    artifact = trained_artifacts(tmp_path_factory).older
    extra = ["--event-loop", "uvloop"]
    with running_server(artifact, tmp_path, workers=2, metrics=False, extra_args=extra) as server:
        for _ in range(4):
            with server.client() as client:
                assert client.personalize("c0000001").items
    assert server.log().count("uvloop event loop") == 2
