"""The fuzz benchmark in small: a few thousand generated requests against a real server subprocess
(2 workers, event log and admin token on, as ``python -m benchmarks.fuzz`` starts it), driven by
hypothesis: no call may get INTERNAL or UNKNOWN, and the server must be healthy afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.fuzz import Tally, plan_requests, send_all
from benchmarks.fuzz_requests import HUGE_SIZES, KINDS, IdPools, RequestFuzzer, fuzz_targets
from serving.server_process import ServerProcess, running_server
from serving.settings import DEFAULT_MAX_REQUEST_BYTES
from tests.serving.server_harness import TrainedArtifacts, trained_artifacts

TOKEN = "fuzz-admin-token-0123456789abcdef"
REQUESTS_PER_EXAMPLE = 20
EXAMPLES = 150  # 3,000 requests


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> TrainedArtifacts:
    return trained_artifacts(tmp_path_factory)


@pytest.fixture(scope="module")
def pools(artifacts: TrainedArtifacts) -> IdPools:
    return IdPools.from_artifact(artifacts.older, "als", size=100)


@pytest.fixture(scope="module")
def server(artifacts: TrainedArtifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("fuzz-server")
    with running_server(
        artifacts.older,
        workdir,
        workers=2,
        access_log_every=None,
        admin_token=TOKEN,
        extra_args=["--event-log", str(workdir / "events.db")],
        ready_timeout_s=120.0,  # two workers load the model at once on a possibly busy machine
    ) as running:
        yield running


def test_every_rpc_is_a_target_and_generation_is_seeded(pools: IdPools) -> None:
    targets = fuzz_targets()
    rpcs = {t.rpc for t in targets}
    assert {"Personalize", "RecordEvents", "ReloadModel", "SetExperiment", "Health/Check"} <= rpcs
    assert "ServerReflection/ServerReflectionInfo" in rpcs
    first = [RequestFuzzer(pools, 7).request(t) for t in targets * 5]
    again = [RequestFuzzer(pools, 7).request(t) for t in targets * 5]
    assert first == again


def test_huge_kinds_have_their_sizes(pools: IdPools) -> None:
    fuzzer = RequestFuzzer(pools, 1)
    personalize = next(t for t in fuzz_targets() if t.rpc == "Personalize")
    for kind, size in HUGE_SIZES.items():
        assert abs(len(fuzzer.request(personalize, kind)[1]) - size) <= 8
    assert len(fuzzer.request(personalize, "over_cap")[1]) > DEFAULT_MAX_REQUEST_BYTES


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**32 - 1), kinds=st.sets(st.sampled_from(KINDS), min_size=1))
def test_fuzzed_requests_never_get_internal_or_unknown(
    server: ServerProcess, pools: IdPools, seed: int, kinds: set[str]
) -> None:
    fuzzer = RequestFuzzer(pools, seed, {kind: 1.0 for kind in sorted(kinds)})
    plan = plan_requests(fuzzer, fuzz_targets(), REQUESTS_PER_EXAMPLE, TOKEN)
    tally = Tally()
    asyncio.run(send_all(server.address, plan, tally, concurrency=8, timeout_s=10.0, channels=2))
    assert tally.calls == REQUESTS_PER_EXAMPLE
    assert tally.failures() == {"INTERNAL": 0, "UNKNOWN": 0}, tally.examples


def test_the_server_is_healthy_after_and_logged_no_traceback(server: ServerProcess, tmp_path: Path) -> None:
    with server.client() as client:
        client.wait_until_serving(10.0)
        assert client.list_personas()
    assert server.metric("persona_engine_requests_total", code="INTERNAL") == 0
    assert server.metric("persona_engine_requests_total", code="UNKNOWN") == 0
    assert server.metric("persona_engine_worker_restarts_total") == 0
    assert "Traceback" not in server.log()
