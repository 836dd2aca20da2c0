"""Columns cut into a table's chunks: the table then stays chunked alike and polars does not copy it."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.data.chunk_layout import chunk_lengths, chunked_as


def chunked(values: list[int], lengths: list[int]) -> pl.Series:
    pieces, at = [], 0
    for n in lengths:
        pieces.append(pl.Series("x", values[at : at + n]))
        at += n
    return pl.concat(pieces, rechunk=False)


@given(st.lists(st.integers(0, 5), min_size=1, max_size=8))
def test_a_column_cut_into_chunks_keeps_its_values_in_order(lengths: list[int]) -> None:
    values = list(range(sum(lengths)))
    series = pl.Series("y", values)
    cut = chunked_as(series, lengths)
    assert cut.to_list() == values and cut.name == "y"
    assert [c.len() for c in cut.get_chunks()] == ([n for n in lengths if n] or [0])


def test_a_frame_read_in_chunks_reports_them_and_joins_a_column_cut_alike() -> None:
    frame = pl.DataFrame([chunked(list(range(7)), [3, 4]), chunked(list(range(7)), [3, 4]).alias("z")])
    assert chunk_lengths(frame) == [3, 4]
    joined = frame.with_columns(chunked_as(pl.Series("w", [1] * 7), chunk_lengths(frame)))
    assert {name: joined[name].n_chunks() for name in joined.columns} == {"x": 2, "z": 2, "w": 2}
    # chunked alike, the frame's filter leaves every column in its chunks (nothing was copied into one)
    assert joined.filter(pl.col("x") > 0)["z"].n_chunks() == 2
    assert chunk_lengths(pl.DataFrame()) == [0]


def test_lengths_that_do_not_add_up_to_the_column_are_refused() -> None:
    with pytest.raises(ValueError, match="chunks of 5 rows in all cannot hold a column of 4"):
        chunked_as(pl.Series([1, 2, 3, 4]), [2, 3])
