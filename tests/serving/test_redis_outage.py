"""Redis down: a real redis-server stopped and started again on the same port under a real server.

While the state store is unreachable, Personalize, RecommendProducts and GetPersonaProfile keep
answering from the artifact alone and say so (``degraded_reason``, a metric); RecordEvents answers
UNAVAILABLE and stores nothing, so the client's retry stores the batch once Redis is back. The server
finds Redis again by itself. The store's own behaviour (reads miss, writes drop, the monitor) is
checked directly too.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import redis

from engine.live.event_log import EventLog
from engine.live.events import BehaviorEvent
from engine.live.state_store import StateStoreUnavailableError
from serving.client import PersonaEngineClient
from serving.generated.persona.v1.admin_service_pb2 import SetExperimentRequest
from serving.generated.persona.v1.admin_service_pb2_grpc import AdminServiceStub
from serving.ready_file import read_ready_file
from serving.redis_state_store import RedisStateStore, tracking_live_state
from serving.response_translation import WITHOUT_LIVE_STATE
from serving.server_process import ServerProcess, running_server
from tests.serving.redis_server import RedisProcess
from tests.serving.server_harness import TrainedArtifacts, trained_artifacts

WAIT_S = 15.0
ADMIN_TOKEN = "outage-" + "t" * 32


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> TrainedArtifacts:
    return trained_artifacts(tmp_path_factory)


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_for(condition: str, check: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {condition} within {timeout_s}s")
        time.sleep(0.05)


def events(customer: str, items: list[str], tag: str) -> list[BehaviorEvent]:
    now = dt.datetime.now(dt.UTC)
    return [
        BehaviorEvent(f"outage-{tag}-{n}", customer, item, "view", now, None, 0.0, "web", "desktop")
        for n, item in enumerate(items)
    ]


# -- the store on its own -----------------------------------------------------------------------------


def test_the_store_misses_reads_and_drops_writes_while_redis_is_down_and_recovers(
    redis_process: RedisProcess,
) -> None:
    store = RedisStateStore.from_url(redis_process.url, prefix="outage:")
    changes: list[bool] = []
    store.add_listener(changes.append)
    try:
        store.set("kept", b"before")
        store.add_floats("counters", {"n": 2.0})
        redis_process.stop()
        with tracking_live_state() as use:
            assert store.get("kept") is None
            assert store.get_floats("counters") == {}
            store.set("dropped", b"during")
            assert store.add_floats("counters", {"n": 1.0}) == {"n": 1.0}  # as if from zero
        assert use.missed == 4 and not store.available
        assert changes == [False]
        with pytest.raises(StateStoreUnavailableError, match="unreachable"):
            store.check_reachable()
        # The same port, an empty Redis (no persistence): the monitor finds it without any call.
        redis_process.start()
        wait_for("available again", lambda: store.available)
        # the monitor thread tells listeners just after it marks the store available
        wait_for("the listeners told", lambda: changes == [False, True])
        assert changes == [False, True]
        with tracking_live_state() as use:
            store.set("kept", b"after")
            assert store.get("kept") == b"after"
            assert store.get("dropped") is None
            assert store.add_floats("counters", {"n": 1.0}) == {"n": 1.0}
        assert use.complete
        store.check_reachable()
        assert store.outages == 1
    finally:
        store.close()


def test_an_idle_store_notices_an_outage_by_itself(redis_process: RedisProcess) -> None:
    store = RedisStateStore.from_url(redis_process.url, prefix="idle:")
    try:
        redis_process.stop()
        wait_for("unavailable", lambda: not store.available)
        redis_process.start()
        wait_for("available", lambda: store.available)
    finally:
        store.close()


def test_a_hung_redis_costs_one_timeout_then_calls_skip_it(redis_process: RedisProcess) -> None:
    """SIGSTOP: connections stay open and nothing answers (a hung host), the worst case for a caller."""
    store = RedisStateStore.from_url(redis_process.url, prefix="hung:", timeout_s=0.2)
    assert redis_process.process is not None
    pid = redis_process.process.pid
    try:
        os.kill(pid, signal.SIGSTOP)
        with tracking_live_state() as use:
            for n in range(20):
                assert store.get(f"k{n}") is None
        assert use.missed == 20 and not store.available
        os.kill(pid, signal.SIGCONT)
        wait_for("available", lambda: store.available)
        store.set("k0", b"v")
        assert store.get("k0") == b"v"
    finally:
        os.kill(pid, signal.SIGCONT)
        store.close()


def test_calls_on_several_threads_during_an_outage_all_fall_back(redis_process: RedisProcess) -> None:
    store = RedisStateStore.from_url(redis_process.url, prefix="threads:")
    redis_process.stop()
    results: list[bytes | None] = []

    def read() -> None:
        for n in range(50):
            results.append(store.get(f"k{n}"))

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    assert results == [None] * 200


# -- through the real server --------------------------------------------------------------------------


@pytest.fixture
def server(
    artifacts: TrainedArtifacts, redis_process: RedisProcess, tmp_path: Path
) -> Iterator[ServerProcess]:
    args = ["--state", redis_process.url, "--event-log", str(tmp_path / "events.db")]
    with running_server(
        artifacts.older, tmp_path / "server", workers=2, extra_args=args, admin_token=ADMIN_TOKEN
    ) as running:
        yield running


def test_serving_goes_on_without_live_state_and_recovers_when_redis_returns(
    server: ServerProcess, redis_process: RedisProcess, tmp_path: Path, artifacts: TrainedArtifacts
) -> None:
    customer = "c0000001"
    with PersonaEngineClient(server.address, timeout_s=10, retries=0) as client:
        items = [item.item_id for item in client.personalize(customer, k=3).items]
        before = client.record_events(events(customer, items, "before"))
        assert before.accepted_events == 3
        page = client.personalize(customer)
        assert page.decision.degraded_reason == ""
        assert server.metric("persona_engine_state_store_available") == 1

        redis_process.stop()
        # Reads: answered, from the artifact alone, and said so.
        page = client.personalize(customer)
        assert page.items and page.decision.degraded_reason == WITHOUT_LIVE_STATE
        batch = client.recommend_products_batch([customer, "never-seen"])
        assert [r.decision.degraded_reason for r in batch.results] == [WITHOUT_LIVE_STATE] * 2
        profile = client.get_persona_profile(customer)
        assert profile.degraded_reason == WITHOUT_LIVE_STATE and profile.persona_mix.weights
        # Writes: refused, naming the cause, and nothing stored.
        refused = events(customer, items, "during")
        with pytest.raises(grpc.RpcError) as raised:
            client.record_events(refused)
        assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
        details = raised.value.details() or ""
        assert "state store" in details and "unreachable" in details
        with EventLog.open(tmp_path / "events.db") as log:
            stored = log.event_ids()
        assert {e.event_id for e in events(customer, items, "before")} <= stored
        assert not {e.event_id for e in refused} & stored
        # An experiment change Redis cannot take is refused, not answered as done.
        with grpc.insecure_channel(server.address) as channel, pytest.raises(grpc.RpcError) as raised:
            AdminServiceStub(channel).SetExperiment(
                SetExperimentRequest(), metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),), timeout=10
            )
        assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
        wait_for("reported down", lambda: server.metric("persona_engine_state_store_available") == 0)
        assert server.metric("persona_engine_calls_without_live_state_total", method="Personalize") >= 1
        assert server.metric("persona_engine_calls_without_live_state_total", method="GetPersonaProfile") >= 1

        redis_process.start()  # same port, empty
        wait_for(
            "serving live state again",
            lambda: all(client.personalize(customer).decision.degraded_reason == "" for _ in range(4)),
        )
        wait_for("reported up", lambda: server.metric("persona_engine_state_store_available") == 1)
        retried = client.record_events(refused)  # the client's retry of the refused batch
        assert retried.accepted_events == 3 and retried.duplicate_events == 0
    with EventLog.open(tmp_path / "events.db") as log:
        assert {e.event_id for e in refused} <= log.event_ids()
    # The retried batch updated live state in the restarted (empty) Redis.
    check = redis.Redis.from_url(redis_process.url)
    try:
        assert check.exists(f"persona-engine:live:customer:{customer}") == 1
    finally:
        check.close()


def test_a_worker_that_dies_while_redis_is_down_is_replaced_and_serves(
    server: ServerProcess, redis_process: RedisProcess
) -> None:
    """A replacement worker must not need Redis to start: otherwise a crash during an outage (exit
    status 2, "cannot start with this configuration") would stop the whole server."""
    workers = server.worker_pids
    redis_process.stop()
    os.kill(workers[0], signal.SIGKILL)

    def replaced() -> bool:
        ready = read_ready_file(server.ready_path)
        return ready is not None and len(ready.worker_pids) == 2 and workers[0] not in ready.worker_pids

    wait_for("the worker replaced", replaced, timeout_s=60)
    assert server.process.poll() is None
    with PersonaEngineClient(server.address, timeout_s=10, retries=0) as client:
        reasons = {client.personalize(f"c000000{n}").decision.degraded_reason for n in range(1, 9)}
        assert reasons == {WITHOUT_LIVE_STATE}
        redis_process.start()
        wait_for(
            "every worker serving live state",
            lambda: all(client.personalize("c0000001").decision.degraded_reason == "" for _ in range(8)),
        )
