"""Where live state (customer sessions, bandit statistics) is kept, behind one small interface.

One serving process keeps it in memory; several replicas share it through Redis
(serving/redis_state_store.py), so that all replicas agree on a customer's session and on what the
bandits have learned. The operations are the few that both backends can do atomically: whole values
by key, and float counters added to in place (Redis ``HINCRBYFLOAT``), which is all that sufficient
statistics of a bandit need.

A network store can become unreachable. The contract for that case: a store that cannot reach its
backend answers reads as if the key were missing and drops writes (so serving goes on from the
artifact alone, without live state) and says so through ``available``; whoever must not lose a write
(RecordEvents, SetExperiment) checks first and refuses with ``StateStoreUnavailableError``. The
in-memory store is always available.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Final, Protocol

from engine.errors import PersonaEngineError

# Values one in-memory store keeps at most (decision memories, customer sessions): beyond it the
# least recently written go first. A serving process writes up to two decision memories per page,
# so without a bound its memory would grow with traffic for days before the first TTL frees any.
DEFAULT_MAX_VALUES: Final = 1_000_000


def check_ttl(ttl_seconds: float | None) -> None:
    """Refuse a TTL no backend can honour; every store applies the same rule."""
    if ttl_seconds is not None and not (math.isfinite(ttl_seconds) and ttl_seconds > 0):
        raise ValueError(f"ttl_seconds must be a positive number, got {ttl_seconds!r}")


class StateStoreUnavailableError(PersonaEngineError, ConnectionError):
    """The state store cannot be reached now; nothing was stored, so a retry once it answers is safe."""


class StateStore(Protocol):
    """Key-value state shared by everything that serves one deployment."""

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None: ...

    def add_floats(self, key: str, deltas: Mapping[str, float]) -> dict[str, float]:
        """Adds ``deltas`` to the named counters of ``key`` atomically; returns their new values."""
        ...

    def get_floats(self, key: str) -> dict[str, float]: ...

    @property
    def available(self) -> bool:
        """Whether the store can be reached now; when not, reads miss and writes are dropped."""
        ...


class MemoryStateStore:
    """The single-process store: a dict under a lock (gRPC handlers run on several threads).

    Values honour their TTL as Redis does (an expired value reads as missing and is dropped as later
    writes arrive), and the store holds at most ``max_values`` of them, dropping the least recently
    written first: a bandit then forgets the oldest decisions it was waiting on outcomes for, and the
    journey tracker the customers idle the longest, which is the least costly state to lose.
    Counters (bandit statistics, a few per persona and arm) are never dropped. Deployments that must
    remember more share a Redis store.
    """

    def __init__(
        self, *, max_values: int = DEFAULT_MAX_VALUES, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_values < 1:
            raise ValueError(f"max_values must be at least 1, got {max_values}")
        self.max_values = max_values
        self._clock = clock
        # key -> (value, expiry on the clock or None), least recently written first
        self._values: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        # (expiry, key) of values written with a TTL, soonest first. Entries of values rewritten or
        # dropped since are skipped when they come up; the heap is rebuilt when too many pile up.
        self._expiries: list[tuple[float, str]] = []
        self._counters: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        """Always: the state is in this process (see the module doc for stores that can fail)."""
        return True

    def value_count(self) -> int:
        """Values held, counting expired ones not dropped yet. (Not ``__len__``: an empty store must
        stay truthy for ``store or MemoryStateStore()``.)"""
        with self._lock:
            return len(self._values)

    def get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._values.get(key)
            if entry is None:
                return None
            value, expires = entry
            if expires is not None and expires <= self._clock():
                del self._values[key]
                return None
            return value

    def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        check_ttl(ttl_seconds)
        with self._lock:
            now = self._clock()
            expires = None if ttl_seconds is None else now + ttl_seconds
            self._values[key] = (value, expires)
            self._values.move_to_end(key)
            if expires is not None:
                heapq.heappush(self._expiries, (expires, key))
            while self._expiries and self._expiries[0][0] <= now:
                due, expired = heapq.heappop(self._expiries)
                entry = self._values.get(expired)
                if entry is not None and entry[1] == due:
                    del self._values[expired]
            while len(self._values) > self.max_values:
                self._values.popitem(last=False)
            if len(self._expiries) > 2 * len(self._values) + 64:
                self._expiries = [(e, k) for k, (_, e) in self._values.items() if e is not None]
                heapq.heapify(self._expiries)

    def add_floats(self, key: str, deltas: Mapping[str, float]) -> dict[str, float]:
        with self._lock:
            counters = self._counters.setdefault(key, {})
            for name, delta in deltas.items():
                counters[name] = counters.get(name, 0.0) + float(delta)
            return {name: counters[name] for name in deltas}

    def get_floats(self, key: str) -> dict[str, float]:
        with self._lock:
            return dict(self._counters.get(key, {}))
