"""Section: do customers shop as different personas on weekdays and on weekends or holidays?

Compared on customers with events in both contexts: a context without events stores the customer's
overall mix, which would make the two contexts look more alike than they are. Without the data the
per-context event counts are unknown and every customer with events is compared (said in a note).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.personas.mix import total_variation_rows
from engine.personas.shopping_context import CONTEXTS, WEEKDAY, WEEKEND_HOLIDAY
from training.report import report_plots
from training.report.report_inputs import ReportInputs
from training.report.report_section import Chart, Column, Format, ReportSection, Table, unavailable

SECTION_ID = "context_mixes"
TITLE = "Weekdays versus weekends and holidays"
_LABELS = {WEEKDAY: "weekday", WEEKEND_HOLIDAY: "weekend / holiday"}
_TOP_SWITCHES = 6


def build(inputs: ReportInputs) -> ReportSection:
    lead = (
        "The same person can shop differently on a Tuesday evening and on a Saturday or a holiday, so "
        "the engine keeps a separate persona mix for each. This section compares the two: look for "
        "personas that grow at weekends (weekend campaigns, weekend layouts) and for the share of "
        "customers whose leading persona changes between the two."
    )
    weekday, weekend = CONTEXTS.index(WEEKDAY), CONTEXTS.index(WEEKEND_HOLIDAY)
    notes: list[str] = []
    if inputs.shop is not None:
        counts = inputs.context_event_counts
        both = (counts[:, weekday] > 0) & (counts[:, weekend] > 0)
        notes.append(
            f"Compared on the {int(both.sum()):,} customers with events in both contexts; the "
            "others have no separate mix for the context they never shopped in."
        )
    else:
        both = inputs.n_events > 0
        notes.append(
            "Without the data the per-context event counts are unknown, so every customer with events "
            "is compared; those who never shopped in one context carry their overall mix there, which "
            "makes the two contexts look more alike than they are."
        )
    n = int(both.sum())
    if n == 0:
        return unavailable(SECTION_ID, TITLE, lead, "No customer has events in both contexts.")
    a = inputs.mix_by_context[both, weekday]
    b = inputs.mix_by_context[both, weekend]
    names = inputs.persona_names
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    dom_a, dom_b = a.argmax(axis=1), b.argmax(axis=1)
    lead_a = np.bincount(dom_a, minlength=len(names)) / n
    lead_b = np.bincount(dom_b, minlength=len(names)) / n
    switched = dom_a != dom_b
    distance = total_variation_rows(a, b)
    table = Table(
        "Average persona weight and leading persona, by context",
        (
            Column("persona", Format.TEXT),
            Column("average weight, weekday", Format.PERCENT),
            Column("average weight, weekend / holiday", Format.PERCENT),
            Column("change", Format.POINTS),
            Column("leads on weekdays", Format.PERCENT),
            Column("leads on weekends / holidays", Format.PERCENT),
        ),
        [
            [
                names[j],
                float(mean_a[j]),
                float(mean_b[j]),
                float(mean_b[j] - mean_a[j]),
                float(lead_a[j]),
                float(lead_b[j]),
            ]
            for j in range(len(names))
        ],
    )
    pairs: dict[tuple[int, int], int] = {}
    for x, y in zip(dom_a[switched].tolist(), dom_b[switched].tolist(), strict=True):
        pairs[(x, y)] = pairs.get((x, y), 0) + 1
    top_pairs = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))[:_TOP_SWITCHES]
    switches = Table(
        "Most common changes of leading persona from weekday to weekend / holiday",
        (
            Column("on weekdays", Format.TEXT),
            Column("at weekends / holidays", Format.TEXT),
            Column("customers", Format.INTEGER),
            Column("share of compared customers", Format.PERCENT),
        ),
        [[names[x], names[y], count, count / n] for (x, y), count in top_pairs],
    )
    summary = Table(
        "How much mixes change between contexts",
        (Column("measure", Format.TEXT), Column("value", Format.PERCENT)),
        [
            ["customers whose leading persona changes", float(switched.mean())],
            ["average difference between a customer's two mixes (total variation)", float(distance.mean())],
        ],
    )
    chart = Chart(
        caption="Average weight of each persona on weekdays and at weekends or holidays, over the same "
        "customers. A taller second bar means that side of customers comes out at the weekend.",
        png=report_plots.grouped_bars(
            list(names),
            {_LABELS[WEEKDAY]: mean_a.tolist(), _LABELS[WEEKEND_HOLIDAY]: mean_b.tolist()},
            title="Average persona weight by context",
            ylabel="average weight",
            percent=True,
            color_by_category=True,
            label_bars=True,
        ),
        alt="Bar chart of the average persona weight on weekdays and at weekends",
    )
    biggest = int(np.argmax(np.abs(mean_b - mean_a)))
    notes.insert(
        0,
        f"The largest shift is {names[biggest]}: {mean_a[biggest]:.1%} on weekdays, "
        f"{mean_b[biggest]:.1%} at weekends and holidays.",
    )
    notes.append(
        "Total variation is half the summed absolute difference of two mixes: 0% means identical, "
        "100% means no persona in common."
    )
    shift = float(mean_b[biggest] - mean_a[biggest])
    finding = (
        f"At weekends and holidays {names[biggest]} {'gains' if shift > 0 else 'loses'} the most "
        f"({shift * 100:+.1f} points); {float(switched.mean()):.0%} of customers change their leading "
        "persona."
    )
    values: dict[str, Any] = {
        "customers_compared": n,
        "mean_mix": {
            context: {p: float(w) for p, w in zip(inputs.personas, mix, strict=True)}
            for context, mix in ((WEEKDAY, mean_a), (WEEKEND_HOLIDAY, mean_b))
        },
        "leading_share": {
            context: {p: float(w) for p, w in zip(inputs.personas, share, strict=True)}
            for context, share in ((WEEKDAY, lead_a), (WEEKEND_HOLIDAY, lead_b))
        },
        "share_leading_persona_changes": float(switched.mean()),
        "mean_tv_between_contexts": float(distance.mean()),
    }
    return ReportSection(
        id=SECTION_ID,
        title=TITLE,
        lead=lead,
        tables=[table, summary, switches],
        finding=finding,
        charts=[chart],
        notes=notes,
        values=values,
    )
