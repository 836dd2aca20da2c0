"""Crash rounds: RecordEvents bursts, SIGKILL of the whole server, restart; nothing acknowledged is lost.

Each of ``--rounds`` rounds runs a real server (``--workers`` workers, event log on, in-memory live
state, so every restart rebuilds live state from the snapshot and the log) under bursts of
RecordEvents from ``--senders`` threads, each batch of ``--batch`` events with ids of its own; after a
random ``--burst-seconds`` (half to one and a half times) the supervisor and every worker get
SIGKILL at once: no handler runs, nothing is flushed. The server is started again on the same log and
timed from launch to health SERVING, then the batches whose answer never came are sent again, as a
shop's pipeline would retry them. After every round the log and its archive are read as training
reads them (``training.logged_events``) and checked:

- lost: acknowledged events not stored (must be 0);
- duplicates: stored rows of an event id beyond the first, in the log and the archive (must be 0);
- torn batches: batches stored in part (must be 0; a batch is one transaction);
- the SQLite file passes ``PRAGMA integrity_check``.

    python -m benchmarks.crash                 # 20 rounds, 2 workers
    python -m benchmarks.crash --rounds 3 --burst-seconds 2

Results: ``benchmarks/results/crash-<time>.json`` and a row of ``benchmarks/results/crash.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import re
import shutil
import signal
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
import numpy as np
import polars as pl

from benchmarks.linux_processes import process_state
from benchmarks.result_files import RESULTS_DIR, utc_stamp, write_result
from benchmarks.startup import bench_artifact
from engine.live.event_archive import archive_folder, event_parts
from engine.live.event_log import EventLog
from engine.live.events import BehaviorEvent
from engine.personalizer import Personalizer
from serving.client import PersonaEngineClient
from serving.server_process import ServerProcess, start_server
from training.console_output import print_table
from training.logged_events import read_logged_events

_GONE_TIMEOUT_S: Final = 30.0


@dataclass
class Round:
    """What one round sent, what was acknowledged, and what was found after the kill."""

    number: int
    sent: dict[str, list[BehaviorEvent]] = field(default_factory=dict)  # batch id -> its events
    acknowledged: set[str] = field(default_factory=set)  # batch ids
    lock: threading.Lock = field(default_factory=threading.Lock)
    restart_s: float = float("nan")
    retried: int = 0  # unacknowledged batches sent again after the restart
    retried_found_stored: int = 0  # of those, answered as duplicates: they had landed before the kill
    rebuild_s: float = float("nan")  # the slowest worker's live-state rebuild in the restart
    replayed_events: int = -1  # logged events that worker replayed after the newest snapshot


class Catalogue:
    """Customers and items of the artifact, for events that live state really folds in."""

    def __init__(self, artifact: Path) -> None:
        personalizer = Personalizer.from_path(artifact)
        self.customers = personalizer.mixes.customers.ids.tolist()
        self.items = personalizer.artifact.item_catalog.ids.ids.tolist()

    def batch(self, batch_id: str, size: int, rng: np.random.Generator) -> list[BehaviorEvent]:
        now = dt.datetime.now(dt.UTC)
        return [
            BehaviorEvent(
                f"{batch_id}-e{n}",
                str(self.customers[int(rng.integers(len(self.customers)))]),
                str(self.items[int(rng.integers(len(self.items)))]),
                "view",
                now,
            )
            for n in range(size)
        ]


def burst(
    server: ServerProcess, round_: Round, sender: int, catalogue: Catalogue, batch: int, stop: threading.Event
) -> None:
    """Send batches until the server dies under a call (or ``stop``)."""
    rng = np.random.default_rng(1_000 * round_.number + sender)
    with PersonaEngineClient(server.address, timeout_s=10.0, retries=0) as client:
        number = 0
        while not stop.is_set():
            batch_id = f"r{round_.number}-s{sender}-b{number}"
            events = catalogue.batch(batch_id, batch, rng)
            with round_.lock:
                round_.sent[batch_id] = events
            try:
                response = client.record_events(events)
            except grpc.RpcError:
                return  # killed under this call
            if response.accepted_events + response.duplicate_events == batch and not response.errors:
                with round_.lock:
                    round_.acknowledged.add(batch_id)
            number += 1


def kill_everything(server: ServerProcess) -> None:
    """SIGKILL the supervisor and every worker at once, then wait until all are gone."""
    pids = [server.process.pid, *[pid for pid in server.worker_pids if pid != server.process.pid]]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.process.wait(_GONE_TIMEOUT_S)
    deadline = time.monotonic() + _GONE_TIMEOUT_S
    for pid in pids[1:]:  # workers: reaped by whoever adopted them
        while process_state(pid) not in ("Z", ""):  # "": gone
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {pid} still alive {_GONE_TIMEOUT_S}s after SIGKILL")
            time.sleep(0.01)


# A worker's start-up line (serving.server): what a restart replays is what the snapshots left behind.
_REBUILT = re.compile(r"live state rebuilt in ([0-9.]+)s: .* then ([0-9]+) logged events replayed")


def rebuilds(log: str) -> list[tuple[float, int]]:
    """(seconds, events replayed after the snapshot) of each worker's rebuild that ``log`` reports."""
    return [(float(m.group(1)), int(m.group(2))) for m in _REBUILT.finditer(log)]


