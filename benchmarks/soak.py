"""The soak test: a real server under steady mixed load for a long time, reloaded and crashed on a schedule.

``python -m benchmarks.soak`` (``make bench-soak``) starts ``persona-engine serve`` the way the serving
benchmark does (``serving.server_process``; 2 workers, an event log and an admin token), then for
``--duration`` seconds (default 30 minutes):

- sends calls open loop at ``--rate`` per second (Poisson arrivals): Personalize, RecommendProducts and
  RecordEvents (every write has new event ids) in the ``--mix`` shares, over connections spread evenly
  over the workers. Calls wait for a connection (``wait_for_ready``, as a client should: a channel
  whose worker was killed reconnects to a live one in its reconnect backoff instead of failing every
  call meanwhile), so only the calls in flight at a kill fail. A call that fails is retried once, with
  the same request (a retried write is a duplicate the log ignores);
- hot-reloads every ``--reload-every`` seconds through the admin ReloadModel call, alternating between
  two models of the artifact so that each reload really loads and swaps a model;
- SIGKILLs a worker every ``--kill-every`` seconds (the youngest one, so that the other lives the whole
  run and gives the longest memory series); the server's supervisor replaces it;
- reads every worker's resident memory (``VmRSS`` in ``/proc/<pid>/status``) every ``--rss-every``
  seconds. Each worker process is one series (a replaced worker starts a new one); after
  ``--warmup`` seconds of its life a line is fitted to its samples, and the slope is its growth in MB
  per 10 minutes (target: at most 5).

What it reports (aligned tables on the terminal, the whole document under
``benchmarks/results/soak-<timestamp>.json`` and one row in ``benchmarks/results/soak.md``):

- calls: sent, succeeded first time, failed first time, retried, failed again after the retry (must
  be 0), and first failures that did not happen around a kill (must be 0: only calls in flight when a
  worker died may fail);
- acknowledged events missing from the event log after the run (must be 0);
- reloads and kills done and failed; the restart time of each killed worker;
- latency per ``--window`` (default a minute) of call start: calls, failures, p50, p99 and max, in
  milliseconds, measured from the scheduled send time (no coordinated omission);
- RSS per worker series: first and last sample, samples fitted, slope.

Exit status 0 when every must-be-zero count is 0 and every slope is within target, 1 otherwise, 2 on
bad flags. The suite runs a 20-second version (``tests/benchmarks/test_soak.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import grpc
import numpy as np
from rich.console import Console

from benchmarks.load_generator import open_channels
from benchmarks.serving_artifact_cache import BENCHMARKS_DIR, ShopSize, ensure_artifact
from benchmarks.soak_report import (
    RESULTS_DIR,
    RPCS,
    CallRecord,
    RunLog,
    analyse,
    missing_acknowledged,
    print_report,
    write_results,
)
from engine.live.customer_state import MAX_KEPT_EVENTS
from engine.live.event_log import EventLog
from engine.live.live_state_snapshot import snapshot_folder
from serving.client import Filters, PageContext, Target
from serving.generated.persona.v1 import admin_service_pb2 as admin_pb
from serving.generated.persona.v1 import personalization_service_pb2 as pb
from serving.model_holder import load_model
from serving.ready_file import read_ready_file
from serving.server_process import ServerProcess, ServerTimeoutError, start_server
from training.console_output import stderr_console

QUICK_CONFIG: Final = BENCHMARKS_DIR / "configs" / "serving_quick.toml"
SERVICE: Final = "persona.v1.PersonalizationService"
ADMIN_SERVICE: Final = "persona.v1.AdminService"
SERVER_READY_TIMEOUT_S: Final = 600.0
RELOAD_TIMEOUT_S: Final = 120.0
DISTINCT_READS: Final = 500
PREFILL_EVENTS_PER_CALL: Final = 500  # under the server's 1,000 events per RecordEvents
PREFILL_SNAPSHOT_TIMEOUT_S: Final = 600.0


@dataclass(frozen=True)
class SoakSettings:
    rate: float = 200.0
    duration_s: float = 1800.0
    reload_every_s: float = 60.0
    kill_every_s: float = 600.0
    warmup_s: float = 120.0
    rss_every_s: float = 5.0
    window_s: float = 60.0
    workers: int = 2
    timeout_s: float = 2.0
    retry_timeout_s: float = 10.0
    # Client connections. The kernel spreads connections over the workers at random and the server
    # closes each after --max-connection-age, so the spread is statistical: with 4, one worker held
    # three or all four of them for a minute at a time and ran at a full core while the other idled.
    # A shop's backend fleet holds many; 32 keep each worker's share within about 1/2 +- 0.09.
    channels: int = 32
    mix: tuple[float, float, float] = (0.7, 0.2, 0.1)  # Personalize, RecommendProducts, RecordEvents
    events_per_write: int = 3
    seed: int = 11
    state: str = "memory"
    prefill_events: int = MAX_KEPT_EVENTS  # per customer and worker before the clock starts; 0: none

    def check(self) -> None:
        """Refuse settings the run cannot honour; the message names the flag."""
        positive = {
            "--rate": self.rate,
            "--duration": self.duration_s,
            "--reload-every": self.reload_every_s,
            "--kill-every": self.kill_every_s,
            "--rss-every": self.rss_every_s,
            "--window": self.window_s,
            "--timeout": self.timeout_s,
        }
        for flag, value in positive.items():
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{flag} must be a positive number, got {value}")
        if self.prefill_events < 0:
            raise ValueError(f"--prefill-events must be 0 or more, got {self.prefill_events}")
        if self.warmup_s < 0:
            raise ValueError(f"--warmup must be 0 or more, got {self.warmup_s}")
        if self.workers < 2:
            raise ValueError(
                f"--workers must be at least 2 (a kill leaves the others serving), got {self.workers}"
            )
        if self.channels < self.workers or self.events_per_write < 1:
            raise ValueError("--channels must be at least --workers, and --events-per-write at least 1")
        if len(self.mix) != 3 or min(self.mix) < 0 or sum(self.mix) <= 0:
            raise ValueError(f"--mix needs three shares >= 0 with a positive sum, got {self.mix}")


# -- requests --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestPool:
    """Serialized reads over sampled customers, and the ids writes are made of."""

    personalize: list[bytes]
    recommend: list[bytes]
    customers: list[str]
    items: list[str]
    models: tuple[str, str]  # the two models reloads alternate between

    @classmethod
    def build(cls, artifact: Path, seed: int) -> RequestPool:
        personalizer = load_model(artifact, None).personalizer
        rng = np.random.default_rng(seed)
        known = [str(c) for c in personalizer.customers.ids]
        items = [str(i) for i in personalizer.items.ids]
        customers = [known[int(i)] for i in rng.integers(0, len(known), DISTINCT_READS)]
        personalize, recommend = [], []
        for n, customer in enumerate(customers):
            viewed = [items[int(j)] for j in rng.integers(0, len(items), 3)]
            context = PageContext(
                page_type="product_detail", channel="search", device="mobile", session_item_ids=viewed
            )
            personalize.append(
                pb.PersonalizeRequest(
                    customer_id=customer,
                    context=context.to_proto(),
                    filters=Filters(exclude_item_ids=viewed[:1]).to_proto(),
                    num_results=20,
                    num_offers=3,
                ).SerializeToString()
            )
            recommend.append(
                pb.RecommendProductsRequest(
                    targets=[
                        Target(customer).to_proto(),
                        Target(customers[(n + 1) % len(customers)]).to_proto(),
                    ],
                    context=PageContext(page_type="home", channel="direct", device="desktop").to_proto(),
                    num_results=20,
                ).SerializeToString()
            )
        models = [str(m) for m in personalizer.artifact.manifest.get("models", [])]
        serving = personalizer.model_name
        other = next((m for m in models if m != serving), None)
        if other is None:
            raise ValueError(
                f"{artifact}: the soak reloads between two models, the artifact has only {models}"
            )
        return cls(personalize, recommend, customers, items, (other, serving))

    def write(self, number: int, run: str, rng: random.Random, events: int) -> tuple[bytes, list[str]]:
        """RecordEvents request ``number`` of the run: new event ids; returns it and its ids."""
        customers = [rng.choice(self.customers) for _ in range(events)]
        return self._record_request(f"soak-{run}-{number:08d}", customers, rng)

    def prefill_writes(
        self, run: str, channel: int, per_customer: int, rng: random.Random
    ) -> list[tuple[bytes, list[str]]]:
        """The RecordEvents requests that give every customer writes go to ``per_customer`` events."""
        customers = [c for c in self.customers for _ in range(per_customer)]
        return [
            self._record_request(
                f"soak-{run}-fill-{channel}-{first:08d}",
                customers[first : first + PREFILL_EVENTS_PER_CALL],
                rng,
            )
            for first in range(0, len(customers), PREFILL_EVENTS_PER_CALL)
        ]

    def _record_request(
        self, prefix: str, customers: Sequence[str], rng: random.Random
    ) -> tuple[bytes, list[str]]:
        now = dt.datetime.now(dt.UTC)
        kinds = (pb.EVENT_TYPE_VIEW, pb.EVENT_TYPE_VIEW, pb.EVENT_TYPE_CART, pb.EVENT_TYPE_PURCHASE)
        request = pb.RecordEventsRequest()
        ids = []
        for j, customer in enumerate(customers):
            event_id = f"{prefix}-{j}"
            event = request.events.add(
                event_id=event_id,
                customer_id=customer,
                item_id=rng.choice(self.items),
                event_type=rng.choice(kinds),
                channel="web",
                device="mobile",
            )
            event.timestamp.FromDatetime(now)
            ids.append(event_id)
        return request.SerializeToString(), ids


# -- the run ---------------------------------------------------------------------------------------


def _code(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return str(error.code().name)
    return type(error).__name__


def _detail(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return str(error.details())[:300]
    return str(error)[:300]


def _snapshot_rowid(folder: Path) -> int:
    """The log position the newest live-state snapshot in ``folder`` covers (0: none yet); its
    manifest, written last, is named after it (``engine.live.live_state_snapshot``)."""
    names = [path.stem for path in folder.glob("snapshot-*.json")] if folder.is_dir() else []
    return max((int(name.split("-", 1)[1]) for name in names), default=0)


def worker_rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MB (``VmRSS``), None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        return None
    return None


class Soak:
    """One soak run against ``server`` (module doc); ``run`` returns what it observed."""

    def __init__(
        self,
        server: ServerProcess,
        pool: RequestPool,
        settings: SoakSettings,
        artifact: Path,
        event_log: Path,
    ) -> None:
        self.server = server
        self.event_log = event_log
        self.pool = pool
        self.settings = settings
        self.artifact = artifact
        self.log = RunLog()
        self._run = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        self._rng = random.Random(settings.seed)
        self._start = 0.0
        self._born: dict[int, float] = {}  # pid -> first seen serving (s since start)
        self._watchers: set[asyncio.Task[None]] = set()

    def _now(self) -> float:
        return time.monotonic() - self._start

    def _workers(self) -> tuple[int, ...]:
        ready = read_ready_file(self.server.ready_path)
        return ready.worker_pids if ready is not None else ()

    async def run(self) -> RunLog:
        settings = self.settings
        # As many connections to each worker (the kernel hashes connections over SO_REUSEPORT
        # listeners, so a few can all land on one): every worker gets its share of the load.
        channels, connections, _ = await open_channels(
            self.server.address, settings.channels, self._workers()
        )
        self.log.connections = connections
        admin = grpc.aio.insecure_channel(self.server.address)
        try:
            if settings.prefill_events > 0:
                await self._prefill(channels)
            self._start = time.monotonic()
            for pid in self._workers():
                self._born[pid] = 0.0
            tasks = [
                asyncio.create_task(self._reloads(admin)),
                asyncio.create_task(self._kills()),
                asyncio.create_task(self._sample_rss()),
            ]
            try:
                await self._send(channels)
            finally:
                for task in [*tasks, *self._watchers]:
                    task.cancel()
                await asyncio.gather(*tasks, *self._watchers, return_exceptions=True)
        finally:
            for channel in channels:
                await channel.close()
            await admin.close()
        return self.log

    async def _prefill(self, channels: Sequence[grpc.aio.Channel]) -> None:
        """Fill every worker's live state to its bound before the clock starts (``--prefill-events``).

        The run writes events for ``DISTINCT_READS`` customers, all timestamped now, so each
        customer's live state grows until it holds ``MAX_KEPT_EVENTS`` events: at the default rate
        that takes about 35 minutes per worker, and memory that grows by design until a bound would
        read as a leak in the RSS slope. Channels are spread evenly over the workers, so each channel
        sends its share of ``prefill_events`` per customer and every worker receives at least that
        many. The events are acknowledged writes like any other (checked against the log at the end).
        """
        per_channel = -(-self.settings.prefill_events * self.settings.workers // len(channels))
        # No serializers: the requests go out as prefill_writes' bytes and the responses stay bytes.
        record: list[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = [
            channel.unary_unary(f"/{SERVICE}/RecordEvents") for channel in channels
        ]
        started = time.perf_counter()
        counts = {"events": 0, "calls": 0, "retried": 0}

        async def fill(n: int) -> None:
            for request, ids in self.pool.prefill_writes(self._run, n, per_channel, self._rng):
                # A call started as its connection is retired (max connection age) can fail
                # UNAVAILABLE (grpc/grpc#31733): retried once, as the README tells clients to.
                # Event ids make the retry safe: the log stores an id once.
                for attempt in (1, 2):
                    try:
                        response = await record[n](
                            request, timeout=self.settings.retry_timeout_s * 6, wait_for_ready=True
                        )
                        break
                    except grpc.aio.AioRpcError as error:
                        if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == 2:
                            raise
                        counts["retried"] += 1
                answer = pb.RecordEventsResponse.FromString(response)
                if answer.errors:
                    raise RuntimeError(f"prefill write refused: {answer.errors[0]}")
                self.log.acknowledged_event_ids.extend(ids)
                counts["events"] += len(ids)
                counts["calls"] += 1

        await asyncio.gather(*(fill(n) for n in range(len(channels))))
        filled = time.perf_counter()
        # The server's upkeep then advances its live-state snapshot over the burst: seconds of CPU in a
        # background thread of one worker, which would weigh on the first minutes of the run.
        with EventLog.open(self.event_log) as event_log:
            through = event_log.last_event_rowid()
        folder = snapshot_folder(self.event_log)
        deadline = filled + PREFILL_SNAPSHOT_TIMEOUT_S
        while _snapshot_rowid(folder) < through and time.perf_counter() < deadline:
            await asyncio.sleep(0.5)
        self.log.prefill = {
            **counts,
            "per_customer_per_channel": per_channel,
            "seconds": round(filled - started, 3),
            "snapshot_wait_seconds": round(time.perf_counter() - filled, 3),
            "snapshot_covers_prefill": _snapshot_rowid(folder) >= through,
        }
        stderr_console.print(
            f"prefill: {counts['events']:,} events in {self.log.prefill['seconds']:.1f} s "
            f"(at least {self.settings.prefill_events} per customer in every worker's live state); "
            f"live-state snapshot over them after {self.log.prefill['snapshot_wait_seconds']:.1f} s"
        )

    async def _send(self, channels: Sequence[grpc.aio.Channel]) -> None:
        """Open loop: Poisson arrivals at ``rate``; waits for the calls in flight at the end."""
        settings = self.settings
        methods: dict[str, list[grpc.aio.UnaryUnaryMultiCallable]] = {
            rpc: [channel.unary_unary(f"/{SERVICE}/{rpc}") for channel in channels] for rpc in RPCS
        }
        weights = np.asarray(settings.mix, dtype=np.float64) / sum(settings.mix)
        rng = np.random.default_rng(settings.seed)
        in_flight: set[asyncio.Task[None]] = set()
        scheduled, number = 0.0, 0
        while True:
            scheduled += float(rng.exponential(1.0 / settings.rate))
            if scheduled >= settings.duration_s:
                break
            delay = scheduled - self._now()
            if delay > 0:
                await asyncio.sleep(delay)
            self.log.send_lateness_ms.append(max(0.0, -delay) * 1000.0)
            rpc = RPCS[int(rng.choice(3, p=weights))]
            calls = methods[rpc]
            task = asyncio.create_task(self._call(rpc, calls[number % len(calls)], scheduled, number))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            number += 1
        if in_flight:
            await asyncio.gather(*in_flight)

    async def _call(
        self, rpc: str, call: grpc.aio.UnaryUnaryMultiCallable, scheduled: float, number: int
    ) -> None:
        settings = self.settings
        ids: list[str] = []
        if rpc == "RecordEvents":
            request, ids = self.pool.write(number, self._run, self._rng, settings.events_per_write)
        elif rpc == "Personalize":
            request = self.pool.personalize[number % len(self.pool.personalize)]
        else:
            request = self.pool.recommend[number % len(self.pool.recommend)]
        record = CallRecord(rpc, scheduled)
        self.log.calls.append(record)
        try:
            response = await call(request, timeout=settings.timeout_s, wait_for_ready=True)
        except Exception as error:  # every failure is counted, then retried once
            record.first_code = _code(error)
            record.first_detail = _detail(error)
            record.retried = True
            await asyncio.sleep(0.05)
            try:  # wait_for_ready: a channel whose worker died reconnects (to a live worker) first
                response = await call(request, timeout=settings.retry_timeout_s, wait_for_ready=True)
                record.retry_code = "OK"
            except Exception as retry_error:
                record.retry_code = _code(retry_error)
        record.ended = self._now()
        if rpc == "RecordEvents" and record.ok:
            answer = pb.RecordEventsResponse.FromString(response)
            if not answer.errors:
                self.log.acknowledged_event_ids.extend(ids)

    async def _reloads(self, admin: grpc.aio.Channel) -> None:
        reload = admin.unary_unary(
            f"/{ADMIN_SERVICE}/ReloadModel",
            request_serializer=admin_pb.ReloadModelRequest.SerializeToString,
            response_deserializer=admin_pb.ReloadModelResponse.FromString,
        )
        metadata = (("authorization", f"Bearer {self.server.admin_token}"),)
        count = 0
        while True:
            count += 1
            await self._sleep_until(count * self.settings.reload_every_s)
            model = self.pool.models[(count - 1) % 2]
            entry: dict[str, Any] = {"at": round(self._now(), 3), "model": model}
            started = time.perf_counter()
            request = admin_pb.ReloadModelRequest(artifact_path=str(self.artifact), model_name=model)
            # Retried once like any call: the admin connection may be to the worker just killed. A
            # reload is idempotent (the same model again is "unchanged"), so the retry is safe.
            for attempt in range(2):
                try:
                    response = await reload(
                        request, timeout=RELOAD_TIMEOUT_S, metadata=metadata, wait_for_ready=attempt > 0
                    )
                    entry["outcome"] = admin_pb.ReloadOutcome.Name(response.outcome)
                    entry.pop("error", None)
                    break
                except grpc.aio.AioRpcError as error:
                    entry["error"] = f"{error.code().name}: {error.details()}"
                    entry.setdefault("first_error", entry["error"])
                    await asyncio.sleep(0.1)
            entry["s"] = round(time.perf_counter() - started, 3)
            self.log.reloads.append(entry)

    async def _kills(self) -> None:
        killed: set[int] = set()
        count = 0
        while True:
            count += 1
            if count * self.settings.kill_every_s >= self.settings.duration_s:
                return  # not while the last calls drain: their failures would count against the run
            await self._sleep_until(count * self.settings.kill_every_s)
            # Only while every worker serves: killing the last one serving would stop the whole server,
            # which is another test (benchmarks/crash), and no retry could succeed.
            # (The ready file may still list a worker just killed until the supervisor reaps it.)
            workers = self._workers()
            while len(workers) < self.settings.workers or killed.intersection(workers):
                await asyncio.sleep(0.1)
                workers = self._workers()
            # The youngest worker: the oldest then lives the whole run (the longest memory series).
            victim = max(workers, key=lambda pid: (self._born.get(pid, 0.0), pid))
            at = self._now()
            os.kill(victim, signal.SIGKILL)
            killed.add(victim)
            entry: dict[str, Any] = {"at": round(at, 3), "pid": victim}
            self.log.kills.append(entry)
            self._watchers.add(asyncio.create_task(self._watch_replacement(entry, set(workers))))

    async def _watch_replacement(self, entry: dict[str, Any], before: set[int]) -> None:
        """Fill in the replacement's pid and the seconds until it served (per the ready file)."""
        while True:
            await asyncio.sleep(0.1)
            new = [pid for pid in self._workers() if pid not in before]
            if new:
                entry["replaced_by"] = new[0]
                entry["restart_s"] = round(self._now() - entry["at"], 3)
                return

    async def _sample_rss(self) -> None:
        while True:
            now = self._now()
            for pid in self._workers():
                self._born.setdefault(pid, now)
                rss = worker_rss_mb(pid)
                if rss is not None:
                    self.log.rss.setdefault(pid, []).append((round(now, 3), round(rss, 3)))
            await asyncio.sleep(self.settings.rss_every_s)

    async def _sleep_until(self, moment: float) -> None:
        delay = moment - self._now()
        if delay > 0:
            await asyncio.sleep(delay)


