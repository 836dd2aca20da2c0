"""Commands that put an artifact to use: serve it, and recommend or segment customers from it.

``serve`` runs the gRPC server (its flags are defined by serving/ itself); ``recommend``,
``batch-recommend`` and ``segments`` answer the same questions offline, for one customer, every
customer or every persona. Imports stay inside the functions so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.text import Text

from cli.arguments import SHOPPING_CONTEXTS, non_empty, positive_int, positive_share, share
from cli.errors import FlagError
from cli.json_output import emit_json
from cli.subcommand import Subcommands, add_artifact_argument, add_command
from training.console_output import Money, print_table, stderr_console, stdout_console

# training.batch_recommend.EXCLUSION_RULES's keys (a test keeps them equal), without importing polars.
EXCLUSION_CHOICES = ("purchased", "seen")
EXCLUDE_HELP = (
    "what to leave out of each list: 'purchased' (items the customer bought, as the API does) or "
    "'seen' (also items they viewed or carted, as the offline evaluation does)"
)

RECOMMEND_EXAMPLES = """
    examples:
      persona-engine recommend --artifact artifacts/latest --customer c0042
      persona-engine recommend --artifact artifacts/latest --customer new-visitor \\
          --mix bargain_hunter=0.7,tech_savvy=0.3
      persona-engine recommend --artifact artifacts/latest --customer c0042 --context weekend_holiday
      persona-engine recommend --artifact artifacts/latest --customer c0042 --exclude seen -k 5
      persona-engine recommend --artifact artifacts/latest --customer c0042 \\
          --mix luxury_enthusiast=1 --steering 1
    """

BATCH_RECOMMEND_EXAMPLES = """
    examples:
      persona-engine batch-recommend --artifact artifacts/latest --out campaign/top10.parquet
      persona-engine batch-recommend --artifact artifacts/latest --out top5.parquet -k 5 \\
          --customer-ids c0001,c0002
      persona-engine batch-recommend --artifact artifacts/latest --out top.parquet --customer-ids ids.csv
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
    add_artifact_argument(r)
    r.add_argument(
        "--customer", type=non_empty, required=True, help="customer id; unknown ids are served as cold start"
    )
    r.add_argument(
        "--mix",
        help="persona mix to use instead of the inferred one, e.g. bargain_hunter=0.6,luxury_enthusiast=0.4 "
        "(weights that do not sum to 1 are rescaled, with a note)",
    )
    r.add_argument(
        "--context",
        choices=SHOPPING_CONTEXTS,
        help="use the customer's mix for this shopping context (default: their overall mix)",
    )
    r.add_argument("-k", "--k", type=positive_int, default=10, help="number of products")
    r.add_argument("--model", help="model to use (default: the artifact's best)")
    r.add_argument("--exclude", choices=EXCLUSION_CHOICES, default="purchased", help=EXCLUDE_HELP)
    r.add_argument(
        "--steering",
        type=share,
        help="with --mix for a known customer: how far the mix overrides their history, 0..1 "
        "(default: the artifact's [personas] steering)",
    )


def cmd_recommend(args: argparse.Namespace) -> int:
    from training.batch_recommend import EXCLUSION_RULES, customer_lists

    if args.steering is not None and not args.mix:
        # It would change nothing: the customer's own mix does not steer (engine.personas.steering).
        raise FlagError("--steering", f"{args.steering:g} applies only to a mix given with --mix")
    personalizer = open_personalizer(args.artifact, args.model, steering=args.steering)
    _note_longer_than_the_catalog(personalizer, args.k, args.exclude)
    mix = _request_mix(personalizer, args.mix) if args.mix else None
    _note_an_unknown_customer(personalizer, args.customer)  # once the flags are known to be right
    result = customer_lists(
        personalizer, [args.customer], k=args.k, context=args.context, mix=mix, exclude=args.exclude
    )[0]
    if args.json:
        emit_json(
            {
                "customer_id": result.customer_id,
                "cold_start": result.cold_start,
                "model": result.model,
                "model_version": result.model_version,
                "persona_mix": result.mix.as_dict(),
                "mix_source": result.decision.mix_source.value,
                "excluded": args.exclude,
                "items": [vars(item) for item in result.items],
            }
        )
        return 0
    _print_recommendation(personalizer, result)
    stdout_console.print(
        f"left out: {EXCLUSION_RULES[args.exclude]} (--exclude {args.exclude})", highlight=False
    )
    return 0


