"""Serving latency and throughput of the real gRPC server, against the same work in-process and a baseline.

Absolute milliseconds depend on the machine, so every RPC is measured three ways in one run:

- **end to end**: ``persona-engine serve`` (1 or more worker processes) driven over loopback by the
  load generator (``benchmarks.load_generator``, a separate interpreter), closed-loop at a fixed
  concurrency and open-loop at a fixed arrival rate (latency from the scheduled send time, so a
  stalled server is charged for every request it delayed). The server's own latency histogram is
  scraped before and after each phase and its quantiles estimated from the bucket deltas;
- **in-process**: the engine's own call (``Personalizer.personalize`` and friends) on the same
  artifact and the same requests, and the servicer (request validation, engine, protobuf building,
  serialization) without any transport;
- **baseline**: a plain numpy full-scan top-k over the served model's item factors, same k.

The ratios between them (server / in-process / baseline) show what gRPC and the servicer add and what
the engine costs over a bare top-k, on any machine. Per worker count, the **gRPC floor**
(``benchmarks.floor_phase``) measures the same server stack answering Personalize from a prepared
response (``--benchmark-floor``), the ceiling of any Python server here; the result's ``ratios`` set
Personalize against it and against the servicer, and ``targets`` judges the issue's targets
(``benchmarks.serving_targets``): met, or missed by how much. The artifact is built once per size, training
config and code version and cached under ``benchmarks/.cache/`` (build time and peak memory are kept
with it). Results go to ``benchmarks/results/serving_latency-<UTC stamp>.json`` and one Markdown row per
RPC and mode is appended to ``benchmarks/results/serving_latency.md``.

With ``--mixed-write-share 0.1`` a mixed workload runs too, on a server started with ``--event-log``:
Personalize reads with 10% of the calls replaced by RecordEvents writes (``--write-batch`` events each,
every one new, so every write is a durable commit), closed and open loop, each RPC reported on its
own and Personalize against the Personalize-only phases of the same run. Its open phase interleaves
read-only and mixed slices of a second (``benchmarks.mixed_workload``), and the ratio of the two
kinds' p99s is the mixed-workload target's figure.

    python -m benchmarks.serving_latency                      # quick: demo-sized shop, ~2 minutes
    python -m benchmarks.serving_latency --customers 1000000 --items 100000 --events 10000000 \\
        --config benchmarks/configs/serving_large.toml --workers 1 2 --concurrency 16 --duration 10 \\
        --warmup 2 --profile                                   # what make bench-serving-large runs, + py-spy
    python -m benchmarks.serving_latency --artifact benchmarks/.cache/<entry>/artifacts/latest ...
    python -m benchmarks.serving_latency --mixed-write-share 0.1   # quick, plus the mixed workload
    python -m benchmarks.serving_latency --mixed-write-share 0.1 --stall-watch   # + the machine's stalls
    python -m benchmarks.serving_latency --rpcs Personalize --no-floor   # Personalize only, no floor
    python -m benchmarks.serving_latency --rpcs Personalize --profile-native   # C frames too
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from cli.allocator_settings import ALLOCATOR_SETTINGS, ALLOCATOR_SETTINGS_VARIABLE

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# the artifact build is a training run: polars' allocator set as the command line sets it (cli.main)
os.environ.setdefault(ALLOCATOR_SETTINGS_VARIABLE, ALLOCATOR_SETTINGS)

import numpy as np

from benchmarks.floor_phase import FloorSide, floor_section, floor_side
from benchmarks.in_process_latency import INDEX_QUALITY_QUERIES, candidate_index_quality, measure_in_process
from benchmarks.load_phases import LoadSettings, run_server_phases
from benchmarks.machine_stalls import StallWatch
from benchmarks.mixed_workload import MAX_WRITE_BATCH, MixedPlan, run_mixed_phases, slice_stalls
from benchmarks.server_profile import py_spy_path
from benchmarks.serving_artifact_cache import (
    BENCHMARKS_DIR,
    ShopSize,
    build_serving_artifact,
    ensure_artifact,
    existing_build,
)
from benchmarks.serving_report import print_report, write_results
from benchmarks.serving_targets import CAPACITY_CONCURRENCIES, HIGH_RATE, ratios, targets_section
from benchmarks.serving_workloads import NUM_OFFERS, RPC_CHOICES, K, build_workloads, sample_customers
from serving.model_holder import load_model
from training.console_output import stderr_console

QUICK_CONFIG: Final = BENCHMARKS_DIR / "configs" / "serving_quick.toml"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serving_latency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    size = parser.add_argument_group("artifact")
    size.add_argument("--customers", type=int, default=5_000)
    size.add_argument("--items", type=int, default=2_000)
    size.add_argument("--events", type=int, default=200_000)
    size.add_argument("--seed", type=int, default=7, help="synthetic shop seed")
    size.add_argument("--config", type=Path, default=QUICK_CONFIG, help="training config (TOML)")
    size.add_argument("--model", default="als", help="model to serve (default: als)")
    size.add_argument("--rebuild", action="store_true", help="build the artifact even when it is cached")
    size.add_argument(
        "--artifact",
        type=Path,
        help="serve this existing artifact instead of building one (size flags are then ignored); "
        "e.g. a cached build kept across code changes, or a production artifact",
    )
    server = parser.add_argument_group("server")
    server.add_argument("--workers", type=int, nargs="+", default=[2], help="worker counts to run, e.g. 1 2")
    server.add_argument("--threads", type=int, default=16, help="handler threads per worker")
    load = parser.add_argument_group("load")
    load.add_argument("--concurrency", type=int, default=8, help="closed-loop callers")
    load.add_argument(
        "--rate", type=float, default=300.0, help="open-loop calls per second (single-target RPCs)"
    )
    load.add_argument(
        "--personalize-extra-rates",
        type=float,
        nargs="*",
        default=[HIGH_RATE],
        metavar="RATE",
        help="further open-loop Personalize rates, calls/s, after the one at --rate (default: "
        f"{HIGH_RATE:g}, a target's rate; none: no further phase)",
    )
    load.add_argument(
        "--personalize-extra-concurrency",
        type=int,
        nargs="*",
        default=list(CAPACITY_CONCURRENCIES),
        metavar="C",
        help="further closed-loop Personalize concurrencies, on the Personalize and the floor servers, "
        "after the one at --concurrency: a batching server's capacity is its best throughput over them "
        f"(default: {' '.join(str(c) for c in CAPACITY_CONCURRENCIES)}; none: no further phase)",
    )
    load.add_argument(
        "--batch-rate", type=float, default=10.0, help="open-loop calls per second of the batch RPC"
    )
    load.add_argument("--batch-size", type=int, default=50, help="targets per batched RecommendProducts call")
    load.add_argument("--arrivals", choices=("poisson", "fixed"), default="poisson")
    load.add_argument("--duration", type=float, default=3.0, help="seconds per measured phase")
    load.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up before each phase")
    load.add_argument("--max-requests", type=int, default=200_000, help="cap on calls per phase")
    load.add_argument("--timeout", type=float, default=2.0, help="deadline of each call, seconds")
    load.add_argument("--channels", type=int, default=8, help="connections the load generator opens")
    load.add_argument(
        "--in-process-requests", type=int, default=400, help="sequential calls per in-process kind"
    )
    parser.add_argument(
        "--rpcs",
        nargs="+",
        choices=RPC_CHOICES,
        help="only these RPCs (default: all, RecommendProducts twice)",
    )
    mixed = parser.add_argument_group("mixed workload")
    mixed.add_argument(
        "--mixed-write-share",
        type=float,
        default=0.0,
        help="also run Personalize with this share of calls replaced by RecordEvents writes, on a server "
        "with an event log, e.g. 0.1 (default 0: not run)",
    )
    mixed.add_argument("--write-batch", type=int, default=10, help="events per RecordEvents call")
    mixed.add_argument(
        "--write-pool",
        type=int,
        default=5000,
        help="distinct RecordEvents calls prepared per phase (all events new; reuse is reported)",
    )
    parser.add_argument(
        "--floor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the gRPC floor: the same server with --benchmark-floor, Personalize from a prepared "
        "response (default: on; skipped with a reason when the server has no such flag)",
    )
    parser.add_argument(
        "--stall-watch",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="watch for stalls of the machine during the load phases (benchmarks.machine_stalls: a "
        "batch process that sleeps 5 ms at a time; JSON 'machine_stalls', and the mixed workload's "
        "read-only or mixed slices each stall fell in). Off by default: on 2 cores it costs the server "
        "up to 15%% of its calls/s",
    )
    parser.add_argument(
        "--pin-workers",
        action="store_true",
        help="start every server (Personalize, floor, mixed) with each worker on a CPU of its own "
        "(serve --pin-workers); the JSON's load.server_flags says so",
    )
    parser.add_argument(
        "--helper-threads",
        choices=("batch", "normal"),
        help="start every server with this scheduling of its helper threads (serve --helper-threads; "
        "default: the server's, batch); the JSON's load.server_flags says so",
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        metavar="MS",
        help="start every server with this dynamic-batching wait (serve --batch-wait-ms; default: the "
        "server's); the JSON's load.server_flags says so",
    )
    parser.add_argument(
        "--batch-max-size",
        type=int,
        metavar="N",
        help="start every server with this largest batch (serve --batch-max-size; default: the server's); "
        "the JSON's load.server_flags says so",
    )
    parser.add_argument(
        "--batch-preferred-size",
        type=int,
        metavar="N",
        help="start every server with this preferred batch (serve --batch-preferred-size: a batching wait "
        "ends once N calls are queued; default: the server's); the JSON's load.server_flags says so",
    )
    parser.add_argument("--profile", action="store_true", help="also run a Personalize phase under py-spy")
    parser.add_argument(
        "--profile-native",
        action="store_true",
        help="--profile with C frames too (py-spy --native): splits gRPC's core into its system calls; "
        "py-spy pauses the workers for each sample, so that phase serves more slowly",
    )
    parser.add_argument("--json", action="store_true", help="print the result document on stdout, no tables")
    # Internal: the artifact build step, run by the benchmark in its own process to measure its memory.
    parser.add_argument(
        "--build-artifact", nargs=2, type=Path, metavar=("SHOP", "ROOT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    args.profile = args.profile or args.profile_native
    positive = ("customers", "items", "events", "threads", "concurrency", "batch_size", "channels",
                "in_process_requests", "max_requests", "write_batch", "write_pool")  # fmt: skip
    for name in positive:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("rate", "batch_rate", "duration", "timeout"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if any(c < 1 for c in args.personalize_extra_concurrency):
        parser.error(
            f"--personalize-extra-concurrency must all be >= 1, got {args.personalize_extra_concurrency}"
        )
    if any(not rate > 0 for rate in args.personalize_extra_rates):
        parser.error(f"--personalize-extra-rates must all be > 0, got {args.personalize_extra_rates}")
    if not 0.0 <= args.mixed_write_share < 1.0:
        parser.error(f"--mixed-write-share must be in [0, 1), got {args.mixed_write_share}")
    if args.write_batch > MAX_WRITE_BATCH:
        parser.error(
            f"--write-batch must be <= {MAX_WRITE_BATCH} (RecordEvents' limit), got {args.write_batch}"
        )
    for name in ("batch_max_size", "batch_preferred_size"):
        size = getattr(args, name)
        if size is not None and size < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {size}")
    if any(w < 1 for w in args.workers):
        parser.error(f"--workers must all be >= 1, got {args.workers}")
    if not args.config.is_file():
        parser.error(f"--config {args.config}: no such file")
    if args.profile and py_spy_path() is None:
        parser.error("--profile needs py-spy (pip install py-spy into the venv; it is not a dependency)")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    size = ShopSize(args.customers, args.items, args.events, args.seed)
    if args.artifact is not None:
        artifact, build = args.artifact, existing_build(args.artifact)
    else:
        artifact, build = ensure_artifact(size, args.config.resolve(), args.model, rebuild=args.rebuild)
    stderr_console.print(f"loading {artifact.resolve()} in-process")
    loaded = load_model(artifact, args.model)
    workloads = build_workloads(
        loaded.personalizer,
        np.random.default_rng(args.seed),
        batch_size=args.batch_size,
        rate=args.rate,
        batch_rate=args.batch_rate,
    )
    personalize_reads = next(w for w in workloads if w.name == "Personalize").requests
    if args.rpcs:
        unknown = set(args.rpcs) - {w.name.split("[")[0] for w in workloads}
        if unknown:
            raise SystemExit(f"--rpcs: unknown {sorted(unknown)}; choose from {RPC_CHOICES}")
        workloads = [w for w in workloads if w.name.split("[")[0] in args.rpcs]
    mixed_plan = (
        MixedPlan.build(
            loaded.personalizer,
            np.random.default_rng(args.seed + 1),
            share=args.mixed_write_share,
            write_batch=args.write_batch,
            pool=args.write_pool,
            rate=args.rate,
            reads=personalize_reads,
        )
        if args.mixed_write_share > 0
        else None
    )
    in_process = measure_in_process(workloads, args.in_process_requests)
    index_quality = candidate_index_quality(
        loaded.personalizer,
        sample_customers(loaded.personalizer, INDEX_QUALITY_QUERIES, np.random.default_rng(args.seed + 1)),
        K,
    )
    for w in workloads:  # the engine copy is not needed any more; the servers load their own
        w.engine_call = w.servicer_call = lambda i: None
        w.baseline_call = None
    personalizer = loaded.personalizer
    version, n_customers, n_items = personalizer.version, len(personalizer.customers), len(personalizer.items)
    del loaded, personalizer
    gc.collect()
    load = LoadSettings(
        args.concurrency,
        args.arrivals,
        args.duration,
        args.warmup,
        args.max_requests,
        args.timeout,
        args.channels,
        _server_flags(args),  # the floor's server is started like the rest
    )
    server_runs = []
    floor_runs = []
    mixed_runs = []
    with (
        tempfile.TemporaryDirectory(prefix="serving-latency-") as tmp,
        StallWatch(Path(tmp)) if args.stall_watch else contextlib.nullcontext() as watch,
    ):
        for workers in args.workers:
            # The Personalize server and its floor are driven alike (same phases, same concurrencies),
            # each floor phase right after Personalize's (benchmarks.floor_phase).
            server = (artifact.resolve(), args.model, workers, args.threads, workloads, load, Path(tmp))
            no_floor = FloorSide(workers, args.threads, None, "--no-floor")
            with floor_side(*server) if args.floor else contextlib.nullcontext(no_floor) as floor:
                server_runs.append(
                    run_server_phases(
                        *server,
                        args.profile,
                        personalize_extra_rates=args.personalize_extra_rates,
                        personalize_extra_concurrencies=args.personalize_extra_concurrency,
                        profile_native=args.profile_native,
                        paired=floor.session,
                    )
                )
                floor_runs.append(floor.result())
            if mixed_plan is not None:
                mixed_runs.append(
                    run_mixed_phases(
                        artifact.resolve(), args.model, workers, args.threads, mixed_plan, load, Path(tmp)
                    )
                )
    stalls = watch.summary() if watch is not None else None
    if stalls is not None:  # which slices of the mixed ratio the machine's stalls fell in
        for run in mixed_runs:
            run["open_paired"]["round_stalls"] = slice_stalls(stalls["stalls"], run["open_paired"])
    result: dict[str, Any] = {
        "benchmark": "serving_latency",
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            # Other work on the machine skews every figure; the load average at the start tells.
            "load_average_at_start": load_at_start,
        },
        # Late wake-ups of a sleeping process during the load phases: the machine's own stalls.
        "machine_stalls": stalls,
        "size": {
            "customers": n_customers,
            "items": n_items,
            "events": build.get("events", args.events) if args.artifact else args.events,
            "seed": args.seed,
        },
        "artifact_version": version,
        "model": args.model,
        "build": build,
        "k": K,
        "num_offers": NUM_OFFERS,
        "batch_size": args.batch_size,
        "rates": {w.name: w.rate for w in workloads},
        "personalize_extra_rates": args.personalize_extra_rates,
        "personalize_extra_concurrencies": args.personalize_extra_concurrency,
        "load": load.__dict__,
        "in_process": in_process,
        "candidate_index": index_quality,
        "server_runs": server_runs,
        "floor": floor_section(floor_runs),
        **({"mixed": mixed_plan.describe(), "mixed_runs": mixed_runs} if mixed_plan is not None else {}),
    }
    result["ratios"] = ratios(result)
    result["targets"] = targets_section(result)
    result["seconds"] = time.perf_counter() - started
    return result


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SystemExit unwinds through the finally blocks that stop the server and the load generator.
    raise SystemExit(128 + signum)


def _server_flags(args: argparse.Namespace) -> tuple[str, ...]:
    """The flags every server of the run gets besides its own (recorded in ``load.server_flags``)."""
    flags: tuple[str, ...] = ("--pin-workers",) if args.pin_workers else ()
    if args.helper_threads:
        flags += ("--helper-threads", args.helper_threads)
    if args.batch_wait_ms is not None:
        flags += ("--batch-wait-ms", f"{args.batch_wait_ms:g}")
    if args.batch_max_size is not None:
        flags += ("--batch-max-size", str(args.batch_max_size))
    if args.batch_preferred_size is not None:
        flags += ("--batch-preferred-size", str(args.batch_preferred_size))
    return flags


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    args = parse_args(argv)
    if args.build_artifact is not None:
        shop, root = args.build_artifact
        print(json.dumps(build_serving_artifact(args.config, shop, root, args.model)))
        return 0
    result = run(args)
    path = write_results(result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
        print(f"results: {path} (whole run {result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
