"""The StateStore of a deployment with several replicas: live state in one Redis, shared by all.

Values are Redis strings (``SET`` with ``EX`` when they expire); float counters are fields of one Redis
hash per key, added to with ``HINCRBYFLOAT`` inside a MULTI/EXEC pipeline so that all the counters of
one update land together or not at all, whichever replica sends them. Keys are prefixed (default
``persona-engine:``) so the engine can share a Redis with other applications.

``--state redis://host:port/db`` (or ``PERSONA_ENGINE_STATE``) on ``persona-engine serve`` selects it;
``memory`` (the default) keeps state in the process (``engine.live.state_store.MemoryStateStore``).
The server must reach Redis when it starts (a wrong URL is a configuration error, exit status 2); a
worker that replaces one that died need not (``must_answer``): it starts without live state, as its
peers serve while Redis is away.

When Redis goes away later, serving goes on without live state (the StateStore contract,
``engine.live.state_store``) and comes back by itself:

- every command has short socket timeouts (``DEFAULT_TIMEOUT_S``; ``?socket_timeout=`` in the URL
  overrides them) and at most one immediate reconnect, never redis-py's default of ten retries with
  backoff, so a page render never waits long on a dead or hung Redis;
- the first command that cannot reach Redis marks the store unavailable: from then on reads answer
  "missing" and writes are dropped at once, without touching the network, and each call that was
  answered so is marked on its ``LiveStateUse`` (``tracking_live_state``) so the server can say so in
  the response and count it;
- a monitor thread pings Redis every ``HEARTBEAT_S`` (so an idle server notices an outage too), and
  while it does not answer, with a bounded exponential backoff (``PROBE_FIRST_S`` doubling to
  ``PROBE_MAX_S``), marking the store available again when it does; listeners (the server's metrics)
  are told of each change. Pooled connections are dropped on the way down, so none from before the
  outage is reused after it.

Live state written during an outage is lost (a Redis restarted without persistence has lost
everything before it too); sessions and bandit statistics then rebuild from new traffic. The event
log, which is what training reads, is not affected: RecordEvents refuses batches while the store is
unreachable (``check_reachable``), so no acknowledged event misses its live-state update other than
those of calls in flight at the moment Redis went away.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar
from urllib.parse import parse_qs, urlparse

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from engine.errors import PersonaEngineError
from engine.live.state_store import MemoryStateStore, StateStore, StateStoreUnavailableError, check_ttl

DEFAULT_PREFIX: Final = "persona-engine:"
MEMORY: Final = "memory"
# Connect and read timeout of each command. Redis answers in well under a millisecond on a LAN; a
# quarter second is far beyond a healthy answer and still short next to a page render's deadline.
DEFAULT_TIMEOUT_S: Final = 0.25
# The store checks whether Redis is back after PROBE_FIRST_S, then at doubling intervals up to
# PROBE_MAX_S: an outage of any length ends for the server at most PROBE_MAX_S after Redis returns.
PROBE_FIRST_S: Final = 0.1
PROBE_MAX_S: Final = 2.0
# While Redis answers, it is pinged this often, so that even an idle server notices an outage (and
# reports it) before a call has to.
HEARTBEAT_S: Final = 1.0

LOGGER = logging.getLogger("persona_engine.state")
_T = TypeVar("_T")
# Errors that mean "Redis cannot be reached" (refused, reset, timed out, loading its data set), as
# opposed to a bad command, which is a bug and raises (redis-py raises those as ResponseError or
# DataError). ValueError belongs here too: when one thread sees the outage and drops the pooled
# connections, a thread reading from one of them gets "I/O operation on closed file" from redis-py's
# socket buffer (a clean checkout's suite caught a reader thread dying of it).
_UNREACHABLE: Final = (redis.ConnectionError, redis.TimeoutError, OSError, ValueError)


class StateStoreError(PersonaEngineError, ValueError):
    """A ``--state`` setting that names no usable store; the message says what was expected."""


@dataclass
class LiveStateUse:
    """What one call's state store operations did: ``missed`` counts those answered without Redis."""

    missed: int = 0

    @property
    def complete(self) -> bool:
        return self.missed == 0


_CURRENT_USE: contextvars.ContextVar[LiveStateUse | None] = contextvars.ContextVar(
    "persona_engine_live_state_use", default=None
)


