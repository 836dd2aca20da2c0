"""How close inferred persona mixes come to planted ones, on shops whose generating mixes are known.

A customer's planted mix depends on the moment (weekday or weekend/holiday, before or after a drift
date), while the inferred overall mix summarises all their events. The fair target is therefore the
planted mix in force at each of the customer's events, averaged over those events: exactly what their
events were drawn from. Customers of a hidden segment (a persona the catalog does not know) have no
catalog mix to recover and are left out; discovery is what should find them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import polars as pl
from numpy.typing import NDArray

from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.mix import total_variation_rows
from engine.personas.shopping_context import CONTEXTS, DEFAULT_HOLIDAYS, context_expr

POST_DRIFT_PREFIX = "post_drift_"
REALIZED_PREFIX = "realized"


@dataclass(frozen=True)
class PlantedTargets:
    """Per-customer pairs of inferred and planted mixes, the rows every accuracy measure is computed on.

    ``rows`` index ``mixes`` (customers compared, in the order of their first event, so that every
    average over them adds up in the same order from run to run); ``expected`` is the planted
    mix averaged over each customer's events; ``realized`` the persona shares the events actually
    came from, when the truth table carries them.
    """

    rows: NDArray[np.int64]
    inferred: NDArray[np.float64]
    expected: NDArray[np.float64]
    realized: NDArray[np.float64] | None
    n_hidden_excluded: int
    n_without_inferred_mix: int


def planted_targets(
    mixes: InferredMixes,
    truth: pl.DataFrame,
    events: pl.DataFrame,
    holidays: Iterable[tuple[int, int]] = DEFAULT_HOLIDAYS,
) -> PlantedTargets:
    """The planted mix each compared customer's events were drawn from, beside their inferred mix.

    ``truth`` has customer_id, ``<context>__<persona>`` columns for every catalog persona, and
    optionally ``post_drift_<context>__<persona>``, ``drift_date``, ``hidden_segment`` and
    ``realized__<persona>`` (the share of the customer's events each persona actually generated; its
    distance to the expected mix is the sampling-noise floor no inference can beat). Planted weight on
    personas outside the catalog is dropped and the rest renormalised. ``events`` must be the events
    the mixes were inferred from.
    """
    personas = mixes.persona_ids
    required = ["customer_id", *(f"{c}__{p}" for c in CONTEXTS for p in personas)]
    missing = [c for c in required if c not in truth.columns]
    if missing:
        raise ValueError(f"truth table lacks column(s) {', '.join(missing[:5])}")
    has_drift = "drift_date" in truth.columns and all(
        f"{POST_DRIFT_PREFIX}{c}__{p}" in truth.columns for c in CONTEXTS for p in personas
    )
    hidden_column = "hidden_segment" in truth.columns
    truth = truth.with_columns(pl.col("customer_id").cast(pl.Utf8))

    frame = events.select(
        pl.col("customer_id").cast(pl.Utf8),
        context_expr("timestamp", holidays).alias("_context"),
        pl.col("timestamp").dt.date().alias("_date"),
    ).join(truth, on="customer_id", how="inner", maintain_order="left")
    post = (
        (pl.col("drift_date").is_not_null() & (pl.col("_date") >= pl.col("drift_date")))
        if has_drift
        else pl.lit(False)
    )
    expected_columns = []
    for persona in personas:
        name = f"_expected__{persona}"
        expression = pl.lit(0.0)
        for context in CONTEXTS:
            before = pl.col(f"{context}__{persona}")
            after = pl.col(f"{POST_DRIFT_PREFIX}{context}__{persona}") if has_drift else before
            expression = (
                pl.when(pl.col("_context") == context)
                .then(pl.when(post).then(after).otherwise(before))
                .otherwise(expression)
            )
        expected_columns.append(expression.alias(name))
    per_customer = (
        frame.with_columns(expected_columns)
        .group_by("customer_id", maintain_order=True)
        .agg([pl.col(f"_expected__{p}").mean() for p in personas])
    )
    extra = ["customer_id"]
    if hidden_column:
        extra.append("hidden_segment")
    realized_columns = [f"{REALIZED_PREFIX}__{p}" for p in personas]
    has_realized = all(c in truth.columns for c in realized_columns)
    if has_realized:
        extra += realized_columns
    per_customer = per_customer.join(truth.select(extra), on="customer_id", how="left", maintain_order="left")

    n_hidden = int(per_customer["hidden_segment"].sum()) if hidden_column else 0
    if hidden_column:
        per_customer = per_customer.filter(~pl.col("hidden_segment"))
    rows = mixes.customer_ids.to_internal(per_customer["customer_id"].to_list(), strict=False)
    known = rows >= 0
    known[known] = mixes.n_events[rows[known]] > 0
    per_customer = per_customer.filter(pl.Series(known))
    rows = rows[known]
    expected = per_customer.select([f"_expected__{p}" for p in personas]).to_numpy().astype(np.float64)
    totals = expected.sum(axis=1, keepdims=True)
    expected = np.divide(expected, totals, out=np.full_like(expected, 1.0 / len(personas)), where=totals > 0)
    realized: NDArray[np.float64] | None = None
    if has_realized:
        realized = per_customer.select(realized_columns).to_numpy().astype(np.float64)
        realized_totals = realized.sum(axis=1, keepdims=True)
        realized = np.divide(
            realized, realized_totals, out=np.zeros_like(realized), where=realized_totals > 0
        )
    return PlantedTargets(
        rows=rows.astype(np.int64),
        inferred=mixes.overall[rows],
        expected=expected,
        realized=realized,
        n_hidden_excluded=n_hidden,
        n_without_inferred_mix=int((~known).sum()),
    )


def compare_with_planted(
    mixes: InferredMixes,
    truth: pl.DataFrame,
    events: pl.DataFrame,
    holidays: Iterable[tuple[int, int]] = DEFAULT_HOLIDAYS,
) -> dict[str, float | int]:
    """Mean total-variation distance and dominant-persona accuracy of ``mixes.overall`` against the truth.

    The inputs are those of ``planted_targets``. ``mean_tv_to_realized`` and
    ``realized_noise_floor_tv`` are reported when the truth carries realised persona shares.
    """
    targets = planted_targets(mixes, truth, events, holidays)
    rows, inferred, expected = targets.rows, targets.inferred, targets.expected
    distance = total_variation_rows(inferred, expected)
    result: dict[str, float | int] = {
        "n_compared": int(rows.size),
        "n_hidden_excluded": targets.n_hidden_excluded,
        "n_without_inferred_mix": targets.n_without_inferred_mix,
        "mean_tv": float(distance.mean()) if rows.size else float("nan"),
        "median_tv": float(np.median(distance)) if rows.size else float("nan"),
        "dominant_accuracy": float((inferred.argmax(axis=1) == expected.argmax(axis=1)).mean())
        if rows.size
        else float("nan"),
    }
    if targets.realized is not None and rows.size:
        realized = targets.realized
        result["mean_tv_to_realized"] = float(total_variation_rows(inferred, realized).mean())
        result["realized_noise_floor_tv"] = float(total_variation_rows(realized, expected).mean())
    return result
