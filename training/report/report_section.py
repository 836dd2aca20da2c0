"""The shape every report section takes: a plain-language lead, tables of numbers, charts and notes.

Sections hold raw values (floats, ints, strings) and say how each column is to be read; the HTML
renderer formats them and the JSON beside the report keeps them exact, so both show the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Format(StrEnum):
    """How a column's values are shown to people (the JSON always keeps the raw value)."""

    TEXT = "text"
    INTEGER = "integer"
    PERCENT = "percent"  # a share in [0, 1] shown as 12.3%
    POINTS = "points"  # a difference of shares shown as +1.2 pp
    NUMBER = "number"  # a score such as NDCG, three decimals
    RATIO = "ratio"  # a multiple such as 2.14x


@dataclass(frozen=True)
class Column:
    name: str
    format: Format = Format.NUMBER


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[Column, ...]
    rows: list[list[Any]]

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(
                    f"table {self.title!r}: row {row!r} has {len(row)} cells for {len(self.columns)} columns"
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": [column.name for column in self.columns],
            "formats": [column.format.value for column in self.columns],
            "rows": self.rows,
        }


@dataclass(frozen=True)
class Chart:
    """A rendered chart: PNG bytes and the sentence that says what to read in it."""

    caption: str
    png: bytes
    alt: str


@dataclass
class ReportSection:
    """One section; ``values`` are its headline numbers (also in the JSON under the section id)."""

    id: str
    title: str
    lead: str
    tables: list[Table] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    available: bool = True
    finding: str = ""  # the one sentence a reader should take away (listed at the top of the page)
    tables_before_charts: int = 0  # e.g. 1: the main table first, then the charts, then the rest

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "lead": self.lead,
            "finding": self.finding,
            "available": self.available,
            "values": self.values,
            "tables": [table.to_dict() for table in self.tables],
            "charts": [chart.caption for chart in self.charts],
            "notes": self.notes,
        }


def unavailable(section_id: str, title: str, lead: str, reason: str) -> ReportSection:
    """A section that cannot be computed for this artifact, saying why instead of silently vanishing."""
    return ReportSection(id=section_id, title=title, lead=lead, notes=[reason], available=False)