# -- command line ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description="Soak a real 2-worker server: open-loop mixed load, a reload every minute, a worker "
        "SIGKILLed every 10 minutes; failed calls, RSS slope per worker and p99 over time.",
        epilog="examples:\n"
        "  python -m benchmarks.soak                       # 30 minutes at 200 calls/s\n"
        "  python -m benchmarks.soak --duration 300 --rate 100 --kill-every 120\n"
        "  python -m benchmarks.soak --artifact artifacts/latest --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = SoakSettings()
    load = parser.add_argument_group("load and schedule")
    load.add_argument(
        "--rate", type=float, default=defaults.rate, help="calls per second, open loop (default 200)"
    )
    load.add_argument("--duration", type=float, default=defaults.duration_s, help="seconds (default 1800)")
    load.add_argument(
        "--reload-every", type=float, default=defaults.reload_every_s, help="seconds between reloads"
    )
    load.add_argument(
        "--kill-every", type=float, default=defaults.kill_every_s, help="seconds between SIGKILLs"
    )
    load.add_argument(
        "--mix",
        type=float,
        nargs=3,
        default=list(defaults.mix),
        metavar=("PERSONALIZE", "RECOMMEND", "RECORD"),
        help="shares of the three RPCs (default 0.7 0.2 0.1)",
    )
    load.add_argument("--events-per-write", type=int, default=defaults.events_per_write)
    load.add_argument(
        "--timeout", type=float, default=defaults.timeout_s, help="deadline of a first attempt, s"
    )
    load.add_argument("--channels", type=int, default=defaults.channels, help="client connections")
    load.add_argument("--seed", type=int, default=defaults.seed)
    measure = parser.add_argument_group("measurement")
    measure.add_argument(
        "--warmup",
        type=float,
        default=defaults.warmup_s,
        help="seconds of each worker's life left out of its RSS slope",
    )
    measure.add_argument(
        "--prefill-events",
        type=int,
        default=defaults.prefill_events,
        help="events per customer every worker receives before the clock starts (default "
        f"{MAX_KEPT_EVENTS}, the live state's bound per customer, so the RSS slope measures leaks rather "
        "than state growing to its cap; 0: start with empty state)",
    )
    measure.add_argument(
        "--rss-every", type=float, default=defaults.rss_every_s, help="seconds between RSS samples"
    )
    measure.add_argument("--window", type=float, default=defaults.window_s, help="seconds per latency window")
    server = parser.add_argument_group("server")
    server.add_argument(
        "--artifact", type=Path, help="serve this artifact (default: the quick benchmark shop, built once)"
    )
    server.add_argument("--workers", type=int, default=defaults.workers)
    server.add_argument(
        "--state", default=defaults.state, help="--state of the server (memory or redis://...)"
    )
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of the JSON and soak.md")
    parser.add_argument("--json", action="store_true", help="print the result document on stdout, no tables")
    return parser.parse_args(argv)


