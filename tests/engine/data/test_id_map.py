from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.data.id_map import MISSING, IdMap, UnknownIdError

# any Unicode text but NUL and lone surrogates (neither can be stored; see the tests below)
id_text = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1, max_size=12
)
ids_strategy = st.lists(id_text, min_size=1, max_size=50, unique=True)


@given(ids_strategy)
def test_index_is_position_and_round_trips(ids: list[str]) -> None:
    m = IdMap(ids)
    internal = m.to_internal(ids)
    assert internal.tolist() == list(range(len(ids)))
    assert m.to_external(internal).tolist() == ids


@given(ids_strategy)
def test_the_id_series_holds_the_ids_in_index_order(ids: list[str]) -> None:
    m = IdMap.from_values([*ids, *ids], kind="customer")
    assert m.id_series.to_list() == m.ids.tolist() == ids
    assert m.id_series.name == "id"


@given(ids_strategy, st.lists(id_text, max_size=20))
def test_add_ids_never_moves_existing_ids(ids: list[str], extra: list[str]) -> None:
    m = IdMap(ids)
    grown = m.add_ids(extra)
    assert grown.to_internal(ids).tolist() == list(range(len(ids)))
    assert len(grown) == len(set(ids) | set(extra))


@given(ids_strategy, st.lists(id_text, max_size=20))
def test_known_indices_are_the_lenient_lookup_without_the_unknown(ids: list[str], asked: list[str]) -> None:
    m = IdMap(ids)
    asked = [*ids[-2:], *asked, *ids[:3]]  # known ids around arbitrary (mostly unknown) ones
    lenient = m.to_internal(asked, strict=False)
    known = m.known_indices(asked)
    assert known.dtype == np.int64
    assert known.tolist() == lenient[lenient != MISSING].tolist()


def test_strict_lookup_names_unknown_ids() -> None:
    m = IdMap(["a", "b"], kind="customer")
    with pytest.raises(UnknownIdError, match=r"unknown customer id.*'zz'"):
        m.to_internal(["a", "zz"])
    assert m.to_internal(["a", "zz"], strict=False).tolist() == [0, MISSING]


def test_duplicates_are_rejected_and_from_values_dedups() -> None:
    with pytest.raises(ValueError, match="not unique"):
        IdMap(["a", "a"])
    assert IdMap.from_values(["b", "a", "b"]).ids.tolist() == ["b", "a"]


def test_nul_in_ids_is_rejected() -> None:
    with pytest.raises(ValueError, match="NUL"):
        IdMap(["ok", "bad\x00"])


def test_save_load_without_pickle(tmp_path: Path) -> None:
    m = IdMap(["x1", "ü2", "long-id-" * 5])
    m.save(tmp_path / "ids.npy")
    np.load(tmp_path / "ids.npy", allow_pickle=False)
    assert IdMap.load(tmp_path / "ids.npy") == m


def test_ids_that_are_not_valid_unicode_are_refused_by_name() -> None:
    """A lone surrogate cannot be written to Parquet, protobuf or UTF-8 JSON, so no id may hold one."""
    with pytest.raises(ValueError, match="customer ids must be valid Unicode text"):
        IdMap(["c1", "\ud800"], kind="customer")
