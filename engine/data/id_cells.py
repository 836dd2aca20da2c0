"""Id cells the engine can match: no control characters, no leading or trailing whitespace.

An id is matched exactly, byte for byte: against the other tables (an event's item_id against items), and
at serving time against the ids the shop's backend sends. ``" c0001"`` or ``"c0001\\t"`` (a padded export,
a stray tab) loaded as a customer of its own, next to ``c0001``, whom no request would ever name; a NUL
stopped training with a traceback deep in the id map. The data contract (``Column.identifier``) refuses
such cells with the row and column, and ``skip_invalid`` skips and counts them (``malformed_id``).

Control characters are C0 (U+0000 to U+001F, tab and newline among them), DEL (U+007F) and C1 (U+0080 to
U+009F): none is typed in an id on purpose. Whitespace is Unicode's (a no-break space from a spreadsheet
too); inside an id it is kept, as shops do name things "gift card 50".
"""

from __future__ import annotations

import re

import polars as pl

_CONTROL = r"\x00-\x1F\x7F-\x9F"
_MALFORMED = rf"[{_CONTROL}]|^\s|\s$"  # polars' (Rust) regex: \s is Unicode whitespace
_CONTROL_CHARACTER = re.compile(f"[{_CONTROL}]")


def malformed_ids(values: pl.Series) -> pl.Series:
    """True where a (text) id holds a control character or starts or ends with whitespace; one vectorised
    pass, so ten million event ids cost a fraction of a second."""
    return values.str.contains(_MALFORMED).fill_null(False)


_MALFORMED_TEXT = re.compile(_MALFORMED)  # Python's \s is Unicode whitespace too


def id_problem(value: str) -> str | None:
    """What is wrong with one id, or None: the rule of ``malformed_ids`` for a single value (the live
    path's RecordEvents checks each record's ids with it, so the event log holds no id a shop file
    could not)."""
    return malformed_id_problem(value) if _MALFORMED_TEXT.search(value) else None


def malformed_id_problem(value: str) -> str:
    """What is wrong with one id ``malformed_ids`` flagged, the id shown with its characters escaped."""
    control = _CONTROL_CHARACTER.search(value)
    if control is not None:
        return f"{value!r} contains a control character (U+{ord(control.group()):04X})"
    return f"{value!r} has leading or trailing whitespace"
