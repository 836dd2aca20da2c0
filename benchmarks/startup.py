"""Start-up time with a big event log: how long from launch until the server answers health SERVING.

A server with the in-memory state store rebuilds live state before serving. This fills an event log
with ``--events`` events (default 1,000,000, spread over the last 50 days, so all inside the drift
window that start-up replays), writes the live-state snapshot of it as a running server's upkeep
does (timing that whole replay: the cost per event of a rebuild without snapshot), appends
``--tail`` more events (what arrives after the last snapshot), then starts real servers on it
``--repeats`` times and times each launch until health SERVING. The same-run baseline is a server
started on an empty log: the ratio says what the log adds to start-up. Target: <= 5 s to SERVING.

    python -m benchmarks.startup                      # 1M events, 10k tail, 3 starts
    python -m benchmarks.startup --events 100000 --repeats 2

Results: ``benchmarks/results/startup-<time>.json`` and a row of ``benchmarks/results/startup.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import numpy as np

from benchmarks.result_files import RESULTS_DIR, utc_stamp, write_result
from engine.live.event_log import EventLog
from engine.live.events import BehaviorEvent
from engine.live.live_state import LiveState
from engine.live.live_state_snapshot import snapshot_folder
from engine.live.state_store import MemoryStateStore
from engine.personalizer import Personalizer
from serving.server_process import start_server
from training.config import parse_config
from training.console_output import print_table
from training.synthetic_shop import ShopConfig, generate_shop
from training.train_job import run_training

TARGET_S: Final = 5.0
_SPREAD_DAYS: Final = 50.0
_APPEND_BATCH: Final = 50_000


def bench_artifact(folder: Path, customers: int = 5_000, items: int = 1_000) -> Path:
    """A small real artifact (synthetic shop, fast models) for benchmarks of the live loop."""
    shop = folder / "shop"
    generate_shop(shop, ShopConfig(customers=customers, items=items, events=60_000, seed=11))
    config = parse_config(
        {
            "data": {"path": str(shop)},
            "split": {"test_days": 28, "cold_start_share": 0.1},
            "models": {"popularity": {}, "persona_popularity": {}},
            "output": {"root": str(folder / "artifacts")},
        }
    )
    return run_training(config, show_progress=False).artifact_path


def live_events(
    personalizer: Personalizer, count: int, start: dt.datetime, end: dt.datetime, seed: int, prefix: str
) -> list[BehaviorEvent]:
    """``count`` events in arrival (= time) order between ``start`` and ``end``: the artifact's
    customers and as many customers it never saw, items of its catalog and a few it does not know."""
    rng = np.random.default_rng(seed)
    known = personalizer.mixes.customers.ids.tolist()
    customers = known + [f"live-{n}" for n in range(len(known))]
    items = [*personalizer.artifact.item_catalog.ids.ids.tolist(), "unknown-item"]
    span = (end - start).total_seconds()
    offsets = np.sort(rng.uniform(0.0, span, count))
    who = rng.integers(0, len(customers), count)
    what = rng.integers(0, len(items), count)
    kinds = rng.choice(np.array(["view", "view", "view", "add_to_cart", "purchase"]), count)
    return [
        BehaviorEvent(
            f"{prefix}{n}",
            customers[who[n]],
            items[what[n]],
            str(kinds[n]),
            start + dt.timedelta(seconds=float(offsets[n])),
        )
        for n in range(count)
    ]


def append_all(path: Path, events: list[BehaviorEvent]) -> float:
    started = time.perf_counter()
    with EventLog.open(path) as log:
        for first in range(0, len(events), _APPEND_BATCH):
            log.append(events[first : first + _APPEND_BATCH])
    return time.perf_counter() - started


def time_start(artifact: Path, workdir: Path, log: Path, workers: int) -> tuple[float, str]:
    """Seconds from launch to health SERVING, and the server's log line about the rebuild."""
    started = time.perf_counter()
    server = start_server(
        artifact,
        workdir,
        workers=workers,
        metrics=False,
        access_log_every=None,
        extra_args=["--event-log", str(log)],
        ready_timeout_s=600,
    )
    elapsed = time.perf_counter() - started
    server.stop()
    rebuilt = [line for line in server.log().splitlines() if "live state rebuilt" in line]
    return elapsed, (rebuilt[-1].split(": ", 1)[-1] if rebuilt else "")


