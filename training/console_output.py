"""Terminal output for people: aligned tables and progress bars, silenced when output is for machines.

Every command has a ``--json`` mode for scripts; in that mode nothing but the JSON document goes to
stdout, so progress and tables are written to stderr or not at all.

The consoles read no markup. What they print is full of brackets that are data: config sections
(``[training] deterministic``), intervals (``[+0.0057, +0.0170]``), lists of settings, paths and ids
a user chose. Rich's markup took some of them for styles and dropped them from the line, and escaping
each print by hand left the ones nobody thought of. Styles are given as ``rich.text.Text`` instead
(``Text.assemble(("warning:", "yellow"), " ", message)``), which can never eat a character.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, TextIO

from rich import box
from rich.cells import cell_len
from rich.console import Console, JustifyMethod
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

# Piped output (CI logs, `make demo | tee`) has no terminal to measure; prose wraps at this width unless
# COLUMNS says otherwise, and a table that needs more room gets it (print_table), so nothing is cut.
PIPED_WIDTH = 120


def console_width(stream: TextIO, environ: Mapping[str, str] = os.environ) -> int | None:
    """The width to give a console on ``stream``: None on a terminal (rich follows the terminal's
    width as it changes, and COLUMNS when set), else COLUMNS when it is a positive number, else
    PIPED_WIDTH."""
    if stream.isatty():
        return None
    columns = environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else PIPED_WIDTH


stdout_console = Console(width=console_width(sys.stdout), markup=False)
stderr_console = Console(stderr=True, width=console_width(sys.stderr), markup=False)


def moment_text(moment: dt.datetime | str) -> str:
    """A timestamp for people, in UTC: 2026-07-01 23:50 UTC, with seconds only when it has some
    (2026-07-01 23:50:50 UTC), never ISO's 2026-07-01T23:50:50.000001+00:00; the JSON keeps that.
    A time without a zone is taken as UTC, as the data contract reads timestamps."""
    when = dt.datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    when = when.astimezone(dt.UTC) if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC" if when.second else "%Y-%m-%d %H:%M UTC")


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


# A cell that reads as a number though it is text: 0.12 (0.03), [+0.0057, +0.0170], 5.9%, 1,824.47, x2.17,
# 5 / 12 / 28, or a missing value ("-"). Such columns are aligned and kept whole like numbers.
_NUMBER_PART = re.compile(r"[\[(]?[+\-\u2212]?[x\u00d7]?\d[\d,]*(\.\d+)?(%|pp|[x\u00d7])?[\])]?,?|/|pp")
_MISSING = ("-", "\u2013", "")


def _reads_as_number(value: Any, text: str) -> bool:
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return True
    return isinstance(value, str) and (
        text in _MISSING or all(_NUMBER_PART.fullmatch(part) for part in text.split())
    )


def _column_kind(values: Sequence[Any], texts: Sequence[str]) -> str:
    """ "number" (right-aligned, never wrapped), "word" (ids, names, dates: cells without a space, never
    wrapped, so what a user copies into a flag is whole) or "prose" (wraps at spaces when short of room)."""
    present = [(v, t) for v, t in zip(values, texts, strict=True) if t not in _MISSING]
    if present and all(_reads_as_number(v, t) for v, t in present):
        return "number"
    if all(" " not in t for t in texts):
        return "word"
    return "prose"


def fitted_widths(
    widest: Sequence[int], longest_word: Sequence[int], wraps: Sequence[bool], room: int
) -> list[int]:
    """Column widths (without padding) that fit ``room`` if any can: a column that does not wrap keeps
    its widest cell; wrapping (prose) columns are cut to a common cap, each never below its longest
    word. When even that does not fit, every prose column is at its longest word (wider than ``room``)."""

    def at(cap: int) -> list[int]:
        return [
            min(w, max(word, cap)) if wrap else w
            for w, word, wrap in zip(widest, longest_word, wraps, strict=True)
        ]

    low, high = 0, max(widest, default=0)
    if sum(at(high)) <= room:
        return at(high)
    while low < high:  # the largest cap that fits: the total grows with the cap
        middle = (low + high + 1) // 2
        low, high = (middle, high) if sum(at(middle)) <= room else (low, middle - 1)
    return at(low)


def print_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, console: Console | None = None
) -> None:
    """Right-aligned numbers, left-aligned text, one row per entry; ids and numbers never cut.

    Numbers (and text that reads as one: intervals, percentages, "0.12 (0.03)") align right and stay on
    one line; cells without a space (customer, item, persona and model ids) stay whole on one line too;
    only prose wraps, at spaces. The table fits the console's width when it can (on a terminal, prose
    may then also break inside long words); when it cannot, it is printed whole at the width it
    needs: a file or log has no edge to keep to, and a terminal wraps the long lines, where cutting
    the table to the edge would drop columns and digits.
    """
    out = console or stdout_console
    if title:
        out.print(Text(title, style="bold"))
    cells = [[format_value(v) for v in row] for row in rows]
    kinds, widest, longest_word = [], [], []
    for index, name in enumerate(columns):
        texts = [row[index] for row in cells if index < len(row)]
        kinds.append(_column_kind([row[index] for row in rows if index < len(row)], texts))
        widest.append(max(cell_len(text) for text in [name, *texts]))
        longest_word.append(
            max((cell_len(word) for text in [name, *texts] for word in text.split()), default=1)
        )
    overhead = 3 * len(columns) - 1  # SIMPLE_HEAD without edge padding: 2 padding + 1 rule per column
    wraps = [kind == "prose" for kind in kinds]
    widths = fitted_widths(widest, longest_word, wraps, out.width - overhead)
    if out.is_terminal and sum(widths) + overhead > out.width:  # a terminal's edge is hard: fold prose words
        folded = fitted_widths(widest, [min(word, 8) for word in longest_word], wraps, out.width - overhead)
        widths = folded if sum(folded) + overhead <= out.width else widths
    table = Table(header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for name, kind, width in zip(columns, kinds, widths, strict=True):
        justify: JustifyMethod = "right" if kind == "number" else "left"
        table.add_column(Text(name), justify=justify, no_wrap=kind != "prose", overflow="fold", width=width)
    for row in cells:  # Text: a console of the caller's that reads markup still prints "[0.1, 0.3]"
        table.add_row(*(Text(text) for text in row))
    needed = sum(widths) + overhead
    if needed <= out.width:
        out.print(table)
        return
    # Wider than the console even with prose at its longest word: print it whole, past the edge (a
    # terminal wraps the long lines; rich's own last resort would drop columns and cut numbers).
    given = out._width  # None on a terminal: afterwards rich follows the terminal's width again
    out.width = needed
    try:
        out.print(table)
    finally:
        out._width = given


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Progress]:
    """A rich progress display on stderr, so that ``--json`` output on stdout stays clean."""
    progress = Progress(
        TextColumn("{task.description}", style="progress.description", markup=False),
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
                Text(f"{command}: {stage} ({time.perf_counter() - started:.1f} s)", style="dim")
            )

    yield announce
