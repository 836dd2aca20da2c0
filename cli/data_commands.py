"""Commands about the data: generate a synthetic shop, adapt external data sets, show and test the catalog.

``generate`` and ``adapt`` write folders that ``train`` reads; ``personas`` shows the catalog and
``discover`` looks for customers it does not explain. Imports of the jobs stay inside the functions
so that ``--help`` does not load numpy, polars or the models.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cli.arguments import (
    HelpFormatter,
    catalog_spec,
    existing_file,
    existing_folder,
    non_negative_int,
    open_unit,
    positive_int,
    share,
    whole_numbers_at_least,
)
from cli.errors import UserError
from cli.json_output import emit_json
from cli.subcommand import Subcommands, add_command
from training.console_output import print_table, stdout_console
from training.flag_error import FlagError

GENERATE_EXAMPLES = """
    examples:
      persona-engine generate --out data/demo
      persona-engine generate --out data/big --customers 1000000 --items 100000 --events 50000000
      persona-engine generate --out data/csv-shop --format csv --seed 3
      persona-engine generate --out data/strong-drift --seed 3 --drift-strength 0.8,1 --post-drift-activity 3
      persona-engine generate --out data/slow-drift --drift-strength 0.3,1 --drift-ramp-days 0,30
      persona-engine generate --out data/persona-led --personal-taste 0.5
    """

PERSONAS_EXAMPLES = """
    examples:
      persona-engine personas
      persona-engine personas --catalog my_catalog.toml --json
    """

DISCOVER_EXAMPLES = """
    examples:
      persona-engine discover --data data/demo
      persona-engine discover --data data/demo --catalog my_catalog.toml --json
      persona-engine discover --data data/online-retail --write-catalog retail_personas.toml --personas 5
      persona-engine discover --data data/demo --write-catalog demo_personas.toml --personas 5,10,20,40
      persona-engine discover --data data/demo --write-catalog demo_personas.toml --personas 10,20 \\
          --training-split training/configs/demo.toml
    with --write-catalog, a whole catalog is proposed from the data (clusters of customers' behaviour,
    named by what sets them apart), written to FILE and compared with --catalog on the last
    --held-out-days of events: share of customers dominated by one persona, held-out likelihood, and
    held-out NDCG@10 (each customer's next items ranked by the popularity of their mix's personas).
    Several --personas sizes are each proposed and measured; the best held-out NDCG@10 is written.
    """

ADAPT_EXAMPLES = """
    examples:
      persona-engine adapt transactions --mapping training/mappings/online_retail.toml \\
          --source ../shared/data/online-retail/online_retail.parquet --out data/online-retail
    run 'persona-engine adapt SOURCE --help' for the options of each kind of source.
    """

ADAPT_TRANSACTIONS_EXAMPLES = """
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
    """

ADAPT_MOVIELENS_EXAMPLES = """
    examples:
      persona-engine adapt movielens --source ../shared/data/ml-100k --out data/ml100k
      persona-engine adapt movielens --source ../shared/data/ml-100k --out data/ml100k-liked \\
          --positive-threshold 4
    """


def add_generate_command(sub: Subcommands) -> None:
    g = add_command(
        sub,
        "generate",
        "write a synthetic shop with planted personas and its ground truth",
        GENERATE_EXAMPLES,
        cmd_generate,
    )
    g.add_argument("--out", type=Path, required=True, help="output folder (created)")
    g.add_argument("--customers", type=positive_int, default=5_000, help="number of customers")
    g.add_argument("--items", type=positive_int, default=2_000, help="number of items in the catalog")
    g.add_argument("--events", type=positive_int, default=200_000, help="approximate number of event rows")
    g.add_argument("--seed", type=non_negative_int, default=7, help="random seed: same seed, same shop")
    g.add_argument("--days", type=positive_int, default=182, help="length of the simulated period in days")
    g.add_argument("--drift-share", type=share, default=0.10, help="share of customers whose mix drifts")
    g.add_argument(
        "--drift-strength",
        type=_number_range(float),
        default=(1.0, 1.0),
        metavar="MIN[,MAX]",
        help="share of the way a drifting mix moves to one led by a new persona, per customer (default 1)",
    )
    g.add_argument(
        "--drift-ramp-days",
        type=_number_range(int),
        default=(0, 0),
        metavar="MIN[,MAX]",
        help="days a drift takes, drawn per customer; 0 is abrupt (default 0)",
    )
    g.add_argument(
        "--post-drift-activity",
        type=float,
        default=1.0,
        help="sessions per day after a drift relative to before (same total activity; default 1)",
    )
    g.add_argument(
        "--personal-taste",
        type=share,
        default=1.0,
        help="how much of a customer's choice is their own favourite niches and brands rather than their "
        "personas' taste (1 as planted by default; 0.5 halves it)",
    )
    g.add_argument(
        "--hidden-segment-share",
        type=share,
        default=0.03,
        help="share of customers driven by a persona missing from the catalog",
    )
    g.add_argument(
        "--format", choices=("parquet", "csv"), default="parquet", help="file format of the tables"
    )


def _shop_config(args: argparse.Namespace, shop_config: Any) -> Any:
    """The ShopConfig the flags describe (it raises ValueError naming a bad field)."""
    return shop_config(
        customers=args.customers,
        items=args.items,
        events=args.events,
        seed=args.seed,
        days=args.days,
        drift_share=args.drift_share,
        hidden_segment_share=args.hidden_segment_share,
        drift_strength=args.drift_strength,
        drift_ramp_days=args.drift_ramp_days,
        post_drift_activity=args.post_drift_activity,
        personal_taste=args.personal_taste,
        file_format=args.format,
    )


def _number_range(kind: type[float] | type[int]) -> Any:
    """``MIN`` or ``MIN,MAX`` as a (min, max) pair of ``kind`` (the config checks the bounds)."""

    def parse(text: str) -> tuple[float, float] | tuple[int, int]:
        parts = text.split(",")
        try:
            values = [kind(part) for part in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected MIN or MIN,MAX of {kind.__name__}s, got {text!r}"
            ) from None
        if len(values) not in (1, 2):
            raise argparse.ArgumentTypeError(f"expected MIN or MIN,MAX, got {text!r}")
        return (values[0], values[-1])

    parse.__name__ = f"{kind.__name__} range"
    return parse


def cmd_generate(args: argparse.Namespace) -> int:
    from training.synthetic_shop import ShopConfig, generate_shop

    try:
        config = _shop_config(args, ShopConfig)
    except ValueError as error:
        raise UserError(str(error)) from None
    summary = generate_shop(args.out, config, show_progress=not args.json)
    if args.json:
        emit_json({"out_dir": str(summary.out_dir), "counts": summary.counts, "seconds": summary.seconds})
    else:
        rows = [[table, count] for table, count in summary.counts.items()]
        print_table(
            f"synthetic shop written to {summary.out_dir} in {summary.seconds:.1f} s", ["table", "rows"], rows
        )
    return 0


def _propose_catalog(args: argparse.Namespace) -> int:
    from training.discovery_job import run_catalog_proposal

    written: Path = args.write_catalog
    if written.exists() and not args.overwrite:  # before the search; a hand-written catalog is work
        same = Path(str(args.catalog)).resolve() == written.resolve()
        named = " (it is the --catalog read)" if same else ""
        raise FlagError(
            "--write-catalog",
            f"{written} already exists{named}: name a new file, or pass --overwrite to replace it",
        )

    training_split = None
    if args.training_split is not None:
        from training.config import ConfigError, load_config

        try:
            training_split = load_config(args.training_split)
        except ConfigError as error:
            raise UserError(str(error)) from None
    report = run_catalog_proposal(
        args.data,
        args.catalog,
        args.write_catalog,
        personas=args.personas,
        held_out_days=args.held_out_days,
        held_out_share=args.held_out_share,
        training_split=training_split,
    )
    if args.json:
        emit_json(report)
        return 0
    given = report["fit"]["given"]
    rows = [[report["given_catalog"], given["personas"], "", *_fit_cells(given)]]
    rows += [
        [f"proposed ({c['requested_personas']})", c["personas"], "yes" if c["chosen"] else "", *_fit_cells(c)]
        for c in report["candidates"]
    ]
    held_out = (
        f"the last {report['held_out_days']} days"
        if report["held_out_share"] is None
        else f"each customer's latest {report['held_out_share']:.0%} of events"
    )
    print_table(
        f"catalog fit: fitted before, scored on {held_out} "
        f"({given['held_out_events']:,} events; {given['held_out_customers']:,} customers with new items)",
        ["catalog", "personas", "written", "dominated share", "log-lik / event", "NDCG@10"],
        rows,
    )
    print_table(
        f"proposed personas ({report['customers_clustered']:,} customers clustered)",
        ["id", "name", "customers", "share", "signals"],
        [
            [
                p["id"],
                p["name"],
                p["customers"],
                p["share"],
                _signals_text(p["signals"]),
            ]
            for p in report["personas"]
        ],
    )
    stdout_console.print(f"catalog written to {report['catalog_file']} (loads as a catalog)", highlight=False)
    return 0


def _fit_cells(fit: dict[str, Any]) -> list[float]:
    """A catalog's fit as the table shows it: dominated share, held-out log-likelihood and NDCG@10."""
    return [fit["dominated_share"], fit["held_out_log_likelihood"], fit["held_out_ndcg_at_10"]]


