"""Fleet rounds: two servers writing one shared event log (Redis Streams), SIGKILL of either mid-burst.

A real redis-server (``appendonly yes``, ``appendfsync always``) holds the fleet's event log, another
(no persistence) its live state; two real ``persona-engine serve`` processes (``--event-log
redis://...``) take RecordEvents bursts from ``--senders`` client threads each, every batch of
``--batch`` events with ids of its own. After a random ``--burst-seconds`` (half to one and a half
times) one server, the two taking turns, gets SIGKILL (supervisor and workers at once: nothing is
flushed); the other's senders stop after their call in flight. The killed server is started again (timed
to health SERVING), the batches whose answer never came are sent again through it, as a shop's pipeline
would, and the log is read as training reads it (``training.logged_events``):

- lost: acknowledged events not in the log (must be 0);
- duplicates: events stored more than once, and rows of an id beyond the first in what training
  read (both must be 0);
- torn batches: batches stored in part (must be 0; a batch is one Lua script).

Each round's times: the burst, the restart, training's read of the whole log. RecordEvents latency
(p50/p95/p99 of answered calls) is compared with a same-run baseline: one server with its own SQLite
log (the single-machine default) under the same senders per server, without a kill.

    python -m benchmarks.fleet_event_log                 # 20 rounds
    python -m benchmarks.fleet_event_log --rounds 3 --burst-seconds 2

Needs ``redis-server`` on PATH (scripts/install-redis.sh). Results:
``benchmarks/results/fleet_event_log-<time>.json`` and a row of ``benchmarks/results/fleet_event_log.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc
import numpy as np
import redis

from benchmarks.crash import Catalogue, Round, kill_everything, lost_and_torn
from benchmarks.latency_statistics import latency_summary
from benchmarks.result_files import RESULTS_DIR, utc_stamp, write_result
from benchmarks.startup import bench_artifact
from engine.live.redis_event_log import RedisEventLog
from serving.client import PersonaEngineClient
from serving.server_process import ServerProcess, running_server, start_server
from training.console_output import print_table
from training.logged_events import read_logged_events

STREAM: Final = "fleet-benchmark"
_REDIS_START_S: Final = 10.0


@contextmanager
def redis_server(folder: Path, *, durable: bool) -> Iterator[str]:
    """A redis-server in ``folder``, fsyncing every write when ``durable``; yields its URL (database 0)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found on PATH; run scripts/install-redis.sh (as root)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "",
         "--appendonly", "yes" if durable else "no", "--appendfsync", "always"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + _REDIS_START_S
    try:
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {port}") from None
                time.sleep(0.02)
        yield url
    finally:
        client.close()
        process.terminate()
        process.wait(10)


@dataclass(frozen=True)
class Fleet:
    """Where the fleet's servers log and keep state, and how each is started."""

    artifact: Path
    folder: Path
    log_url: str
    state_url: str
    workers: int = 1

    def launch(self, name: str) -> tuple[ServerProcess, float]:
        started = time.perf_counter()
        server = start_server(
            self.artifact,
            self.folder / name,
            workers=self.workers,
            metrics=False,
            access_log_every=None,
            extra_args=["--event-log", self.log_url, "--state", self.state_url],
            ready_timeout_s=600,
            name=f"{name}-{time.monotonic_ns()}",
        )
        return server, time.perf_counter() - started


def timed_burst(
    address: str,
    round_: Round,
    sender: int,
    catalogue: Catalogue,
    batch: int,
    stop: threading.Event,
    latencies_ms: list[float],
) -> None:
    """Send batches until the server dies under a call (or ``stop``), timing each answered call."""
    rng = np.random.default_rng(1_000 * round_.number + sender)
    with PersonaEngineClient(address, timeout_s=10.0, retries=0) as client:
        number = 0
        while not stop.is_set():
            batch_id = f"r{round_.number}-s{sender}-b{number}"
            events = catalogue.batch(batch_id, batch, rng)
            with round_.lock:
                round_.sent[batch_id] = events
            started = time.perf_counter()
            try:
                response = client.record_events(events)
            except grpc.RpcError:
                return  # killed under this call
            latencies_ms.append((time.perf_counter() - started) * 1000)
            if response.accepted_events + response.duplicate_events == batch and not response.errors:
                with round_.lock:
                    round_.acknowledged.add(batch_id)
            number += 1


