"""Section: do the models spread recommendations over the catalog or pile them on a few hits?

Every model is asked for the same top-k lists for the same known customers (the products in their
history left out, as in evaluation), and the share of list slots taken by the most popular 1% and 10%
of products is set against those products' share of customer interactions. A model that recommends
hits more often than customers engage with them amplifies popularity; one below it surfaces the long
tail. Popularity is the number of customers who viewed, carted or bought the product in the events the
artifact's models were fitted on (the split's training part, or every event when they were refit).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.models.base import UserBatch
from training.report import report_plots
from training.report.report_inputs import ReportInputs
from training.report.report_section import Chart, Column, Format, ReportSection, Table, unavailable

SECTION_ID = "popularity_bias"
TITLE = "Catalog coverage and popularity bias"
MAX_CUSTOMERS = 5_000  # customers whose lists are built; enough for stable shares, fast on big shops
TOP_SHARES = (0.01, 0.10)
INTERACTIONS = "customer interactions"
_CHUNK = 1_000


def top_items(popularity: NDArray[np.float64], share: float) -> NDArray[np.int64]:
    """The ceil(share x items) most popular items (ties by catalog order), at least one."""
    n = max(1, math.ceil(share * len(popularity)))
    return np.argsort(-popularity, kind="stable")[:n].astype(np.int64)


def concentration_curve(
    counts: NDArray[np.float64], order: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(share of catalog, cumulative share of ``counts``), items taken in ``order`` (most popular first)."""
    total = counts.sum()
    y = np.concatenate([[0.0], np.cumsum(counts[order]) / total if total else np.zeros(len(order))])
    x = np.arange(len(order) + 1) / max(len(order), 1)
    return x, y


def build(inputs: ReportInputs, *, max_customers: int = MAX_CUSTOMERS) -> ReportSection:
    k = inputs.config.evaluation.k
    lead = (
        f"A recommender can look accurate while showing everyone the same best-sellers. Here every model "
        f"builds its top {k} list for the same known customers, and we count how many list places go to "
        "the most popular products compared with how much of customers' activity those products get. "
        "Look for models that cover much of the catalog without giving up accuracy (previous section), "
        "and be wary of lists far more concentrated on hits than customers' own behaviour."
    )
    models = inputs.model_order
    if not models:
        return unavailable(SECTION_ID, TITLE, lead, "The artifact holds no models.")
    history = inputs.artifact.history
    n_items = history.shape[1]
    popularity = np.asarray(history.getnnz(axis=0), dtype=np.float64)
    model_customers = inputs.artifact.model_customers
    n_known = len(model_customers)
    if n_known == 0 or popularity.sum() == 0:
        return unavailable(SECTION_ID, TITLE, lead, "No known customers or no training interactions.")
    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(n_known, size=min(n_known, max_customers), replace=False)).astype(np.int64)
    rows = inputs.customers.to_internal(model_customers.ids[chosen].tolist())
    demographics = inputs.artifact.demographics
    tops = {share: top_items(popularity, share) for share in TOP_SHARES}
    order = np.argsort(-popularity, kind="stable").astype(np.int64)
    curves = {INTERACTIONS: concentration_curve(popularity, order)}
    interaction_shares = {
        share: float(popularity[tops[share]].sum() / popularity.sum()) for share in TOP_SHARES
    }
    result_rows: list[list[Any]] = [[INTERACTIONS, None, *(interaction_shares[s] for s in TOP_SHARES), None]]
    per_model: dict[str, dict[str, float]] = {}
    for name in models:
        model = inputs.artifact.models[name]
        slots = np.zeros(n_items, dtype=np.float64)
        for start in range(0, len(chosen), _CHUNK):
            part = slice(start, start + _CHUNK)
            users = UserBatch(
                user_index=chosen[part],
                mix=inputs.mix_overall[rows[part]],
                demographics=demographics[rows[part]],
            )
            recommended, _ = model.recommend(users, k, exclude=history[rows[part]])
            shown = recommended[recommended >= 0]
            slots += np.bincount(shown, minlength=n_items)
        total = slots.sum()
        shares = {s: float(slots[tops[s]].sum() / total) if total else 0.0 for s in TOP_SHARES}
        coverage = float((slots > 0).mean())
        per_model[name] = {
            "coverage": coverage,
            **{f"top_{round(s * 100)}pct_share": v for s, v in shares.items()},
            "top_1pct_vs_interactions": shares[0.01] / interaction_shares[0.01]
            if interaction_shares[0.01]
            else float("nan"),
        }
        result_rows.append(
            [name, coverage, *(shares[s] for s in TOP_SHARES), per_model[name]["top_1pct_vs_interactions"]]
        )
        curves[name] = concentration_curve(slots, order)
    top_counts = {s: len(tops[s]) for s in TOP_SHARES}
    table = Table(
        f"Where the recommendation slots go ({len(chosen):,} customers x {k} products)",
        (
            Column("model", Format.TEXT),
            Column("catalog coverage", Format.PERCENT),
            Column(f"slots on the top 1% ({top_counts[0.01]:,} products)", Format.PERCENT),
            Column(f"slots on the top 10% ({top_counts[0.10]:,} products)", Format.PERCENT),
            Column("top 1%: share of slots / share of interactions", Format.RATIO),
        ),
        result_rows,
    )
    chart = Chart(
        caption="Products ordered from most to least popular (left to right, log scale for the first "
        "percent); each line climbs by the share of recommendations (or, dashed black, of customer "
        "interactions) that product receives. A line above the dashed one means the model favours hits "
        "more than customers do; the dotted line is a perfectly even spread.",
        png=report_plots.concentration_curves(curves, reference=INTERACTIONS),
        alt="Concentration curves of recommendations on popular products per model",
    )
    values: dict[str, Any] = {
        "k": k,
        "customers": len(chosen),
        "items": int(n_items),
        "top_item_counts": {f"top_{round(s * 100)}pct": c for s, c in top_counts.items()},
        "interaction_shares": {f"top_{round(s * 100)}pct": v for s, v in interaction_shares.items()},
        "models": per_model,
    }
    notes = [
        f"The top 1% of products ({top_counts[0.01]:,}) get {interaction_shares[0.01]:.1%} of customer "
        f"interactions and the top 10% ({top_counts[0.10]:,}) get {interaction_shares[0.10]:.1%}.",
        "The last column compares the two: 3\u00d7 means the model gives the top 1% of products three "
        "times the share of list places that customers give them in interactions.",
        "Catalog coverage here is over these customers' full lists; the evaluation table's coverage is "
        "over the customers scored in the held-out period only, so the two can differ.",
    ]
    widest = max(per_model, key=lambda name: per_model[name]["coverage"])
    best = inputs.artifact.manifest.get("summary", {}).get("best_model")
    finding = f"{widest} spreads its lists widest ({per_model[widest]['coverage']:.0%} of the catalog)"
    if best in per_model:
        finding += (
            f"; the best model, {best}, gives {per_model[best]['top_10pct_share']:.0%} of its list places "
            f"to the top 10% of products, which get {interaction_shares[0.10]:.0%} of customer interactions"
        )
    finding += "."
    if len(chosen) < n_known:
        notes.append(f"{len(chosen):,} of {n_known:,} known customers, chosen at random, are used.")
    return ReportSection(
        id=SECTION_ID,
        title=TITLE,
        lead=lead,
        tables=[table],
        charts=[chart],
        notes=notes,
        values=values,
        finding=finding,
    )
