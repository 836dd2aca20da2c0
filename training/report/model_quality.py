"""Section: how well each model predicted what customers did in the held-out period.

The numbers are the ones training measured and stored in the manifest (never recomputed here), so
the report and ``persona-engine train`` always agree. They are always those of the models fitted on
the split; when the served models were refit on all events afterwards, a note says so.
"""

from __future__ import annotations

from typing import Any

from training.drift_evaluation import DRIFT_EVALUATION
from training.evaluation import BASELINE, CONTEXT_EVALUATION, METRIC_NAMES
from training.report import report_plots
from training.report.report_inputs import ReportInputs
from training.report.report_section import Chart, Column, Format, ReportSection, Table, unavailable
from training.session_evaluation import SESSION_EVALUATION

SECTION_ID = "model_quality"
TITLE = "How well the models predict what customers do next"
_METRIC_LABELS = {
    "precision": "precision",
    "recall": "recall",
    "ndcg": "NDCG",
    "map": "MAP",
    "hit_rate": "hit rate",
}
_SPECIAL_SEGMENTS = {
    "all": "all known customers",
    "cold_start": "cold start (held out of training)",
    "new_customers": "new customers (first seen in the test period)",
}


def segment_label(segment: str, inputs: ReportInputs) -> str:
    """A segment as people read it: persona segments by the persona's catalog name."""
    if segment.startswith("persona:"):
        persona = segment.removeprefix("persona:")
        return inputs.catalog.get(persona).name if persona in inputs.personas else persona
    return _SPECIAL_SEGMENTS.get(segment, segment)


def build(inputs: ReportInputs) -> ReportSection:
    manifest = inputs.artifact.manifest
    metrics: list[dict[str, Any]] = list(manifest.get("metrics", []))
    k = inputs.config.evaluation.k
    test_days = inputs.config.split.test_days
    lead = (
        f"Each model was trained on all but the last {test_days} days and then asked for {k} products per "
        f"customer; these tables show how many of the products customers went on to view, add to cart or "
        f"buy in those {test_days} days were among them. Look for models well above the popularity "
        "baseline (the same best-sellers for everyone), and for persona groups where they are not."
    )
    if not metrics:
        return unavailable(SECTION_ID, TITLE, lead, "The artifact's manifest holds no evaluation results.")
    models = inputs.model_order
    by_key = {(m["model"], m["segment"]): m for m in metrics}
    baseline = {m["segment"]: m["ndcg"] for m in metrics if m["model"] == BASELINE}

    def ratio(model: str, segment: str) -> float | None:
        base = baseline.get(segment)
        value = by_key[(model, segment)]["ndcg"]
        return value / base if base else None

    overall = Table(
        f"All known customers, top {k} products",
        (
            Column("model", Format.TEXT),
            Column("customers scored", Format.INTEGER),
            *(Column(f"{_METRIC_LABELS[m]}@{k}") for m in METRIC_NAMES),
            Column("catalog coverage", Format.PERCENT),
            Column("NDCG vs popularity", Format.RATIO),
        ),
        [
            [
                model,
                by_key[(model, "all")]["users"],
                *(by_key[(model, "all")][m] for m in METRIC_NAMES),
                by_key[(model, "all")]["coverage"],
                ratio(model, "all"),
            ]
            for model in models
            if (model, "all") in by_key
        ],
    )
    segments = list(dict.fromkeys(m["segment"] for m in metrics))
    by_segment = Table(
        f"NDCG@{k} by customer group (a persona group: customers whose largest weight is that persona)",
        (
            Column("customer group", Format.TEXT),
            Column("customers", Format.INTEGER),
            *(Column(model) for model in models),
        ),
        [
            [
                segment_label(segment, inputs),
                next(m["users"] for m in metrics if m["segment"] == segment),
                *(
                    by_key[(model, segment)]["ndcg"] if (model, segment) in by_key else None
                    for model in models
                ),
            ]
            for segment in segments
        ],
    )
    tables = [overall, by_segment]
    context_table = _context_table(manifest.get(CONTEXT_EVALUATION, []), k)
    if context_table is not None:
        tables.append(context_table)
    drift_table = _drift_table(manifest.get(DRIFT_EVALUATION), k)
    if drift_table is not None:
        tables.append(drift_table)
    persona_segments = [s for s in segments if s.startswith("persona:")]
    charts = []
    if persona_segments:
        charts.append(
            Chart(
                caption=f"NDCG@{k} for each dominant-persona group: bars of one colour are one model. A "
                "group where every model is low is a group the engine serves poorly.",
                png=report_plots.grouped_bars(
                    [segment_label(s, inputs) for s in persona_segments],
                    {
                        model: [
                            by_key.get((model, s), {}).get("ndcg", float("nan")) for s in persona_segments
                        ]
                        for model in models
                    },
                    title=f"NDCG@{k} by dominant persona",
                    ylabel=f"NDCG@{k}",
                    colors=report_plots.model_colors(len(models)),
                ),
                alt=f"Bar chart of NDCG@{k} per dominant persona and model",
            )
        )
    summary = manifest.get("summary", {})
    best = summary.get("best_model")
    values: dict[str, Any] = {
        "k": k,
        "test_days": test_days,
        "best_model": best,
        "best_ndcg_ratio_to_popularity": summary.get("best_ndcg_ratio_to_popularity"),
        "cold_start_ndcg_ratio_to_popularity": summary.get("cold_start_ndcg_ratio_to_popularity"),
        "metrics": metrics,
        "served_models_refit_on_all_events": inputs.served.refit_on_all_events,
        "context_evaluation": manifest.get(CONTEXT_EVALUATION, []),
        "drift_evaluation": manifest.get(DRIFT_EVALUATION),
        "session_evaluation": manifest.get(SESSION_EVALUATION),
    }
    notes = [
        "NDCG rewards putting the right products near the top of the list (1.0 would be perfect); "
        "recall is the share of a customer's later products found in the list; hit rate the share of "
        "customers with at least one. Catalog coverage is the share of all products recommended to "
        "anyone in this evaluation.",
        "Products a customer already engaged with during training are left out of their list, so "
        "these numbers measure discovery, not repetition.",
    ]
    finding = ""
    if best and (best, "all") in by_key:
        value = by_key[(best, "all")]["ndcg"]
        best_ratio = ratio(best, "all")
        groups = [(s, by_key[(best, s)]["ndcg"]) for s in persona_segments if (best, s) in by_key]
        finding = f"The best model, {best}, scores NDCG@{k} {value:.3f}" + (
            f", {best_ratio:.1f}\u00d7 the best-sellers-for-everyone baseline" if best_ratio else ""
        )
        if groups:
            weakest = min(groups, key=lambda group: group[1])
            finding += (
                f"; it serves {segment_label(weakest[0], inputs)} customers least well ({weakest[1]:.3f})"
            )
        finding += "."
        notes.insert(0, f"Best persona-aware model: {best}.")
    small = [
        segment_label(s, inputs)
        for s in segments
        if next(m["users"] for m in metrics if m["segment"] == s) < 50
    ]
    if small:
        notes.append(f"Groups of fewer than 50 customers give noisy numbers: {'; '.join(small)}.")
    if inputs.served.refit_on_all_events:
        notes.append(
            "These are the figures of the models fitted on the split. The models this artifact serves "
            f"were then {inputs.served.describe()}, with the same settings, held-out period included: "
            "they cannot be scored on it, and these figures are the honest estimate of their quality."
        )
    return ReportSection(
        id=SECTION_ID,
        title=TITLE,
        lead=lead,
        tables=tables,
        charts=charts,
        finding=finding,
        tables_before_charts=1,
        notes=notes,
        values=values,
    )


