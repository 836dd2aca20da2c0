"""Commands that put an artifact to use: serve it, and recommend or segment customers from it.

``serve`` runs the gRPC server (its flags are defined by serving/ itself); ``recommend``,
``batch-recommend`` and ``segments`` answer the same questions offline, for one customer, every
customer or every persona. Imports stay inside the functions so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cli.errors import UserError
from cli.json_output import emit_json
from cli.subcommand import Subcommands, add_command
from training.console_output import print_table, stdout_console

RECOMMEND_EXAMPLES = """
    examples:
      persona-engine recommend --artifact artifacts/latest --customer c0000042
      persona-engine recommend --artifact artifacts/latest --customer new-visitor \\
          --mix bargain_hunter=0.7,tech_savvy=0.3
      persona-engine recommend --artifact artifacts/latest --customer c0000042 --context weekend_holiday
      persona-engine recommend --artifact artifacts/latest --customer c0000042 \
          --mix luxury_enthusiast=1 --steering 1
    """

BATCH_RECOMMEND_EXAMPLES = """
    examples:
      persona-engine batch-recommend --artifact artifacts/latest --out campaign/top10.parquet
      persona-engine batch-recommend --artifact artifacts/latest --out top5.parquet -k 5 \\
          --customers c0000001,c0000002
      persona-engine batch-recommend --artifact artifacts/latest --out top.parquet --customers ids.csv
    """

SEGMENTS_EXAMPLES = """
    examples:
      persona-engine segments --artifact artifacts/latest --out campaign/segments.csv
      persona-engine segments --artifact artifacts/latest --out segments.parquet --threshold 0.5 --json
    """


def add_recommend_command(sub: Subcommands) -> None:
    r = add_command(
        sub,
        "recommend",
        "top products for a customer, or for any persona mix",
        RECOMMEND_EXAMPLES,
        cmd_recommend,
    )
    r.add_argument("--artifact", type=Path, default=Path("artifacts/latest"))
    r.add_argument("--customer", required=True, help="customer id; unknown ids are served as cold start")
    r.add_argument(
        "--mix",
        help="persona mix to use instead of the inferred one, e.g. bargain_hunter=0.6,luxury_enthusiast=0.4",
    )
    r.add_argument("--context", help="weekday or weekend_holiday: use the customer's mix for that context")
    r.add_argument("-k", type=int, default=10, help="number of products")
    r.add_argument("--model", help="model to use (default: the artifact's best)")
    r.add_argument(
        "--steering",
        type=float,
        help="with --mix for a known customer: how far the mix overrides their history, 0..1 "
        "(default: the artifact's [personas] steering)",
    )


def cmd_recommend(args: argparse.Namespace) -> int:
    from engine.personalizer import Personalizer

    personalizer = Personalizer.from_path(args.artifact, args.model)
    mix = _resolve_mix_names(personalizer.catalog, _parse_mix(args.mix)) if args.mix else None
    if args.steering is not None and not 0 <= args.steering <= 1:
        raise UserError(f"--steering must be between 0 and 1, got {args.steering}")
    result = personalizer.recommend(
        args.customer, args.k, mix=mix, context=args.context, steering=args.steering
    )
    if args.json:
        emit_json(
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


def add_batch_recommend_command(sub: Subcommands) -> None:
    b = add_command(
        sub,
        "batch-recommend",
        "top-k products for every customer (or a list of them) into a Parquet file",
        BATCH_RECOMMEND_EXAMPLES,
        cmd_batch_recommend,
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
        emit_json({**vars(report), "customers_per_second": report.customers_per_second})
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


def add_segments_command(sub: Subcommands) -> None:
    sg = add_command(
        sub,
        "segments",
        "per persona, the customers it describes, with the channel to reach each",
        SEGMENTS_EXAMPLES,
        cmd_segments,
    )
    sg.add_argument("--artifact", type=Path, default=Path("artifacts/latest"))
    sg.add_argument("--out", type=Path, required=True, help=".parquet or .csv file to write")
    sg.add_argument(
        "--threshold",
        type=float,
        default=0.4,
        help="smallest mix weight that puts a customer in a persona's segment (0 < threshold <= 1)",
    )


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
        emit_json(
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


def add_serve_command(sub: Subcommands) -> None:
    """``serve`` has no ``--json``; its flags, examples and environment variables come from serving/."""
    sv = sub.add_parser(
        "serve",
        help="serve an artifact over gRPC (personalization, admin, health, reflection, metrics)",
        description="Serve a trained artifact over gRPC, with Prometheus metrics on their own port.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_serve_arguments(sv)
    sv.set_defaults(handler=cmd_serve)


def _add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    from serving.settings import add_serve_arguments

    add_serve_arguments(parser)


def cmd_serve(args: argparse.Namespace) -> int:
    from serving.server import run_from_args

    return run_from_args(args)
