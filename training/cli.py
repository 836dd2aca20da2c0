"""The ``persona-engine`` command line: generate data, train, evaluate, inspect and explain.

Output is for people by default (progress bars, aligned tables); ``--json`` prints one JSON document
on stdout for scripts. Errors in the user's files end the command with exit status 2 and a message
naming the file, row and column, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.errors import PersonaEngineError

# implicit warns (and slows down) when OpenBLAS runs threads next to implicit's own; set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from training.console_output import print_table, stderr_console, stdout_console

EXAMPLES = {
    "generate": """
        examples:
          persona-engine generate --out data/demo
          persona-engine generate --out data/big --customers 1000000 --items 100000 --events 50000000
          persona-engine generate --out data/csv-shop --format csv --seed 3
        """,
    "train": """
        examples:
          persona-engine train --config training/configs/demo.toml
          persona-engine train --config my.toml --data data/shop --output artifacts
          persona-engine train --config my.toml --json > train.json
        """,
    "evaluate": """
        examples:
          persona-engine evaluate --artifact artifacts/latest
          persona-engine evaluate --artifact artifacts/20261123T150000Z --data data/demo --json
        """,
    "recommend": """
        examples:
          persona-engine recommend --artifact artifacts/latest --customer c0000042
          persona-engine recommend --artifact artifacts/latest --customer new-visitor \\
              --mix bargain_hunter=0.7,tech_savvy=0.3
          persona-engine recommend --artifact artifacts/latest --customer c0000042 --context weekend_holiday
        """,
    "personas": """
        examples:
          persona-engine personas
          persona-engine personas --catalog my_catalog.toml --json
        """,
    "discover": """
        examples:
          persona-engine discover --data data/demo
          persona-engine discover --data data/demo --catalog my_catalog.toml --json
        """,
    "summary": """
        examples:
          persona-engine summary --artifact artifacts/latest --customers 3
        """,
    "report": """
        examples:
          persona-engine report artifacts/latest
          persona-engine report artifacts/latest --out reports/shop.html --data data/demo
          persona-engine report artifacts/20261123T150000Z --json
        """,
    "adapt": """
        examples:
          persona-engine adapt transactions --mapping training/mappings/online_retail.toml \\
              --source ../shared/data/online-retail/online_retail.parquet --out data/online-retail
        run 'persona-engine adapt SOURCE --help' for the options of each kind of source.
        """,
    "adapt transactions": """
        examples:
          persona-engine adapt transactions --mapping training/mappings/online_retail.toml \\
              --source ../shared/data/online-retail/online_retail.parquet --out data/online-retail
          persona-engine adapt transactions --mapping my_shop.toml --source export.csv --out data/my-shop \\
              --skip-invalid --json

        the mapping file (TOML) names the export's column for each field:
          [columns]      invoice, product_code, description, quantity, unit_price, discount, coupon, brand,
                         private_label, category, timestamp, customer, country | region, age_band,
                         income_band, channel, device (product_code, unit_price, timestamp and customer
                         are required)
          [source]       name, timestamp_format, timezone, strip_ids
          [discount]     kind = fraction | percent | amount_per_unit | amount_per_line; coupon_fraction
          [drop]         cancellation_invoice_prefix, product_codes, product_code_pattern,
                         missing_description, duplicate_rows
          [category]     default, [[category.rules]] category + pattern (+ field)
          [[tags.rules]] tag + pattern (+ field);  [price_bands] edges + tags;  [brand] private_labels
        see training/mappings/online_retail.toml for a commented example.
        """,
    "batch-recommend": """
        examples:
          persona-engine batch-recommend --artifact artifacts/latest --out campaign/top10.parquet
          persona-engine batch-recommend --artifact artifacts/latest --out top5.parquet -k 5 \\
              --customers c0000001,c0000002
          persona-engine batch-recommend --artifact artifacts/latest --out top.parquet --customers ids.csv
        """,
    "segments": """
        examples:
          persona-engine segments --artifact artifacts/latest --out campaign/segments.csv
          persona-engine segments --artifact artifacts/latest --out segments.parquet --threshold 0.5 --json
        """,
    "adapt movielens": """
        examples:
          persona-engine adapt movielens --source ../shared/data/ml-100k --out data/ml100k
          persona-engine adapt movielens --source ../shared/data/ml-100k --out data/ml100k-liked \\
              --positive-threshold 4
        """,
    "compare": """
        examples:
          persona-engine compare --config training/configs/ml100k.toml
          persona-engine compare --config training/configs/demo.toml --json > compare.json
          persona-engine compare --config training/configs/ml100k.toml --output compare-ml100k.json
        """,
    "tune": """
        examples:
          persona-engine tune --config training/configs/ml100k.toml --budget-seconds 600
          persona-engine tune --config training/configs/demo.toml --budget-seconds 300 \\
              --models als,bpr --write-config training/configs/demo-tuned.toml
        """,
    "evaluate-policy": """
        policies: uniform, always:ARM, greedy, epsilon-greedy:EPS, thompson[:DRAWS]
        optional decisions columns: mix__<persona_id> (the mix each candidate sees; default: the
        artifact's stored mix of the customer for the decision's context)

        examples:
          persona-engine evaluate-policy --decisions data/demo/decisions.parquet \\
              --artifact artifacts/latest --policy greedy --policy uniform --policy epsilon-greedy:0.1
          persona-engine evaluate-policy --decisions data/demo/decisions.parquet \\
              --artifact artifacts/latest --policy thompson --decision-type layout \\
              --truth data/demo/truth --json
          persona-engine evaluate-policy --decisions log.csv --policy always:offer_freeship_all
          persona-engine evaluate-policy --event-log run/events.sqlite --artifact artifacts/latest \\
              --all-decisions --policy greedy --policy thompson
        """,
    "experiment-report": """
        a decision converted when a reward was reported for it; the rate difference interval is
        Newcombe's (Wilson score based), the revenue per decision difference a bootstrap interval.

        examples:
          persona-engine experiment-report --event-log run/events.sqlite
          persona-engine experiment-report --event-log run/events.sqlite --control static --json
          persona-engine experiment-report --decisions decisions.parquet --decision-type offer
        """,
    "drift": """
        examples:
          persona-engine drift --artifact artifacts/latest
          persona-engine drift --artifact artifacts/latest --data data/demo --threshold 0.1 --limit 50
          persona-engine drift --artifact artifacts/latest --json > drift.json

        A customer drifts when the Jensen-Shannon divergence (bits, 0-1) between the mix of their recent
        events (decayed with --half-life-days) and their long-term mix in the artifact exceeds
        --threshold, with at least --min-evidence recent events behind it. With planted truth beside the
        data (the synthetic shop's truth/), precision, recall and the median detection delay are shown.
        """,
}


class UserError(PersonaEngineError):
    """An error in what the user gave us (files, flags); printed without a traceback, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="persona-engine",
        description="Persona-conditioned personalization for e-commerce: learn persona mixes and "
        "persona-aware recommenders from interaction data, evaluate them, and write versioned artifacts.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent(
            """
            a first run:
              persona-engine generate --out data/demo
              persona-engine train --config training/configs/demo.toml
              persona-engine summary --artifact artifacts/latest
            run 'persona-engine COMMAND --help' for each command's options and examples.
            """
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=textwrap.dedent(EXAMPLES[name]),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument(
            "--json", action="store_true", help="print one JSON document on stdout instead of tables"
        )
        return p

    g = command("generate", "write a synthetic shop with planted personas and its ground truth")
    g.add_argument("--out", type=Path, required=True, help="output folder (created)")
    g.add_argument("--customers", type=int, default=5_000)
    g.add_argument("--items", type=int, default=2_000)
    g.add_argument("--events", type=int, default=200_000, help="approximate number of event rows")
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--days", type=int, default=182, help="length of the simulated period")
    g.add_argument("--drift-share", type=float, default=0.10, help="share of customers whose mix drifts")
    g.add_argument(
        "--hidden-segment-share",
        type=float,
        default=0.03,
        help="share of customers driven by a persona missing from the catalog",
    )
    g.add_argument("--format", choices=("parquet", "csv"), default="parquet")

    t = command("train", "train the configured models and write a versioned artifact")
    t.add_argument("--config", type=Path, required=True, help="training config (TOML)")
    t.add_argument("--data", type=Path, help="data folder; overrides [data] path of the config")
    t.add_argument("--output", type=Path, help="artifact root; overrides [output] root of the config")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")

    e = command(
        "evaluate", "re-evaluate an artifact's models on its data split, overall, per persona and cold start"
    )
    e.add_argument("--artifact", type=Path, default=Path("artifacts/latest"))
    e.add_argument("--data", type=Path, help="data folder; default: the one the artifact was trained on")

    r = command("recommend", "top products for a customer, or for any persona mix")
    r.add_argument("--artifact", type=Path, default=Path("artifacts/latest"))
    r.add_argument("--customer", required=True, help="customer id; unknown ids are served as cold start")
    r.add_argument(
        "--mix",
        help="persona mix to use instead of the inferred one, e.g. bargain_hunter=0.6,luxury_enthusiast=0.4",
    )
    r.add_argument("--context", help="weekday or weekend_holiday: use the customer's mix for that context")
    r.add_argument("-k", type=int, default=10, help="number of products")
    r.add_argument("--model", help="model to use (default: the artifact's best)")

    p = command("personas", "show the persona catalog")
    p.add_argument("--catalog", default="default", help="bundled catalog name or a TOML file")

    d = command("discover", "find customer segments that no catalog persona explains")
    d.add_argument("--data", type=Path, required=True)
    d.add_argument("--catalog", default="default")
    d.add_argument(
        "--min-share", type=float, default=0.01, help="smallest segment to report, as a share of customers"
    )

    s = command(
        "summary", "a readable summary of an artifact: metrics and a few customers with mix and products"
    )
    s.add_argument("--artifact", type=Path, default=Path("artifacts/latest"))
    s.add_argument("--customers", type=int, default=3, help="how many example customers to show")

    rp = command(
        "report", "write a self-contained HTML report on an artifact (and its numbers as report.json)"
    )
    rp.add_argument("artifact", type=Path, help="artifact folder (ROOT, ROOT/latest or ROOT/<version>)")
    rp.add_argument(
        "--out", type=Path, default=Path("report.html"), help="HTML file; report.json is written beside it"
    )
    rp.add_argument("--data", type=Path, help="data folder; default: the one the artifact was trained on")
    _add_adapt_commands(sub)

    b = command(
        "batch-recommend", "top-k products for every customer (or a list of them) into a Parquet file"
    )
    b.add_argument("--artifact", type=Path, default=Path("artifacts/latest"))
    b.add_argument("--out", type=Path, required=True, help="Parquet file to write (parent folders created)")
    b.add_argument(
        "--customers",
        help="customer ids separated by commas, or a .csv/.parquet/.txt file of them "
        "(a customer_id column, or one id per line); default: every customer of the artifact",
    )
    b.add_argument("-k", "--k", type=int, default=10, help="products per customer")
    b.add_argument("--model", help="model to use (default: the artifact's best)")
    b.add_argument("--chunk", type=int, default=4096, help="customers scored and written per step")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")

    sg = command("segments", "per persona, the customers it describes, with the channel to reach each")
    sg.add_argument("--artifact", type=Path, default=Path("artifacts/latest"))
    sg.add_argument("--out", type=Path, required=True, help=".parquet or .csv file to write")
    sg.add_argument(
        "--threshold",
        type=float,
        default=0.4,
        help="smallest mix weight that puts a customer in a persona's segment (0 < threshold <= 1)",
    )

    c = command(
        "compare",
        "compare the engine's models with popularity and raw library defaults on one split",
    )
    c.add_argument("--config", type=Path, required=True, help="training config (TOML): data, split, models")
    c.add_argument("--data", type=Path, help="data folder; overrides [data] path of the config")
    c.add_argument("--output", type=Path, help="also write the JSON report to this file")
    c.add_argument("--no-progress", action="store_true", help="no progress bars")

    tu = command(
        "tune",
        "time-boxed random search of the engine's model hyperparameters on a validation split",
    )
    tu.add_argument("--config", type=Path, required=True, help="training config (TOML) to start from")
    tu.add_argument("--data", type=Path, help="data folder; overrides [data] path of the config")
    tu.add_argument("--budget-seconds", type=float, required=True, help="wall-clock budget of the search")
    tu.add_argument("--models", help="comma-separated model kinds to tune (default: every tunable one)")
    tu.add_argument("--seed", type=int, default=0, help="seed of the random search")
    tu.add_argument(
        "--write-config", type=Path, help="where to write the tuned config (default: CONFIG with -tuned)"
    )
    tu.add_argument("--no-progress", action="store_true", help="no progress bars")

    ep = command(
        "evaluate-policy",
        "estimate what candidate offer or layout policies would have earned on logged decisions "
        "(IPS, self-normalised IPS, doubly robust)",
    )
    log_source = ep.add_mutually_exclusive_group(required=True)
    log_source.add_argument("--decisions", type=Path, help="decisions table (.parquet or .csv)")
    log_source.add_argument(
        "--event-log", type=Path, help="the server's event log (SQLite): served decisions with their mixes"
    )
    ep.add_argument(
        "--policy", action="append", required=True, help="candidate policy spec; repeat for several"
    )
    ep.add_argument("--artifact", type=Path, help="artifact with persona mixes and arm estimates")
    ep.add_argument("--decision-type", choices=("offer", "layout"), default="offer")
    ep.add_argument("--truth", type=Path, help="synthetic shop truth/ folder: add true values and coverage")
    ep.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals")
    ep.add_argument("--folds", type=int, default=5, help="cross-fitting folds of the DR reward model")
    ep.add_argument("--seed", type=int, default=0, help="seed of Thompson's Monte-Carlo propensities")
    period = ep.add_mutually_exclusive_group()
    period.add_argument(
        "--since",
        help="evaluate decisions from this ISO date or time on (default with --artifact: its test period, "
        "which its estimates never saw)",
    )
    period.add_argument(
        "--all-decisions", action="store_true", help="evaluate the whole log, even what the artifact saw"
    )

    xr = command(
        "experiment-report",
        "per experiment arm: decisions, conversions, revenue, and the difference to the control arm",
    )
    source = xr.add_mutually_exclusive_group(required=True)
    source.add_argument("--event-log", type=Path, help="the server's event log (SQLite)")
    source.add_argument(
        "--decisions", type=Path, help="decisions table with an experiment_arm (and optional revenue) column"
    )
    xr.add_argument("--control", help="the control arm (default: the arm named 'control')")
    xr.add_argument("--decision-type", choices=("offer", "layout"), help="only decisions of this type")
    xr.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals")
    xr.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples for revenue")

    dr = command("drift", "customers whose recent behaviour moved away from their long-term persona mix")
    dr.add_argument("--artifact", type=Path, default=Path("artifacts/latest"))
    dr.add_argument("--data", type=Path, help="data folder; default: the one the artifact was trained on")
    # Defaults live in engine.personas.drift.DriftConfig (importing it here would slow every command).
    dr.add_argument(
        "--threshold",
        type=float,
        help="Jensen-Shannon divergence above which a customer drifts (default 0.08)",
    )
    dr.add_argument(
        "--half-life-days", type=float, help="how fast old events stop counting as recent (default 14)"
    )
    dr.add_argument(
        "--min-evidence",
        type=float,
        help="decayed recent events needed before drift can be flagged (default 2)",
    )
    dr.add_argument("--limit", type=int, default=20, help="drifting customers to list (default 20)")
    dr.add_argument("--no-progress", action="store_true", help="no progress bar")

    sv = sub.add_parser(
        "serve",
        help="serve an artifact over gRPC (personalization, admin, health, reflection, metrics)",
        description="Serve a trained artifact over gRPC, with Prometheus metrics on their own port.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_serve_arguments(sv)
    return parser


def _add_adapt_commands(sub: Any) -> None:
    """``adapt SOURCE``: one sub-subcommand per kind of external data; each sets its own handler."""
    adapt = sub.add_parser(
        "adapt",
        help="turn an external data set into the data contract's tables (a folder train can read)",
        description="Turn an external data set into the data contract's tables (events, items, customers).",
        epilog=textwrap.dedent(EXAMPLES["adapt"]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = adapt.add_subparsers(dest="adapt_source", required=True, metavar="SOURCE")

    t = kinds.add_parser(
        "transactions",
        help="a transaction export (CSV or Parquet) read through a mapping file",
        description="Map a transaction export's columns onto the data contract with a TOML mapping file; "
        "drop returns, cancellations, non-positive prices and rows without a customer, counted per reason.",
        epilog=textwrap.dedent(EXAMPLES["adapt transactions"]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("--mapping", type=Path, required=True, help="mapping file (TOML)")
    t.add_argument("--source", type=Path, required=True, help="the export: a .csv or .parquet file")
    t.add_argument("--out", type=Path, required=True, help="output folder (created)")
    t.add_argument(
        "--skip-invalid",
        action="store_true",
        help="drop and count rows with cells that do not parse, instead of failing",
    )
    t.add_argument("--json", action="store_true", help="print one JSON document on stdout instead of tables")
    t.set_defaults(adapt_handler=cmd_adapt_transactions)

    m = kinds.add_parser(
        "movielens",
        help="MovieLens 100K (ratings, genres, users) with its ua.base/ua.test split",
        description="Convert MovieLens 100K into the data contract's tables plus test_events.csv "
        "(the ids of the ua.test ratings) for a predefined split.",
        epilog=textwrap.dedent(EXAMPLES["adapt movielens"]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.add_argument("--source", type=Path, required=True, help="folder of the original files (read only)")
    m.add_argument("--out", type=Path, required=True, help="output shop folder (created)")
    m.add_argument(
        "--positive-threshold",
        type=int,
        default=1,
        help="lowest rating kept as a positive interaction (1: every rating, as in LightFM's protocol)",
    )
    m.add_argument("--json", action="store_true", help="print one JSON document on stdout instead of tables")
    m.set_defaults(adapt_handler=cmd_adapt_movielens)


def cmd_adapt(args: argparse.Namespace) -> int:
    handler: Any = args.adapt_handler
    return int(handler(args))


def cmd_adapt_transactions(args: argparse.Namespace) -> int:
    from engine.data.loading import load_shop
    from training.transaction_adapter import adapt_transactions
    from training.transaction_mapping import load_mapping

    mapping = load_mapping(args.mapping)
    report = adapt_transactions(mapping, args.source, args.out, skip_invalid=args.skip_invalid)
    shop = load_shop(args.out)  # the folder must load as it is: a contract break here is a bug to surface
    if args.json:
        _emit_json({**report.to_dict(), "verified_rows": shop.report.rows_read})
        return 0
    print_table(
        f"{mapping.name}: {report.rows_read:,} rows read from {args.source}",
        ["reason", "what", "matching", "dropped", "rows left"],
        [[r.reason, r.description, r.matching, r.dropped, r.rows_left] for r in report.reasons],
    )
    print_table(
        f"written to {report.out_dir} in {report.seconds:.1f} s (load_shop reads it back)",
        ["table", "rows"],
        [[name, count] for name, count in report.tables.items()],
    )
    return 0


def _add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    from serving.settings import add_serve_arguments

    add_serve_arguments(parser)


def cmd_serve(args: argparse.Namespace) -> int:
    from serving.server import run_from_args

    return run_from_args(args)


def _emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def _parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in text.split(","):
        if "=" not in part:
            raise UserError(f"--mix: expected persona=weight pairs separated by commas, got {part!r}")
        name, value = part.split("=", 1)
        try:
            mix[name.strip()] = float(value)
        except ValueError:
            raise UserError(f"--mix: weight of {name.strip()!r} is not a number: {value!r}") from None
    return mix


def cmd_generate(args: argparse.Namespace) -> int:
    from training.synthetic_shop import ShopConfig, generate_shop

    for flag in ("customers", "items", "events", "days"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be at least 1")
    config = ShopConfig(
        customers=args.customers,
        items=args.items,
        events=args.events,
        seed=args.seed,
        days=args.days,
        drift_share=args.drift_share,
        hidden_segment_share=args.hidden_segment_share,
        file_format=args.format,
    )
    summary = generate_shop(args.out, config, show_progress=not args.json)
    if args.json:
        _emit_json({"out_dir": str(summary.out_dir), "counts": summary.counts, "seconds": summary.seconds})
    else:
        rows = [[table, count] for table, count in summary.counts.items()]
        print_table(
            f"synthetic shop written to {summary.out_dir} in {summary.seconds:.1f} s", ["table", "rows"], rows
        )
    return 0


def _print_results(results: list[Any], k: int, title: str) -> None:
    from training.evaluation import results_table, segment_table

    columns, rows = results_table(results, k)
    print_table(title, columns, rows)
    columns, rows = segment_table(results, k)
    print_table("", columns, rows)


def _print_persona_accuracy(accuracy: dict[str, Any] | None) -> None:
    if not accuracy:
        return
    rows = [[key, value] for key, value in accuracy.items() if isinstance(value, int | float)]
    print_table("persona inference vs planted mixes", ["measure", "value"], rows)


def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    from training.config import OutputSection, load_config
    from training.train_job import run_training

    config = load_config(args.config)
    if args.output:
        config = dataclasses.replace(config, output=OutputSection(root=str(args.output)))
    if args.data:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, path=str(args.data)))
    result = run_training(config, show_progress=not (args.json or args.no_progress))
    if args.json:
        _emit_json(
            {
                "artifact": str(result.artifact_path),
                "version": result.version,
                "metrics": [r.to_dict() for r in result.results],
                "fit_seconds": result.fit_seconds,
                "persona_accuracy": result.persona_accuracy,
                "decision_quality": result.decision_quality,
                "summary": result.summary,
            }
        )
        return 0
    held_out = (
        f"predefined test events of {config.split.test_events}"
        if config.split.method == "predefined"
        else f"held-out last {config.split.test_days} days"
    )
    _print_results(result.results, config.evaluation.k, f"evaluation ({held_out})")
    print_table("training time", ["model", "seconds"], [[m, s] for m, s in result.fit_seconds.items()])
    _print_persona_accuracy(result.persona_accuracy)
    if result.decision_quality:
        print_table(
            "offer and layout response estimates vs planted rates",
            ["decision", "mean abs error", "persona x arm pairs"],
            [[d, q["mean_abs_error"], q["pairs"]] for d, q in result.decision_quality.items()],
        )
    s = result.summary
    stdout_console.print(
        f"best model: [bold]{s['best_model']}[/bold], "
        f"NDCG ratio to popularity {s['best_ndcg_ratio_to_popularity'] or float('nan'):.2f}; "
        f"cold start ratio {s['cold_start_ndcg_ratio_to_popularity'] or float('nan'):.2f}"
    )
    if "event_log" in s:
        logged = s["event_log"]
        stdout_console.print(
            f"event log {logged['path']}: {logged['added']:,} of {logged['read']:,} events added "
            f"({logged['already_in_shop']:,} already in the shop's events, "
            f"{logged['unknown_items']:,} for items the shop does not list)",
            highlight=False,
        )
    stdout_console.print(f"artifact: {result.artifact_path} (version {result.version}, {s['seconds']:.1f} s)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate_job import run_evaluation

    report = run_evaluation(args.artifact, data_path=args.data)
    if args.json:
        _emit_json(report.to_dict())
        return 0
    _print_results(report.results, report.k, f"evaluation of artifact {report.version}")
    _print_persona_accuracy(report.persona_accuracy)
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from engine.personalizer import Personalizer

    personalizer = Personalizer.from_path(args.artifact, args.model)
    mix = _resolve_mix_names(personalizer.catalog, _parse_mix(args.mix)) if args.mix else None
    result = personalizer.recommend(args.customer, args.k, mix=mix, context=args.context)
    if args.json:
        _emit_json(
            {
                "customer_id": result.customer_id,
                "cold_start": result.cold_start,
                "model": result.model,
                "model_version": result.model_version,
                "persona_mix": result.mix.as_dict(),
                "items": [vars(item) for item in result.items],
            }
        )
        return 0
    _print_recommendation(personalizer, result)
    return 0


def _resolve_mix_names(catalog: Any, mix: dict[str, float]) -> dict[str, float]:
    """Accept display names ("Bargain Hunter") as well as ids; unknown names pass through to validation."""
    resolved: dict[str, float] = {}
    for name, weight in mix.items():
        try:
            resolved[catalog.resolve(name)] = weight
        except KeyError:
            resolved[name] = weight
    return resolved


def _print_recommendation(personalizer: Any, result: Any) -> None:
    names = dict(zip(personalizer.catalog.ids, personalizer.catalog.names, strict=True))
    mix_text = ", ".join(
        f"{names[p]} {w:.0%}"
        for p, w in sorted(result.mix.as_dict().items(), key=lambda kv: -kv[1])
        if w >= 0.05
    )
    status = "cold start" if result.cold_start else "known customer"
    stdout_console.print(f"[bold]{result.customer_id}[/bold] ({status}, model {result.model}): {mix_text}")
    print_table(
        "",
        ["rank", "item", "title", "category", "price", "score", "reason"],
        [
            [i + 1, it.item_id, it.title, it.category, it.price, it.score, it.reason]
            for i, it in enumerate(result.items)
        ],
    )


def cmd_personas(args: argparse.Namespace) -> int:
    from engine.personas.catalog import load_catalog

    catalog = load_catalog(args.catalog)
    if args.json:
        _emit_json(
            [
                {
                    "id": p.id,
                    "name": p.name,
                    "description": p.description,
                    "preferred_channels": list(p.preferred_channels),
                    "decision_factors": list(p.decision_factors),
                    "goals": list(p.goals),
                    "pain_points": list(p.pain_points),
                }
                for p in catalog.personas
            ]
        )
        return 0
    print_table(
        f"personas ({catalog.source})",
        ["id", "name", "preferred channels", "decision factors"],
        [
            [p.id, p.name, ", ".join(p.preferred_channels), ", ".join(p.decision_factors)]
            for p in catalog.personas
        ],
    )
    return 0


def cmd_discover(args: argparse.Namespace) -> int:
    from training.discovery_job import run_discovery

    report = run_discovery(args.data, args.catalog, min_share=args.min_share)
    if args.json:
        _emit_json(report)
        return 0
    stdout_console.print(
        f"{report['customers_scored']:,} customers scored, {report['poorly_explained']:,} poorly explained "
        "by the catalog personas"
    )
    if not report["segments"]:
        stdout_console.print("no sizeable group of them resembles each other: the catalog covers this shop")
        return 0
    for i, segment in enumerate(report["segments"], 1):
        print_table(
            f"unexplained segment {i}: {segment['size']:,} customers ({segment['share']:.1%}), "
            f"e.g. {', '.join(segment['examples'][:3])}",
            ["what they do", "observed", "personas predict"],
            [
                [f["description"], f["observed_share"], f["expected_share"]]
                for f in segment["unexplained_features"]
            ],
        )
        print_table(
            "",
            ["trait", "segment", "population", "z"],
            [
                [t["description"], t["segment_mean"], t["population_mean"], t["z_score"]]
                for t in segment["traits"]
            ],
        )
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    from engine.personas.drift import DriftConfig
    from training.drift_job import run_drift_report

    if args.limit < 0:
        raise UserError("--limit must be 0 or more")
    try:
        given = {
            "threshold": args.threshold,
            "half_life_days": args.half_life_days,
            "min_evidence": args.min_evidence,
        }
        config = DriftConfig(**{name: value for name, value in given.items() if value is not None})
    except ValueError as error:
        raise UserError(str(error).replace("DriftConfig.", "--").replace("_", "-")) from None
    report = run_drift_report(
        args.artifact, data_path=args.data, config=config, show_progress=not (args.json or args.no_progress)
    )
    if args.json:
        _emit_json(report.to_dict())
        return 0
    shown = report.drifting[: args.limit]
    stdout_console.print(
        f"{len(report.drifting):,} of {report.customers_checked:,} customers drifting at the end of "
        f"{report.data} (JS divergence > {config.threshold:g}, half-life {config.half_life_days:g} days)"
    )
    if shown:
        print_table(
            f"drifting customers, strongest first ({len(shown)} shown)",
            ["customer", "from persona", "to persona", "JS divergence", "since"],
            [
                [
                    f.customer_id,
                    f.status.from_persona,
                    f.status.to_persona,
                    f.status.divergence,
                    f.status.since.date().isoformat() if f.status.since else "-",
                ]
                for f in shown
            ],
        )
    if report.accuracy is not None:
        a = report.accuracy
        print_table(
            "against the planted drift (truth/)",
            ["measure", "value"],
            [
                ["customers with planted drift", a.n_planted],
                ["customers flagged", a.n_flagged],
                ["precision", a.precision],
                ["recall", a.recall],
                [
                    "median detection delay (days)",
                    "-" if a.median_delay_days is None else a.median_delay_days,
                ],
            ],
        )
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from training.demo_summary import summarize

    document = summarize(args.artifact, n_customers=args.customers, print_tables=not args.json)
    if args.json:
        _emit_json(document)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from training.report.evaluation_report import write_report

    if args.out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out {args.out}: the report is HTML; give a file name ending in .html")
    with stderr_console.status("writing report") as status:
        written = write_report(
            args.artifact,
            args.out,
            data_path=args.data,
            progress=None if args.json else lambda section: status.update(f"report: {section}"),
        )
    if args.json:
        _emit_json(written.document)
        return 0
    stdout_console.print(
        f"report written to [bold]{written.html_path}[/bold] (numbers in {written.json_path}, "
        f"{written.seconds:.1f} s)"
    )
    return 0


def cmd_batch_recommend(args: argparse.Namespace) -> int:
    from engine.personalizer import Personalizer
    from training.batch_recommend import CustomerListError, batch_recommend, read_customer_ids
    from training.console_output import progress_bar

    if args.k < 1:
        raise UserError("--k must be at least 1")
    if args.chunk < 1:
        raise UserError("--chunk must be at least 1")
    if args.out.suffix.lower() != ".parquet":
        raise UserError(f"--out {args.out}: batch recommendations are written as .parquet")
    try:
        ids = read_customer_ids(args.customers) if args.customers else None
    except CustomerListError as error:
        raise UserError(str(error)) from None
    personalizer = Personalizer.from_path(args.artifact, args.model)
    total = len(ids) if ids is not None else len(personalizer.customers)
    with progress_bar(enabled=not (args.json or args.no_progress)) as progress:
        task = progress.add_task("recommending", total=total)
        report = batch_recommend(
            personalizer,
            args.out,
            customer_ids=ids,
            k=args.k,
            chunk=args.chunk,
            on_progress=lambda done: progress.advance(task, done),
        )
    if args.json:
        _emit_json({**vars(report), "customers_per_second": report.customers_per_second})
        return 0
    print_table(
        f"top {report.k} for {report.customers:,} customers written to {report.out}",
        ["measure", "value"],
        [
            ["model", f"{report.model} ({report.model_version})"],
            ["rows", report.rows],
            ["customers unknown to the artifact (cold start)", report.unknown_customers],
            ["seconds", report.seconds],
            ["customers per second", report.customers_per_second],
        ],
    )
    return 0


def cmd_segments(args: argparse.Namespace) -> int:
    from engine.personalizer import Personalizer
    from training.persona_segments import persona_segments

    if not 0 < args.threshold <= 1:
        raise UserError(f"--threshold must be in (0, 1], got {args.threshold}")
    if args.out.suffix.lower() not in (".csv", ".parquet"):
        raise UserError(f"--out {args.out}: write segments to a .csv or .parquet file")
    personalizer = Personalizer.from_path(args.artifact)
    report = persona_segments(personalizer, args.out, threshold=args.threshold)
    if args.json:
        _emit_json(
            {
                **{key: value for key, value in vars(report).items() if key != "segments"},
                "segments": [vars(segment) for segment in report.segments],
            }
        )
        return 0
    print_table(
        f"persona segments (mix weight >= {report.threshold:g}) of {report.customers:,} customers; "
        f"channels from {report.channel_data}",
        ["persona", "name", "customers", "share", "channels"],
        [
            [
                s.persona_id,
                s.name,
                s.customers,
                s.share,
                ", ".join(f"{c or '-'} {n:,}" for c, n in s.channels.items()),
            ]
            for s in report.segments
        ],
    )
    stdout_console.print(f"{report.rows:,} rows written to {report.out}")
    return 0


def cmd_adapt_movielens(args: argparse.Namespace) -> int:
    from training.movielens_adapter import MovieLensSourceError, adapt_movielens

    try:
        summary = adapt_movielens(args.source, args.out, positive_threshold=args.positive_threshold)
    except MovieLensSourceError as error:
        raise UserError(str(error)) from None
    if args.json:
        _emit_json({"out_dir": str(summary.out_dir), "counts": summary.counts})
    else:
        rows = [[name, count] for name, count in summary.counts.items()]
        print_table(f"MovieLens written to {summary.out_dir}", ["what", "rows"], rows)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from training.compare_job import print_comparison, run_comparison

    show_progress = not (args.json or args.no_progress)
    report = run_comparison(args.config, data_path=args.data, show_progress=show_progress)
    if args.output:
        args.output.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    if args.json:
        _emit_json(report.to_dict())
    else:
        print_comparison(report)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from training.tune_job import print_tuning, run_tuning

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    result = run_tuning(
        args.config,
        budget_seconds=args.budget_seconds,
        data_path=args.data,
        models=models,
        seed=args.seed,
        write_config=args.write_config,
        show_progress=not (args.json or args.no_progress),
    )
    if args.json:
        _emit_json(result.to_dict())
    else:
        print_tuning(result)
    return 0


def cmd_evaluate_policy(args: argparse.Namespace) -> int:
    from training.policy_evaluation_job import PolicyEvaluationInputError, run, table_rows

    if not 0 < args.level < 1:
        raise UserError(f"--level must be in (0, 1), got {args.level}")
    if args.folds < 2:
        raise UserError(f"--folds must be at least 2, got {args.folds}")
    since = None
    if args.since:
        try:
            since = dt.datetime.fromisoformat(args.since)
        except ValueError:
            raise UserError(f"--since: not an ISO date or time: {args.since!r}") from None
        since = since if since.tzinfo else since.replace(tzinfo=dt.UTC)
    try:
        report = run(
            args.decisions,
            args.policy,
            decision_type=args.decision_type,
            artifact=args.artifact,
            truth=args.truth,
            level=args.level,
            n_folds=args.folds,
            seed=args.seed,
            since=since,
            all_decisions=args.all_decisions,
            event_log=args.event_log,
        )
    except PolicyEvaluationInputError as error:
        raise UserError(str(error)) from None
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    columns, rows = table_rows(report)
    period = f" from {report['since']}" if report["since"] else ""
    title = (
        f"{report['decision_type']} policies on {report['decisions']:,} logged decisions{period} "
        f"({args.level:.0%} intervals; mixes from {report['mix_source'] or 'nowhere'}, "
        f"estimates from {report['estimates_source'] or 'nowhere'})"
    )
    print_table(title, columns, rows)
    if "coverage" in report:
        coverage = report["coverage"]
        stdout_console.print(
            f"intervals covering the true value: {coverage['covered']} of {coverage['intervals']}"
        )
    return 0


def cmd_experiment_report(args: argparse.Namespace) -> int:
    from training.experiment_report_job import ExperimentReportInputError, run, table_rows

    if not 0 < args.level < 1:
        raise UserError(f"--level must be in (0, 1), got {args.level}")
    if args.resamples < 100:
        raise UserError(f"--resamples must be at least 100, got {args.resamples}")
    try:
        report = run(
            event_log=args.event_log,
            decisions=args.decisions,
            control=args.control,
            decision_type=args.decision_type,
            level=args.level,
            resamples=args.resamples,
        )
    except ExperimentReportInputError as error:
        raise UserError(str(error)) from None
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    columns, rows = table_rows(report)
    title = f"experiment arms vs {report['control']} ({args.level:.0%} intervals of the differences)"
    print_table(title, columns, rows)
    return 0


COMMANDS = {
    "generate": cmd_generate,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "recommend": cmd_recommend,
    "personas": cmd_personas,
    "discover": cmd_discover,
    "summary": cmd_summary,
    "report": cmd_report,
    "drift": cmd_drift,
    "serve": cmd_serve,
    "adapt": cmd_adapt,
    "batch-recommend": cmd_batch_recommend,
    "segments": cmd_segments,
    "compare": cmd_compare,
    "tune": cmd_tune,
    "evaluate-policy": cmd_evaluate_policy,
    "experiment-report": cmd_experiment_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    from rich.markup import escape

    from engine.errors import PersonaEngineError

    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    # A missing file the user named is theirs to fix too; anything else that escapes is a bug.
    except (PersonaEngineError, FileNotFoundError) as error:
        stderr_console.print(
            f"[bold red]error:[/bold red] {escape(str(error))}", highlight=False, soft_wrap=True
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
