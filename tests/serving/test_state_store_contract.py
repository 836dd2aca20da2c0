"""The StateStore contract, run against both backends: in-process memory and a real Redis server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.state_store import MemoryStateStore, StateStore
from serving.redis_state_store import RedisStateStore, StateStoreError, open_state_store
from tests.serving.redis_server import running_redis


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[StateStore]:
    if request.param == "memory":
        yield MemoryStateStore()
        return
    url = request.getfixturevalue("redis_url")
    # A fresh prefix per test keeps tests apart on the one server.
    backend = RedisStateStore.from_url(url, prefix=f"test-{time.monotonic_ns()}:")
    yield backend
    backend.close()


def test_values_round_trip_and_missing_keys_are_none(store: StateStore) -> None:
    assert store.get("absent") is None
    store.set("k", b"\x00binary\xffvalue")
    assert store.get("k") == b"\x00binary\xffvalue"
    store.set("k", b"replaced", ttl_seconds=60)
    assert store.get("k") == b"replaced"


def test_counters_add_up_and_report_their_new_values(store: StateStore) -> None:
    assert store.get_floats("arm") == {}
    assert store.add_floats("arm", {"alpha": 1.5, "beta": 2.0}) == {"alpha": 1.5, "beta": 2.0}
    assert store.add_floats("arm", {"alpha": -0.5}) == {"alpha": 1.0}
    assert store.get_floats("arm") == {"alpha": 1.0, "beta": 2.0}
    assert store.add_floats("arm", {}) == {}


def test_concurrent_additions_are_not_lost(store: StateStore) -> None:
    def add() -> None:
        for _ in range(50):
            store.add_floats("shared", {"n": 1.0, "half": 0.5})

    threads = [threading.Thread(target=add) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get_floats("shared") == {"n": 200.0, "half": 100.0}


@settings(max_examples=25, deadline=None)
@given(deltas=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=6))
def test_counter_sums_match_float_addition(deltas: list[float]) -> None:
    store = MemoryStateStore()
    for delta in deltas:
        store.add_floats("c", {"x": delta})
    assert store.get_floats("c")["x"] == pytest.approx(sum(deltas), abs=1e-6)


def test_redis_values_expire_after_their_ttl(redis_url: str) -> None:
    store = RedisStateStore.from_url(redis_url, prefix="ttl:")
    store.set("short", b"v", ttl_seconds=0.2)  # rounded up to Redis's one second
    assert store.get("short") == b"v"
    time.sleep(1.3)
    assert store.get("short") is None


def test_two_clients_share_one_redis(redis_url: str) -> None:
    first, second = (
        RedisStateStore.from_url(redis_url, prefix="shared:"),
        RedisStateStore.from_url(redis_url, prefix="shared:"),
    )
    first.set("session", b"state")
    first.add_floats("bandit", {"alpha": 2.0})
    assert second.get("session") == b"state"
    assert second.add_floats("bandit", {"alpha": 1.0}) == {"alpha": 3.0}


def test_the_state_setting_names_a_backend_or_says_what_is_expected(redis_url: str) -> None:
    assert isinstance(open_state_store("memory"), MemoryStateStore)
    assert isinstance(open_state_store(redis_url), RedisStateStore)
    with pytest.raises(StateStoreError, match="redis://host:port/db"):
        open_state_store("postgres://x")
    with pytest.raises(StateStoreError, match="cannot reach"):
        open_state_store("redis://127.0.0.1:1/0")