def run(events: int, tail: int, repeats: int, workers: int, folder: Path) -> dict[str, Any]:
    artifact = bench_artifact(folder / "artifact")
    personalizer = Personalizer.from_path(artifact)
    now = dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(days=_SPREAD_DAYS)
    cut = now - dt.timedelta(hours=1)
    log = folder / "events.db"
    fill_s = append_all(log, live_events(personalizer, events, start, cut, 1, "e"))

    # The snapshot a running server's upkeep writes: the whole replay, timed (wall and CPU).
    live = LiveState(MemoryStateStore())
    live.attach(personalizer)
    wall, cpu = time.perf_counter(), time.process_time()
    with EventLog.open(log) as event_log:
        snapshot = live.write_snapshot(event_log, snapshot_folder(log))
    replay_wall, replay_cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert snapshot is not None
    append_all(log, live_events(personalizer, tail, cut, now, 2, "t"))

    empty = folder / "empty.db"
    EventLog.open(empty).close()
    baseline = [time_start(artifact, folder / f"base-{n}", empty, workers)[0] for n in range(repeats)]
    starts = [time_start(artifact, folder / f"start-{n}", log, workers) for n in range(repeats)]
    seconds = [s for s, _ in starts]
    rebuilds = [_rebuild_seconds(line) for _, line in starts]
    return {
        "time": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "events_in_log": events + tail,
        "tail_after_snapshot": tail,
        "workers": workers,
        "customers_in_snapshot": len(snapshot.customer_ids),
        "fill_seconds": fill_s,
        "full_replay": {
            "events": events,
            "wall_seconds": replay_wall,
            "cpu_seconds": replay_cpu,
            "wall_ms_per_event": 1000 * replay_wall / events,
            "cpu_ms_per_event": 1000 * replay_cpu / events,
        },
        "start_to_serving_seconds": seconds,
        "start_p50_s": float(np.median(seconds)),
        "start_max_s": max(seconds),
        "baseline_empty_log_seconds": baseline,
        "baseline_p50_s": float(np.median(baseline)),
        "ratio_to_empty_log_p50": float(np.median(seconds) / np.median(baseline)),
        "rebuild_log_lines": [line for _, line in starts],
        "rebuild_seconds_in_server": rebuilds,
        "rebuild_max_s": max(rebuilds),
        "target_s": TARGET_S,
        "meets_target": max(seconds) <= TARGET_S,
        "load_average_1m": os.getloadavg()[0],
    }


def _rebuild_seconds(line: str) -> float:
    """The seconds the server's own log gives for its rebuild (NaN when it did not say)."""
    found = re.search(r"rebuilt in ([\d.]+)s", line)
    return float(found.group(1)) if found else float("nan")


def write_results(result: dict[str, Any]) -> Path:
    replay = result["full_replay"]
    row = [
        result["time"],
        result["events_in_log"],
        result["tail_after_snapshot"],
        result["workers"],
        f"{result['start_p50_s']:.2f}",
        f"{result['start_max_s']:.2f}",
        f"{result['baseline_p50_s']:.2f}",
        f"{result['ratio_to_empty_log_p50']:.2f}",
        f"{result['rebuild_max_s']:.2f}",
        f"{replay['wall_ms_per_event']:.3f} ({replay['cpu_ms_per_event']:.3f})",
        f"{result['load_average_1m']:.1f}",
        "met" if result["meets_target"] else "missed",
    ]
    header = ["time", "events in log", "tail", "workers", "start p50 s", "start max s", "empty-log p50 s",
              "ratio", "rebuild max s", "full replay ms/event (cpu)", "load 1m", "target 5 s"]  # fmt: skip
    return write_result(RESULTS_DIR, "startup", utc_stamp(result["time"]), result, header, [row])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the log at the snapshot")
    parser.add_argument("--tail", type=int, default=10_000, help="events logged after the snapshot")
    parser.add_argument("--repeats", type=int, default=3, help="timed starts (and as many baseline starts)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="persona-startup-"))
    try:
        result = run(args.events, args.tail, args.repeats, args.workers, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    replay = result["full_replay"]
    rows = [
        ["snapshot + tail", result["events_in_log"], result["start_p50_s"], result["start_max_s"]],
        ["empty log (baseline)", 0, result["baseline_p50_s"], max(result["baseline_empty_log_seconds"])],
    ]
    print_table(
        f"start-up to SERVING, {result['workers']} workers ({result['tail_after_snapshot']} events after the "
        f"snapshot; target <= {TARGET_S:.0f} s)",
        ["log", "events", "p50 s", "max s"],
        rows,
    )
    print(
        f"ratio to the empty-log start: {result['ratio_to_empty_log_p50']:.2f}; rebuild inside the server "
        f"at most {result['rebuild_max_s']:.2f} s; target "
        f"{'met' if result['meets_target'] else 'missed'}; full replay of {replay['events']} events: "
        f"{replay['wall_seconds']:.1f} s wall, {replay['cpu_ms_per_event']:.3f} ms CPU per event "
        f"(load average {result['load_average_1m']:.1f})"
    )
    for line in result["rebuild_log_lines"]:
        print(f"  server: {line}")
    print(f"results: {write_results(result)}")


if __name__ == "__main__":
    main()
