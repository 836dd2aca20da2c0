"""The StateStore of a deployment with several replicas: live state in one Redis, shared by all.

Values are Redis strings (``SET`` with ``EX`` when they expire); float counters are fields of one Redis
hash per key, added to with ``HINCRBYFLOAT`` inside a MULTI/EXEC pipeline so that all the counters of
one update land together or not at all, whichever replica sends them. Keys are prefixed (default
``persona-engine:``) so the engine can share a Redis with other applications.

``--state redis://host:port/db`` (or ``PERSONA_ENGINE_STATE``) on ``persona-engine serve`` selects it;
``memory`` (the default) keeps state in the process (``engine.live.state_store.MemoryStateStore``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from urllib.parse import urlparse

import redis

from engine.errors import PersonaEngineError
from engine.live.state_store import MemoryStateStore, StateStore, check_ttl

DEFAULT_PREFIX = "persona-engine:"
MEMORY = "memory"


class StateStoreError(PersonaEngineError, ValueError):
    """A ``--state`` setting that names no usable store; the message says what was expected."""


class RedisStateStore:
    """StateStore on a Redis server (any version with HINCRBYFLOAT: 2.6 and later)."""

    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_PREFIX) -> RedisStateStore:
        """A store for ``redis://[:password@]host:port/db``; checks the server answers before serving."""
        client = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
        try:
            client.ping()
        except redis.RedisError as error:
            raise StateStoreError(f"cannot reach the Redis state store at {_safe(url)}: {error}") from error
        return cls(client, prefix)

    def _key(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def get(self, key: str) -> bytes | None:
        value = self._client.get(self._key(key))
        return None if value is None else bytes(value)  # type: ignore[arg-type]

    def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        check_ttl(ttl_seconds)
        if ttl_seconds is None:
            self._client.set(self._key(key), value)
            return
        # Whole seconds, never 0 (EX 0 is an error): a sub-second TTL still lives one second.
        self._client.set(self._key(key), value, ex=max(1, math.ceil(ttl_seconds)))

    def add_floats(self, key: str, deltas: Mapping[str, float]) -> dict[str, float]:
        if not deltas:
            return {}
        names = list(deltas)
        with self._client.pipeline(transaction=True) as pipe:
            for name in names:
                pipe.hincrbyfloat(self._key(key), name, float(deltas[name]))
            results = pipe.execute()
        return {name: float(value) for name, value in zip(names, results, strict=True)}

    def get_floats(self, key: str) -> dict[str, float]:
        fields = self._client.hgetall(self._key(key))
        return {_text(name): float(value) for name, value in fields.items()}

    def close(self) -> None:
        self._client.close()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _safe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    return url.replace(f":{parsed.password}@", ":***@", 1)


def open_state_store(setting: str) -> StateStore:
    """The store a ``--state`` setting names: ``memory`` or a ``redis://`` / ``rediss://`` URL."""
    value = setting.strip()
    if value == MEMORY:
        return MemoryStateStore()
    scheme = urlparse(value).scheme
    if scheme in ("redis", "rediss", "unix"):
        return RedisStateStore.from_url(value)
    raise StateStoreError(f"--state must be 'memory' or a redis://host:port/db URL, got {setting!r}")
