"""Where a benchmark's results go: one JSON document per run and rows of a Markdown history table.

Each benchmark writes ``<name>-<stamp>.json`` and appends its rows to ``<name>.md`` in the results
folder; the table's header is written with the first row ever, so every run of a benchmark reads as one
history that other tools (and reviewers) can diff.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

RESULTS_DIR: Final = Path(__file__).resolve().parent / "results"


def utc_stamp(iso_time: str) -> str:
    """``2026-12-03T10:08:26+00:00`` -> ``20261203T100826Z``: the stamp in result file names."""
    return dt.datetime.fromisoformat(iso_time).astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def markdown_row(cells: Iterable[object]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |\n"


def write_result(
    folder: Path,
    name: str,
    stamp: str,
    document: dict[str, Any],
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    title: str = "",
    indent: int = 2,
) -> Path:
    """Write ``document`` as ``<name>-<stamp>.json`` and append ``rows`` to ``<name>.md``; returns the
    JSON's path. ``title`` heads the history file when this run creates it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{stamp}.json"
    path.write_text(json.dumps(document, indent=indent) + "\n", encoding="utf-8")
    history = folder / f"{name}.md"
    if not history.is_file():
        intro = f"{title}\n\n" if title else ""
        history.write_text(intro + markdown_row(header) + "|" + "---|" * len(header) + "\n", encoding="utf-8")
    with history.open("a", encoding="utf-8") as out:
        out.writelines(markdown_row(row) for row in rows)
    return path
