"""Tables print each kind of value one way, keep what a user copies whole, and fit where they go."""

from __future__ import annotations

import datetime as dt
import io
import re

from rich.console import Console
from rich.text import Text

from training.console_output import (
    PIPED_WIDTH,
    Money,
    console_width,
    moment_text,
    print_table,
    stderr_console,
    stdout_console,
)


def _piped(width: int = 60) -> Console:
    return Console(file=io.StringIO(), width=width, record=True)


def _terminal(width: int = 60) -> Console:
    return Console(file=io.StringIO(), width=width, record=True, force_terminal=True, color_system=None)


def test_prices_in_one_table_share_one_format() -> None:
    console = Console(record=True, width=100)
    print_table(
        "", ["item", "price"], [["a", Money(58.79)], ["b", Money(1812.7)], ["c", Money(3.6)]], console=console
    )
    cells = [line.split()[-1] for line in console.export_text().splitlines()[3:] if line.strip()]
    assert cells == ["58.79", "1,812.70", "3.60"]
    assert all(re.fullmatch(r"\d{1,3}(,\d{3})*\.\d\d", cell) for cell in cells)


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_the_console_follows_the_terminal_and_columns_when_piped() -> None:
    assert console_width(_Stream(tty=True), {"COLUMNS": "80"}) is None  # rich reads the terminal
    assert console_width(_Stream(tty=False), {"COLUMNS": "200"}) == 200
    assert console_width(_Stream(tty=False), {}) == PIPED_WIDTH
    assert console_width(_Stream(tty=False), {"COLUMNS": "wide"}) == PIPED_WIDTH
    assert console_width(_Stream(tty=False), {"COLUMNS": "0"}) == PIPED_WIDTH


PERSONA = "budget_stationery_party_and_cards_shopper"
ROWS = [
    [PERSONA, "Budget stationery & party_and_cards shopper", 1016, 0.262, "[+0.0079, +0.0147]"],
    ["premium_shopper", "Premium shopper", 876, 0.226, "-"],
]
COLUMNS = ["id", "name", "customers", "share", "95% interval"]


def test_piped_tables_take_the_room_their_ids_and_numbers_need() -> None:
    console = _piped(60)
    print_table("", COLUMNS, ROWS, console=console)
    lines = console.export_text().splitlines()
    assert any(line.startswith(f" {PERSONA} ") for line in lines)  # the id whole, on its row's line
    assert any("[+0.0079, +0.0147]" in line for line in lines)  # an interval on one line
    assert "\u2026" not in "".join(lines) and max(len(line) for line in lines) > 60
    assert console.width == 60  # widened for the table only


def test_a_narrow_terminal_wraps_prose_but_not_ids_or_numbers() -> None:
    console = _terminal(100)
    print_table("", COLUMNS, ROWS, console=console)
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 100 and "\u2026" not in "".join(lines)
    assert any(line.startswith(f" {PERSONA} ") for line in lines)
    assert any("[+0.0079, +0.0147]" in line for line in lines)
    assert not any(line.startswith(" Budget stationery & party_and_cards shopper") for line in lines)


def test_numbers_and_text_that_reads_as_numbers_align_right_under_their_header() -> None:
    console = _piped(120)
    rows = [["2.70", "30%", 0.316, "0.12 (0.03)", "5 / 12 / 28"], ["12.70", "5%", 0.059, "0.08 (0.07)", "-"]]
    print_table("", ["threshold", "target FA", "FA", "<= 7 d", "delay"], rows, console=console)
    header, _, first, second = console.export_text().splitlines()[1:5]
    for name, cells in (("threshold", ("2.70", "12.70")), ("<= 7 d", ("0.12 (0.03)", "0.08 (0.07)"))):
        end = header.index(name) + len(name)
        assert first[:end].endswith(cells[0]) and second[:end].endswith(cells[1])
    assert header.rstrip().endswith("delay") and first.rstrip().endswith("5 / 12 / 28")


def test_timestamps_read_as_utc_minutes_with_seconds_only_when_there_are_some() -> None:
    assert moment_text("2026-07-01T23:50:50.000001+00:00") == "2026-07-01 23:50:50 UTC"
    assert moment_text("2026-06-03T00:00:00+00:00") == "2026-06-03 00:00 UTC"
    paris = dt.timezone(dt.timedelta(hours=2))
    assert moment_text(dt.datetime(2026, 7, 2, 1, 50, tzinfo=paris)) == "2026-07-01 23:50 UTC"
    assert moment_text(dt.datetime(2026, 7, 1, 23, 50)) == "2026-07-01 23:50 UTC"  # naive: UTC


def test_brackets_in_what_is_printed_are_printed() -> None:
    # Config sections, intervals and settings lists are data; markup once took "[training]" for a
    # style and dropped it from the line.
    for console in (stdout_console, stderr_console):
        with console.capture() as captured:
            console.print("[training] deterministic = true; [output] refit_on_all_events")
            console.print(Text.assemble(("warning:", "yellow"), " see [data] path"))
        assert captured.get() == (
            "[training] deterministic = true; [output] refit_on_all_events\nwarning: see [data] path\n"
        )
    for console in (_piped(100), Console(file=io.StringIO(), width=100, record=True, markup=True)):
        print_table(
            "[b] title", ["[x]", "interval"], [["[bold]id[/bold]", "[+0.0057, +0.0170]"]], console=console
        )
        text = console.export_text()
        assert "[b] title" in text and "[x]" in text
        assert "[bold]id[/bold]" in text and "[+0.0057, +0.0170]" in text
