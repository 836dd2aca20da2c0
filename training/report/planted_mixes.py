"""Section: on a generated shop, how close the inferred mixes come to the mixes that were planted.

Only ``persona-engine generate`` data has a ``truth/`` folder; real shops skip this section. The
comparison is ``engine.evaluation.persona_accuracy``'s (each customer's planted mix averaged over the
events the mixes were inferred from), so its headline numbers are the ones training stored in the
manifest for the artifact's mixes: ``served_models.persona_accuracy`` when they were refit on all
events, else ``persona_accuracy`` (the split's).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.evaluation.persona_accuracy import planted_targets
from engine.personas.mix import total_variation_rows
from training.report import report_plots
from training.report.report_inputs import ReportInputs
from training.report.report_section import Chart, Column, Format, ReportSection, Table, unavailable

SECTION_ID = "planted_mixes"
TITLE = "Check on generated data: inferred versus planted mixes"


def build(inputs: ReportInputs) -> ReportSection:
    lead = (
        "A shop made by 'persona-engine generate' has known, planted persona mixes, so on such data we "
        "can check how well the engine recovers them from behaviour alone. Look at the share of "
        "customers whose leading persona is right, and at whether the dots in each panel follow the "
        "diagonal: below it the engine over-states that persona, above it under-states it."
    )
    shop = inputs.shop
    if shop is None:
        return unavailable(SECTION_ID, TITLE, lead, inputs.data_note)
    if shop.truth is None:
        return unavailable(
            SECTION_ID,
            TITLE,
            lead,
            f"{shop.data_dir} has no truth/ folder: planted mixes exist only for shops made by "
            "'persona-engine generate', so there is nothing to compare with.",
        )
    targets = planted_targets(inputs.stored_mixes(), shop.truth, shop.mix_events, inputs.holidays)
    inferred, planted = targets.inferred, targets.expected
    n = len(targets.rows)
    if n == 0:
        return unavailable(SECTION_ID, TITLE, lead, "No customer of the truth table has inferred events.")
    names = inputs.persona_names
    distance = total_variation_rows(inferred, planted)
    dom_inferred, dom_planted = inferred.argmax(axis=1), planted.argmax(axis=1)
    right = dom_inferred == dom_planted
    per_persona = []
    for j, name in enumerate(names):
        led = dom_planted == j
        correlation = (
            float(np.corrcoef(inferred[:, j], planted[:, j])[0, 1])
            if inferred[:, j].std() > 0 and planted[:, j].std() > 0
            else None
        )
        per_persona.append(
            [
                name,
                float(planted[:, j].mean()),
                float(inferred[:, j].mean()),
                float(np.abs(inferred[:, j] - planted[:, j]).mean()),
                correlation,
                int(led.sum()),
                float(right[led].mean()) if led.any() else None,
            ]
        )
    calibration = Table(
        "Per persona: planted against inferred weights",
        (
            Column("persona", Format.TEXT),
            Column("average planted weight", Format.PERCENT),
            Column("average inferred weight", Format.PERCENT),
            Column("mean absolute error", Format.PERCENT),
            Column("correlation", Format.NUMBER),
            Column("customers it truly leads", Format.INTEGER),
            Column("of those, found as leading", Format.PERCENT),
        ),
        per_persona,
    )
    confusion = np.zeros((len(names), len(names)))
    np.add.at(confusion, (dom_planted, dom_inferred), 1.0)
    row_totals = confusion.sum(axis=1, keepdims=True)
    confusion_share = np.divide(confusion, row_totals, out=np.zeros_like(confusion), where=row_totals > 0)
    confusion_table = Table(
        "Leading persona: planted (rows) against inferred (columns), share of each row",
        (Column("planted \u2192 inferred", Format.TEXT), *(Column(name, Format.PERCENT) for name in names)),
        [[names[i], *(float(v) for v in confusion_share[i])] for i in range(len(names))],
    )
    headline_rows: list[list[Any]] = [
        ["leading persona right", float(right.mean())],
        ["mean total-variation distance to the planted mix", float(distance.mean())],
        ["median total-variation distance", float(np.median(distance))],
    ]
    values: dict[str, Any] = {
        "n_compared": n,
        "n_hidden_excluded": targets.n_hidden_excluded,
        "mean_tv": float(distance.mean()),
        "median_tv": float(np.median(distance)),
        "dominant_accuracy": float(right.mean()),
        "per_persona": {
            inputs.personas[j]: {
                "planted_mean": row[1],
                "inferred_mean": row[2],
                "mean_abs_error": row[3],
                "correlation": row[4],
                "customers_led": row[5],
                "found_as_leading": row[6],
            }
            for j, row in enumerate(per_persona)
        },
    }
    if targets.realized is not None:
        floor = float(total_variation_rows(targets.realized, planted).mean())
        values["realized_noise_floor_tv"] = floor
        headline_rows.append(
            ["noise floor: distance of the events' own persona shares to the planted mix", floor]
        )
    headline = Table(
        "How close inference comes",
        (Column("measure", Format.TEXT), Column("value", Format.PERCENT)),
        headline_rows,
    )
    chart = Chart(
        caption="Each dot is a customer: inferred weight (across) against planted weight (up) for one "
        "persona; the black line is the average planted weight for customers with similar inferred "
        "weight. On the dotted diagonal inference is exactly right.",
        png=report_plots.calibration_grid(inferred, planted, names),
        alt="Scatter plots of inferred against planted persona weight, one panel per persona",
    )
    notes = [
        f"{n:,} customers with events behind their mix are compared with their planted mix.",
        "Total-variation distance is half the summed absolute difference between two mixes: 0% is a "
        "perfect match, 100% means no persona in common.",
        "Even perfect inference cannot beat the noise floor: a customer with few events simply did not "
        "act out their planted mix exactly.",
    ]
    if targets.n_hidden_excluded:
        notes.append(
            f"{targets.n_hidden_excluded:,} customers were driven by a planted persona missing from the "
            "catalog (a hidden segment for 'persona-engine discover' to find) and are left out."
        )
    finding = (
        f"On this generated shop the leading persona is recovered for {right.mean():.0%} of customers; "
        f"inferred mixes are {distance.mean():.1%} away from the planted ones on average (total variation)"
        + (
            f", against a noise floor of {values['realized_noise_floor_tv']:.1%}."
            if targets.realized is not None
            else "."
        )
    )
    return ReportSection(
        finding=finding,
        id=SECTION_ID,
        title=TITLE,
        lead=lead,
        tables=[headline, calibration, confusion_table],
        charts=[chart],
        notes=notes,
        values=values,
    )
