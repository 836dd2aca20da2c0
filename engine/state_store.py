"""Where live state (customer sessions, bandit statistics) is kept, behind one small interface.

One serving process keeps it in memory; several replicas share it through Redis
(serving/redis_state_store.py), so that all replicas agree on a customer's session and on what the
bandits have learned. The operations are the few that both backends can do atomically: whole values
by key, and float counters added to in place (Redis ``HINCRBYFLOAT``), which is all that sufficient
statistics of a bandit need.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Protocol


class StateStore(Protocol):
    """Key-value state shared by everything that serves one deployment."""

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None: ...

    def add_floats(self, key: str, deltas: Mapping[str, float]) -> dict[str, float]:
        """Adds ``deltas`` to the named counters of ``key`` atomically; returns their new values."""
        ...

    def get_floats(self, key: str) -> dict[str, float]: ...


class MemoryStateStore:
    """The single-process store: a dict under a lock (gRPC handlers run on several threads)."""

    def __init__(self) -> None:
        self._values: dict[str, bytes] = {}
        self._counters: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._values.get(key)

    def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        # Expiry only bounds memory in Redis; one process's sessions die with it anyway.
        with self._lock:
            self._values[key] = value

    def add_floats(self, key: str, deltas: Mapping[str, float]) -> dict[str, float]:
        with self._lock:
            counters = self._counters.setdefault(key, {})
            for name, delta in deltas.items():
                counters[name] = counters.get(name, 0.0) + float(delta)
            return {name: counters[name] for name in deltas}

    def get_floats(self, key: str) -> dict[str, float]:
        with self._lock:
            return dict(self._counters.get(key, {}))
