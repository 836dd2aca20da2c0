"""Loading cost of big data: the transaction adapter, ``load_shop`` and id mapping, against bare reads.

A shop with ten million lines must go from export to interaction matrix in well under a minute. Each
stage is timed next to a same-run baseline that does the least possible work on the same bytes (a bare
``polars.read_parquet`` of the same file), so the ratio says what parsing, validation and id mapping
cost over just reading, whatever the machine. Peak resident memory of the process is reported too
(the machine is shared; the target is to stay under about 6 GB).

The input is a seeded synthetic transaction export in the shape of a real one (invoice, stock code,
description, quantity, unit price, timestamp text, float customer id with guests, country, with
cancellations and returns), written once to the scratch folder and reused.

    python -m benchmarks.data_loading [--rows 10000000 --customers 1000000 --items 100000]
                                      [--scratch /tmp/persona-engine-bench]

Results are appended to ``benchmarks/results/`` as JSON and as rows of a Markdown history table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import polars as pl

from engine.data.id_map import IdMap
from engine.data.interactions import interaction_matrix
from engine.data.loading import load_shop
from training.console_output import print_table
from training.transaction_adapter import adapt_transactions
from training.transaction_mapping import parse_mapping

RESULTS_DIR = Path(__file__).resolve().parent / "results"
COUNTRIES = ("United Kingdom", "Germany", "France", "EIRE", "Spain", "Netherlands", "Belgium", "Norway")
MAPPING = {
    "source": {"name": "synthetic export", "timestamp_format": "%Y-%m-%d %H:%M:%S"},
    "columns": {
        "invoice": "InvoiceNo",
        "product_code": "StockCode",
        "description": "Description",
        "quantity": "Quantity",
        "unit_price": "UnitPrice",
        "timestamp": "InvoiceDate",
        "customer": "CustomerID",
        "country": "Country",
    },
    "drop": {"cancellation_invoice_prefix": "C", "product_codes": ["POST"], "duplicate_rows": True},
    "category": {
        "default": "other",
        "rules": [
            {"category": "christmas", "pattern": "(?i)christmas"},
            {"category": "kitchen", "pattern": "(?i)mug|bowl"},
        ],
    },
    "tags": {"rules": [{"tag": "vintage", "pattern": "(?i)vintage"}]},
    "price_bands": {"edges": [1.25, 3.75], "tags": ["budget", "standard", "premium"]},
}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux reports KiB


def write_export(path: Path, rows: int, customers: int, items: int, seed: int = 0) -> None:
    """A transaction export like UCI Online Retail's, at any size; columnar, so 10M rows take seconds."""
    rng = np.random.default_rng(seed)
    basket = np.sort(rng.integers(0, max(rows // 12, 1), size=rows))
    customer_of_basket = rng.integers(10_000, 10_000 + customers, size=int(basket.max()) + 1).astype(
        np.float64
    )
    customer_of_basket[rng.random(customer_of_basket.size) < 0.2] = np.nan  # guests
    cancelled = rng.random(int(basket.max()) + 1) < 0.02
    item = np.minimum(rng.zipf(1.3, size=rows) - 1, items - 1)
    quantity = rng.integers(1, 25, size=rows)
    quantity = np.where(cancelled[basket], -quantity, quantity)
    quantity[rng.random(rows) < 0.005] *= -1  # returns on ordinary invoices
    base_price = np.round(np.exp(rng.normal(0.8, 0.8, size=items)), 2)
    seconds = np.sort(rng.integers(0, 365 * 86_400, size=int(basket.max()) + 1))[basket]
    words = np.array(["MUG", "BOWL", "CHRISTMAS STAR", "VINTAGE SIGN", "CANDLE", "BAG", "CARD", "FRAME"])
    frame = pl.DataFrame(
        {
            "InvoiceNo": basket + 536_365,
            "StockCode": item,
            "Quantity": quantity,
            "UnitPrice": base_price[item],
            "secs": seconds,
            "CustomerID": customer_of_basket[basket],
            "Country": np.array(COUNTRIES)[rng.integers(0, len(COUNTRIES), size=rows)],
            "cancelled": cancelled[basket],
            "word": words[item % len(words)],
        }
    ).with_columns(
        pl.when(pl.col("cancelled"))
        .then(pl.concat_str(pl.lit("C"), pl.col("InvoiceNo").cast(pl.String)))
        .otherwise(pl.col("InvoiceNo").cast(pl.String))
        .alias("InvoiceNo"),
        (pl.lit(10_000) + pl.col("StockCode")).cast(pl.String).alias("StockCode"),
        pl.concat_str(
            pl.lit("ITEM "),
            pl.col("StockCode").cast(pl.String),
            pl.lit(" "),
            pl.col("word"),
        ).alias("Description"),
        (pl.datetime(2010, 12, 1) + pl.duration(seconds=pl.col("secs")))
        .dt.strftime("%Y-%m-%d %H:%M:%S")
        .alias("InvoiceDate"),
    )
    columns = [
        "InvoiceNo",
        "StockCode",
        "Description",
        "Quantity",
        "InvoiceDate",
        "UnitPrice",
        "CustomerID",
        "Country",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.select(columns).write_parquet(path)


def timed(work: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall seconds, CPU seconds (all threads) and the result; CPU time stays meaningful on a busy machine."""
    gc.collect()
    started, cpu_started = time.perf_counter(), time.process_time()
    result = work()
    return time.perf_counter() - started, time.process_time() - cpu_started, result


def run(rows: int, customers: int, items: int, scratch: Path) -> dict[str, Any]:
    export = scratch / f"export-{rows}-{customers}-{items}.parquet"
    if not export.is_file():
        write_export(export, rows, customers, items)
    shop_dir = scratch / "shop"
    shutil.rmtree(shop_dir, ignore_errors=True)

    stages: dict[str, dict[str, float]] = {}

    def record(name: str, seconds: float, cpu: float, n: int, baseline: float | None = None) -> None:
        stages[name] = {
            "seconds": seconds,
            "cpu_seconds": cpu,
            "rows": float(n),
            "rows_per_s": n / seconds if seconds > 0 else float("nan"),
            "ratio_to_bare_read": seconds / baseline if baseline else float("nan"),
            "peak_rss_gb": peak_rss_gb(),
        }

    bare_export, cpu, frame = timed(lambda: pl.read_parquet(export))
    n_export = frame.height
    del frame
    record("bare read_parquet (export)", bare_export, cpu, n_export)

    mapping = parse_mapping(MAPPING, "benchmarks/data_loading.py")
    adapt_seconds, cpu, report = timed(lambda: adapt_transactions(mapping, export, shop_dir))
    record("adapt transactions", adapt_seconds, cpu, n_export, bare_export)

    events_file = shop_dir / "events.parquet"
    bare_events, cpu, frame = timed(lambda: pl.read_parquet(events_file))
    n_events = frame.height
    del frame
    record("bare read_parquet (events)", bare_events, cpu, n_events)

    load_seconds, cpu, shop = timed(lambda: load_shop(shop_dir))
    record("load_shop", load_seconds, cpu, n_events, bare_events)

    def map_ids() -> Any:
        item_ids = IdMap(shop.items["item_id"].to_list(), kind="item")
        customer_ids = IdMap(
            shop.events["customer_id"].unique(maintain_order=True).to_list(), kind="customer"
        )
        return interaction_matrix(shop.events, customer_ids, item_ids)

    map_seconds, cpu, matrix = timed(map_ids)
    record("id maps + interaction matrix", map_seconds, cpu, n_events, bare_events)

    # the id look-up alone, vectorised against the per-id dict look-up it replaced (same ids, same run)
    customer_ids = IdMap(shop.events["customer_id"].unique(maintain_order=True).to_list(), kind="customer")
    column = shop.events["customer_id"]
    seconds, cpu, fast = timed(lambda: customer_ids.to_internal(column))
    record("customer id look-up, polars column", seconds, cpu, n_events)
    seconds, cpu, slow = timed(lambda: customer_ids.to_internal(column.to_list()))
    record("customer id look-up, list of str (before)", seconds, cpu, n_events)
    if not np.array_equal(fast, slow):
        raise AssertionError("the vectorised and per-id look-ups disagree")

    return {
        "benchmark": "data_loading",
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "size": {
            "export_rows": n_export,
            "events": n_events,
            "customers": int(matrix.shape[0]),
            "items": int(matrix.shape[1]),
            "pairs": int(matrix.nnz),
        },
        "dropped": {r.reason: r.dropped for r in report.reasons},
        "stages": stages,
        "export_to_matrix_seconds": adapt_seconds + load_seconds + map_seconds,
        "load_to_matrix_seconds": load_seconds + map_seconds,
        "polars": pl.__version__,
    }


def write_results(result: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.fromisoformat(result["time"]).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"data_loading-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    history = RESULTS_DIR / "data_loading.md"
    if not history.exists():
        history.write_text(
            "| time | export rows | events | stage | seconds | CPU s | rows/s | / bare read | peak RSS GB |\n"
            "|---|---|---|---|---|---|---|---|---|\n",
            encoding="utf-8",
        )
    size = result["size"]
    with history.open("a", encoding="utf-8") as out:
        for stage, figures in result["stages"].items():
            ratio = figures["ratio_to_bare_read"]
            out.write(
                f"| {result['time']} | {size['export_rows']} | {size['events']} | {stage} | "
                f"{figures['seconds']:.2f} | {figures.get('cpu_seconds', float('nan')):.2f} | "
                f"{figures['rows_per_s']:,.0f} | "
                f"{'-' if ratio != ratio else f'{ratio:.1f}'} | {figures['peak_rss_gb']:.2f} |\n"
            )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="lines of the synthetic export")
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/persona-engine-bench"))
    args = parser.parse_args()
    result = run(args.rows, args.customers, args.items, args.scratch)
    size = result["size"]
    print_table(
        f"data loading: {size['export_rows']:,}-line export -> {size['events']:,} events, "
        f"{size['customers']:,} customers x {size['items']:,} items",
        ["stage", "seconds", "CPU s", "rows/s", "/ bare read", "peak RSS GB"],
        [
            [
                stage,
                f["seconds"],
                f["cpu_seconds"],
                f["rows_per_s"],
                f["ratio_to_bare_read"],
                f["peak_rss_gb"],
            ]
            for stage, f in result["stages"].items()
        ],
    )
    print(f"export to interaction matrix: {result['export_to_matrix_seconds']:.1f} s")
    print(f"results: {write_results(result)}")


if __name__ == "__main__":
    main()