@contextlib.contextmanager
def tracking_live_state() -> Iterator[LiveStateUse]:
    """Mark the store operations done within the block (and in threads started from it with a copy of
    its context, as ``EngineCalls.run`` and ``asyncio.to_thread`` do) on the yielded record."""
    use = LiveStateUse()
    token = _CURRENT_USE.set(use)
    try:
        yield use
    finally:
        _CURRENT_USE.reset(token)


def _missed() -> None:
    use = _CURRENT_USE.get()
    if use is not None:
        use.missed += 1


class RedisStateStore:
    """StateStore on a Redis server (any version with HINCRBYFLOAT: 2.6 and later); see the module doc
    for what happens while Redis cannot be reached."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = DEFAULT_PREFIX,
        *,
        where: str = "redis",
        probe_first_s: float = PROBE_FIRST_S,
        probe_max_s: float = PROBE_MAX_S,
        heartbeat_s: float = HEARTBEAT_S,
        available: bool = True,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self.where = where  # the URL without its password, for messages
        self._probe_first_s = probe_first_s
        self._probe_max_s = probe_max_s
        self._heartbeat_s = heartbeat_s
        self._lock = threading.Lock()
        self._available = available
        self._down_since = time.monotonic()
        self._listeners: list[Callable[[bool], None]] = []
        self._closed = threading.Event()
        self._wake = threading.Event()  # set when a call finds Redis gone: probe now
        self.outages = 0 if available else 1  # times the store became unavailable
        if not available:
            self._wake.set()  # look for Redis at once
        threading.Thread(target=self._monitor, name="persona-state-monitor", daemon=True).start()

    @classmethod
    def from_url(
        cls,
        url: str,
        prefix: str = DEFAULT_PREFIX,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        must_answer: bool = True,
    ) -> RedisStateStore:
        """A store for ``redis://[:password@]host:port/db``; checks the server answers before serving.

        With ``must_answer`` False a Redis that cannot be reached only starts the store unavailable
        (it keeps looking for it): for a worker replacing one that died while the deployment, which
        did reach Redis when it started, serves on without it. Other errors (a refused password, a
        URL redis-py cannot parse) raise ``StateStoreError`` either way.
        """
        query = parse_qs(urlparse(url).query)
        options: dict[str, object] = {
            # One immediate reconnect for a connection that went stale (Redis restarted), no more.
            "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        }
        if "socket_timeout" not in query:
            options["socket_timeout"] = timeout_s
        if "socket_connect_timeout" not in query:
            options["socket_connect_timeout"] = timeout_s
        try:
            client = redis.Redis.from_url(url, **options)
            client.ping()
        except _UNREACHABLE as error:
            if must_answer or isinstance(error, redis.AuthenticationError):
                raise StateStoreError(
                    f"cannot reach the Redis state store at {_safe(url)}: {error}"
                ) from error
            LOGGER.warning(
                "state store (Redis at %s) unreachable at start: %s; serving without live state until it "
                "answers",
                _safe(url),
                error,
            )
            return cls(client, prefix, where=_safe(url), available=False)
        except (redis.RedisError, ValueError) as error:
            raise StateStoreError(f"cannot use the Redis state store at {_safe(url)}: {error}") from error
        return cls(client, prefix, where=_safe(url))

    # ------------------------------------------------------------------ availability

    @property
    def available(self) -> bool:
        return self._available

    def add_listener(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(available)`` on every change (from the thread that saw it)."""
        with self._lock:
            self._listeners.append(listener)

    def check_reachable(self) -> None:
        """Raise ``StateStoreUnavailableError`` unless Redis answers a PING now (one round trip).

        For callers that must not have their writes dropped: checked before they commit to anything.
        """
        if self._available:
            try:
                self._client.ping()
                return
            except _UNREACHABLE as error:
                self._lost(error)
        raise StateStoreUnavailableError(
            f"the state store (Redis at {self.where}) is unreachable; nothing was stored, retry later"
        )

    def _lost(self, error: BaseException) -> None:
        """Mark the store unavailable (once per outage), drop pooled connections, wake the monitor."""
        with self._lock:
            if not self._available or self._closed.is_set():
                return
            self._available = False
            self._down_since = time.monotonic()
            self.outages += 1
            listeners = list(self._listeners)
        LOGGER.warning(
            "state store (Redis at %s) unreachable: %s; serving without live state until it answers",
            self.where,
            error,
        )
        with contextlib.suppress(Exception):
            self._client.connection_pool.disconnect()
        self._wake.set()
        _notify(listeners, False)

    def _back(self) -> None:
        with self._lock:
            if self._available:
                return
            self._available = True
            listeners = list(self._listeners)
            down_s = time.monotonic() - self._down_since
        LOGGER.warning(
            "state store (Redis at %s) reachable again after %.1fs; live state is back", self.where, down_s
        )
        _notify(listeners, True)

    def _monitor(self) -> None:
        """PING every ``heartbeat_s`` while available (an idle server notices an outage too), and with
        a bounded exponential backoff while not, until Redis answers again."""
        delay = self._heartbeat_s
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            if self._closed.is_set():
                return
            try:
                self._client.ping()
            except _UNREACHABLE as error:
                was_available = self._available
                self._lost(error)
                delay = self._probe_first_s if was_available else min(delay * 2, self._probe_max_s)
                continue
            except redis.RedisError as error:  # answers, but refuses (e.g. auth changed): still unusable
                LOGGER.warning("state store (Redis at %s) answers with an error: %s", self.where, error)
                delay = self._probe_max_s
                continue
            self._back()
            delay = self._heartbeat_s

    def _run(self, operation: Callable[[], _T], fallback: Callable[[], _T]) -> _T:
        """``operation()``, or ``fallback()`` (marked missed on the call) when Redis cannot be reached."""
        if self._available:
            try:
                return operation()
            except _UNREACHABLE as error:
                self._lost(error)
        _missed()
        return fallback()

    # ------------------------------------------------------------------ StateStore

    def _key(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def get(self, key: str) -> bytes | None:
        def read() -> bytes | None:
            value = self._client.get(self._key(key))
            return None if value is None else bytes(value)  # type: ignore[arg-type]

        return self._run(read, lambda: None)

    def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        check_ttl(ttl_seconds)

        def write() -> None:
            if ttl_seconds is None:
                self._client.set(self._key(key), value)
                return
            # Whole seconds, never 0 (EX 0 is an error): a sub-second TTL still lives one second.
            self._client.set(self._key(key), value, ex=max(1, math.ceil(ttl_seconds)))

        self._run(write, lambda: None)

    def add_floats(self, key: str, deltas: Mapping[str, float]) -> dict[str, float]:
        """Unreachable, the deltas are dropped and returned as the new values (counters from zero)."""
        if not deltas:
            return {}
        names = list(deltas)

        def add() -> dict[str, float]:
            with self._client.pipeline(transaction=True) as pipe:
                for name in names:
                    pipe.hincrbyfloat(self._key(key), name, float(deltas[name]))
                results = pipe.execute()
            return {name: float(value) for name, value in zip(names, results, strict=True)}

        return self._run(add, lambda: {name: float(deltas[name]) for name in names})

    def get_floats(self, key: str) -> dict[str, float]:
        def read() -> dict[str, float]:
            fields = self._client.hgetall(self._key(key))
            return {_text(name): float(value) for name, value in fields.items()}

        return self._run(read, dict)

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        self._client.close()


def _notify(listeners: list[Callable[[bool], None]], available: bool) -> None:
    for listener in listeners:
        try:
            listener(available)
        except Exception:  # a metrics hook must not break the store
            LOGGER.exception("state store listener %r failed", listener)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _safe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    return url.replace(f":{parsed.password}@", ":***@", 1)


def open_state_store(setting: str, *, must_answer: bool = True) -> StateStore:
    """The store a ``--state`` setting names: ``memory`` or a ``redis://`` / ``rediss://`` URL
    (``must_answer``: see ``RedisStateStore.from_url``)."""
    value = setting.strip()
    if value == MEMORY:
        return MemoryStateStore()
    scheme = urlparse(value).scheme
    if scheme in ("redis", "rediss", "unix"):
        return RedisStateStore.from_url(value, must_answer=must_answer)
    raise StateStoreError(f"--state must be 'memory' or a redis://host:port/db URL, got {setting!r}")