def _note_longer_than_the_catalog(personalizer: Any, k: int, exclude: str) -> None:
    """A -k above the catalog's size is served as the whole catalog; a note on stderr says so, or a
    list of 284 under a requested 100,000 (or batch-recommend's "top 100000") would look like a fault."""
    items = len(personalizer.items)
    if k > items:
        stderr_console.print(
            f"note: -k {k:,} is more than the {items:,} items of the catalog; each list holds at most "
            f"{items:,} (the whole catalog, less items out of stock and what --exclude {exclude} leaves "
            "out)",
            highlight=False,
        )


def open_personalizer(artifact: Path, model: str | None, *, steering: float | None = None) -> Any:
    """The artifact's personalizer, an unknown ``--model`` named as the user's mistake; ``steering``
    overrides the artifact's setting (None keeps it)."""
    from engine.artifact.contents import load_artifact
    from engine.personalizer import Personalizer

    loaded = load_artifact(artifact)
    if model is not None and model not in loaded.models:
        raise FlagError(
            "--model", f"{model}: artifact {artifact} has no such model; it has {', '.join(loaded.models)}"
        )
    return Personalizer(loaded, model, steering=steering)


def _parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in text.split(","):
        if "=" not in part:
            raise FlagError("--mix", f"expected persona=weight pairs separated by commas, got {part!r}")
        name, value = part.split("=", 1)
        try:
            mix[name.strip()] = float(value)
        except ValueError:
            raise FlagError("--mix", f"weight of {name.strip()!r} is not a number: {value!r}") from None
    return mix


def _request_mix(personalizer: Any, text: str) -> Any:
    """``--mix`` as a validated mix of the artifact's personas; weights not summing to 1 are rescaled,
    and a note on stderr says so (the output would otherwise show other weights than were typed)."""
    from engine.personas.mix import PersonaMixError

    weights = _resolve_mix_names(personalizer.catalog, _parse_mix(text))
    try:
        mix = personalizer.persona_mix(weights)
    except PersonaMixError as error:
        raise FlagError("--mix", str(error)) from None
    total = sum(weights.values())
    if abs(total - 1.0) > 1e-6:
        rescaled = ", ".join(f"{p}={w:.3g}" for p, w in mix.as_dict().items() if w > 0)
        stderr_console.print(
            f"note: --mix weights sum to {total:g}, not 1; rescaled to {rescaled}", highlight=False
        )
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


def _note_an_unknown_customer(personalizer: Any, customer: str) -> None:
    """Say on stderr that an id the artifact does not know is served as cold start, and name a known id
    it may have meant (``training.batch_recommend.known_spelling``: an export's 17850.0 for the
    customer 17850; walkthrough: it was served as a stranger without a word)."""
    from training.batch_recommend import known_spelling

    if personalizer.mixes.row_of(customer) >= 0:
        return
    meant = known_spelling(personalizer, customer)
    hint = f"; did you mean {meant!r}?" if meant else ""
    stderr_console.print(
        f"note: the artifact does not know customer {customer!r}: served as cold start{hint}",
        highlight=False,
    )


