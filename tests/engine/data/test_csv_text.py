"""Tests for engine.data.csv_text: a malformed CSV is reported where it breaks, by row, line and column."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.data.csv_text import CsvFormatError, csv_header, find_fault, read_csv_text, read_csv_text_skipping

EVENTS = "event_id,customer_id,item_id\ne1,c1,i1\ne2,c2,i2\ne3,c3,i3\n"


def written(tmp_path: Path, content: str | bytes, name: str = "events.csv") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def fault_of(path: Path) -> CsvFormatError:
    with pytest.raises(CsvFormatError) as error:
        read_csv_text(path)
    return error.value


def test_a_well_formed_file_reads_as_text_columns(tmp_path: Path) -> None:
    frame = read_csv_text(written(tmp_path, EVENTS), ["item_id", "event_id"])
    assert frame.columns == ["item_id", "event_id"]
    assert frame["item_id"].to_list() == ["i1", "i2", "i3"]
    assert find_fault(tmp_path / "events.csv") is None


def test_a_row_with_more_cells_than_the_header_is_named_by_row_and_line_with_its_end(tmp_path: Path) -> None:
    fault = fault_of(written(tmp_path, EVENTS.replace("e2,c2,i2", "e2,c2,i2,oops")))
    assert (fault.row, fault.line, fault.column) == (2, 3, None)
    assert fault.skippable
    assert fault.message.startswith("4 cells where the header has 3")
    assert "'e2,c2,i2,oops'" in fault.message
    assert fault.located().startswith("events.csv, row 2 (line 3): 4 cells")


def test_rows_and_lines_part_after_a_quoted_cell_that_spans_lines(tmp_path: Path) -> None:
    text = 'event_id,customer_id,item_id\ne1,"c\n1",i1\ne2,c2,i2\ne3,c3,i3,x\n'
    fault = fault_of(written(tmp_path, text))
    assert (fault.row, fault.line) == (3, 5)


def test_a_cell_that_is_not_utf8_names_its_column_and_suggests_the_encoding(tmp_path: Path) -> None:
    content = "item_id,title\ni1,Tea\ni2,Café\n".encode("latin-1")
    fault = fault_of(written(tmp_path, content, "items.csv"))
    assert (fault.row, fault.line, fault.column) == (2, 3, "title")
    assert "byte 0xE9 is not UTF-8" in fault.message
    assert "Latin-1" in fault.message
    assert fault.located().startswith("items.csv, row 2 (line 3), column 'title': byte 0xE9")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_utf16_and_utf32_files_are_named_as_such_before_reading(tmp_path: Path, encoding: str) -> None:
    path = written(tmp_path, EVENTS.encode(encoding))
    with pytest.raises(CsvFormatError, match=r"UTF-(16|32).* save it as UTF-8"):
        csv_header(path)


def test_a_utf8_byte_order_mark_is_read_through(tmp_path: Path) -> None:
    path = written(tmp_path, EVENTS.encode("utf-8-sig"))
    assert read_csv_text(path)["event_id"].to_list() == ["e1", "e2", "e3"]


@pytest.mark.parametrize(("separator", "named"), [(";", "';'-separated"), ("\t", "tab-separated")])
def test_another_separator_is_named_from_the_header(tmp_path: Path, separator: str, named: str) -> None:
    path = written(tmp_path, EVENTS.replace(",", separator))
    with pytest.raises(CsvFormatError, match=named) as error:
        csv_header(path)
    assert error.value.line == 1


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('e2,c"2,i2', "a '\"' inside a cell that is not quoted"),
        ('e2,"c2"x,i2', "text after the closing quote"),
    ],
)
def test_stray_quotes_are_named_by_row(tmp_path: Path, line: str, says: str) -> None:
    fault = fault_of(written(tmp_path, EVENTS.replace("e2,c2,i2", line)))
    assert (fault.row, fault.line) == (2, 3)
    assert says in fault.message
    assert fault.skippable


def test_a_quote_never_closed_is_named_where_it_opens_and_cannot_be_skipped(tmp_path: Path) -> None:
    fault = fault_of(written(tmp_path, EVENTS.replace("e2,c2,i2", 'e2,"c2,i2')))
    assert (fault.row, fault.line) == (2, 3)
    assert "never closed" in fault.message
    assert not fault.skippable


def test_a_quote_that_closes_far_later_is_named_where_it_opens(tmp_path: Path) -> None:
    """polars fails at the end of the runaway cell (its record has 4 cells); the place to look is where
    the quote opened, 20,000 lines earlier."""
    body = "".join(f"e{i},c{i},i{i}\n" for i in range(4, 20_000))
    text = EVENTS.replace("e2,c2,i2", 'e2,"c2,i2') + body + 'e0,c0",i0,extra\n'
    fault = fault_of(written(tmp_path, text))
    assert (fault.row, fault.line) == (2, 3)
    assert "has not closed" in fault.message


def test_skipping_drops_only_the_malformed_records_and_counts_them(tmp_path: Path) -> None:
    text = EVENTS.replace("e2,c2,i2", "e2,c2,i2,extra") + 'e4,c"4,i4\ne5,,i5\n'
    frame, skipped = read_csv_text_skipping(written(tmp_path, text), ["event_id", "customer_id"])
    assert skipped == 2
    assert frame.rows() == [("e1", "c1"), ("e3", "c3"), ("e5", None)]


def test_skipping_still_stops_at_a_quote_never_closed(tmp_path: Path) -> None:
    path = written(tmp_path, EVENTS + 'e4,"c4,i4\n')
    with pytest.raises(CsvFormatError, match="never closed"):
        read_csv_text_skipping(path, ["event_id"])


_CELL = st.text(alphabet=st.sampled_from(list('ab1 ,"\né')), max_size=6)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.lists(_CELL, min_size=3, max_size=3), min_size=1, max_size=12),
    bad=st.integers(min_value=0, max_value=11),
)
def test_a_file_written_by_a_csv_writer_has_no_fault_and_one_extra_cell_is_found_where_it_is(
    rows: list[list[str]], bad: int
) -> None:
    """Cells with commas, quotes, newlines and non-ASCII text, quoted by Python's writer: polars and the
    fault finder agree the file is fine, and the skipping reader reads what polars reads; an extra cell
    in one record is found at that record's row and first line."""
    with tempfile.TemporaryDirectory() as folder:
        buffer = io.StringIO(newline="")
        csv.writer(buffer, lineterminator="\n").writerows([["a", "b", "c"], *rows])
        path = written(Path(folder), buffer.getvalue())
        assert find_fault(path) is None
        expected = pl.read_csv(path, infer_schema=False)
        skipped_frame, skipped = read_csv_text_skipping(path, ["a", "b", "c"])
        assert skipped == 0
        blank_to_null = [pl.col(c).replace("", None) for c in ("a", "b", "c")]
        assert skipped_frame.select(blank_to_null).rows() == expected.select(blank_to_null).rows()

        row = bad % len(rows)
        broken = [list(r) for r in rows]
        broken[row].append("x")
        buffer = io.StringIO(newline="")
        csv.writer(buffer, lineterminator="\n").writerows([["a", "b", "c"], *broken])
        path = written(Path(folder), buffer.getvalue())
        fault = find_fault(path)
        assert fault is not None and fault.row == row + 1
        header_and_rows = io.StringIO(newline="")
        csv.writer(header_and_rows, lineterminator="\n").writerows([["a", "b", "c"], *broken[:row]])
        assert fault.line == header_and_rows.getvalue().count("\n") + 1