def sqlite_baseline(
    artifact: Path, folder: Path, state_url: str, senders: int, batch: int, seconds: float
) -> dict[str, float]:
    """The same RecordEvents bursts on one server with its own SQLite log (the single-machine
    default) and the fleet's live state store, for ``seconds`` without a kill: the same run's
    reference for the fleet's latencies, differing in the log only."""
    catalogue = Catalogue(artifact)
    latencies: list[float] = []
    round_ = Round(0)
    stop = threading.Event()
    log = folder / "baseline" / "events.db"
    log.parent.mkdir(parents=True, exist_ok=True)
    with running_server(
        artifact,
        folder / "baseline",
        metrics=False,
        access_log_every=None,
        extra_args=["--event-log", str(log), "--state", state_url],
    ) as server:
        threads = [
            threading.Thread(
                target=timed_burst,
                args=(server.address, round_, s, catalogue, batch, stop, latencies),
                daemon=True,
            )
            for s in range(senders)
        ]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join(30)
        wall = time.perf_counter() - started
    return latency_summary(latencies, wall, batch)


def check_log(log_url: str, rounds: list[Round]) -> dict[str, Any]:
    """Lost, duplicated and torn over everything sent so far, and what training read (timed)."""
    with RedisEventLog.open(log_url) as log:
        stored_rows = log.last_event_rowid()  # one position per stored event
        stored = log.event_ids()
    started = time.perf_counter()
    training_ids = read_logged_events(log_url)["event_id"]
    read_s = time.perf_counter() - started
    lost, torn = lost_and_torn(rounds, stored)
    return {
        "lost": lost,
        "duplicates_stored": stored_rows - len(stored),
        "duplicates_read_by_training": training_ids.len() - training_ids.n_unique(),
        "torn_batches": torn,
        "stored_events": len(stored),
        "training_read_s": read_s,
    }


def run_rounds(
    fleet: Fleet,
    rounds: int,
    senders: int,
    batch: int,
    burst_seconds: float,
    *,
    seed: int = 7,
    quiet: bool = False,
    latencies_ms: list[float] | None = None,
) -> list[dict[str, Any]]:
    """``rounds`` rounds on two servers, killing "a" in odd rounds and "b" in even ones; the time of
    every answered RecordEvents call goes to ``latencies_ms`` when given."""
    latencies = latencies_ms if latencies_ms is not None else []
    catalogue = Catalogue(fleet.artifact)
    rng = np.random.default_rng(seed)
    servers = {name: fleet.launch(name)[0] for name in ("a", "b")}
    history: list[Round] = []
    rows: list[dict[str, Any]] = []
    try:
        for number in range(1, rounds + 1):
            victim = "a" if number % 2 else "b"
            round_ = Round(number)
            history.append(round_)
            stop = threading.Event()
            threads = [
                threading.Thread(
                    target=timed_burst,
                    args=(server.address, round_, 100 * index + s, catalogue, batch, stop, latencies),
                    daemon=True,
                )
                for index, server in enumerate(servers.values())
                for s in range(senders)
            ]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            time.sleep(burst_seconds * float(rng.uniform(0.5, 1.5)))
            kill_everything(servers[victim])
            burst_s = time.perf_counter() - started
            stop.set()
            for thread in threads:
                thread.join(30)
            acknowledged_before = len(round_.acknowledged)
            servers[victim], round_.restart_s = fleet.launch(victim)
            unacknowledged = [b for b in round_.sent if b not in round_.acknowledged]
            with servers[victim].client(retries=2) as client:
                for batch_id in unacknowledged:
                    response = client.record_events(round_.sent[batch_id])
                    round_.retried += 1
                    round_.retried_found_stored += int(
                        response.duplicate_events == len(round_.sent[batch_id])
                    )
                    round_.acknowledged.add(batch_id)
            found = check_log(fleet.log_url, history)
            rows.append(
                {
                    "round": number,
                    "killed": victim,
                    "batches_sent": len(round_.sent),
                    "events_acknowledged_before_kill": batch * acknowledged_before,
                    "burst_s": burst_s,
                    "acknowledged_events_per_s": batch * acknowledged_before / burst_s,
                    "retried_batches": round_.retried,
                    "retried_already_stored": round_.retried_found_stored,
                    "restart_s": round_.restart_s,
                    **found,
                }
            )
            if not quiet:
                row = rows[-1]
                print(
                    f"round {number:2d} (killed {victim}): "
                    f"{row['events_acknowledged_before_kill']:6d} events "
                    f"acknowledged, restart {row['restart_s']:5.2f} s, lost {row['lost']}, duplicates "
                    f"{row['duplicates_stored']}/{row['duplicates_read_by_training']}",
                    flush=True,
                )
    finally:
        for server in servers.values():
            server.stop()
    return rows


