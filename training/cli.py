"""The ``persona-engine`` command line: generate data, train, evaluate, inspect and explain.

Output is for people by default (progress bars, aligned tables); ``--json`` prints one JSON document
on stdout for scripts. Errors in the user's files end the command with exit status 2 and a message
naming the file, row and column, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


class UserError(Exception):
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

    dr = command("drift", "customers whose recent behaviour moved away from their long-term persona mix")
    dr.add_argument("--artifact", type=Path, default=Path("artifacts/latest"))
    dr.add_argument("--data", type=Path, help="data folder; default: the one the artifact was trained on")
    # Defaults live in engine.drift_detection.DriftConfig (importing it here would slow every command).
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


def _add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    from serving.server import add_serve_arguments

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
    _print_results(
        result.results, config.evaluation.k, f"evaluation (held-out last {config.split.test_days} days)"
    )
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
    from engine.persona_catalog import load_catalog

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
    from engine.drift_detection import DriftConfig
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


COMMANDS = {
    "generate": cmd_generate,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "recommend": cmd_recommend,
    "personas": cmd_personas,
    "discover": cmd_discover,
    "summary": cmd_summary,
    "drift": cmd_drift,
    "serve": cmd_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    from rich.markup import escape

    from engine.artifact import ArtifactError
    from engine.data_loading import DataValidationError
    from engine.event_log import EventLogError
    from engine.persona_catalog import CatalogError
    from engine.persona_mix import PersonaMixError
    from training.config import ConfigError

    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (
        UserError,
        DataValidationError,
        CatalogError,
        ConfigError,
        ArtifactError,
        PersonaMixError,
        EventLogError,
    ) as error:
        stderr_console.print(f"[bold red]error:[/bold red] {escape(str(error))}", highlight=False)
        return 2
    except FileNotFoundError as error:
        stderr_console.print(f"[bold red]error:[/bold red] {escape(str(error))}", highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
