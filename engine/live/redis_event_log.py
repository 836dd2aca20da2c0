"""One event log for a fleet of servers: Redis Streams, fsynced before every answer.

Each server host's SQLite log (``engine.live.event_log``) holds only what that host took; a fleet
behind a load balancer needs one log that every host writes and training reads. This log keeps the
same promises on a Redis server:

- Acknowledged means durable. Redis answers a write only after its append-only file has the write,
  and with ``appendfsync always`` only after that file is fsynced. ``open`` therefore refuses a Redis
  without ``appendonly yes`` and ``appendfsync always``, and one whose eviction policy could drop keys
  without an expiry (``allkeys-*``): the log's keys never expire, and nothing may evict them.
- Idempotent by event id. A batch is one Lua script, which Redis runs atomically and writes to the
  append-only file as one MULTI/EXEC block: each record is added only when its id is not yet in the
  id hash, so a batch retried after a crash or a lost answer is stored once, and a half-applied batch
  cannot be replayed from the file (Redis drops a truncated MULTI block when it loads). Events and
  outcomes have their own id spaces, as in the SQLite log.
- Positions. Every stored event gets the next number of a counter in the same script and is added to
  the stream under the id ``0-<position>``, so positions are gap-free integers in arrival order, as
  the SQLite log's rowids are; the named marks (``TRAINING_READ_MARK``) are positions in a hash,
  moved only forward by a script.
- Decisions. Each served arm is added once (keyed by decision id, type and arm, as in SQLite), to a
  hash from decision id to its arms in logging order, so an outcome's decision is one ``HGET`` away.

Keys share a prefix (``?stream=NAME`` in the URL; ``persona-engine:event-log`` by default), so the log
can live in the same Redis as the live state store. Redis failures surface as redis-py exceptions
(connection refused, timeout): the caller decides (RecordEvents answers UNAVAILABLE, and since a
batch is one script, a retry is safe whether or not the failed one ran). One consequence: when the
script ran but its answer was lost, the retry reports the batch as duplicates, so the server's live
state does not learn from it; the log holds it, and training reads it. Retention does not apply yet:
the stream keeps every event.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any, Final, Self
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

import polars as pl
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from engine.live.event_log import (
    EVENT_FRAME_SCHEMA,
    AppendResult,
    EventLogError,
    behavior_event_from_row,
    contract_events,
    event_row,
    from_micros,
    to_micros,
)
from engine.live.events import BehaviorEvent, DecisionOutcome, OutcomeKind, ServedDecision

DEFAULT_STREAM: Final = "persona-engine:event-log"
# An append waits for an fsync on the Redis host; seconds are far beyond a healthy one, and a hung
# Redis still fails the call well within a client's deadline for RecordEvents.
DEFAULT_TIMEOUT_S: Final = 5.0
DEFAULT_CONNECT_TIMEOUT_S: Final = 1.0
READ_PAGE: Final = 5_000
_NO_EVICTION: Final = ("noeviction", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl")

# KEYS: events stream, event id hash, event counter, outcomes stream, outcome id hash, outcome counter.
# ARGV: number of events, then (id, record) per event, number of outcomes, then (id, record) per outcome.
# Returns one flag per record, 1 when it was new.
_APPEND: Final = """
local flags = {}
local at = 1
local function put(stream, ids, counter, id, record)
    if redis.call('HEXISTS', ids, id) == 1 then return 0 end
    local position = redis.call('INCR', counter)
    redis.call('XADD', stream, '0-' .. position, 'r', record)
    redis.call('HSET', ids, id, position)
    return 1
