"""What is wrong with a shop's data and where: the issues the loader reports, and the error that carries them.

Kept apart from ``engine.data.loading`` (which re-exports them) because everything that reads data
speaks this language: the loader, the Spark engine's checks, the split's test file, the transaction
adapter; each names the file, row, column and offending value the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from engine.errors import PersonaEngineError

MAX_ISSUES_SHOWN = 20  # issues ``str(DataValidationError)`` lists before "... and N more"


class IssueReason(StrEnum):
    """Short codes for what is wrong; also the keys of ``LoadReport.rows_skipped``."""

    MISSING_TABLE = "missing_table"
    AMBIGUOUS_SOURCE = "ambiguous_source"
    UNSUPPORTED_FORMAT = "unsupported_format"
    UNREADABLE_FILE = "unreadable_file"
    MALFORMED_CSV = "malformed_csv"
    EMPTY_FILE = "empty_file"
    MISSING_COLUMN = "missing_column"
    DUPLICATE_COLUMN = "duplicate_column"
    WRONG_TYPE = "wrong_type"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_DATE = "bad_date"
    NULL_VALUE = "null_value"
    NOT_ALLOWED = "not_allowed"
    OUT_OF_RANGE = "out_of_range"
    DUPLICATE_ID = "duplicate_id"
    MALFORMED_ID = "malformed_id"  # a control character, or whitespace around it (engine/data/id_cells.py)
    UNKNOWN_ITEM = "unknown_item"
    UNKNOWN_ARM = "unknown_arm"


@dataclass(frozen=True)
class DataIssue:
    """One problem in one place. ``row`` is the 1-based data row; None for problems of a whole file or column.

    ``line`` is the CSV file line of the row (header = line 1), None for Parquet or when the CSV has records
    spanning several lines.
    """

    file: str
    row: int | None
    column: str | None
    message: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = [self.file]
        if self.row is not None:
            where.append(f"row {self.row}" + (f" (line {self.line})" if self.line is not None else ""))
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return f"{', '.join(where)}: {self.message}"


class DataValidationError(PersonaEngineError, ValueError):
    """The data breaks the contract. ``issues`` holds the kept issues; ``total`` counts all that were found.

    Subclasses ValueError so callers that only know "bad input" still catch it.
    """

    def __init__(self, issues: Iterable[DataIssue], total: int | None = None) -> None:
        self.issues: list[DataIssue] = list(issues)
        self.total: int = len(self.issues) if total is None else max(total, len(self.issues))
        super().__init__(self._describe())

    def _describe(self) -> str:
        lines = [f"the shop data breaks the data contract ({self.total} problem(s)):"]
        lines += [str(issue) for issue in self.issues[:MAX_ISSUES_SHOWN]]
        hidden = self.total - min(len(self.issues), MAX_ISSUES_SHOWN)
        if hidden > 0:
            lines.append(f"... and {hidden} more")
        return "\n".join(lines)
