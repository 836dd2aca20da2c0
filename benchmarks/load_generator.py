"""The gRPC load generator of the serving benchmark: a separate interpreter driven over stdin/stdout.

It runs in its own process so that its CPU time, garbage collection and event loop never share an
interpreter lock with whatever it measures; the benchmark (``benchmarks.serving_latency``) starts it,
sends one JSON command per line on stdin and reads one JSON event per line from stdout:

- ``{"command": "connect", "target": "127.0.0.1:PORT", "channels": 8, "server_pids": [...]}`` opens
  the channels (one TCP connection each) -> ``{"event": "connected", ...}``;
- ``{"command": "phase", ...}`` (fields of ``PhaseSpec``) runs the warm-up, answers
  ``{"event": "warm"}``, waits for ``{"command": "go"}`` (the benchmark scrapes the server's metrics in
  between), runs the measured phase and answers ``{"event": "result", ...}`` (fields of
  ``PhaseResult``);
- ``{"command": "quit"}``, or end of input, or no command for ``IDLE_EXIT_S``, ends the process.

Requests are pre-serialized protobuf messages read from a file and sent as raw bytes, and responses
are not parsed: the generator spends its CPU on sending and timing, not on protobuf, so it can keep up
with a server on the same two cores. (The benchmark checks the responses' contents with the typed
client before any load phase.)

Two loops:

- closed: ``concurrency`` callers each send their next request as soon as the previous one returns;
  throughput is what the server sustains, latency includes the queueing the callers cause.
- open: requests are sent at scheduled times (Poisson or fixed-interval arrivals at ``rate`` per
  second) whatever the server does, and each latency is measured from the *scheduled* send time, so
  a stall in the server or in this process counts against every request it delayed (no coordinated
  omission). How late sends went out is reported too, to tell a slow server from a saturated
  generator.

With several server worker processes sharing one port (SO_REUSEPORT) the kernel hashes each
connection to one worker, so a handful of connections can land unevenly. Given the workers' pids,
``connect`` keeps opening connections and closes surplus ones until every worker holds the same
number, reading which process owns each accepted socket from ``/proc`` (Linux); the counts are
reported either way.

Mixed phases: with ``mixed_method``, ``mixed_requests_file`` and ``mixed_share`` set, each send goes
to the mixed method instead with probability ``mixed_share`` (a seeded draw per send), e.g. RecordEvents
writes among Personalize reads. The mixed requests are taken in order and never reused while the file
lasts (across warm-up and measured phase), because a write that repeats an earlier one is a duplicate
and costs the server less; how many had to be reused is reported. Latencies are kept per method.
With ``mixed_slice_s`` as well (open loop only), the phase is cut into slices of that many seconds and
only every other slice (the second, the fourth, ...) sends to the mixed method: reads with and without
writes then interleave second by second within one phase, so that both see the same machine (whose
speed moves by tens of percent from minute to minute). Each read's send time from the start of the
phase comes back with its latency (``send_offsets_s``), so the benchmark can tell the slices apart.

Every phase is bounded by its duration and request count, every call by its deadline, and the final
drain by the deadline plus a second.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import struct
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
import grpc.aio
import numpy as np

IDLE_EXIT_S: Final = 900.0
MAX_CHANNELS: Final = 256
# Opening connections to balance workers stops after this many attempts per wanted channel.
BALANCE_ATTEMPTS_PER_CHANNEL: Final = 12
_LENGTH: Final = struct.Struct(">I")
_TCP_ESTABLISHED: Final = "01"
OPEN_START_S: Final = 0.005  # the open loop's first send is this long after it begins


class ProtocolError(ValueError):
    """A command from the benchmark that this generator cannot run; the message names the field."""


def write_requests(path: Path, messages: Sequence[bytes]) -> None:
    """Store serialized requests as 4-byte big-endian lengths each followed by its message."""
    with open(path, "wb") as out:
        for message in messages:
            out.write(_LENGTH.pack(len(message)))
            out.write(message)


def read_requests(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    messages: list[bytes] = []
    offset = 0
    while offset < len(data):
        if offset + _LENGTH.size > len(data):
            raise ProtocolError(f"{path}: truncated length at byte {offset}")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if offset + length > len(data):
            raise ProtocolError(f"{path}: message at byte {offset} runs past the end of the file")
        messages.append(data[offset : offset + length])
        offset += length
    if not messages:
        raise ProtocolError(f"{path}: no requests")
    return messages


@dataclass(frozen=True)
class PhaseSpec:
    """One load phase: which method with which requests, how the load arrives, and its bounds."""

    name: str
    method: str  # full gRPC path, e.g. /persona.v1.PersonalizationService/Personalize
    requests_file: str
    mode: str  # "closed" or "open"
    duration_s: float
    max_requests: int
    warmup_s: float = 1.0
    concurrency: int = 8  # closed loop
    rate: float = 100.0  # open loop, requests per second
    arrivals: str = "poisson"  # open loop: "poisson" or "fixed"
    timeout_s: float = 2.0
    max_in_flight: int = 2000  # open loop: sends beyond this many unanswered calls are dropped
    seed: int = 0
    mixed_method: str = ""  # mixed phases: the second method, its requests and its share of sends
    mixed_requests_file: str = ""
    mixed_share: float = 0.0
    mixed_slice_s: float = 0.0  # open mixed phases: writes only in every other slice this long (0: all)

    def __post_init__(self) -> None:
        if self.mode not in ("closed", "open"):
            raise ProtocolError(f"phase {self.name}: mode must be 'closed' or 'open', got {self.mode!r}")
        if self.arrivals not in ("poisson", "fixed"):
            raise ProtocolError(
                f"phase {self.name}: arrivals must be 'poisson' or 'fixed', got {self.arrivals!r}"
            )
        for name in ("duration_s", "timeout_s", "rate"):
            if not getattr(self, name) > 0:
                raise ProtocolError(f"phase {self.name}: {name} must be > 0, got {getattr(self, name)}")
        if self.warmup_s < 0:
            raise ProtocolError(f"phase {self.name}: warmup_s must be >= 0, got {self.warmup_s}")
        for name in ("max_requests", "concurrency", "max_in_flight"):
            if getattr(self, name) < 1:
                raise ProtocolError(f"phase {self.name}: {name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.mixed_share < 1.0:
            raise ProtocolError(f"phase {self.name}: mixed_share must be in [0, 1), got {self.mixed_share}")
        if self.mixed_share > 0 and not (self.mixed_method and self.mixed_requests_file):
            raise ProtocolError(f"phase {self.name}: mixed_share needs mixed_method and mixed_requests_file")
        if not (np.isfinite(self.mixed_slice_s) and self.mixed_slice_s >= 0):
            raise ProtocolError(f"phase {self.name}: mixed_slice_s must be >= 0, got {self.mixed_slice_s}")
        if self.mixed_slice_s > 0 and (self.mode != "open" or self.mixed_share == 0):
            raise ProtocolError(
                f"phase {self.name}: mixed_slice_s needs an open mixed phase (mode 'open', mixed_share > 0)"
            )


@dataclass
class PhaseResult:
    """What one measured phase produced; latencies of successful calls only, in milliseconds."""

    name: str
    mode: str
    latencies_ms: list[float] = field(default_factory=list)
    send_offsets_s: list[float] = field(default_factory=list)  # each latency's send, from the phase start
    errors: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    dropped: int = 0  # open loop: arrivals not sent because max_in_flight calls were unanswered
    wall_s: float = 0.0
    start_epoch_s: float = 0.0  # wall-clock time of the phase start the send offsets count from
    client_cpu_s: float = 0.0
    send_lateness_ms: dict[str, float] = field(default_factory=dict)  # open loop only
    mixed_latencies_ms: list[float] = field(default_factory=list)  # mixed phases: the second method
    mixed_send_offsets_s: list[float] = field(default_factory=list)  # each mixed latency's send
    mixed_errors: dict[str, int] = field(default_factory=dict)
    mixed_sent: int = 0
    mixed_reused: int = 0  # mixed requests sent a second time because the file ran out


@dataclass
class _Recorder:
    latencies_ms: list[float] = field(default_factory=list)
    offsets_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    lateness_ms: list[float] = field(default_factory=list)
    sent: int = 0
    dropped: int = 0


class _Mix:
    """The second method of a mixed phase: which sends go to it, its requests in order, its recorder."""

    def __init__(
        self,
        calls: Sequence[grpc.aio.UnaryUnaryMultiCallable],
        requests: Sequence[bytes],
        share: float,
        seed: int,
        slice_s: float = 0.0,
    ) -> None:
        self.calls = calls
        self.requests = requests
        self.share = share
        self.slice_s = slice_s
        self.rng = np.random.default_rng(seed + 1_000_003)
        self.taken = 0
        self.recorder = _Recorder()

    def pick(
        self, channel: int, offset_s: float = 0.0
    ) -> tuple[grpc.aio.UnaryUnaryMultiCallable, bytes] | None:
        """The call and request for this send (``offset_s`` after the phase start) when it goes to the
        mixed method, else None."""
        if self.rng.random() >= self.share or not in_mixed_slice(offset_s, self.slice_s):
            return None
        request = self.requests[self.taken % len(self.requests)]
        self.taken += 1
        self.recorder.sent += 1
        return self.calls[channel % len(self.calls)], request

    @property
    def reused(self) -> int:
        return max(self.taken - len(self.requests), 0)


def in_mixed_slice(offset_s: float, slice_s: float) -> bool:
    """Whether a send ``offset_s`` after the phase start falls in a slice that sends to the mixed
    method: every one without slicing (``slice_s`` 0), else the second, fourth, ... of ``slice_s`` each."""
    return slice_s <= 0 or int(offset_s // slice_s) % 2 == 1


# -- connections to server workers ----------------------------------------------------------------------


def _tcp_connections() -> list[tuple[int, int, int]]:
    """Established TCP connections on this host as (local port, remote port, socket inode)."""
    rows: list[tuple[int, int, int]] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10 or parts[3] != _TCP_ESTABLISHED:
                continue
            local_port = int(parts[1].rsplit(":", 1)[1], 16)
            remote_port = int(parts[2].rsplit(":", 1)[1], 16)
            rows.append((local_port, remote_port, int(parts[9])))
    return rows


def _socket_inodes(pid: int | str) -> set[int]:
    inodes: set[int] = set()
    folder = Path(f"/proc/{pid}/fd")
    try:
        entries = list(folder.iterdir())
    except OSError:
        return inodes
    for entry in entries:
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def own_connection_ports(server_port: int) -> set[int]:
    """Local ports of this process's connections to ``server_port``."""
    mine = _socket_inodes("self")
    return {local for local, remote, inode in _tcp_connections() if remote == server_port and inode in mine}