def launch(
    artifact: Path, workdir: Path, log: Path, workers: int, number: int
) -> tuple[ServerProcess, float]:
    started = time.perf_counter()
    server = start_server(
        artifact,
        workdir,
        workers=workers,
        metrics=False,
        access_log_every=None,
        extra_args=["--event-log", str(log)],
        ready_timeout_s=600,
        name=f"round-{number:02d}",
    )
    return server, time.perf_counter() - started


def lost_and_torn(rounds: list[Round], stored: set[str]) -> tuple[int, int]:
    """Acknowledged events missing from ``stored``, and unacknowledged batches stored in part."""
    lost = torn = 0
    for round_ in rounds:
        for batch_id, events in round_.sent.items():
            present = sum(e.event_id in stored for e in events)
            if batch_id in round_.acknowledged:
                lost += len(events) - present
            elif present not in (0, len(events)):
                torn += 1
    return lost, torn


def check_store(log: Path, rounds: list[Round]) -> dict[str, int]:
    """Lost, duplicated and torn, over everything sent so far, as training reads the log."""
    with sqlite3.connect(log) as raw:
        integrity = raw.execute("PRAGMA integrity_check").fetchone()[0]
    with EventLog.open(log) as event_log:
        logged_rows = event_log.counts()["events"]
        logged_ids = event_log.event_ids()
    archived_rows = 0
    archived_ids: set[str] = set()
    for part in event_parts(archive_folder(log)):
        ids = pl.read_parquet(part, columns=["event_id"])["event_id"].to_list()
        archived_rows += len(ids)
        archived_ids.update(ids)
    stored = logged_ids | archived_ids
    training_ids = read_logged_events(log)["event_id"]
    lost, torn = lost_and_torn(rounds, stored)
    return {
        "lost": lost,
        "duplicates_stored": logged_rows + archived_rows - len(stored),
        "duplicates_read_by_training": training_ids.len() - training_ids.n_unique(),
        "torn_batches": torn,
        "stored_events": len(stored),
        "integrity_ok": int(integrity == "ok"),
    }