def run_soak(settings: SoakSettings, artifact: Path, workdir: Path) -> dict[str, Any]:
    """Start the server, soak it, stop it, check the event log; the result document."""
    pool = RequestPool.build(artifact, settings.seed)
    event_log = workdir / "events.db"
    token = "soak-" + os.urandom(16).hex()
    started_utc = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    stderr_console.print(f"starting the server ({settings.workers} workers, event log {event_log})")
    server = start_server(
        artifact,
        workdir,
        workers=settings.workers,
        grace_seconds=2.0,
        access_log_every=None,
        admin_token=token,
        extra_args=["--event-log", str(event_log), "--state", settings.state],
        ready_timeout_s=SERVER_READY_TIMEOUT_S,
        name="soak-server",
    )
    try:
        stderr_console.print(
            f"soak: {settings.rate:g} calls/s for {settings.duration_s:g} s, reload every "
            f"{settings.reload_every_s:g} s, kill every {settings.kill_every_s:g} s"
        )
        log = asyncio.run(Soak(server, pool, settings, artifact, event_log).run())
    finally:
        try:
            status = server.stop(timeout_s=60)
        except ServerTimeoutError:
            status = -signal.SIGKILL
    result = analyse(
        log,
        warmup_s=settings.warmup_s,
        window_s=settings.window_s,
        missing_events=missing_acknowledged(event_log, log.acknowledged_event_ids),
    )
    load = os.getloadavg()
    return {
        "started_utc": started_utc,
        "settings": asdict(settings),
        "artifact": str(artifact),
        "server_exit_status": status,
        "load_average_at_end": [round(v, 2) for v in load],
        "cpus": os.cpu_count(),
        **result,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = SoakSettings(
        rate=args.rate,
        duration_s=args.duration,
        reload_every_s=args.reload_every,
        kill_every_s=args.kill_every,
        warmup_s=args.warmup,
        rss_every_s=args.rss_every,
        window_s=args.window,
        workers=args.workers,
        timeout_s=args.timeout,
        channels=args.channels,
        mix=tuple(args.mix),
        events_per_write=args.events_per_write,
        seed=args.seed,
        state=args.state,
        prefill_events=args.prefill_events,
    )
    try:
        settings.check()
    except ValueError as error:
        print(f"soak: {error}", file=sys.stderr)
        return 2
    artifact = args.artifact
    if artifact is None:
        artifact, _ = ensure_artifact(ShopSize(5_000, 2_000, 200_000), QUICK_CONFIG, "als")
    elif not (artifact / "manifest.json").is_file():
        print(f"soak: --artifact {artifact}: not an artifact folder (no manifest.json)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="persona-soak-") as folder:
        result = run_soak(settings, artifact.resolve(), Path(folder))
    path = write_results(result, args.results)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_report(result, Console(width=max(Console().width, 120)))
        stderr_console.print(f"results: {path}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