def summarise(
    rows: list[dict[str, Any]],
    settings: dict[str, Any],
    fleet_calls: dict[str, float],
    baseline_calls: dict[str, float],
) -> dict[str, Any]:
    restarts = np.asarray([row["restart_s"] for row in rows])
    rates = np.asarray([row["acknowledged_events_per_s"] for row in rows])
    last = rows[-1]
    return {
        "time": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        **settings,
        "per_round": rows,
        "acknowledged_events": sum(row["events_acknowledged_before_kill"] for row in rows),
        "lost": last["lost"],
        "duplicates_stored": last["duplicates_stored"],
        "duplicates_read_by_training": last["duplicates_read_by_training"],
        "torn_batches": last["torn_batches"],
        "stored_events": last["stored_events"],
        "restart_p50_s": float(np.percentile(restarts, 50)),
        "restart_p95_s": float(np.percentile(restarts, 95)),
        "restart_max_s": float(restarts.max()),
        "acknowledged_events_per_s_p50": float(np.percentile(rates, 50)),
        "training_read_s_last": last["training_read_s"],
        # RecordEvents as the clients saw it: the fleet (both servers, every round) against one server
        # with its own SQLite log, same senders per server and batch size, in the same run
        "record_events_fleet": fleet_calls,
        "record_events_sqlite_baseline": baseline_calls,
        "p50_ratio_fleet_to_sqlite": fleet_calls["p50_ms"] / baseline_calls["p50_ms"],
        "p99_ratio_fleet_to_sqlite": fleet_calls["p99_ms"] / baseline_calls["p99_ms"],
        "load_average_1m": os.getloadavg()[0],
    }