# A paired difference as the manifest stores it (``training.paired_bootstrap.PairedDifference``).
_DIFFERENCE_COLUMNS = (Column("difference"), Column("95% interval low"), Column("95% interval high"))


def _difference_cells(difference: dict[str, float]) -> tuple[float, float, float]:
    return difference["mean"], difference["low"], difference["high"]


def _context_table(results: list[dict[str, Any]], k: int) -> Table | None:
    """Held-out events by shopping context, scored with the context's mix (as serving does) and with
    the overall mix (as the tables above); None for artifacts trained before this was measured."""
    if not results:
        return None
    return Table(
        f"NDCG@{k} by the shopping context of the held-out events: the context's mix against the overall mix",
        (
            Column("context", Format.TEXT),
            Column("model", Format.TEXT),
            Column("customers", Format.INTEGER),
            Column("context mix"),
            Column("overall mix"),
            *_DIFFERENCE_COLUMNS,
        ),
        [
            [
                r["context"].replace("_", " / "),
                r["model"],
                r["users"],
                r["ndcg_context_mix"],
                r["ndcg_overall_mix"],
                *_difference_cells(r["difference"]),
            ]
            for r in results
        ],
    )


def _drift_table(record: dict[str, Any] | None, k: int) -> Table | None:
    """Customers the change test flags at the end of training, scored with the recent mix the server
    gives them while they drift and with the overall mix; None when nobody was scored (or the artifact
    was trained before this was measured)."""
    if not record or not record.get("results"):
        return None
    threshold = record.get("threshold")
    calibrated = (
        f", threshold {threshold:.2f} nats for {record.get('target_false_alarm', 0):.0%} false alarms"
        if isinstance(threshold, int | float)
        else ""
    )
    return Table(
        f"NDCG@{k} of the customers drifting at the end of training ({record.get('flagged', 0):,} flagged of "
        f"{record.get('tested', 0):,} tested{calibrated}): the recent mix served to them vs the overall mix",
        (
            Column("model", Format.TEXT),
            Column("customers", Format.INTEGER),
            Column("recent mix"),
            Column("overall mix"),
            *_DIFFERENCE_COLUMNS,
        ),
        [
            [
                r["model"],
                r["users"],
                r["ndcg_recent_mix"],
                r["ndcg_overall_mix"],
                *_difference_cells(r["difference"]),
            ]
            for r in record["results"]
        ],
    )