def connection_owner(server_port: int, client_port: int, server_pids: Sequence[int]) -> int | None:
    """The server process that holds the accepted end of the connection from ``client_port``."""
    inodes = {
        inode for local, remote, inode in _tcp_connections() if local == server_port and remote == client_port
    }
    for pid in server_pids:
        if inodes & _socket_inodes(pid):
            return pid
    return None


def _channel(target: str, index: int) -> grpc.aio.Channel:
    # A local subchannel pool and a distinct argument give every channel its own TCP connection;
    # otherwise grpc shares one connection between channels with equal arguments.
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.primary_user_agent", f"persona-engine-load-generator/{index}"),
            ("grpc.enable_retries", 0),
        ],
    )


async def open_channels(
    target: str, wanted: int, server_pids: Sequence[int], timeout_s: float = 10.0
) -> tuple[list[grpc.aio.Channel], dict[str, int], bool]:
    """``wanted`` connected channels, spread evenly over ``server_pids`` when given (module doc).

    Returns the channels, connections per server pid (``"?"`` for unknown owners) and whether the
    spread is even.
    """
    server_port = int(target.rsplit(":", 1)[1])
    channels: list[grpc.aio.Channel] = []
    owners: Counter[str] = Counter()
    quota = -(-wanted // len(server_pids)) if server_pids else wanted
    attempts = 0
    while len(channels) < wanted and attempts < wanted * BALANCE_ATTEMPTS_PER_CHANNEL:
        attempts += 1
        before = own_connection_ports(server_port) if server_pids else set()
        channel = _channel(target, attempts)
        await asyncio.wait_for(channel.channel_ready(), timeout_s)
        if not server_pids:
            channels.append(channel)
            continue
        new_ports = own_connection_ports(server_port) - before
        owner = (
            connection_owner(server_port, next(iter(new_ports)), server_pids) if len(new_ports) == 1 else None
        )
        key = "?" if owner is None else str(owner)
        if owner is not None and owners[key] >= quota:
            await channel.close()
            continue
        owners[key] += 1
        channels.append(channel)
    if len(channels) < wanted:
        raise ProtocolError(f"could only open {len(channels)} of {wanted} balanced channels to {target}")
    counts = dict(owners) if server_pids else {"?": len(channels)}
    even = bool(server_pids) and "?" not in counts and len(set(counts.values())) == 1
    return channels, counts, even


# -- load loops --------------------------------------------------------------------------------------------


def _calls(channels: Sequence[grpc.aio.Channel], method: str) -> list[grpc.aio.UnaryUnaryMultiCallable]:
    # No serializers: requests go out as the bytes read from the file and responses stay bytes.
    return [channel.unary_unary(method) for channel in channels]


async def _timed_call(
    call: grpc.aio.UnaryUnaryMultiCallable,
    request: bytes,
    started: float,
    timeout_s: float,
    into: _Recorder,
    offset_s: float,
) -> None:
    try:
        await call(request, timeout=timeout_s)
    except grpc.aio.AioRpcError as error:
        into.errors[error.code().name] += 1
        return
    into.latencies_ms.append((time.perf_counter() - started) * 1000.0)
    into.offsets_s.append(offset_s)


async def closed_loop(
    calls: Sequence[grpc.aio.UnaryUnaryMultiCallable],
    requests: Sequence[bytes],
    concurrency: int,
    duration_s: float,
    max_requests: int,
    timeout_s: float,
    mixed: _Mix | None = None,
) -> _Recorder:
    recorder = _Recorder()
    begun = time.perf_counter()
    end = begun + duration_s
    next_request = 0

    async def caller(index: int) -> None:
        nonlocal next_request
        call = calls[index % len(calls)]
        while time.perf_counter() < end and next_request < max_requests:
            request = requests[next_request % len(requests)]
            next_request += 1
            other = mixed.pick(index) if mixed is not None else None
            now = time.perf_counter()
            if other is not None and mixed is not None:
                await _timed_call(other[0], other[1], now, timeout_s, mixed.recorder, now - begun)
                continue
            recorder.sent += 1
            await _timed_call(call, request, now, timeout_s, recorder, now - begun)

    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    return recorder


def arrival_offsets(
    rate: float, duration_s: float, arrivals: str, max_requests: int, seed: int
) -> np.ndarray:
    """Send times in seconds from the start of a phase, within ``duration_s`` and ``max_requests``."""
    expected = int(rate * duration_s)
    if arrivals == "fixed":
        offsets = np.arange(min(expected, max_requests), dtype=np.float64) / rate
    else:
        rng = np.random.default_rng(seed)
        # Enough exponential gaps to pass the end with overwhelming probability, then cut.
        gaps = rng.exponential(1.0 / rate, size=expected + 10 * int(np.sqrt(expected + 1)) + 10)
        offsets = np.cumsum(gaps) - gaps[0]
        offsets = offsets[offsets < duration_s][:max_requests]
    return offsets


async def open_loop(
    calls: Sequence[grpc.aio.UnaryUnaryMultiCallable],
    requests: Sequence[bytes],
    offsets: np.ndarray,
    timeout_s: float,
    max_in_flight: int,
    mixed: _Mix | None = None,
) -> _Recorder:
    recorder = _Recorder()
    pending: set[asyncio.Task[None]] = set()
    start = time.perf_counter() + OPEN_START_S
    for i, offset in enumerate(offsets.tolist()):
        scheduled = start + offset
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        recorder.lateness_ms.append(max(time.perf_counter() - scheduled, 0.0) * 1000.0)
        if len(pending) >= max_in_flight:
            recorder.dropped += 1
            continue
        other = mixed.pick(i, offset) if mixed is not None else None
        if other is not None and mixed is not None:
            task = asyncio.create_task(
                _timed_call(other[0], other[1], scheduled, timeout_s, mixed.recorder, offset)
            )
            pending.add(task)
            task.add_done_callback(pending.discard)
            continue
        recorder.sent += 1
        task = asyncio.create_task(
            _timed_call(
                calls[i % len(calls)], requests[i % len(requests)], scheduled, timeout_s, recorder, offset
            )
        )
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending, timeout=timeout_s + 1.0)
    return recorder


