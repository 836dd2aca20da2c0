"""Tables print each kind of value one way: prices as money, whatever their size."""

from __future__ import annotations

import re

from rich.console import Console

from training.console_output import Money, print_table


def test_prices_in_one_table_share_one_format() -> None:
    console = Console(record=True, width=100)
    print_table(
        "", ["item", "price"], [["a", Money(58.79)], ["b", Money(1812.7)], ["c", Money(3.6)]], console=console
    )
    cells = [line.split()[-1] for line in console.export_text().splitlines()[3:] if line.strip()]
    assert cells == ["58.79", "1,812.70", "3.60"]
    assert all(re.fullmatch(r"\d{1,3}(,\d{3})*\.\d\d", cell) for cell in cells)
