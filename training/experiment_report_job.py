"""``persona-engine experiment-report``: per experiment arm, decisions, conversions, revenue and the
difference to the control arm with confidence intervals (engine/evaluation/experiment_report.py).

Inputs, one of:

- ``--event-log PATH``: the server's event log (engine/live/event_log.py). A decision is one served
  response (one decision id); its arm is the ``experiment_arm`` it was served under; it converted when
  any reward outcome (offer redeemed, layout converted) was reported for it, and its revenue is the
  sum of those outcomes' revenue. Decisions served outside any experiment (empty arm) are left out.
- ``--decisions FILE``: a file in the ``decisions`` table format (engine/data/contract.py) with the
  extra column ``experiment_arm`` and optionally ``revenue`` (float, default 0). One row is one
  decision; it converted when ``outcome`` > 0.

The control arm is, in order: ``--control``; the ``control`` of the experiment's config
(``--experiment FILE``, the file the server ran with ``serve --experiment``); an arm named "control".
The log records each decision's arm but not the experiment's config, hence the flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from engine.data.contract import DECISION_TYPES, DECISIONS
from engine.data.loading import load_table
from engine.decisions.experiment import Experiment, ExperimentError, load_experiment
from engine.errors import PersonaEngineError
from engine.evaluation.experiment_report import DEFAULT_LEVEL, ExperimentReportError, summarize_arms
from engine.live.event_archive import archive_folder, read_outcomes, read_served_decisions
from engine.live.event_log import EventLog, EventLogError

ARM_COLUMN = "experiment_arm"
REVENUE_COLUMN = "revenue"


class ExperimentReportInputError(PersonaEngineError, ValueError):
    """A log or decisions file that cannot make a report; names the file and column."""


@dataclass(frozen=True)
class ExperimentDecisions:
    arms: list[str]
    converted: np.ndarray
    revenue: np.ndarray
    source: str


def from_decisions_file(path: Path, decision_type: str | None) -> ExperimentDecisions:
    frame, _ = load_table(path, DECISIONS)
    if path.suffix.lower() == ".csv":
        header = pl.scan_csv(path, infer_schema=False).collect_schema().names()
    else:
        header = list(pl.read_parquet_schema(path))
    if ARM_COLUMN not in header:
        raise ExperimentReportInputError(
            f"{path}: no column {ARM_COLUMN!r}; an experiment report needs the arm each decision "
            "was served under"
        )
    columns = [ARM_COLUMN] + ([REVENUE_COLUMN] if REVENUE_COLUMN in header else [])
    if path.suffix.lower() == ".csv":
        extra = pl.read_csv(path, columns=columns, infer_schema=False)
    else:
        extra = pl.read_parquet(path, columns=columns)
    arms = extra[ARM_COLUMN].cast(pl.Utf8).fill_null("")
    revenue = np.zeros(extra.height)
    if REVENUE_COLUMN in extra.columns:
        try:
            values = extra[REVENUE_COLUMN].cast(pl.Float64, strict=True)
        except pl.exceptions.PolarsError:
            raise ExperimentReportInputError(f"{path}: column {REVENUE_COLUMN!r} must hold numbers") from None
        revenue = values.fill_null(0.0).to_numpy()
        bad = ~np.isfinite(revenue)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ExperimentReportInputError(f"{path}: row {row + 1}, column {REVENUE_COLUMN!r}: not finite")
    keep = (arms != "").to_numpy()
    if decision_type is not None:
        keep &= (frame["decision_type"] == decision_type).to_numpy()
    return ExperimentDecisions(
        arms=arms.filter(pl.Series(keep)).to_list(),
        converted=(frame["outcome"].to_numpy() > 0)[keep],
        revenue=revenue[keep],
        source=str(path),
    )


def from_event_log(path: Path, decision_type: str | None) -> ExperimentDecisions:
    if not path.is_file():
        raise ExperimentReportInputError(f"{path}: no such event log")
    try:
        with EventLog.open(path) as log:  # and its archive: retention moves old decisions there
            served = read_served_decisions(log, archive_folder(path))
            outcomes = read_outcomes(log, archive_folder(path))
    except EventLogError as error:
        raise ExperimentReportInputError(str(error)) from None
    arm_of: dict[str, str] = {}
    for decision in served:
        if decision_type is not None and decision.decision_type != decision_type:
            continue
        if decision.experiment_arm:
            arm_of.setdefault(decision.decision_id, decision.experiment_arm)
    converted = dict.fromkeys(arm_of, False)
    revenue = dict.fromkeys(arm_of, 0.0)
    for outcome in outcomes:
        if outcome.decision_id not in arm_of or not outcome.kind.is_reward:
            continue
        if decision_type is not None and outcome.kind.decision_type != decision_type:
            continue
        converted[outcome.decision_id] = True
        revenue[outcome.decision_id] += outcome.revenue
    ids = list(arm_of)
    return ExperimentDecisions(
        arms=[arm_of[i] for i in ids],
        converted=np.array([converted[i] for i in ids], dtype=bool),
        revenue=np.array([revenue[i] for i in ids], dtype=np.float64),
        source=str(path),
    )


def run(
    *,
    event_log: Path | None = None,
    decisions: Path | None = None,
    control: str | None = None,
    experiment: Path | None = None,
    decision_type: str | None = None,
    level: float = DEFAULT_LEVEL,
    resamples: int = 2_000,
    seed: int = 0,
) -> dict[str, Any]:
    if (event_log is None) == (decisions is None):
        raise ExperimentReportInputError("give exactly one of an event log and a decisions file")
    if decision_type is not None and decision_type not in DECISION_TYPES:
        raise ExperimentReportInputError(f"decision type must be one of {', '.join(DECISION_TYPES)}")
    data = (
        from_event_log(event_log, decision_type)
        if event_log is not None
        else from_decisions_file(decisions, decision_type)  # type: ignore[arg-type]
    )
    present = sorted(set(data.arms))
    if not present:
        raise ExperimentReportInputError(f"{data.source}: no decisions served under an experiment arm")
    config = _experiment_config(experiment)
    if control is None and config is not None:
        control = config.control
        if control not in present:
            raise ExperimentReportInputError(
                f"{data.source}: no decision was served under {experiment}'s control arm {control!r} "
                f"(arms in the log: {', '.join(present)})"
            )
    if control is None:
        if "control" not in present:
            raise ExperimentReportInputError(
                f"{data.source}: no arm named 'control'; give --experiment FILE (the config the server "
                f"ran) or --control ARM (arms: {', '.join(present)})"
            )
        control = "control"
    try:
        summaries = summarize_arms(
            data.arms, data.converted, data.revenue, control, level=level, resamples=resamples, seed=seed
        )
    except ExperimentReportError as error:
        raise ExperimentReportInputError(f"{data.source}: {error}") from None
    return {
        "source": data.source,
        "experiment": config.name if config is not None else None,
        "decision_type": decision_type,
        "control": control,
        "level": level,
        "arms": [summary.as_json() for summary in summaries],
    }


def _experiment_config(path: Path | None) -> Experiment | None:
    if path is None:
        return None
    try:
        return load_experiment(path)
    except ExperimentError as error:
        raise ExperimentReportInputError(str(error)) from None


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """One row per arm, control first; differences and intervals are to the control arm."""
    columns = [
        "arm",
        "decisions",
        "conv.",
        "rate",
        "diff",
        "diff CI",
        "revenue",
        "rev/dec",
        "diff",
        "diff CI",
    ]
    rows: list[list[Any]] = []
    for arm in report["arms"]:
        rate_ci, revenue_ci = arm["rate_difference_ci"], arm["revenue_difference_ci"]
        rate_diff, revenue_diff = arm["rate_difference"], arm["revenue_difference"]
        rows.append(
            [
                arm["arm"],
                arm["decisions"],
                arm["conversions"],
                arm["conversion_rate"],
                "control" if rate_diff is None else f"{rate_diff:+.3f}",
                "" if rate_ci is None else f"[{rate_ci[0]:+.3f}, {rate_ci[1]:+.3f}]",
                arm["revenue"],
                arm["revenue_per_decision"],
                "control" if revenue_diff is None else f"{revenue_diff:+.2f}",
                "" if revenue_ci is None else f"[{revenue_ci[0]:+.2f}, {revenue_ci[1]:+.2f}]",
            ]
        )
    return columns, rows