def _signals_text(signals: dict[str, Any]) -> str:
    return "; ".join(f"{k}: {', '.join(v) if isinstance(v, list | tuple) else v}" for k, v in signals.items())


def add_adapt_command(sub: Subcommands) -> None:
    """``adapt SOURCE``: one sub-subcommand per kind of external data, each with its own handler."""
    adapt = sub.add_parser(
        "adapt",
        help="turn an external data set into the data contract's tables (a folder train can read)",
        description="Turn an external data set into the data contract's tables (events, items, customers).",
        epilog=textwrap.dedent(ADAPT_EXAMPLES),
        formatter_class=HelpFormatter,
    )
    kinds = adapt.add_subparsers(dest="adapt_source", required=True, metavar="SOURCE")

    t = kinds.add_parser(
        "transactions",
        help="a transaction export (CSV or Parquet) read through a mapping file",
        description="Map a transaction export's columns onto the data contract with a TOML mapping file; "
        "drop returns, cancellations, non-positive prices and rows without a customer, counted per reason.",
        epilog=textwrap.dedent(ADAPT_TRANSACTIONS_EXAMPLES),
        formatter_class=HelpFormatter,
    )
    t.add_argument("--mapping", type=existing_file, required=True, help="mapping file (TOML)")
    t.add_argument("--source", type=existing_file, required=True, help="the export: a .csv or .parquet file")
    t.add_argument("--out", type=Path, required=True, help="output folder (created)")
    _add_overwrite(t)
    t.add_argument(
        "--skip-invalid",
        action="store_true",
        help="drop and count rows with cells that do not parse, instead of failing",
    )
    t.add_argument("--json", action="store_true", help="print one JSON document on stdout instead of tables")
    t.set_defaults(handler=cmd_adapt_transactions)

    m = kinds.add_parser(
        "movielens",
        help="MovieLens 100K (ratings, genres, users) with its ua.base/ua.test split",
        description="Convert MovieLens 100K into the data contract's tables plus test_events.csv "
        "(the ids of the ua.test ratings) for a predefined split.",
        epilog=textwrap.dedent(ADAPT_MOVIELENS_EXAMPLES),
        formatter_class=HelpFormatter,
    )
    m.add_argument(
        "--source", type=existing_folder, required=True, help="folder of the original files (read only)"
    )
    m.add_argument("--out", type=Path, required=True, help="output shop folder (created)")
    _add_overwrite(m)
    m.add_argument(
        "--positive-threshold",
        type=int,
        choices=range(1, 6),
        metavar="{1..5}",
        default=1,
        help="lowest rating kept as a positive interaction (1: every rating, as in LightFM's protocol)",
    )
    m.add_argument("--json", action="store_true", help="print one JSON document on stdout instead of tables")
    m.set_defaults(handler=cmd_adapt_movielens)


