"""The StateStore contract, run against both backends: in-process memory and a real Redis server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.live.state_store import MemoryStateStore, StateStore
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


@pytest.mark.parametrize("ttl", [0.0, -1.0, float("nan"), float("inf")])
def test_a_ttl_that_is_not_a_positive_number_is_refused(store: StateStore, ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        store.set("k", b"v", ttl_seconds=ttl)
    assert store.get("k") is None


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_values_expire_after_their_ttl_and_expired_ones_are_dropped() -> None:
    clock = _Clock()
    store = MemoryStateStore(clock=clock)
    store.set("decision", b"d", ttl_seconds=10)
    store.set("forever", b"f")
    clock.now += 9.9
    assert store.get("decision") == b"d"
    clock.now += 0.2
    assert store.get("decision") is None
    assert store.get("forever") == b"f"
    for i in range(5):
        store.set(f"short{i}", b"s", ttl_seconds=1)
    clock.now += 2
    store.set("new", b"n", ttl_seconds=1)  # expired values are dropped as new ones arrive
    assert store.value_count() == 2  # "forever" and "new"
    for _ in range(200):  # rewriting one key many times leaves no pile of stale expiries behind
        store.set("busy", b"b", ttl_seconds=1000)
    assert len(store._expiries) <= 2 * store.value_count() + 64
    assert [store.get(f"short{i}") for i in range(5)] == [None] * 5


def test_memory_store_keeps_the_most_recently_written_values_within_its_bound() -> None:
    store = MemoryStateStore(max_values=3)
    for key in ("a", "b", "c"):
        store.set(key, key.encode())
    store.set("a", b"a2")  # rewriting makes "a" the newest
    store.set("d", b"d")
    assert store.value_count() == 3
    assert [store.get(k) for k in ("a", "b", "c", "d")] == [b"a2", None, b"c", b"d"]
    store.add_floats("arm", {"alpha": 1.0})
    for i in range(10):
        store.set(f"k{i}", b"x")
    assert store.get_floats("arm") == {"alpha": 1.0}  # statistics are never dropped
    with pytest.raises(ValueError, match="max_values"):
        MemoryStateStore(max_values=0)


@settings(max_examples=50, deadline=None)
@given(
    bound=st.integers(1, 5),
    writes=st.lists(st.tuples(st.sampled_from("abcdefg"), st.binary(max_size=3)), max_size=30),
)
def test_memory_store_matches_a_bounded_last_writes_model(
    bound: int, writes: list[tuple[str, bytes]]
) -> None:
    store = MemoryStateStore(max_values=bound)
    model: dict[str, bytes] = {}
    for key, value in writes:
        store.set(key, value)
        model.pop(key, None)
        model[key] = value
        while len(model) > bound:
            del model[next(iter(model))]
    assert store.value_count() == len(model)
    for key in "abcdefg":
        assert store.get(key) == model.get(key)


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
