"""Terminal output for people: aligned tables and progress bars, silenced when output is for machines.

Every command has a ``--json`` mode for scripts; in that mode nothing but the JSON document goes to
stdout, so progress and tables are written to stderr or not at all.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# Piped output (CI logs, `make demo | tee`) has no terminal width; give tables room instead of truncating.
_PIPED_WIDTH = 120
stdout_console = Console(width=None if sys.stdout.isatty() else _PIPED_WIDTH)
stderr_console = Console(stderr=True, width=None if sys.stderr.isatty() else _PIPED_WIDTH)


class Money(float):
    """A price or amount: always two decimals and thousands separators (58.79, 1,812.70), so a column
    of prices reads one way whatever the size of each (plain floats switch format at 100)."""


def format_value(value: Any) -> str:
    if isinstance(value, Money):
        return "-" if value != value else f"{value:,.2f}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, console: Console | None = None
) -> None:
    """Right-aligned numbers, left-aligned text, one row per entry."""
    out = console or stdout_console
    if title:
        out.print(f"[bold]{escape(title)}[/bold]", highlight=False)
    table = Table(header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    first = rows[0] if rows else [""] * len(columns)
    for name, sample in zip(columns, first, strict=False):
        table.add_column(name, justify="right" if isinstance(sample, int | float | Decimal) else "left")
    for row in rows:
        table.add_row(*(format_value(v) for v in row))
    out.print(table)


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Progress]:
    """A rich progress display on stderr, so that ``--json`` output on stdout stays clean."""
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


@contextmanager
def stage_lines(command: str, enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """A function that announces each stage of a long command on stderr, one line per stage with the
    seconds since the start (``evaluate: scoring the models (4.2 s)``), so a run of ten seconds or more
    never sits silent, in a terminal or in a CI log; disabled, it says nothing."""
    started = time.perf_counter()

    def announce(stage: str) -> None:
        if enabled:
            stderr_console.print(
                f"[dim]{escape(command)}: {escape(stage)} ({time.perf_counter() - started:.1f} s)[/dim]",
                highlight=False,
            )

    yield announce