end
for part = 0, 1 do
    local count = tonumber(ARGV[at])
    at = at + 1
    local base = 3 * part
    for _ = 1, count do
        flags[#flags + 1] = put(KEYS[base + 1], KEYS[base + 2], KEYS[base + 3], ARGV[at], ARGV[at + 1])
        at = at + 2
    end
end
return flags
"""

# KEYS: arm key set (hash), decisions (hash decision id -> arms, one JSON record a line).
# ARGV: (arm key, decision id, record) per arm. Returns how many arms were new.
_LOG_DECISIONS: Final = """
local added = 0
for at = 1, #ARGV, 3 do
    if redis.call('HSETNX', KEYS[1], ARGV[at], 1) == 1 then
        local arms = redis.call('HGET', KEYS[2], ARGV[at + 1])
        if arms then arms = arms .. '\\n' .. ARGV[at + 2] else arms = ARGV[at + 2] end
        redis.call('HSET', KEYS[2], ARGV[at + 1], arms)
        added = added + 1
    end
end
return added
"""

# KEYS: marks hash. ARGV: name, position. Keeps the larger of the stored and the given position.
_SET_MARK: Final = """
local stored = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > stored then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
"""


def split_log_url(url: str) -> tuple[str, str]:
    """``redis://host:port/db?stream=NAME`` -> (the URL redis-py connects to, the key prefix NAME)."""
    parsed = urlparse(url)
    query = parse_qs(parsed.query, keep_blank_values=True)
    streams = query.pop("stream", [DEFAULT_STREAM])
    if len(streams) != 1 or not streams[0].strip():
        raise EventLogError(f"event log {redacted(url)}: ?stream= must name the log's keys once")
    connect = urlunparse(parsed._replace(query=urlencode(query, doseq=True)))
    return connect, streams[0]


def redacted(url: str) -> str:
    """The URL without a password, for messages and logs."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.rsplit("@", 1)[1]
    user = f"{parsed.username}:***@" if parsed.username else ":***@"
    return urlunparse(parsed._replace(netloc=user + netloc))


class RedisEventLog:
    """A connection pool to the shared log; safe to share between threads (redis-py's pool is)."""

    def __init__(self, url: str, client: redis.Redis, stream: str) -> None:
        self._url = url
        self._client = client
        self.stream = stream
        self._events = f"{stream}:events"
        self._event_ids = f"{stream}:event-ids"
        self._event_counter = f"{stream}:event-position"
        self._outcomes = f"{stream}:outcomes"
        self._outcome_ids = f"{stream}:outcome-ids"
        self._outcome_counter = f"{stream}:outcome-position"
        self._arms = f"{stream}:decision-arms"
        self._decisions = f"{stream}:decisions"
        self._marks = f"{stream}:marks"
        self._append = client.register_script(_APPEND)
        self._log_decisions = client.register_script(_LOG_DECISIONS)
        self._set_mark = client.register_script(_SET_MARK)

    @property
    def path(self) -> str:
        return redacted(self._url)

    @classmethod
    def open(cls, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> RedisEventLog:
        """Connect and check that Redis keeps what it acknowledges; ``EventLogError`` says what to fix."""
        connect, stream = split_log_url(url)
        query = parse_qs(urlparse(connect).query)
        options: dict[str, Any] = {
            # One immediate retry on a dropped connection: safe, since an append is idempotent.
            "retry": Retry(NoBackoff(), 1),
        }
        if "socket_timeout" not in query:
            options["socket_timeout"] = timeout_s
        if "socket_connect_timeout" not in query:
            options["socket_connect_timeout"] = DEFAULT_CONNECT_TIMEOUT_S
        name = redacted(url)
        try:
            client = redis.Redis.from_url(connect, **options)
        except (ValueError, TypeError) as error:
            raise EventLogError(f"event log {name}: not a usable Redis URL ({error})") from None
        try:
            check_durable(client, name)
        except redis.RedisError as error:
            client.close()
            raise EventLogError(f"event log {name}: cannot reach Redis ({error})") from None
        except EventLogError:
            client.close()
            raise
        return cls(url, client, stream)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    def append(
        self, events: Sequence[BehaviorEvent], outcomes: Sequence[DecisionOutcome] = ()
    ) -> AppendResult:
        """Store a batch in one script (all of it or none); returns the records that were new."""
        if not events and not outcomes:
            return AppendResult((), (), 0, 0)
        received = to_micros(dt.datetime.now(dt.UTC))
        arguments: list[str | int] = [len(events)]
        for event in events:
            arguments += [event.event_id, _event_record(event, received)]
        arguments.append(len(outcomes))
        for outcome in outcomes:
            arguments += [outcome.event_id, _outcome_record(outcome, received)]
        keys = [
            self._events,
            self._event_ids,
            self._event_counter,
            self._outcomes,
            self._outcome_ids,
            self._outcome_counter,
        ]
        flags = [int(flag) for flag in self._append(keys=keys, args=arguments)]
        new_events = tuple(e for e, flag in zip(events, flags[: len(events)], strict=True) if flag)
        new_outcomes = tuple(o for o, flag in zip(outcomes, flags[len(events) :], strict=True) if flag)
        return AppendResult(
            new_events,
            new_outcomes,
            duplicate_events=len(events) - len(new_events),
            duplicate_outcomes=len(outcomes) - len(new_outcomes),
        )

    def log_decisions(self, decisions: Sequence[ServedDecision]) -> int:
        """Store served arms (an arm already logged keeps its first record); returns how many were new."""
        if not decisions:
            return 0
        arguments: list[str] = []
        for decision in decisions:
            arm_key = "\x1f".join((decision.decision_id, decision.decision_type, decision.arm_id))
            arguments += [arm_key, decision.decision_id, _decision_record(decision)]
        return int(self._log_decisions(keys=[self._arms, self._decisions], args=arguments))

    # ------------------------------------------------------------------ reading

    def decision(self, decision_id: str) -> tuple[ServedDecision, ...]:
        arms = self._client.hget(self._decisions, decision_id)
        if arms is None:
            return ()
        return tuple(_served_decision(json.loads(line)) for line in _text(arms).split("\n"))

    def served_decisions(self) -> list[ServedDecision]:
        """Every logged arm in the order served (by timestamp)."""
        served: list[ServedDecision] = []
        for _, arms in self._client.hscan_iter(self._decisions, count=1_000):
            served.extend(_served_decision(json.loads(line)) for line in _text(arms).split("\n"))
        return sorted(served, key=lambda d: d.timestamp)

    def last_event_rowid(self) -> int:
        return int(self._client.get(self._event_counter) or 0)

    def _entries(self, stream: str, after: int, through: int, page: int) -> Iterator[tuple[int, list[Any]]]:
        """Records at positions in (after, through], a page at a time, with the page's last position."""
        start = after
        while start < through:
            entries = self._client.xrange(stream, f"(0-{start}", f"0-{through}", count=page)
            if not entries:
                return
            start = int(_text(entries[-1][0]).split("-")[1])
            yield start, [json.loads(_text((fields or {})[b"r"])) for _, fields in entries]

    def behavior_event_pages(
        self, after_rowid: int, through_rowid: int, since: dt.datetime | None = None, page: int = 5_000
    ) -> Iterator[tuple[int, list[BehaviorEvent]]]:
        floor = -(2**63) if since is None else to_micros(since)
        for position, records in self._entries(self._events, after_rowid, through_rowid, page):
            events = [behavior_event_from_row(r) for r in records if r[4] >= floor]
            if events:
                yield position, events

    def behavior_events(self, since: dt.datetime | None = None) -> list[BehaviorEvent]:
        through = self.last_event_rowid()
        return [e for _, page in self.behavior_event_pages(0, through, since, READ_PAGE) for e in page]

    def outcomes(self, since: dt.datetime | None = None) -> list[DecisionOutcome]:
        floor = -(2**63) if since is None else to_micros(since)
        through = int(self._client.get(self._outcome_counter) or 0)
        return [
            _decision_outcome(record)
            for _, records in self._entries(self._outcomes, 0, through, READ_PAGE)
            for record in records
            if record[4] >= floor
        ]

    def events_frame(self, through_rowid: int | None = None) -> pl.DataFrame:
        through = self.last_event_rowid() if through_rowid is None else int(through_rowid)
        rows = [
            tuple(r[:9]) for _, records in self._entries(self._events, 0, through, READ_PAGE) for r in records
        ]
        return contract_events(pl.DataFrame(rows, schema=EVENT_FRAME_SCHEMA, orient="row"))

    def mark(self, name: str) -> int:
        return int(self._client.hget(self._marks, name) or 0)

    def set_mark(self, name: str, value: int) -> None:
        self._set_mark(keys=[self._marks], args=[name, int(value)])

    def counts(self) -> dict[str, int]:
        return {
            "events": int(self._client.hlen(self._event_ids)),
            "outcomes": int(self._client.hlen(self._outcome_ids)),
            "decisions": int(self._client.hlen(self._arms)),
        }

    def has_record(self, kind: str, record_id: str) -> bool:
        ids = {"event": self._event_ids, "outcome": self._outcome_ids}[kind]
        return bool(self._client.hexists(ids, record_id))

    def event_ids(self) -> set[str]:
        return {_text(key) for key in self._client.hkeys(self._event_ids)}


def check_durable(client: redis.Redis, name: str) -> None:
    """Raise ``EventLogError`` unless Redis fsyncs every write and never evicts the log's keys."""
    try:
        settings = {
            key: str(client.config_get(key).get(key, ""))
            for key in ("appendonly", "appendfsync", "maxmemory-policy")
        }
    except redis.ResponseError as error:  # CONFIG renamed or forbidden, as some managed services do
        raise EventLogError(
            f"event log {name}: cannot read the Redis configuration to check durability ({error}); "
            "the shared log needs CONFIG GET allowed"
        ) from None
    if settings["appendonly"] != "yes" or settings["appendfsync"] != "always":
        raise EventLogError(
            f"event log {name}: Redis has appendonly {settings['appendonly']!r} and appendfsync "
            f"{settings['appendfsync']!r}; an acknowledged event must be on disk before the answer, so "
            "the shared log needs 'appendonly yes' and 'appendfsync always' (redis.conf, or "
            "redis-server --appendonly yes --appendfsync always)"
        )
    if settings["maxmemory-policy"] not in _NO_EVICTION:
        raise EventLogError(
            f"event log {name}: Redis has maxmemory-policy {settings['maxmemory-policy']!r}, which can "
            "evict the log's keys; use noeviction (or a volatile-* policy)"
        )


def _text(value: object) -> str:
    """A reply as text (the client answers bytes; redis-py's types allow str too)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# Records are JSON arrays in the SQLite log's column order, timestamps in UTC microseconds.


def _event_record(event: BehaviorEvent, received: int) -> str:
    return json.dumps(event_row(event, received), separators=(",", ":"))


def _outcome_record(outcome: DecisionOutcome, received: int) -> str:
    return json.dumps(
        [
            outcome.event_id,
            outcome.decision_id,
            outcome.customer_id,
            outcome.kind.value,
            to_micros(outcome.timestamp),
            outcome.arm_id,
            float(outcome.revenue),
            received,
        ],
        separators=(",", ":"),
    )


def _decision_outcome(record: list[Any]) -> DecisionOutcome:
    return DecisionOutcome(
        event_id=record[0],
        decision_id=record[1],
        customer_id=record[2],
        kind=OutcomeKind(record[3]),
        timestamp=from_micros(record[4]),
        arm_id=record[5],
        revenue=record[6],
    )


def _decision_record(decision: ServedDecision) -> str:
    return json.dumps(
        [
            decision.decision_id,
            decision.decision_type,
            decision.arm_id,
            decision.customer_id,
            to_micros(decision.timestamp),
            decision.context,
            float(decision.propensity),
            dict(decision.persona_mix),
            decision.journey_stage,
            decision.experiment_arm,
            decision.model_version,
            int(time.time() * 1_000_000),
        ],
        separators=(",", ":"),
    )


def _served_decision(record: list[Any]) -> ServedDecision:
    return ServedDecision(
        decision_id=record[0],
        decision_type=record[1],
        arm_id=record[2],
        customer_id=record[3],
        timestamp=from_micros(record[4]),
        context=record[5],
        propensity=record[6],
        persona_mix=tuple((str(p), float(w)) for p, w in record[7].items()),
        journey_stage=record[8],
        experiment_arm=record[9],
        model_version=record[10],
    )
