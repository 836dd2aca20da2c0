"""Terminal output for people: aligned tables and progress bars, silenced when output is for machines.

Every command has a ``--json`` mode for scripts; in that mode nothing but the JSON document goes to
stdout, so progress and tables are written to stderr or not at all.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

stdout_console = Console()
stderr_console = Console(stderr=True)


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, console: Console | None = None
) -> None:
    """Right-aligned numbers, left-aligned text, one row per entry."""
    table = Table(title=title, title_justify="left", header_style="bold")
    first = rows[0] if rows else [""] * len(columns)
    for name, sample in zip(columns, first, strict=False):
        table.add_column(name, justify="right" if isinstance(sample, int | float) else "left")
    for row in rows:
        table.add_row(*(format_value(v) for v in row))
    (console or stdout_console).print(table)


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Progress]:
    """A rich progress display on stderr (so ``--json`` stdout stays clean); disabled when not a TTY-ish run."""
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr_console,
        disable=not enabled,
        transient=False,
    )
    with progress:
        yield progress


def is_interactive() -> bool:
    return sys.stderr.isatty()