def _print_recommendation(personalizer: Any, result: Any) -> None:
    names = dict(zip(personalizer.catalog.ids, personalizer.catalog.names, strict=True))
    mix_text = ", ".join(
        f"{names[p]} {w:.0%}"
        for p, w in sorted(result.mix.as_dict().items(), key=lambda kv: -kv[1])
        if w >= 0.05
    )
    status = "cold start" if result.cold_start else "known customer"
    stdout_console.print(
        Text.assemble(
            (result.customer_id, "bold"),
            f" ({status}, model {result.model}, mix {result.decision.mix_source.value}): {mix_text}",
        )
    )
    print_table(
        "",
        ["rank", "item", "title", "category", "price", "score", "reason"],
        [
            [i + 1, it.item_id, it.title, it.category, Money(it.price), it.score, it.reason]
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
    add_artifact_argument(b)
    b.add_argument("--out", type=Path, required=True, help="Parquet file to write (parent folders created)")
    b.add_argument(
        "--customer-ids",
        metavar="IDS_OR_FILE",
        help="customer ids separated by commas, or a .csv/.parquet/.txt file of them "
        "(a customer_id column, or one id per line); default: every customer of the artifact",
    )
    b.add_argument("--customers", action=_RenamedFlag, new_flag="--customer-ids", help=argparse.SUPPRESS)
    b.add_argument("-k", "--k", type=positive_int, default=10, help="products per customer")
    b.add_argument("--model", help="model to use (default: the artifact's best)")
    b.add_argument(
        "--context",
        choices=SHOPPING_CONTEXTS,
        help="use each customer's mix for this shopping context (default: their overall mix)",
    )
    b.add_argument("--exclude", choices=EXCLUSION_CHOICES, default="purchased", help=EXCLUDE_HELP)
    b.add_argument(
        "--chunk",
        type=positive_int,
        default=4096,
        help="customers scored and written per step (fewer when -k is long: at most 1,000,000 rows a step)",
    )
    b.add_argument("--no-progress", action="store_true", help="no progress bar")


class _RenamedFlag(argparse.Action):
    """A flag that was renamed: using the old name is an error that names the new one."""

    def __init__(self, *args: Any, new_flag: str, **kwargs: Any) -> None:
        self.new_flag = new_flag
        super().__init__(*args, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any, **__: Any) -> None:
        parser.error(f"{'/'.join(self.option_strings)} was renamed to {self.new_flag}")


def cmd_batch_recommend(args: argparse.Namespace) -> int:
    from training.batch_recommend import (
        EXCLUSION_RULES,
        CustomerListError,
        batch_recommend,
        read_customer_ids,
        refuse_respelled_ids,
    )
    from training.console_output import progress_bar

    if args.out.suffix.lower() != ".parquet":
        raise FlagError("--out", f"{args.out}: batch recommendations are written as .parquet")
    args.out.parent.mkdir(parents=True, exist_ok=True)  # a bad --out fails before any work, not after it
    try:
        # An empty value (an unset shell variable) must not mean "everyone": that is a whole-base campaign.
        ids = read_customer_ids(args.customer_ids) if args.customer_ids is not None else None
    except CustomerListError as error:
        raise FlagError("--customer-ids", str(error)) from None
    personalizer = open_personalizer(args.artifact, args.model)
    if ids is not None:
        try:
            refuse_respelled_ids(personalizer, ids, args.customer_ids)
        except CustomerListError as error:
            raise FlagError("--customer-ids", str(error)) from None
    _note_longer_than_the_catalog(personalizer, args.k, args.exclude)
    total = len(ids) if ids is not None else len(personalizer.customers)
    with progress_bar(enabled=not (args.json or args.no_progress)) as progress:
        task = progress.add_task("recommending", total=total)
        report = batch_recommend(
            personalizer,
            args.out,
            customer_ids=ids,
            k=args.k,
            context=args.context,
            exclude=args.exclude,
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
    stdout_console.print(
        f"left out: {EXCLUSION_RULES[report.excluded]} (--exclude {report.excluded}); mixes: each "
        f"customer's {args.context or 'overall'} mix (the mix_source column says where it came from)",
        highlight=False,
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
    add_artifact_argument(sg)
    sg.add_argument("--out", type=Path, required=True, help=".parquet or .csv file to write")
    sg.add_argument(
        "--threshold",
        type=positive_share,
        default=0.4,
        help="smallest mix weight that puts a customer in a persona's segment (0 < threshold <= 1)",
    )


def cmd_segments(args: argparse.Namespace) -> int:
    from engine.personalizer import Personalizer
    from training.persona_segments import persona_segments

    if args.out.suffix.lower() not in (".csv", ".parquet"):
        raise FlagError("--out", f"{args.out}: write segments to a .csv or .parquet file")
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
