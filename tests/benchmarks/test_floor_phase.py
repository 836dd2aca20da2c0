"""The gRPC floor's plumbing: a server without ``--benchmark-floor`` skips the floor with a reason and
null figures, never a crash; each floor phase runs right after Personalize's with the same settings; a
floor run that happened carries its headline figures."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import benchmarks.floor_phase as floor_phase
import benchmarks.load_phases as load_phases
from benchmarks.floor_phase import (
    FLOOR_FLAG,
    floor_figures,
    floor_section,
    floor_side,
    floor_start_failure,
    skipped_floor,
)
from benchmarks.linux_processes import frozen, process_state, process_tree
from benchmarks.load_generator import PhaseSpec
from benchmarks.load_phases import LoadSettings, ServerSession, run_server_phases
from benchmarks.serving_workloads import Workload
from serving.server_process import ServerStartError, start_server
from tests.benchmarks.result_documents import phase

USAGE_ERROR = (
    "server exited with status 2; log:\n"
    "usage: persona-engine serve [-h] --artifact ARTIFACT [--model MODEL]\n"
    f"persona-engine serve: error: unrecognized arguments: {FLOOR_FLAG}\n"
)
LOAD = LoadSettings(8, "poisson", 1.0, 0.0, 100, 2.0, 2)


def workload(name: str) -> Workload:
    """A workload that is never called: the floor only looks at its name before starting a server."""
    return Workload(name, f"/svc/{name}", [], 300.0, 1, print, print, None, lambda client, i: {})


def test_a_usage_error_naming_the_flag_means_a_server_without_the_floor() -> None:
    reason = floor_start_failure(USAGE_ERROR)
    assert reason.startswith(f"the server does not support {FLOOR_FLAG}")


def test_any_other_start_failure_is_quoted_from_the_end_of_the_log() -> None:
    reason = floor_start_failure("server exited with status 1; log:\nloading\nArtifactError: no manifest\n")
    assert reason == "the floor server did not start: server exited with status 1; log: | loading | " + (
        "ArtifactError: no manifest"
    )
    assert len(floor_start_failure("x" * 5000)) < 400


def test_a_skipped_floor_has_its_reason_and_null_figures() -> None:
    run = skipped_floor(2, "why")
    assert run["skipped"] == "why" and run["phases"] == {}
    assert all(run[key] is None for key in ("calls_per_s", "server_cpu_ms_per_call", "server_p99_ms"))


def test_a_floor_server_that_rejects_the_flag_is_a_skip_not_a_crash(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started: list[tuple[str, ...]] = []

    def rejecting_server(*args: Any, extra_args: tuple[str, ...] = (), **kwargs: Any) -> Any:
        started.append(tuple(extra_args))
        raise ServerStartError(USAGE_ERROR)

    monkeypatch.setattr(floor_phase, "server_session", rejecting_server)
    with floor_side(tmp_path, "als", 2, 16, [workload("Personalize")], LOAD, tmp_path) as side:
        assert side.session is None  # the Personalize server runs its phases unpaired
    assert started == [(FLOOR_FLAG,)]
    run = side.result()
    assert run == skipped_floor(2, floor_start_failure(USAGE_ERROR))
    section = floor_section([run])
    assert section["skipped"] == run["skipped"]
    assert section["server_flag"] == FLOOR_FLAG


def test_a_floor_without_personalize_starts_no_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(floor_phase, "server_session", pytest.fail)
    with floor_side(tmp_path, "als", 1, 16, [workload("GetPersonaProfile")], LOAD, tmp_path) as side:
        assert side.session is None
    assert side.result()["skipped"] == "Personalize is not among --rpcs"


def test_each_floor_phase_runs_right_after_personalizes_with_the_same_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Closed loop at every concurrency and open loop at Personalize's own rate are paired; the further
    open rate, the other RPCs and the profiled phase run on the Personalize server alone."""
    measured: list[tuple[str, str, str]] = []
    stopped: list[int] = []

    class Session(ServerSession):
        @property
        def pids(self) -> list[int]:
            return [1] if self.described == "engine" else [2]

    def session(label: str) -> ServerSession:
        return Session(label, None, label, {}, {})  # type: ignore[arg-type]

    @contextlib.contextmanager
    def recording_freeze(pids: list[int]) -> Iterator[None]:
        stopped[:] = pids
        yield
        stopped.clear()

    def recording_phase(
        generator: Any, server: str, spec: PhaseSpec, *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        assert stopped == ([2] if server == "engine" else [1])  # the other server is stopped meanwhile
        mode = f"c={spec.concurrency}" if spec.mode == "closed" else f"{spec.rate:g}/s"
        measured.append((server, spec.name, mode))
        return {}

    @contextlib.contextmanager
    def personalize_server(*args: Any, **kwargs: Any) -> Iterator[ServerSession]:
        yield session("engine")

    floor = session("floor")
    monkeypatch.setattr(load_phases, "server_session", personalize_server)
    monkeypatch.setattr(load_phases, "run_phase", recording_phase)
    monkeypatch.setattr(load_phases, "frozen", recording_freeze)
    monkeypatch.setattr(load_phases, "CACHE_DIR", tmp_path)
    workloads = [workload("Personalize"), workload("GetPersonaProfile")]
    run = run_server_phases(
        tmp_path, "als", 2, 16, workloads, LOAD, tmp_path, True,
        personalize_extra_rates=(1000.0,), personalize_extra_concurrencies=(32, 64), paired=floor,
    )  # fmt: skip
    assert measured == [
        ("engine", "Personalize closed", "c=8"), ("floor", "Personalize closed", "c=8"),
        ("engine", "Personalize closed c=32", "c=32"), ("floor", "Personalize closed c=32", "c=32"),
        ("engine", "Personalize closed c=64", "c=64"), ("floor", "Personalize closed c=64", "c=64"),
        ("engine", "Personalize open 300/s", "300/s"), ("floor", "Personalize open 300/s", "300/s"),
        ("engine", "Personalize open 1000/s", "1000/s"),
        ("engine", "Personalize closed (profiled)", "c=8"),
        ("engine", "GetPersonaProfile closed", "c=8"), ("engine", "GetPersonaProfile open 300/s", "300/s"),
    ]  # fmt: skip
    assert list(floor.phases) == [
        "Personalize|closed", "Personalize|closed@32", "Personalize|closed@64", "Personalize|open"
    ]  # fmt: skip
    assert "Personalize|open@1000" in run["phases"] and "GetPersonaProfile|closed" in run["phases"]


def test_a_floor_run_that_happened_carries_its_headline_figures() -> None:
    run = {
        "workers": 2,
        "responses": {"Personalize": {"response_bytes": 2400.0}},
        "phases": {
            "Personalize|closed": phase(calls_per_s=3000.0, cpu_ms=0.4),
            "Personalize|open": phase(rate=300.0, server_p99_ms=1.5),
        },
    }
    figures = floor_figures(run)
    assert figures["skipped"] is None
    assert (figures["calls_per_s"], figures["server_cpu_ms_per_call"]) == (3000.0, 0.4)
    assert (figures["server_p99_ms"], figures["response_bytes"]) == (1.5, 2400.0)
    assert floor_section([figures, skipped_floor(1, "why")])["skipped"] is None


def test_the_real_server_either_rejects_the_flag_with_a_usage_error_or_accepts_it(tmp_path: Path) -> None:
    """The message the skip rule reads is the real server's: today's server rejects the flag before it
    loads anything; one with the flag gets past argument parsing and fails on the missing artifact."""
    with pytest.raises(ServerStartError) as raised:
        start_server(tmp_path / "no-artifact", tmp_path, extra_args=[FLOOR_FLAG], ready_timeout_s=60)
    message = str(raised.value)
    reason = floor_start_failure(message)
    if "unrecognized arguments" in message:
        assert "status 2" in message
        assert reason.startswith(f"the server does not support {FLOOR_FLAG}")
    else:
        assert reason.startswith("the floor server did not start")


def test_every_server_of_a_run_gets_the_flags_asked_for_the_floor_included() -> None:
    from benchmarks.serving_latency import _server_flags, parse_args

    assert _server_flags(parse_args([])) == ()
    asked = parse_args(
        ["--pin-workers", "--helper-threads", "normal", "--batch-wait-ms", "4", "--batch-max-size", "16",
         "--batch-preferred-size", "8"]
    )  # fmt: skip
    assert _server_flags(asked) == (
        "--pin-workers", "--helper-threads", "normal", "--batch-wait-ms", "4", "--batch-max-size", "16",
        "--batch-preferred-size", "8",
    )  # fmt: skip


@pytest.mark.parametrize("flag", ["--batch-max-size", "--batch-preferred-size"])
def test_a_batch_size_below_one_is_refused(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.serving_latency import parse_args

    with pytest.raises(SystemExit):
        parse_args([flag, "0"])
    assert f"{flag} must be >= 1, got 0" in capsys.readouterr().err


def test_further_closed_loop_concurrencies_default_to_32_and_64_and_must_be_positive() -> None:
    from benchmarks.serving_latency import parse_args

    assert parse_args([]).personalize_extra_concurrency == [32, 64]
    assert parse_args(["--personalize-extra-concurrency"]).personalize_extra_concurrency == []
    with pytest.raises(SystemExit):
        parse_args(["--personalize-extra-concurrency", "0"])


def test_a_frozen_process_tree_is_stopped_for_the_block_and_goes_on_after_it(tmp_path: Path) -> None:
    """The floor's neighbour is stopped with SIGSTOP, children included, and always let go on."""
    ready = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(ready)!r}, 'w').write(str(c.pid)); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while not (ready.exists() and ready.read_text()):
            assert time.monotonic() < deadline, "the child did not start its own child"
            time.sleep(0.05)
        grandchild = int(ready.read_text())
        tree = process_tree(parent.pid)
        assert tree == [parent.pid, grandchild]
        with pytest.raises(RuntimeError, match="inside"), frozen(tree):
            assert [process_state(pid) for pid in tree] == ["T", "T"]  # stopped before the block runs
            raise RuntimeError("inside")  # an error in the block still lets them go on
        deadline = time.monotonic() + 5
        while "T" in (states := [process_state(pid) for pid in tree]):
            assert time.monotonic() < deadline, f"still stopped: {states}"
            time.sleep(0.01)
    finally:
        for pid in process_tree(parent.pid)[::-1]:
            os.kill(pid, signal.SIGKILL)
        parent.wait()
