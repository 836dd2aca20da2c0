"""Section: who the customers are, as persona mixes: which persona leads, and how mixed they are.

Only customers with events behind their mix are counted: a customer known only from the customers table has
the population's mix by construction, which says nothing about them.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from training.report import report_plots
from training.report.report_inputs import ReportInputs
from training.report.report_section import Chart, Column, Format, ReportSection, Table

SECTION_ID = "persona_mix"
TITLE = "Who your customers are: the persona mix"
MOSTLY_ONE = 0.8  # top weight at or above this: "mostly one persona"
TRULY_MIXED = 0.5  # top weight below this: no persona holds a majority


def normalised_entropy(mixes: NDArray[np.float64]) -> NDArray[np.float64]:
    """Entropy of each mix divided by its maximum, log(personas): 0 = one persona, 1 = all equal."""
    k = mixes.shape[1]
    if k < 2:
        return np.zeros(mixes.shape[0])
    safe = np.where(mixes > 0, mixes, 1.0)
    return np.asarray(-(mixes * np.log(safe)).sum(axis=1) / np.log(k), dtype=np.float64)


def build(inputs: ReportInputs) -> ReportSection:
    active = inputs.n_events > 0
    mixes = inputs.mix_overall[active]
    n = int(active.sum())
    names = inputs.persona_names
    dominant = mixes.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    top = mixes.max(axis=1) if n else np.zeros(0)
    entropy = normalised_entropy(mixes)
    counts = np.bincount(dominant, minlength=len(names))
    shares = counts / max(n, 1)
    mean_mix = mixes.mean(axis=0) if n else np.zeros(len(names))
    mean_top_among = [float(top[dominant == j].mean()) if counts[j] else None for j in range(len(names))]
    order = np.argsort(-shares, kind="stable")
    table = Table(
        "Personas by the number of customers they lead",
        (
            Column("persona", Format.TEXT),
            Column("customers led", Format.INTEGER),
            Column("share of customers", Format.PERCENT),
            Column("average weight across all customers", Format.PERCENT),
            Column("typical weight where it leads", Format.PERCENT),
        ),
        [[names[j], int(counts[j]), float(shares[j]), float(mean_mix[j]), mean_top_among[j]] for j in order],
    )
    mostly_one = float((top >= MOSTLY_ONE).mean()) if n else 0.0
    truly_mixed = float((top < TRULY_MIXED).mean()) if n else 0.0
    shape = Table(
        "How mixed customers are",
        (Column("measure", Format.TEXT), Column("value", Format.PERCENT)),
        [
            [f"customers mostly one persona (largest weight ≥ {MOSTLY_ONE:.0%})", mostly_one],
            [f"customers with no majority persona (largest weight < {TRULY_MIXED:.0%})", truly_mixed],
            ["median largest weight", float(np.median(top)) if n else None],
            [
                "median mixedness (0 = one persona, 100% = all personas equal)",
                float(np.median(entropy)) if n else None,
            ],
        ],
    )
    charts = [
        Chart(
            caption="Left: how many customers each persona leads, next to its average weight over all "
            "customers. A persona with a large average weight but few customers led is a common "
            "secondary side of people rather than a segment of its own.",
            png=report_plots.grouped_bars(
                list(names),
                {"share of customers led": shares.tolist(), "average weight": mean_mix.tolist()},
                title="Dominant persona and average weight",
                ylabel="share",
                percent=True,
                color_by_category=True,
                label_bars=True,
            ),
            alt="Bar chart of the share of customers each persona leads and its average weight",
        ),
        Chart(
            caption="Left: the largest persona weight of each customer (bars on the right = customers "
            "who are clearly one persona). Right: mixedness, the entropy of the mix scaled to 0-100% "
            "(bars on the left = single-persona customers, on the right = customers spread over many).",
            png=report_plots.histograms(
                [
                    ("Largest persona weight per customer", top, "largest weight"),
                    ("Mixedness per customer", entropy, "normalised entropy"),
                ],
                percent_x=True,
            ),
            alt="Histograms of the largest persona weight and of the normalised entropy of mixes",
        ),
    ]
    values = {
        "customers_with_events": n,
        "customers_without_events": int((~active).sum()),
        "dominant_counts": {p: int(c) for p, c in zip(inputs.personas, counts, strict=True)},
        "dominant_shares": {p: float(s) for p, s in zip(inputs.personas, shares, strict=True)},
        "mean_mix": {p: float(w) for p, w in zip(inputs.personas, mean_mix, strict=True)},
        "share_mostly_one_persona": mostly_one,
        "share_no_majority_persona": truly_mixed,
        "median_top_weight": float(np.median(top)) if n else None,
        "median_normalised_entropy": float(np.median(entropy)) if n else None,
    }
    leader = names[int(order[0])] if n else None
    lead = (
        "Every customer is described as a mix of the catalog's personas (weights that add up to 100%), "
        "inferred from what they browsed and bought. This section shows which persona leads how many "
        "customers and whether customers are clear-cut types or genuine mixtures; look for personas "
        "that lead few customers (small segments to serve) and for a large share of mixed customers "
        "(where blending personas matters more than picking one)."
    )
    notes = [
        f"{n:,} customers with events behind their mix are counted"
        + (
            f" ({int((~active).sum()):,} known only from the customers table are not)."
            if (~active).any()
            else "."
        )
    ]
    if leader:
        notes.append(
            f"The most common leading persona is {leader} ({float(shares[order[0]]):.0%} of customers)."
        )
    finding = (
        f"{leader} leads the most customers ({float(shares[order[0]]):.0%}); {mostly_one:.0%} of customers "
        f"are mostly one persona and {truly_mixed:.0%} have no majority persona."
        if leader
        else ""
    )
    return ReportSection(
        finding=finding,
        id=SECTION_ID,
        title=TITLE,
        lead=lead,
        tables=[table, shape],
        charts=charts,
        notes=notes,
        values=values,
    )
