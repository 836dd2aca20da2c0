"""What folding a known customer's live session into their vector costs a request, and how much it moves
their list (``engine.ranking.unlearned_events``).

Known customers (a row in the served model) each get a live session of ``--session-events`` events
after the artifact's data, recorded through live state as RecordEvents would. Then the same requests
are served with the fold-in on and with it off (the mix-only baseline: the session moves the persona
mix alone), call by call in alternation so all share the machine's weather, one customer per call
(a page) and ``--batch`` customers per call (a RecommendProducts batch). The fold-in is timed twice:
as the pages of a session between two events (``fold_in``: the folded rows and vectors are
remembered from the session's earlier pages) and as the first page after an event
(``fold_in_first_page``: nothing remembered). Printed and written to
``benchmarks/results/live_fold_in-<stamp>.json``: p50/p95/p99 and calls per second of each, the ratio
of each to the baseline per quantile, and how much of the top ``k`` the fold-in changes.

    python -m benchmarks.live_fold_in artifacts/latest
    python -m benchmarks.live_fold_in artifacts/latest --model als --customers 400 --session-events 8
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from rich.table import Table

from benchmarks.latency_statistics import latency_summary
from benchmarks.result_files import RESULTS_DIR, utc_stamp, write_result
from engine.live.customer_state import LiveCustomerStates
from engine.live.events import BehaviorEvent
from engine.live.live_state import LiveState
from engine.live.state_store import MemoryStateStore
from engine.personalization_request import CustomerTarget, ProductRequest
from engine.personalizer import Personalizer
from engine.ranking.unlearned_events import UnlearnedEvents
from training.console_output import stdout_console

WARMUP_CALLS: Final = 20
SESSION_TYPES: Final = ("view", "view", "view", "cart", "purchase")  # drawn with these odds


def record_sessions(
    personalizer: Personalizer,
    states: LiveCustomerStates,
    customers: Sequence[str],
    events_each: int,
    now: dt.datetime,
    seed: int,
) -> None:
    """A session of ``events_each`` events per customer in the last half hour, through live state."""
    rng = np.random.default_rng(seed)
    items = personalizer.item_catalog.ids.ids
    events = [
        BehaviorEvent(
            f"bench-{c}-{n}",
            c,
            str(items[rng.integers(len(items))]),
            str(SESSION_TYPES[rng.integers(len(SESSION_TYPES))]),
            now - dt.timedelta(minutes=float(30 - 25 * n / max(events_each, 1))),
        )
        for c in customers
        for n in range(events_each)
    ]
    states.observe(events, [])


@dataclass(frozen=True)
class TimedCall:
    """A call timed on request ``i``, and what sets the scene for it, untimed, just before."""

    call: Callable[[int], object]
    before: Callable[[int], object] | None = None


def alternate(calls: dict[str, TimedCall], n: int, distinct: int) -> dict[str, dict[str, float]]:
    """Each call kind in turn, ``n`` calls each over ``distinct`` requests; the first few warm caches."""
    for i in range(min(WARMUP_CALLS, distinct)):
        for timed in calls.values():
            timed.call(i)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    spent = dict.fromkeys(calls, 0.0)
    for i in range(n):
        for name, timed in calls.items():
            if timed.before is not None:
                timed.before(i % distinct)
            t0 = time.perf_counter()
            timed.call(i % distinct)
            elapsed = time.perf_counter() - t0
            samples[name].append(elapsed * 1000.0)
            spent[name] += elapsed
    return {name: latency_summary(samples[name], spent[name]) for name in calls}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.live_fold_in",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("artifact", type=Path, help="a trained artifact folder, e.g. artifacts/latest")
    parser.add_argument("--model", default=None, help="served model (default: the artifact's best)")
    parser.add_argument("--customers", type=int, default=300, help="known customers with a session")
    parser.add_argument("--session-events", type=int, default=6, help="live events per customer")
    parser.add_argument("--requests", type=int, default=2000, help="calls per kind and mode")
    parser.add_argument("--batch", type=int, default=32, help="customers per batched call")
    parser.add_argument("--k", type=int, default=20, help="products per list")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)

    personalizer = Personalizer.from_path(args.artifact, args.model)
    unlearned = personalizer.lists.unlearned
    if unlearned is None or not unlearned.known_customers:
        parser.error(
            f"{args.artifact}: model '{personalizer.model_name}' folds no events in (als, "
            "linear_autoencoder and blends of them do), or the artifact turned it off"
        )
    data_until = unlearned.data_until if unlearned.data_until is not None else time.time()
    now = dt.datetime.fromtimestamp(data_until, dt.UTC) + dt.timedelta(days=1)
    states = LiveState(MemoryStateStore(), clock=lambda: now).attach(personalizer)
    rng = np.random.default_rng(args.seed)
    known = personalizer.model_customers.ids
    customers = [
        str(known[i]) for i in rng.choice(len(known), min(args.customers, len(known)), replace=False)
    ]
    record_sessions(personalizer, states, customers, args.session_events, now, args.seed)
    request = ProductRequest(k=args.k)
    off = dataclasses.replace(unlearned, known_customers=False)

    def served(
        mode: UnlearnedEvents, targets: Callable[[int], list[CustomerTarget]], *, first_page: bool = False
    ) -> TimedCall:
        """Calls served in ``mode``: with the fold-in, as a later page of the customer's session (the
        same page served once, untimed, before), or with ``first_page`` as the first page after their
        latest event (what earlier pages left in memory is dropped before the clock starts)."""

        def call(i: int) -> Any:
            personalizer.lists.unlearned = mode
            return personalizer.recommend_products(targets(i), request)

        def forget(_: int) -> None:
            mode.forget()
            personalizer.model.forget_folded_in()

        if first_page:
            return TimedCall(call, before=forget)
        # A later page of the session: its first page was served already.
        return TimedCall(call, before=call if mode.known_customers else None)

    def one(i: int) -> list[CustomerTarget]:
        return [CustomerTarget(customers[i])]

    batches = max(1, len(customers) // args.batch)

    def many(i: int) -> list[CustomerTarget]:
        return [CustomerTarget(c) for c in customers[i * args.batch : (i + 1) * args.batch]]

    stdout_console.print(
        f"{len(customers)} known customers, {args.session_events} live events each, model "
        f"'{personalizer.model_name}', k={args.k}"
    )
    page = alternate(
        {
            "fold_in": served(unlearned, one),
            "fold_in_first_page": served(unlearned, one, first_page=True),
            "mix_only": served(off, one),
        },
        args.requests,
        len(customers),
    )
    batch = alternate(
        {
            "fold_in": served(unlearned, many),
            "fold_in_first_page": served(unlearned, many, first_page=True),
            "mix_only": served(off, many),
        },
        max(200, args.requests // args.batch),
        batches,
    )
    changed = []
    for customer in customers:
        lists = []
        for folding in (unlearned, off):
            personalizer.lists.unlearned = folding
            lists.append(personalizer.recommend_products([CustomerTarget(customer)], request)[0])
        ids = [{item.item_id for item in lst.items} for lst in lists]
        changed.append(1.0 - len(ids[0] & ids[1]) / max(len(ids[1]), 1))
    personalizer.lists.unlearned = unlearned

    def ratios(part: dict[str, dict[str, float]], mode: str = "fold_in") -> dict[str, float]:
        """Each quantile of ``mode`` against the mix-only baseline's, timed in the same run."""
        return {q: part[mode][q] / part["mix_only"][q] for q in ("p50_ms", "p95_ms", "p99_ms")}

    result: dict[str, Any] = {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "artifact": str(args.artifact.resolve()),
        "model": personalizer.model_name,
        "customers": len(customers),
        "session_events": args.session_events,
        "k": args.k,
        "batch_size": args.batch,
        "page": {
            **page,
            "ratio": ratios(page),
            "ratio_first_page": ratios(page, "fold_in_first_page"),
        },
        "batch": {
            **batch,
            "ratio": ratios(batch),
            "ratio_first_page": ratios(batch, "fold_in_first_page"),
        },
        "top_k_changed_share": {"mean": float(np.mean(changed)), "median": float(np.median(changed))},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    table = Table(title="live session fold-in: per call (ms)")
    for column in ("call", "mode", "p50", "p95", "p99", "calls/s"):
        table.add_column(column, justify="left" if column in ("call", "mode") else "right")
    for name, part in (("page", page), (f"batch of {args.batch}", batch)):
        for mode in ("mix_only", "fold_in", "fold_in_first_page"):
            s = part[mode]
            table.add_row(
                name,
                mode,
                f"{s['p50_ms']:.3f}",
                f"{s['p95_ms']:.3f}",
                f"{s['p99_ms']:.3f}",
                f"{s['calls_per_s']:,.0f}",
            )
        for mode in ("fold_in", "fold_in_first_page"):
            r = ratios(part, mode)
            table.add_row(
                name, f"{mode} / mix_only", *(f"{r[q]:.2f}x" for q in ("p50_ms", "p95_ms", "p99_ms")), ""
            )
    stdout_console.print(table)
    stdout_console.print(
        f"share of the top {args.k} the fold-in changes: mean {np.mean(changed):.2f}, "
        f"median {np.median(changed):.2f}"
    )
    header = [
        "time",
        "model",
        "customers",
        "session events",
        "page p50 fold-in / mix-only",
        "page p99 ratio",
        "first page p50 ratio",
        "batch p50 ratio",
        "top-k changed (mean)",
    ]
    row = [
        result["time"],
        personalizer.model_name,
        len(customers),
        args.session_events,
        f"{page['fold_in']['p50_ms']:.3f} / {page['mix_only']['p50_ms']:.3f} ms",
        f"{ratios(page)['p99_ms']:.2f}x",
        f"{ratios(page, 'fold_in_first_page')['p50_ms']:.2f}x",
        f"{ratios(batch)['p50_ms']:.2f}x",
        f"{np.mean(changed):.2f}",
    ]
    path = write_result(
        args.results,
        "live_fold_in",
        utc_stamp(result["time"]),
        result,
        header,
        [row],
        title="# Live session fold-in: cost per call and effect on the list",
    )
    stdout_console.print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