def write_results(result: dict[str, Any]) -> Path:
    row = [
        result["time"],
        result["rounds"],
        result["acknowledged_events"],
        result["lost"],
        result["duplicates_stored"],
        result["duplicates_read_by_training"],
        result["torn_batches"],
        f"{result['acknowledged_events_per_s_p50']:.0f}",
        f"{result['record_events_fleet']['p50_ms']:.1f} / {result['record_events_fleet']['p99_ms']:.1f}",
        f"{result['p50_ratio_fleet_to_sqlite']:.2f} / {result['p99_ratio_fleet_to_sqlite']:.2f}",
        f"{result['restart_p50_s']:.2f}",
        f"{result['restart_max_s']:.2f}",
        f"{result['training_read_s_last']:.2f}",
        f"{result['load_average_1m']:.1f}",
    ]
    header = ["time", "rounds", "acknowledged events", "lost", "duplicates stored", "duplicates read",
              "torn batches", "ack events/s p50", "call p50 / p99 ms", "vs SQLite p50 / p99",
              "restart p50 s", "max s", "training read s",
              "load 1m"]  # fmt: skip
    title = "# Fleet event log: two servers, one Redis Streams log, SIGKILL of either mid-burst"
    return write_result(
        RESULTS_DIR, "fleet_event_log", utc_stamp(result["time"]), result, header, [row], title=title
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--senders", type=int, default=2, help="threads sending RecordEvents, per server")
    parser.add_argument("--batch", type=int, default=20, help="events per RecordEvents call")
    parser.add_argument("--burst-seconds", type=float, default=3.0, help="mean time from start to the kill")
    args = parser.parse_args()
    if args.rounds < 1 or args.senders < 1 or args.batch < 1 or args.burst_seconds <= 0:
        parser.error("--rounds, --senders and --batch must be at least 1, --burst-seconds above 0")
    folder = Path(tempfile.mkdtemp(prefix="persona-fleet-"))
    try:
        artifact = bench_artifact(folder / "artifact")
        latencies: list[float] = []
        # The log's Redis fsyncs every write; live state, which may lose its last writes, has its own.
        with (
            redis_server(folder / "log-redis", durable=True) as log_url,
            redis_server(folder / "state-redis", durable=False) as state_url,
        ):
            baseline = sqlite_baseline(
                artifact, folder, state_url, args.senders, args.batch, 2 * args.burst_seconds
            )
            fleet = Fleet(artifact, folder, f"{log_url}?stream={STREAM}", state_url)
            rows = run_rounds(
                fleet, args.rounds, args.senders, args.batch, args.burst_seconds, latencies_ms=latencies
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    settings = {"rounds": args.rounds, "senders_per_server": args.senders, "batch": args.batch,
                "burst_seconds": args.burst_seconds}  # fmt: skip
    burst_wall = sum(row["burst_s"] for row in rows)
    result = summarise(rows, settings, latency_summary(latencies, burst_wall, args.batch), baseline)
    print_table(
        f"fleet rounds: two servers, one shared log, {result['rounds']} x SIGKILL of one mid-burst",
        ["round", "killed", "acknowledged", "ack/s", "retried", "already stored", "restart s", "read s",
         "lost", "duplicates"],
        [
            [row["round"], row["killed"], row["events_acknowledged_before_kill"],
             row["acknowledged_events_per_s"], row["retried_batches"], row["retried_already_stored"],
             row["restart_s"], row["training_read_s"], row["lost"],
             row["duplicates_stored"] + row["duplicates_read_by_training"]]
            for row in rows
        ],
    )  # fmt: skip
    print_table(
        "summary",
        ["acknowledged events", "lost", "duplicates stored", "duplicates read", "torn batches",
         "restart p50 s", "p95 s", "max s"],
        [[result["acknowledged_events"], result["lost"], result["duplicates_stored"],
          result["duplicates_read_by_training"], result["torn_batches"], result["restart_p50_s"],
          result["restart_p95_s"], result["restart_max_s"]]],
    )  # fmt: skip
    calls = [("fleet (2 servers, Redis log)", result["record_events_fleet"]),
             ("baseline (1 server, SQLite log)", result["record_events_sqlite_baseline"])]  # fmt: skip
    print_table(
        "RecordEvents as clients saw it (answered calls)",
        ["setup", "calls", "p50 ms", "p95 ms", "p99 ms", "events/s"],
        [[name, c["calls"], c["p50_ms"], c["p95_ms"], c["p99_ms"], c["targets_per_s"]] for name, c in calls],
    )
    print(
        f"fleet / baseline: p50 {result['p50_ratio_fleet_to_sqlite']:.2f}x, "
        f"p99 {result['p99_ratio_fleet_to_sqlite']:.2f}x"
    )
    print(f"results: {write_results(result)}")


if __name__ == "__main__":
    main()
