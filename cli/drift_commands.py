"""``persona-engine drift``: customers whose behaviour left their own past persona mix, and, with
planted truth beside the data, how well the change test finds them.

Kept apart from the other model commands because its scoring tables (against the planted drift and
the best any detector could do) are most of its code.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.text import Text

from cli.arguments import existing_folder, non_negative_int, open_unit, positive_float, positive_int, share
from cli.json_output import emit_json
from cli.subcommand import Subcommands, add_artifact_argument, add_command
from training.console_output import print_table, stdout_console

DRIFT_EXAMPLES = """
    examples:
      persona-engine drift --artifact artifacts/latest
      persona-engine drift --artifact artifacts/latest --data data/demo --target-false-alarm 0.02 --limit 50
      persona-engine drift --artifact artifacts/latest --threshold 8 --json > drift.json

    Each customer's events run, day by day, through a change test: one CUSUM per persona against a
    baseline learnt from the customer's own events older than --baseline-lag-days. A customer drifts
    while the evidence for "they now shop as a new mix led by persona p" (nats) is at or over the
    threshold (--keep-baseline 1: "the mix moved --shift of the way towards p"). The
    threshold is calibrated so that about --target-false-alarm of customers would be flagged once
    their events are shuffled in time (no change left), unless --threshold is given. With planted
    truth beside the data (the synthetic shop's truth/), the report scores the detection: precision,
    recall, false alarms on customers without planted drift, delays (days and events), recall by the
    planted drift's strength, ramp and events after it, and recall/precision against a delay budget
    for several thresholds. A shop made by 'persona-engine generate' also says which persona made each
    event (truth/event_personas.parquet): the report then sets the detector beside the best any
    detector could do on those events (a CUSUM told every interaction's persona and the planted mixes),
    at the same false-alarm rates.

    The server runs the same test on live events against the threshold 'train' calibrated the same way
    for the artifact ([drift] target_false_alarm, default 5%); this command prints it beside its own.
    """


def add_drift_command(sub: Subcommands) -> None:
    dr = add_command(
        sub,
        "drift",
        "customers whose behaviour left their own past persona mix, and how well drift is detected",
        DRIFT_EXAMPLES,
        cmd_drift,
    )
    add_artifact_argument(dr)
    dr.add_argument(
        "--data", type=existing_folder, help="data folder; default: the one the artifact was trained on"
    )
    # Defaults live in engine.personas.change_detection.ChangeDetectorConfig (importing it here would
    # slow every command).
    dr.add_argument(
        "--target-false-alarm",
        type=open_unit,
        help="share of customers without a change the calibrated threshold may flag (default 0.05)",
    )
    dr.add_argument(
        "--threshold", type=positive_float, help="CUSUM threshold in nats, instead of calibrating one"
    )
    dr.add_argument(
        "--baseline-lag-days",
        type=positive_float,
        help="events younger than this are tested, older ones make the baseline (default 28)",
    )
    dr.add_argument(
        "--shift",
        type=open_unit,
        help="weight of the persona the tested new mix is led by (default 0.5)",
    )
    dr.add_argument(
        "--keep-baseline",
        type=share,
        help="share of the tested mix's rest that is the customer's baseline rather than the population's "
        "mean mix: 0 a new mix led by one persona, 1 the old mix moved towards it (default 0)",
    )
    dr.add_argument(
        "--min-run-days",
        type=positive_int,
        help="UTC days a run of evidence must span before it flags a customer: 2 (default) means one "
        "day's events, one browsing session, are not a trend; 1 lets a single day flag",
    )
    dr.add_argument("--limit", type=non_negative_int, default=20, help="drifting customers to list")
    dr.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_drift(args: argparse.Namespace) -> int:
    from engine.personas.change_detection import ChangeDetectorConfig
    from training.drift_job import run_drift_report

    given = {
        "false_alarm_rate": args.target_false_alarm,
        "threshold": args.threshold,
        "baseline_lag_days": args.baseline_lag_days,
        "shift": args.shift,
        "keep_baseline": args.keep_baseline,
        "min_run_days": args.min_run_days,
    }
    config = ChangeDetectorConfig(**{name: value for name, value in given.items() if value is not None})
    report = run_drift_report(
        args.artifact, data_path=args.data, config=config, show_progress=not (args.json or args.no_progress)
    )
    if args.json:
        emit_json(report.to_dict())
        return 0
    how = (
        f"calibrated to {config.false_alarm_rate:.0%} false alarms on shuffled histories"
        if report.calibrated
        else "given"
    )
    shown = report.drifting[: args.limit]
    stdout_console.print(
        f"{len(report.drifting):,} of {report.customers_checked:,} tested customers drifting at the end of "
        f"{report.data} (threshold {report.threshold:.2f} nats, {how})"
    )
    for warning in report.warnings:
        stdout_console.print(Text.assemble(("warning:", "yellow"), " ", warning))
    live = report.live_calibration
    if live is not None:
        stdout_console.print(
            f"the server tests against {live.threshold:.2f} nats: calibrated by training to "
            f"{live.target_false_alarm:.0%} false alarms on {live.tested_customers:,} customers' shuffled "
            "histories"
        )
    if shown:
        print_table(
            f"drifting customers, strongest first ({len(shown)} shown)",
            ["customer", "from persona", "to persona", "evidence (nats)", "confidence", "since"],
            [
                [
                    customer,
                    s.from_persona,
                    s.to_persona,
                    f"{s.statistic:,.2f}",  # nats, as precise as the threshold they are compared with
                    s.confidence,
                    s.since.date().isoformat() if s.since else "-",
                ]
                for customer, s in shown
            ],
        )
    if report.accuracy is not None:
        _print_drift_accuracy(report.accuracy)
        if report.bound is not None:
            _print_detection_bound(report.accuracy, report.bound)
    return 0


def _print_detection_bound(a: Any, bound: Any) -> None:
    """The detector beside the label-told CUSUM (a DriftAccuracy and a DetectionBound)."""
    early = bound.early_days
    own_early = a.recall_within(early)
    matched = bound.at(a.false_alarm_rate)
    rows: list[list[Any]] = [
        [
            f"this detector (threshold {a.threshold:.2f})",
            f"{a.false_alarm_rate:.1%}",
            a.precision,
            a.recall,
            "-" if a.median_delay_days is None else f"{a.median_delay_days:.1f}",
            "-" if own_early is None else f"{own_early:.2f}",
        ]
    ]
    for point in [matched, *(p for p in bound.points if p is not matched)]:
        label = (
            "bound, same false alarms"
            if point is matched
            else f"bound, {point.target_false_alarm:.0%} false alarms"
        )
        rows.append(
            [
                label,
                f"{point.false_alarm_rate:.1%}",
                point.precision,
                point.recall,
                "-" if point.median_delay_days is None else f"{point.median_delay_days:.1f}",
                f"{point.recall_within_early_days:.2f}",
            ]
        )
    print_table(
        "against the best any detector could do here (a CUSUM told each interaction's persona and the "
        "planted mixes before and after the drift; truth/event_personas.parquet)",
        ["", "false alarms", "precision", "recall", "median delay (days)", f"found within {early} d"],
        rows,
    )


def _print_drift_accuracy(a: Any) -> None:
    """The scoring tables of ``persona-engine drift`` (a DriftAccuracy)."""

    def quantiles(values: dict[str, float]) -> str:
        return " / ".join(f"{v:.0f}" for v in values.values()) if values else "-"

    print_table(
        "against the planted drift (truth/)",
        ["measure", "value"],
        [
            ["customers with planted drift", a.n_planted],
            ["customers without", a.n_unchanged],
            ["customers flagged", a.n_flagged],
            ["precision", a.precision],
            ["recall", a.recall],
            ["false-alarm rate (customers without planted drift)", a.false_alarm_rate],
            ["delay, days (p10 / p25 / median / p75 / p90)", quantiles(a.delay_days)],
            ["delay, events (p10 / p25 / median / p75 / p90)", quantiles(a.delay_events)],
            ["drifters without any event in the 14 days after the drift", a.share_without_events_early],
        ],
    )
    for title, rows in (
        ("recall by planted drift strength", a.recall_by_strength),
        ("recall by planted ramp (days the drift took)", a.recall_by_ramp),
        ("recall by the drifter's events after the drift", a.recall_by_events_after),
    ):
        if rows:
            print_table(
                title,
                ["group", "drifters", "found", "recall"],
                [[r.group, r.drifters, r.found, r.recall] for r in rows],
            )
    if a.curve:
        budgets = list(a.curve[0].recall_within)
        # Recall and precision in two tables of short columns rather than one of "0.12 (0.03)" pairs:
        # twelve paired columns did not fit a 120-column terminal and broke each pair over two lines.
        for measure, within, overall in (
            ("recall", "recall_within", "recall"),
            ("precision", "precision_within", "precision"),
        ):
            print_table(
                f"{measure} counting only alarms within a delay budget (days after the planted drift), "
                "per threshold",
                ["threshold", "target FA", "FA", "flagged", *[f"{d} d" for d in budgets], "any delay"],
                [
                    [
                        f"{p.threshold:.2f}",
                        "-" if p.target_false_alarm is None else f"{p.target_false_alarm:.0%}",
                        p.false_alarm_rate,
                        p.n_flagged,
                        *[f"{getattr(p, within)[d]:.2f}" for d in budgets],
                        f"{getattr(p, overall):.2f}",
                    ]
                    for p in a.curve
                ],
            )
