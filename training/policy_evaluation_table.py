"""The ``evaluate-policy`` table: figures with the digits their intervals support, and a header that
says where every figure comes from.

Click-through rates live around 0.001-0.01, so a fixed three decimals prints ``0.002 [0.001, 0.004]``:
each row here is rounded to two significant figures of its interval's half-width instead, and the
values are Decimals so the table prints exactly those digits (right-aligned as numbers).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np

from training.console_output import moment_text


def figures(value: float, decimals: int) -> Decimal | float:
    """``value`` rounded to ``decimals`` places, as a Decimal that prints exactly those digits."""
    if not np.isfinite(value):
        return float("nan")
    return Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-decimals))


def interval_decimals(value: float, ci_low: float, ci_high: float) -> int:
    """Decimal places that give the interval's half-width two significant figures.

    At click-through scale (0.0024 [0.0009, 0.0039]) three fixed decimals print 0.002 [0.001, 0.004];
    two significant figures of the half-width show what the interval can tell apart, whatever the scale
    (a revenue of 1,234 +- 50 keeps no decimals). Without a finite interval, three significant figures
    of the value.
    """
    half = (ci_high - ci_low) / 2
    reference, significant = (half, 2) if np.isfinite(half) and half > 0 else (abs(value), 3)
    if not np.isfinite(reference) or reference == 0:
        return 3
    return max(0, significant - 1 - int(np.floor(np.log10(reference))))


def table_title(report: dict[str, Any], level: float) -> str:
    """Where the figures come from: the log's outcomes and propensities, the mixes, the arm estimates."""
    period = f" from {moment_text(report['since'])}" if report.get("since") else ""
    mixes = report["mix_source"] or "none (uniform and always:ARM need none)"
    estimates = report["estimates_source"] or "none"
    return (
        f"{report['decision_type']} policies on {report['decisions']:,} logged decisions{period} "
        f"({level:.0%} intervals), estimated from their outcomes and propensities\n"
        f"persona mixes: {mixes}; arm estimates: {estimates}; DR reward model: {report['reward_model']}"
    )


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """One row per policy and estimator; figures carry the digits their interval supports."""
    with_truth = any(p["true_value"] is not None for p in report["policies"])
    columns = ["policy", "estimator", "estimate", "ci low", "ci high", "ESS"]
    if with_truth:
        columns += ["true value", "error", "covers"]
    rows: list[list[Any]] = []
    for policy in report["policies"]:
        for estimate in policy["estimates"]:
            decimals = interval_decimals(estimate["value"], estimate["ci_low"], estimate["ci_high"])
            row: list[Any] = [
                policy["policy"],
                estimate["estimator"],
                figures(estimate["value"], decimals),
                figures(estimate["ci_low"], decimals),
                figures(estimate["ci_high"], decimals),
                figures(policy["effective_sample_size"], 1),
            ]
            if with_truth:
                row += [
                    figures(policy["true_value"], decimals),
                    figures(estimate.get("error", float("nan")), decimals),
                    "yes" if estimate.get("covers_truth") else "no",
                ]
            rows.append(row)
    return columns, rows
