"""``persona-engine report``: assemble the sections into an HTML page and write its numbers beside it,
in a JSON file of the same name (reports/retail.html: reports/retail.json), so two reports in one
folder keep their own numbers.

The JSON holds every number the page shows (raw, unrounded) plus the headline values of each section,
so a script or a test can check the page against the artifact without scraping HTML.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.report import (
    context_mixes,
    html_document,
    mix_distribution,
    mix_drift,
    model_quality,
    planted_mixes,
    popularity_bias,
    report_plots,
)
from training.report.html_document import Card, PersonaLegend
from training.report.report_inputs import ReportInputs, load_inputs
from training.report.report_section import ReportSection


def json_path_for(html_path: Path) -> Path:
    """Where the numbers of the page at ``html_path`` go: its name with .json (report.html: report.json)."""
    return html_path.with_suffix(".json")


SECTION_BUILDERS: tuple[tuple[str, Callable[[ReportInputs], ReportSection]], ...] = (
    (model_quality.SECTION_ID, model_quality.build),
    (mix_distribution.SECTION_ID, mix_distribution.build),
    (context_mixes.SECTION_ID, context_mixes.build),
    (mix_drift.SECTION_ID, mix_drift.build),
    (popularity_bias.SECTION_ID, popularity_bias.build),
    (planted_mixes.SECTION_ID, planted_mixes.build),
)
SECTION_IDS = tuple(section_id for section_id, _ in SECTION_BUILDERS)


@dataclass(frozen=True)
class WrittenReport:
    html_path: Path
    json_path: Path
    document: dict[str, Any]
    seconds: float


def json_safe(value: Any) -> Any:
    """NaN and infinity become null: strict JSON, which every reader accepts."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _cards(inputs: ReportInputs, sections: dict[str, ReportSection]) -> list[Card]:
    summary = inputs.artifact.manifest.get("summary", {})
    cards = [
        Card("customers known to the engine", f"{len(inputs.customers):,}"),
        Card("products in the catalog", f"{int(summary.get('items', 0)):,}"),
    ]
    best, ratio = summary.get("best_model"), summary.get("best_ndcg_ratio_to_popularity")
    if best:
        cards.append(
            Card(
                f"best model ({best}) against best-sellers for all",
                f"{ratio:.2f}\u00d7 NDCG" if isinstance(ratio, int | float) else best,
            )
        )
    mix = sections[mix_distribution.SECTION_ID].values if mix_distribution.SECTION_ID in sections else {}
    if mix.get("dominant_shares"):
        persona, share = max(mix["dominant_shares"].items(), key=lambda item: item[1])
        cards.append(Card(f"of customers are led by {inputs.catalog.get(persona).name}", f"{share:.0%}"))
    planted = sections.get(planted_mixes.SECTION_ID)
    if planted is not None and planted.available:
        cards.append(
            Card("leading persona recovered (generated data)", f"{planted.values['dominant_accuracy']:.0%}")
        )
    return cards


def build_document(
    inputs: ReportInputs, sections: list[ReportSection], json_name: str = "report.json"
) -> tuple[str, dict[str, Any]]:
    """The page's HTML and its numbers; the page's footer names ``json_name``, the file beside it."""
    by_id = {s.id: s for s in sections}
    manifest = inputs.artifact.manifest
    cards = _cards(inputs, by_id)
    colors = report_plots.series_colors(len(inputs.personas))
    legend = [
        PersonaLegend(p.name, p.description, color)
        for p, color in zip(inputs.catalog.personas, colors, strict=True)
    ]
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    data_dir = str(inputs.shop.data_dir) if inputs.shop else None
    subtitle = (
        f"Artifact {inputs.artifact.version}, trained {manifest.get('created_utc', '?')}"
        + (f" on {data_dir}" if data_dir else "")
        + f"; models: {', '.join(manifest.get('models', []))}."
    )
    warnings = [inputs.data_note] if inputs.data_note else []
    html = html_document.render_document(
        title="What the persona engine learned about your customers",
        subtitle=subtitle,
        cards=cards,
        personas=legend,
        warnings=warnings,
        sections=sections,
        footer=f"Written by persona-engine report at {now} from {inputs.artifact.path}. Every number on this "
        f"page is also in {json_name} beside it.",
    )
    document = json_safe(
        {
            "artifact_version": inputs.artifact.version,
            "artifact_path": str(inputs.artifact.path),
            "generated_utc": now,
            "data_dir": data_dir,
            "data_matches_artifact": inputs.shop.matches_artifact if inputs.shop else None,
            "data_note": inputs.data_note,
            "personas": {p.id: p.name for p in inputs.catalog.personas},
            "cards": [{"label": c.label, "value": c.value} for c in cards],
            "sections": {s.id: s.to_dict() for s in sections},
        }
    )
    return html, document


def write_report(
    artifact_path: Path,
    out: Path,
    *,
    data_path: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> WrittenReport:
    """Build every section and write ``out`` (HTML) and its numbers beside it (``json_path_for``)."""
    started = time.perf_counter()
    if progress is not None:
        progress("verifying the artifact and loading its data")
    inputs = load_inputs(artifact_path, data_path)
    sections = []
    for section_id, builder in SECTION_BUILDERS:
        if progress is not None:
            progress(section_id)
        sections.append(builder(inputs))
    json_path = json_path_for(out)
    html, document = build_document(inputs, sections, json_path.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    json_path.write_text(
        json.dumps(document, indent=2, sort_keys=False, allow_nan=False, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    return WrittenReport(out, json_path, document, time.perf_counter() - started)
