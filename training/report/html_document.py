"""Renders report sections into one self-contained HTML page: inline CSS, charts as PNG data URIs.

Nothing is fetched when the page is opened (no scripts, fonts or styles from the network), so it can
be mailed, attached to a ticket or opened years later. Each number cell also carries its raw value in
``data-value``, the same value the JSON beside the report holds.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from training.report.report_section import Column, Format, ReportSection, Table

MISSING = "\u2013"  # en dash for a value that does not exist (no baseline, empty group)

_CSS = """
:root { --ink: #1f2933; --muted: #5f6b7a; --line: #e3e7ec; --accent: #0072B2; --soft: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); background: #fff; }
main { max-width: 1040px; margin: 0 auto; padding: 32px 28px 64px; }
header h1 { font-size: 28px; margin: 0 0 4px; letter-spacing: -0.01em; }
header .subtitle { color: var(--muted); margin: 0 0 20px; }
.cards {
  display: grid;
  grid-template-columns: repeat(auto-fit, minmax(180px, 1fr));
  gap: 12px;
  margin: 20px 0;
}
.card { background: var(--soft); border-radius: 10px; padding: 14px 16px; }
.card .value { font-size: 22px; font-weight: 650; }
.card .label { color: var(--muted); font-size: 13px; }
.warning {
  background: #fff4e5;
  border-left: 4px solid #E69F00;
  padding: 10px 14px;
  border-radius: 6px;
  margin: 16px 0;
}
nav.toc {
  border-top: 1px solid var(--line);
  border-bottom: 1px solid var(--line);
  padding: 10px 0;
  margin: 20px 0 8px;
}
nav.toc ol { margin: 0; padding-left: 22px; columns: 2; }
nav.toc a { color: var(--accent); text-decoration: none; }
section { margin-top: 44px; }
section h2 {
  font-size: 21px;
  margin: 0 0 8px;
  padding-bottom: 6px;
  border-bottom: 2px solid var(--line);
}
p.lead { font-size: 16px; margin: 8px 0 18px; }
figure { margin: 18px 0 22px; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 13.5px; margin-top: 6px; }
table { border-collapse: collapse; margin: 8px 0 22px; font-size: 14px; width: auto; max-width: 100%; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 6px; }
th, td { padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { text-align: left; background: var(--soft); font-weight: 600; font-size: 13px; vertical-align: bottom; }
th.num { text-align: right; max-width: 11em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td:first-child { white-space: nowrap; }
tbody tr:hover { background: #fafbfc; }
.table-wrap { overflow-x: auto; }
ul.findings { padding-left: 20px; margin: 6px 0 20px; }
ul.findings li { margin: 4px 0; }
ul.findings a { color: var(--accent); font-size: 13px; text-decoration: none; }
ul.notes { color: var(--muted); font-size: 14px; padding-left: 20px; }
.unavailable { color: var(--muted); font-style: italic; }
.personas {
  display: grid;
  grid-template-columns: repeat(auto-fit, minmax(280px, 1fr));
  gap: 10px 18px;
  margin: 10px 0;
}
.persona { border-left: 4px solid var(--accent); padding: 4px 10px; font-size: 14px; }
.persona b { display: block; }
footer {
  margin-top: 56px;
  color: var(--muted);
  font-size: 13px;
  border-top: 1px solid var(--line);
  padding-top: 12px;
}
"""


@dataclass(frozen=True)
class Card:
    """A headline number at the top of the page."""

    label: str
    value: str


@dataclass(frozen=True)
class PersonaLegend:
    name: str
    description: str
    color: str


def format_cell(value: Any, fmt: Format) -> str:
    """The text a person sees for one value (the JSON keeps ``value`` itself)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if fmt is Format.TEXT:
        return str(value)
    if fmt is Format.INTEGER:
        return f"{int(value):,}"
    if fmt is Format.PERCENT:
        return f"{float(value):.1%}"
    if fmt is Format.POINTS:
        points = float(value) * 100
        return "0.0 pp" if abs(points) < 0.05 else f"{points:+.1f} pp"
    if fmt is Format.RATIO:
        return f"{float(value):.2f}\u00d7"
    return f"{float(value):.3f}"


def _cell(value: Any, column: Column) -> str:
    text = escape(format_cell(value, column.format))
    if column.format is Format.TEXT:
        return f"<td>{text}</td>"
    raw = json.dumps(None if isinstance(value, float) and not math.isfinite(value) else value)
    return f'<td class="num" data-value="{escape(raw)}">{text}</td>'


def render_table(table: Table) -> str:
    head = "".join(
        f"<th>{escape(c.name)}</th>" if c.format is Format.TEXT else f'<th class="num">{escape(c.name)}</th>'
        for c in table.columns
    )
    body = "\n".join(
        "<tr>" + "".join(_cell(v, c) for v, c in zip(row, table.columns, strict=True)) + "</tr>"
        for row in table.rows
    )
    return (
        f'<div class="table-wrap"><table><caption>{escape(table.title)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table></div>"
    )


def _section(section: ReportSection) -> str:
    parts = [f'<section id="{escape(section.id)}">', f"<h2>{escape(section.title)}</h2>"]
    parts.append(f'<p class="lead">{escape(section.lead)}</p>')
    if not section.available:
        parts.extend(f'<p class="unavailable">{escape(note)}</p>' for note in section.notes)
        parts.append("</section>")
        return "\n".join(parts)
    before = section.tables[: section.tables_before_charts]
    parts.extend(render_table(table) for table in before)
    for chart in section.charts:
        data = base64.b64encode(chart.png).decode("ascii")
        parts.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{escape(chart.alt)}">'
            f"<figcaption>{escape(chart.caption)}</figcaption></figure>"
        )
    parts.extend(render_table(table) for table in section.tables[len(before) :])
    if section.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in section.notes) + "</ul>")
    parts.append("</section>")
    return "\n".join(parts)


def render_document(
    *,
    title: str,
    subtitle: str,
    cards: Sequence[Card],
    personas: Sequence[PersonaLegend],
    warnings: Sequence[str],
    sections: Sequence[ReportSection],
    footer: str,
) -> str:
    """The whole page; every string is escaped here, so section text can hold any characters."""
    toc = "".join(f'<li><a href="#{escape(s.id)}">{escape(s.title)}</a></li>' for s in sections)
    card_html = "".join(
        f'<div class="card"><div class="value">{escape(c.value)}</div>'
        f'<div class="label">{escape(c.label)}</div></div>'
        for c in cards
    )
    legend = "".join(
        f'<div class="persona" style="border-color:{escape(p.color)}"><b>{escape(p.name)}</b>'
        f"{escape(p.description)}</div>"
        for p in personas
    )
    warning_html = "".join(f'<div class="warning">{escape(w)}</div>' for w in warnings)
    findings = "".join(
        f'<li>{escape(s.finding)} <a href="#{escape(s.id)}">more</a></li>' for s in sections if s.finding
    )
    findings_html = f'<h3>Key findings</h3><ul class="findings">{findings}</ul>' if findings else ""
    body = "\n".join(_section(s) for s in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<header>
<h1>{escape(title)}</h1>
<p class="subtitle">{escape(subtitle)}</p>
</header>
{warning_html}
<div class="cards">{card_html}</div>
{findings_html}
<h3>The personas</h3>
<div class="personas">{legend}</div>
<nav class="toc"><ol>{toc}</ol></nav>
{body}
<footer>{escape(footer)}</footer>
</main>
</body>
</html>
"""
