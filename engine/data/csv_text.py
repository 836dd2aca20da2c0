"""CSV files read as columns of text, and, when one is malformed, where it breaks, by row, line and column.

polars reads a well-formed CSV fast, but its errors for a malformed one name no row ("found more fields
than defined in 'Schema'", "invalid utf-8 sequence", "could not parse `"view,2026-...`"), and a file in
another encoding or with another separator reads without error as one garbled column, which then
surfaces as "required column 'item_id' is missing". A shop owner exporting from a spreadsheet meets all
three. So:

- Before polars reads a file, its first bytes are checked for a UTF-16 or UTF-32 byte-order mark (or the
  NUL bytes of UTF-16 without one), and a header that comes out as one column is checked for another
  separator (``;``, tab, ``|``): each is an error that says what the file is and what to save it as.
- When polars fails on the body, the file is read once more with Python's C ``csv`` reader, which keeps
  the line of every record, to find the first record polars cannot take: more cells than the header, a
  cell that is not UTF-8, a ``"`` inside a cell that is not quoted, text after a closing quote, a quote
  that is never closed. That pass runs only on a file that already failed, so a good file pays nothing.

Rows are counted as the loader counts them (``engine.data.loading``): the 1-based data record, the header
not counted, a blank line counting as a row of empty cells (polars reads it so).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from engine.errors import PersonaEngineError

# Separators a spreadsheet writes in place of the comma (a semicolon where the comma is the decimal mark).
OTHER_SEPARATORS: tuple[tuple[str, str], ...] = ((";", "';'"), ("\t", "tab"), ("|", "'|'"))
_SNIFF_BYTES = 4096
_BOMS: tuple[tuple[bytes, str], ...] = (  # UTF-32 first: its little-endian mark starts like UTF-16's
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
# Bytes that are not UTF-8 come out of a surrogateescape decode as lone surrogates U+DC80..U+DCFF.
_UNDECODED = re.compile("[\udc80-\udcff]")
_SHOWN_CHARS = 60


class CsvFormatError(PersonaEngineError, ValueError):
    """A CSV file that cannot be read as a table; ``row``, ``line`` and ``column`` say where when known.

    ``str()`` is the message alone; callers put the file (and the row) in front as their errors do.
    """

    def __init__(
        self,
        path: Path,
        message: str,
        *,
        row: int | None = None,
        line: int | None = None,
        column: str | None = None,
        skippable: bool = False,
    ) -> None:
        self.path = path
        self.skippable = skippable  # a fault of one record, after which the others read right
        self.row = row
        self.line = line
        self.column = column
        self.message = message
        super().__init__(message)

    def located(self, file: str | None = None) -> str:
        """``events.csv, row 699 (line 700), column 'title': ...``: the file (``file``, or the path's name),
        where, and what."""
        where = [self.path.name if file is None else file]
        if self.row is not None:
            where.append(f"row {self.row}" + (f" (line {self.line})" if self.line is not None else ""))
        elif self.line is not None:
            where.append(f"line {self.line}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return f"{', '.join(where)}: {self.message}"


def csv_header(path: Path) -> list[str]:
    """The header's column names, after checking the encoding and the separator (module doc)."""
    _check_encoding(path)
    try:
        header = pl.scan_csv(path, infer_schema=False).collect_schema().names()
    except pl.exceptions.PolarsError as problem:
        raise located_fault(path, problem) from None
    _check_separator(path, header)
    return header


def read_csv_text(
    path: Path, columns: Sequence[str] | None = None, *, header: Sequence[str] | None = None
) -> pl.DataFrame:
    """``columns`` (all when None) of a CSV file as text; a malformed file raises ``CsvFormatError``
    located at its first bad record. ``header``: what ``csv_header`` already returned for the file, so
    that its checks are not run twice."""
    if header is None:
        header = csv_header(path)
    wanted = list(header if columns is None else columns)
    try:
        return pl.scan_csv(path, infer_schema=False).select(wanted).collect()
    except pl.exceptions.ColumnNotFoundError:
        raise
    except pl.exceptions.PolarsError as problem:
        raise located_fault(path, problem) from None


def located_fault(path: Path, problem: Exception) -> CsvFormatError:
    """The first record of ``path`` that breaks the CSV format, or polars' own message when none is found
    (a fault of a kind the second reading does not know)."""
    fault = find_fault(path)
    if fault is not None:
        return fault
    first_line = (str(problem).strip().splitlines() or [type(problem).__name__])[0]
    return CsvFormatError(path, f"cannot read it as CSV: {first_line}")


def find_fault(path: Path) -> CsvFormatError | None:
    """Read ``path`` record by record and return its first malformed one (module doc); None if none is."""
    try:
        for record in _records(path):
            if fault := _record_fault(path, record):
                return fault
    except CsvFormatError as fatal:
        return fatal
    return None


def read_csv_text_skipping(path: Path, columns: Sequence[str]) -> tuple[pl.DataFrame, int]:
    """``columns`` of a malformed CSV as text, without its malformed records, and how many those were.

    The slow path of ``[data] skip_invalid`` (Python's reader, about 200,000 records a second here),
    taken only for a file polars cannot read. A fault after which the records that follow cannot be
    trusted (a quote that never closes, a bad header) still raises ``CsvFormatError``.
    """
    header: list[str] = []
    values: dict[str, list[str | None]] = {name: [] for name in columns}
    skipped = 0
    for record in _records(path):
        fault = _record_fault(path, record)
        if record.row is None:
            if fault:
                raise fault
            header = record.cells
            missing = [name for name in columns if name not in header]
            if missing:
                raise CsvFormatError(path, f"no column {missing[0]!r} in the header", line=1)
            positions = [header.index(name) for name in columns]
            continue
        if fault:
            if not fault.skippable:
                raise fault
            skipped += 1
            continue
        cells = record.cells
        for name, position in zip(columns, positions, strict=True):
            cell = cells[position] if position < len(cells) else ""
            values[name].append(cell if cell != "" else None)
    frame = pl.DataFrame({name: pl.Series(name, values[name], dtype=pl.String) for name in columns})
    return frame, skipped


@dataclass(frozen=True)
class _Record:
    row: int | None  # None for the header
    line: int  # its first line
    cells: list[str]
    raw: str  # its text, every line of it
    header: list[str]  # the file's header (the header's own cells for the header)


def _records(path: Path) -> Iterator[_Record]:
    """Every record of the file with its row, first line and text; a record that breaks the reading of
    the ones after it raises ``CsvFormatError``."""
    lines = _LineTape(path)
    reader = csv.reader(lines)  # lenient: _record_fault judges quotes, by polars' rules
    row: int | None = None
    header: list[str] | None = None
    try:
        for cells in reader:
            raw, first_line = lines.take()
            header = cells if header is None else header
            record = _Record(row, first_line, cells, raw, header)
            if '"' in raw and _quotes(raw)[1]:
                raise CsvFormatError(
                    path,
                    f"a quoted cell opens here and is never closed (it runs to the end of the file, "
                    f"line {lines.line}): {_shown(raw)}",
                    row=row,
                    line=first_line,
                )
            yield record
            row = 1 if row is None else row + 1
    except csv.Error as error:
        raw, first_line = lines.take()
        if "field larger than field limit" not in str(error):
            raise CsvFormatError(
                path, f"malformed CSV: {error}: {_shown(raw)}", row=row, line=first_line
            ) from None
        raise CsvFormatError(
            path,
            f"a quoted cell opens here and has not closed {csv.field_size_limit() // 1024} KB later "
            f"(line {lines.line}): a '\"' without its closing quote? {_shown(raw)}",
            row=row,
            line=first_line,
        ) from None


def _record_fault(path: Path, record: _Record) -> CsvFormatError | None:
    """What makes one record unreadable for polars, if anything. Every such fault leaves the records
    after it readable, so ``skip_invalid`` may drop the record and go on (``skippable``)."""
    row, line, raw, header = record.row, record.line, record.raw, record.header
    for position, cell in enumerate(record.cells):
        if bad := _UNDECODED.search(cell):
            byte = ord(bad.group()) - 0xDC00
            return CsvFormatError(
                path,
                f"byte 0x{byte:02X} is not UTF-8 (in {_shown(cell.encode('utf-8', 'surrogateescape'))}); "
                "the file looks Latin-1 or Windows-1252 encoded: save it as UTF-8",
                row=row,
                line=line,
                column=header[position] if row is not None and position < len(header) else None,
                skippable=row is not None,
            )
    if '"' in raw and (problem := _quotes(raw)[0]):
        return CsvFormatError(
            path, f"{problem}: {_shown(raw)}", row=row, line=line, skippable=row is not None
        )
    if row is not None and len(record.cells) > len(header):
        spans = raw.rstrip("\r\n").count("\n")
        across = f"; a quoted cell here runs across {spans + 1} lines" if spans else ""
        return CsvFormatError(
            path,
            f"{len(record.cells)} cells where the header has {len(header)} (a cell holding a comma must "
            f"be quoted{across}): {_shown(raw, tail=True)}",
            row=row,
            line=line,
            skippable=True,
        )
    return None


def _quotes(raw: str) -> tuple[str | None, bool]:
    """What is wrong with the quotes of one record's text by RFC 4180 (how polars reads quotes), and
    whether the text ends inside a quoted cell as Python's lenient reader reads it (a quote opens a cell
    only at its start; a stray one is kept as text). Only a file's last record can end open: the reader
    goes on taking lines until the quote closes."""
    problem: str | None = None
    at_start, quoted, closed = True, False, False
    position, end = 0, len(raw)
    while position < end:
        char = raw[position]
        if quoted:
            if char == '"':
                if raw.startswith('"', position + 1):
                    position += 1  # "" is a quote inside a quoted cell
                else:
                    quoted, closed = False, True
        elif char in ",\r\n":
            at_start, closed = True, False
        elif closed:
            problem = (
                problem or "text after the closing quote of a cell (a '\"' inside a cell is written '\"\"')"
            )
            closed = False
        elif char == '"' and at_start:
            quoted, at_start = True, False
        elif char == '"':
            problem = (
                problem or "a '\"' inside a cell that is not quoted (quote the cell and write it '\"\"')"
            )
        else:
            at_start = False
        position += 1
    return problem, quoted


class _LineTape:
    """The file's lines, fed to ``csv.reader``, remembering those of the record being read and its first
    line number, so a fault can be shown with its text and place."""

    def __init__(self, path: Path) -> None:
        self._lines = self._read(path)
        self._taken: list[str] = []
        self.line = 0  # lines read so far
        self._first = 1

    @staticmethod
    def _read(path: Path) -> Iterator[str]:
        with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
            yield from handle

    def __iter__(self) -> _LineTape:
        return self

    def __next__(self) -> str:
        text = next(self._lines)
        self.line += 1
        self._taken.append(text)
        return text

    def take(self) -> tuple[str, int]:
        """The text of the record just read and its first line; the next record starts after it."""
        raw, first = "".join(self._taken), self._first
        self._taken.clear()
        self._first = self.line + 1
        return raw, first


def _shown(text: str | bytes, tail: bool = False) -> str:
    """At most _SHOWN_CHARS of a record, its start or (``tail``, where extra cells are) its end."""
    shown = text if isinstance(text, str) else text.decode("utf-8", "backslashreplace")
    shown = shown.rstrip("\r\n")
    if len(shown) > _SHOWN_CHARS:
        shown = "..." + shown[-_SHOWN_CHARS:] if tail else shown[:_SHOWN_CHARS] + "..."
    return repr(shown)


def _check_encoding(path: Path) -> None:
    """UTF-16 and UTF-32 read as UTF-8 give a header of NULs and garbage: say what the file is instead."""
    with path.open("rb") as handle:
        start = handle.read(_SNIFF_BYTES)
    for mark, encoding in _BOMS:
        if start.startswith(mark):
            raise CsvFormatError(
                path, f"is {encoding} encoded (it starts with a byte-order mark): save it as UTF-8"
            )
    if start and start.count(b"\x00") * 4 >= len(start):
        raise CsvFormatError(
            path,
            "looks UTF-16 or UTF-32 encoded (a quarter or more of its first bytes are NUL): save it as UTF-8",
        )


def _check_separator(path: Path, header: list[str]) -> None:
    """A header read as one column that another separator splits into several: the file uses that one."""
    if len(header) != 1:
        return
    for separator, name in OTHER_SEPARATORS:
        parts = header[0].split(separator)
        if len(parts) > 1:
            raise CsvFormatError(
                path,
                f"its header is one column, {_shown(header[0])}: the file looks {name}-separated; "
                "tables are read as comma-separated CSV (save it with ',' as the separator and '.' as "
                "the decimal mark)",
                line=1,
            )