def _add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the data files an earlier adapt wrote to --out (without it, a folder holding "
        "files is refused)",
    )


# The adapters' own files; with the contract's tables in either format, what adapt writes into a data
# folder (``_adapted_files``), and all --overwrite removes.
_ADAPTER_FILES = frozenset(
    {"adaptation_report.json", "rejected_rows.parquet", "adapter.json", "test_events.csv"}
)


def _adapted_files() -> frozenset[str]:
    from engine.data.contract import TABLES  # brings polars: not for --help

    return _ADAPTER_FILES | {f"{table}{suffix}" for table in TABLES for suffix in (".parquet", ".csv")}


@contextlib.contextmanager
def _fresh_data_folder(out: Path, overwrite: bool) -> Iterator[None]:
    """adapt writes a whole data folder. Into one that holds files it left a mix: an Online Retail
    folder adapted over with MovieLens kept the old adaptation report and rejected rows, and two adapts
    into one new folder at once interleaved their tables (a data scientist's walkthrough). A folder
    with files is refused unless ``--overwrite``, which removes what an adapt writes (other files are
    refused even then); one adapt at a time holds a lock beside the folder."""
    if out.exists() and not out.is_dir():
        raise FlagError("--out", f"{out}: is a file; adapt writes a folder")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not overwrite:
        shown = ", ".join(held[:4]) + (f" and {len(held) - 4} more" if len(held) > 4 else "")
        raise FlagError(
            "--out",
            f"{out} already holds {shown}: name a new folder, or pass --overwrite to replace the data "
            "files an earlier adapt wrote",
        )
    adapted = _adapted_files()
    foreign = [name for name in held if name not in adapted]
    if foreign:
        raise FlagError(
            "--out",
            f"{out} holds files adapt does not write ({', '.join(foreign[:4])}): --overwrite only replaces "
            "a data folder's own files; name a new folder",
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.adapt-lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FlagError("--out", f"{out}: another adapt is writing this folder now") from None
        for name in held:
            (out / name).unlink()
        yield


def cmd_adapt_transactions(args: argparse.Namespace) -> int:
    from engine.data.loading import load_shop
    from training.transaction_adapter import adapt_transactions
    from training.transaction_mapping import load_mapping

    mapping = load_mapping(args.mapping)
    with _fresh_data_folder(args.out, args.overwrite):
        report = adapt_transactions(mapping, args.source, args.out, skip_invalid=args.skip_invalid)
    shop = load_shop(args.out)  # the folder must load as it is: a contract break here is a bug to surface
    if args.json:
        emit_json({**report.to_dict(), "verified_rows": shop.report.rows_read})
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
    for table, skipped in report.joined_rows_skipped.items():
        print(f"--skip-invalid: {skipped:,} row(s) of the {table} table left out; their lines are kept")
    return 0


def cmd_adapt_movielens(args: argparse.Namespace) -> int:
    from training.movielens_adapter import MovieLensSourceError, adapt_movielens

    try:
        with _fresh_data_folder(args.out, args.overwrite):
            summary = adapt_movielens(args.source, args.out, positive_threshold=args.positive_threshold)
    except MovieLensSourceError as error:
        raise UserError(str(error)) from None
    if args.json:
        emit_json({"out_dir": str(summary.out_dir), "counts": summary.counts})
    else:
        rows = [[name, count] for name, count in summary.counts.items()]
        print_table(f"MovieLens written to {summary.out_dir}", ["what", "rows"], rows)
    return 0


def add_personas_command(sub: Subcommands) -> None:
    p = add_command(sub, "personas", "show the persona catalog", PERSONAS_EXAMPLES, cmd_personas)
    p.add_argument(
        "--catalog", type=catalog_spec, default="default", help="bundled catalog name or a TOML file"
    )


def cmd_personas(args: argparse.Namespace) -> int:
    from engine.personas.catalog import load_catalog

    catalog = load_catalog(args.catalog)
    if args.json:
        emit_json(
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


def add_discover_command(sub: Subcommands) -> None:
    d = add_command(
        sub,
        "discover",
        "find customer segments that no catalog persona explains",
        DISCOVER_EXAMPLES,
        cmd_discover,
    )
    d.add_argument(
        "--data", type=existing_folder, required=True, help="data folder (a shop: events, items, customers)"
    )
    d.add_argument(
        "--catalog", type=catalog_spec, default="default", help="bundled catalog name or a TOML file"
    )
    d.add_argument(
        "--min-share", type=share, default=0.01, help="smallest segment to report, as a share of customers"
    )
    d.add_argument(
        "--write-catalog", type=Path, metavar="FILE", help="propose a persona catalog, write it here"
    )
    d.add_argument(
        "--overwrite",
        action="store_true",
        help="with --write-catalog: replace the file if it exists (without it, an existing file is refused)",
    )
    d.add_argument(
        "--personas",
        type=whole_numbers_at_least(2),
        metavar="N[,N...]",
        help="with --write-catalog: how many; several sizes are each tried and the best held-out NDCG@10 "
        "written (default: as many as --catalog)",
    )
    d.add_argument(
        "--held-out-days",
        type=positive_int,
        default=28,
        help="with --write-catalog: days held out to compare fits",
    )
    d.add_argument(
        "--held-out-share",
        type=open_unit,
        metavar="SHARE",
        help="with --write-catalog: hold out each customer's latest SHARE of events instead of the last "
        "--held-out-days (for customers active in bursts, e.g. 0.2 on MovieLens)",
    )
    d.add_argument(
        "--training-split",
        type=existing_file,
        metavar="CONFIG",
        help="with --write-catalog: read only the events this training config's split trains on, so that "
        "evaluating the catalog with that config never shows it the test events",
    )


def cmd_discover(args: argparse.Namespace) -> int:
    from training.discovery_job import run_discovery

    if args.write_catalog is not None:
        return _propose_catalog(args)
    report = run_discovery(args.data, args.catalog, min_share=args.min_share)
    if args.json:
        emit_json(report)
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