async def run_load(
    spec: PhaseSpec,
    calls: Sequence[grpc.aio.UnaryUnaryMultiCallable],
    requests: Sequence[bytes],
    seconds: float,
    mixed: _Mix | None = None,
) -> _Recorder:
    """One loop of ``spec``'s mode for ``seconds`` (the warm-up or the measured phase)."""
    if spec.mode == "closed":
        return await closed_loop(
            calls, requests, spec.concurrency, seconds, spec.max_requests, spec.timeout_s, mixed
        )
    offsets = arrival_offsets(spec.rate, seconds, spec.arrivals, spec.max_requests, spec.seed)
    return await open_loop(calls, requests, offsets, spec.timeout_s, spec.max_in_flight, mixed)


def _lateness_summary(lateness_ms: list[float]) -> dict[str, float]:
    if not lateness_ms:
        return {}
    values = np.asarray(lateness_ms)
    return {
        "p50": float(np.percentile(values, 50)),
        "p99": float(np.percentile(values, 99)),
        "max": float(values.max()),
    }


# -- command loop ------------------------------------------------------------------------------------------


class _Session:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.channels: list[grpc.aio.Channel] = []

    def send(self, event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    def connect(self, command: dict[str, Any]) -> None:
        wanted = int(command.get("channels", 8))
        if not 1 <= wanted <= MAX_CHANNELS:
            raise ProtocolError(f"connect: channels must be 1..{MAX_CHANNELS}, got {wanted}")
        pids = [int(pid) for pid in command.get("server_pids", [])]
        self.close()
        channels, counts, even = self.loop.run_until_complete(
            open_channels(str(command["target"]), wanted, pids)
        )
        self.channels = channels
        self.send({"event": "connected", "channels": len(channels), "per_server_pid": counts, "even": even})

    def phase(self, command: dict[str, Any]) -> None:
        if not self.channels:
            raise ProtocolError("phase before connect")
        spec = PhaseSpec(**command["spec"])
        requests = read_requests(Path(spec.requests_file))
        calls = _calls(self.channels, spec.method)
        mixed = (
            _Mix(
                _calls(self.channels, spec.mixed_method),
                read_requests(Path(spec.mixed_requests_file)),
                spec.mixed_share,
                spec.seed,
                spec.mixed_slice_s,
            )
            if spec.mixed_share > 0
            else None
        )
        if spec.warmup_s > 0:
            self.loop.run_until_complete(run_load(spec, calls, requests, spec.warmup_s, mixed))
        if mixed is not None:
            mixed.recorder = _Recorder()  # the measured phase goes on with the next unused requests
        self.send({"event": "warm", "name": spec.name})
        go = _read_command()
        if go is None or go.get("command") != "go":
            raise ProtocolError(f"phase {spec.name}: expected the go command, got {go!r}")
        cpu_before, wall_before, epoch_before = time.process_time(), time.perf_counter(), time.time()
        recorder = self.loop.run_until_complete(run_load(spec, calls, requests, spec.duration_s, mixed))
        result = PhaseResult(
            name=spec.name,
            mode=spec.mode,
            latencies_ms=[round(x, 4) for x in recorder.latencies_ms],
            send_offsets_s=[round(x, 4) for x in recorder.offsets_s],
            start_epoch_s=epoch_before + (OPEN_START_S if spec.mode == "open" else 0.0),
            errors=dict(recorder.errors),
            sent=recorder.sent,
            dropped=recorder.dropped,
            wall_s=time.perf_counter() - wall_before,
            client_cpu_s=time.process_time() - cpu_before,
            send_lateness_ms=_lateness_summary(recorder.lateness_ms),
        )
        if mixed is not None:
            result.mixed_latencies_ms = [round(x, 4) for x in mixed.recorder.latencies_ms]
            result.mixed_send_offsets_s = [round(x, 4) for x in mixed.recorder.offsets_s]
            result.mixed_errors = dict(mixed.recorder.errors)
            result.mixed_sent = mixed.recorder.sent
            result.mixed_reused = mixed.reused
        self.send({"event": "result", **asdict(result)})

    def close(self) -> None:
        for channel in self.channels:
            self.loop.run_until_complete(channel.close())
        self.channels = []


def _read_command() -> dict[str, Any] | None:
    """The next JSON command on stdin; None at end of input or after ``IDLE_EXIT_S`` without one."""
    ready, _, _ = select.select([sys.stdin], [], [], IDLE_EXIT_S)
    if not ready:
        return None
    line = sys.stdin.readline()
    if not line:
        return None
    document = json.loads(line)
    if not isinstance(document, dict):
        raise ProtocolError(f"a command must be a JSON object, got {line.strip()!r}")
    return document


def main() -> int:
    loop = asyncio.new_event_loop()
    session = _Session(loop)
    try:
        while (command := _read_command()) is not None:
            name = command.get("command")
            try:
                if name == "quit":
                    break
                if name == "connect":
                    session.connect(command)
                elif name == "phase":
                    session.phase(command)
                else:
                    raise ProtocolError(f"unknown command {name!r}; expected connect, phase, go or quit")
            except (ProtocolError, KeyError, TypeError, ValueError, OSError, TimeoutError) as error:
                session.send(
                    {"event": "error", "command": name, "message": f"{type(error).__name__}: {error}"}
                )
        return 0
    finally:
        session.close()
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
