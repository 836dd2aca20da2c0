"""Commands about page decisions (offers, layouts): off-policy evaluation and experiment reports.

Both read logged decisions (a table or the server's event log) rather than an artifact's models;
``evaluate-policy`` asks what other policies would have earned, ``experiment-report`` what the
arms of a live A/B experiment did. Imports stay inside the functions so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json

from cli.arguments import (
    artifact_folder,
    at_least,
    event_log_file,
    existing_file,
    existing_folder,
    iso_moment,
    non_negative_int,
    open_unit,
)
from cli.errors import UserError
from cli.subcommand import Subcommands, add_command
from training.console_output import print_table, stderr_console, stdout_console

EVALUATE_POLICY_EXAMPLES = """
    policies: uniform, always:ARM, greedy, epsilon-greedy:EPS, thompson[:DRAWS]
    optional decisions columns: mix__<persona_id> (the mix each candidate sees; default: the
    artifact's stored mix of the customer for the decision's context); position (the slot the arm
    was shown in: the arms are then arm x position, written ARM@POSITION)

    examples:
      persona-engine evaluate-policy --decisions data/demo/decisions.parquet \\
          --artifact artifacts/latest --policy greedy --policy uniform --policy epsilon-greedy:0.1
      persona-engine evaluate-policy --decisions data/demo/decisions.parquet \\
          --artifact artifacts/latest --policy thompson --decision-type layout \\
          --truth data/demo/truth --json
      persona-engine evaluate-policy --decisions log.csv --policy always:offer_freeship_all
      persona-engine evaluate-policy --decisions slotted.parquet --arm-table data/demo/offers.parquet \\
          --positions 1,2,3 --policy uniform
      persona-engine evaluate-policy --event-log run/events.sqlite --artifact artifacts/latest \\
          --all-decisions --policy greedy --policy thompson
    """

EXPERIMENT_REPORT_EXAMPLES = """
    a decision converted when a reward was reported for it; the rate difference interval is
    Newcombe's (Wilson score based), the revenue per decision difference a bootstrap interval.

    examples:
      persona-engine experiment-report --event-log run/events.sqlite --experiment experiment.toml
      persona-engine experiment-report --event-log run/events.sqlite --control static --json
      persona-engine experiment-report --decisions decisions.parquet --decision-type offer
    """


def add_evaluate_policy_command(sub: Subcommands) -> None:
    ep = add_command(
        sub,
        "evaluate-policy",
        "estimate what candidate offer or layout policies would have earned on logged decisions "
        "(IPS, self-normalised IPS, doubly robust)",
        EVALUATE_POLICY_EXAMPLES,
        cmd_evaluate_policy,
    )
    log_source = ep.add_mutually_exclusive_group(required=True)
    log_source.add_argument("--decisions", type=existing_file, help="decisions table (.parquet or .csv)")
    log_source.add_argument(
        "--event-log",
        type=event_log_file,
        help="the server's event log (SQLite): served decisions with their mixes",
    )
    ep.add_argument(
        "--policy", action="append", required=True, help="candidate policy spec; repeat for several"
    )
    ep.add_argument(
        "--artifact",
        type=artifact_folder,
        help="artifact with persona mixes and arm estimates (default: none; without it the log's mix "
        "columns are used and greedy/Thompson estimates are fitted on the log itself, in-sample)",
    )
    ep.add_argument(
        "--decision-type", choices=("offer", "layout"), default="offer", help="which decisions to evaluate"
    )
    ep.add_argument(
        "--truth", type=existing_folder, help="synthetic shop truth/ folder: add true values and coverage"
    )
    ep.add_argument("--level", type=open_unit, default=0.95, help="confidence level of the intervals")
    ep.add_argument("--folds", type=at_least(2), default=5, help="cross-fitting folds of the DR reward model")
    ep.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed of Thompson's Monte-Carlo propensities (default 0)",
    )
    arm_set = ep.add_mutually_exclusive_group()
    arm_set.add_argument(
        "--arm-table",
        type=existing_file,
        help="the offers (or, with --decision-type layout, layouts) table: the arms uniform and the other "
        "candidates choose among (default: the artifact's arms, else those in the log, with a warning)",
    )
    arm_set.add_argument("--arms", help="the arms as a comma-separated list, instead of --arm-table")
    ep.add_argument(
        "--positions",
        help="comma-separated positions (slots) of a log with a position column: the arms are every arm "
        "in every position (default: the positions in the log, with a warning)",
    )
    period = ep.add_mutually_exclusive_group()
    period.add_argument(
        "--since",
        type=iso_moment,
        help="evaluate decisions from this ISO date or time on (default with --artifact: what its "
        "estimates never saw: its test period, or, when it was refit on all events, the decisions after "
        "its data, else its test period with the split's estimates fitted again)",
    )
    period.add_argument(
        "--all-decisions", action="store_true", help="evaluate the whole log, even what the artifact saw"
    )


def cmd_evaluate_policy(args: argparse.Namespace) -> int:
    from training.policy_evaluation_job import PolicyEvaluationInputError, run
    from training.policy_evaluation_table import table_rows, table_title

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
            since=args.since,
            all_decisions=args.all_decisions,
            event_log=args.event_log,
            arms=args.arms.split(",") if args.arms else None,
            arm_table=args.arm_table,
            positions=args.positions.split(",") if args.positions else None,
        )
    except PolicyEvaluationInputError as error:
        raise UserError(str(error)) from None
    for warning in report["warnings"]:
        stderr_console.print(f"warning: {warning}", highlight=False)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    columns, rows = table_rows(report)
    print_table(table_title(report, args.level), columns, rows)
    if "coverage" in report:
        coverage = report["coverage"]
        stdout_console.print(
            f"intervals covering the true value: {coverage['covered']} of {coverage['intervals']}"
        )
    return 0


def add_experiment_report_command(sub: Subcommands) -> None:
    xr = add_command(
        sub,
        "experiment-report",
        "per experiment arm: decisions, conversions, revenue, and the difference to the control arm",
        EXPERIMENT_REPORT_EXAMPLES,
        cmd_experiment_report,
    )
    source = xr.add_mutually_exclusive_group(required=True)
    source.add_argument("--event-log", type=event_log_file, help="the server's event log (SQLite)")
    source.add_argument(
        "--decisions",
        type=existing_file,
        help="decisions table with an experiment_arm (and optional revenue) column",
    )
    xr.add_argument(
        "--experiment",
        type=existing_file,
        help="the experiment's config (the TOML file given to serve --experiment): its control arm is the "
        "control",
    )
    xr.add_argument(
        "--control",
        help="the control arm (default: the --experiment config's control, else the arm named 'control')",
    )
    xr.add_argument(
        "--decision-type", choices=("offer", "layout"), help="only decisions of this type (default: both)"
    )
    xr.add_argument("--level", type=open_unit, default=0.95, help="confidence level of the intervals")
    xr.add_argument("--resamples", type=at_least(100), default=2000, help="bootstrap resamples for revenue")


def cmd_experiment_report(args: argparse.Namespace) -> int:
    from training.experiment_report_job import ExperimentReportInputError, run, table_rows

    try:
        report = run(
            event_log=args.event_log,
            decisions=args.decisions,
            control=args.control,
            experiment=args.experiment,
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
    name = f"experiment {report['experiment']}: arms" if report["experiment"] else "experiment arms"
    title = f"{name} vs control {report['control']} ({args.level:.0%} intervals of the differences)"
    print_table(title, columns, rows)
    return 0
