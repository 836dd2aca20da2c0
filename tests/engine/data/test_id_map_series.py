"""IdMap's vectorised look-up of a polars id column agrees with the per-id look-up it replaces."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.data.id_map import MISSING, IdMap, UnknownIdError

ids = st.text(alphabet="abcxyz019-", min_size=1, max_size=4)


@settings(max_examples=50, deadline=None)
@given(known=st.lists(ids, min_size=1, max_size=30, unique=True), asked=st.lists(ids, max_size=60))
def test_series_lookup_equals_list_lookup(known: list[str], asked: list[str]) -> None:
    id_map = IdMap(known)
    from_series = id_map.to_internal(pl.Series(asked, dtype=pl.String), strict=False)
    assert from_series.dtype == np.int64
    assert from_series.tolist() == id_map.to_internal(asked, strict=False).tolist()


def test_strict_series_lookup_names_the_unknown_ids() -> None:
    id_map = IdMap(["a", "b"], kind="customer")
    assert id_map.to_internal(pl.Series(["b", "a", "b"])).tolist() == [1, 0, 1]
    with pytest.raises(UnknownIdError, match="unknown customer id\\(s\\): 'zz'"):
        id_map.to_internal(pl.Series(["a", "zz"]))


def test_integer_and_null_cells() -> None:
    id_map = IdMap(["7", "12"])
    assert id_map.to_internal(pl.Series([12, 7, 3]), strict=False).tolist() == [1, 0, MISSING]
    assert id_map.to_internal(pl.Series(["7", None]), strict=False).tolist() == [0, MISSING]