def run(
    rounds: int, workers: int, senders: int, batch: int, burst_seconds: float, folder: Path
) -> dict[str, Any]:
    artifact = bench_artifact(folder / "artifact")
    catalogue = Catalogue(artifact)
    log = folder / "events.db"
    rng = np.random.default_rng(7)
    server, first_start = launch(artifact, folder / "server", log, workers, 0)
    history: list[Round] = []
    rows: list[dict[str, Any]] = []
    try:
        for number in range(1, rounds + 1):
            round_ = Round(number)
            history.append(round_)
            stop = threading.Event()
            threads = [
                threading.Thread(target=burst, args=(server, round_, s, catalogue, batch, stop), daemon=True)
                for s in range(senders)
            ]
            for thread in threads:
                thread.start()
            time.sleep(burst_seconds * float(rng.uniform(0.5, 1.5)))
            kill_everything(server)
            stop.set()
            for thread in threads:
                thread.join(30)
            server, round_.restart_s = launch(artifact, folder / "server", log, workers, number)
            worker_rebuilds = rebuilds(server.log())
            if worker_rebuilds:
                round_.rebuild_s, round_.replayed_events = max(worker_rebuilds)
            unacknowledged = [b for b in round_.sent if b not in round_.acknowledged]
            with server.client(retries=2) as client:
                for batch_id in unacknowledged:
                    response = client.record_events(round_.sent[batch_id])
                    round_.retried += 1
                    round_.retried_found_stored += int(
                        response.duplicate_events == len(round_.sent[batch_id])
                    )
                    round_.acknowledged.add(batch_id)
            found = check_store(log, history)
            rows.append(
                {
                    "round": number,
                    "batches_sent": len(round_.sent),
                    "events_acknowledged_before_kill": batch * (len(round_.acknowledged) - round_.retried),
                    "retried_batches": round_.retried,
                    "retried_already_stored": round_.retried_found_stored,
                    "restart_s": round_.restart_s,
                    "rebuild_s": round_.rebuild_s,
                    "replayed_events": round_.replayed_events,
                    **found,
                }
            )
            print(
                f"round {number:2d}: {rows[-1]['events_acknowledged_before_kill']:6d} events acknowledged, "
                f"restart {round_.restart_s:6.2f} s (rebuild {round_.rebuild_s:.1f} s, "
                f"{round_.replayed_events} events replayed), lost {found['lost']}, duplicates "
                f"{found['duplicates_stored']}",
                flush=True,
            )
    finally:
        server.stop()
    restarts = np.asarray([row["restart_s"] for row in rows])
    rebuilt = [line.split(": ", 1)[-1] for line in server.log().splitlines() if "live state rebuilt" in line]
    return {
        "time": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "rounds": rounds,
        "workers": workers,
        "senders": senders,
        "batch": batch,
        "burst_seconds": burst_seconds,
        "first_start_s": first_start,
        "per_round": rows,
        "acknowledged_events": sum(row["events_acknowledged_before_kill"] for row in rows),
        "lost": rows[-1]["lost"] if rows else 0,
        "duplicates_stored": rows[-1]["duplicates_stored"] if rows else 0,
        "duplicates_read_by_training": rows[-1]["duplicates_read_by_training"] if rows else 0,
        "torn_batches": rows[-1]["torn_batches"] if rows else 0,
        "integrity_ok_every_round": all(row["integrity_ok"] for row in rows),
        "stored_events": rows[-1]["stored_events"] if rows else 0,
        "restart_p50_s": float(np.percentile(restarts, 50)),
        "restart_p95_s": float(np.percentile(restarts, 95)),
        "restart_max_s": float(restarts.max()),
        "last_rebuild_log_line": rebuilt[-1] if rebuilt else "",
        "load_average_1m": os.getloadavg()[0],
    }


def write_results(result: dict[str, Any]) -> Path:
    row = [
        result["time"],
        result["rounds"],
        result["workers"],
        result["acknowledged_events"],
        result["lost"],
        result["duplicates_stored"],
        result["torn_batches"],
        f"{result['restart_p50_s']:.2f}",
        f"{result['restart_p95_s']:.2f}",
        f"{result['restart_max_s']:.2f}",
        f"{result['load_average_1m']:.1f}",
    ]
    header = ["time", "rounds", "workers", "acknowledged events", "lost", "duplicates stored",
              "torn batches", "restart p50 s", "p95 s", "max s", "load 1m"]  # fmt: skip
    return write_result(RESULTS_DIR, "crash", utc_stamp(result["time"]), result, header, [row])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--senders", type=int, default=4, help="threads sending RecordEvents")
    parser.add_argument("--batch", type=int, default=20, help="events per RecordEvents call")
    parser.add_argument("--burst-seconds", type=float, default=4.0, help="mean time from start to the kill")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="persona-crash-"))
    try:
        result = run(args.rounds, args.workers, args.senders, args.batch, args.burst_seconds, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print_table(
        f"crash rounds: {result['rounds']} x SIGKILL of a {result['workers']}-worker server mid-burst",
        [
            "round",
            "acknowledged",
            "retried",
            "retried already stored",
            "restart s",
            "rebuild s",
            "replayed",
            "lost",
            "duplicates",
        ],
        [
            [
                row["round"],
                row["events_acknowledged_before_kill"],
                row["retried_batches"],
                row["retried_already_stored"],
                row["restart_s"],
                row["rebuild_s"],
                row["replayed_events"],
                row["lost"],
                row["duplicates_stored"],
            ]
            for row in result["per_round"]
        ],
    )
    print_table(
        "summary",
        [
            "acknowledged events",
            "lost",
            "duplicates stored",
            "torn batches",
            "restart p50 s",
            "p95 s",
            "max s",
        ],
        [
            [
                result["acknowledged_events"],
                result["lost"],
                result["duplicates_stored"],
                result["torn_batches"],
                result["restart_p50_s"],
                result["restart_p95_s"],
                result["restart_max_s"],
            ]
        ],
    )
    print(f"last restart: {result['last_rebuild_log_line']}")
    print(f"results: {write_results(result)}")


if __name__ == "__main__":
    main()
