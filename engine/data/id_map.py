"""Mapping between external ids (strings) and dense row/column indices.

Ids are mapped once, at the edge of the engine; every model, matrix and artifact works on dense indices.
An id's index is its position in the array, so a map can be saved as one `.npy` file and extending it
never moves an existing id (a model trained on the old map stays valid for the old ids).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl
from numpy.typing import NDArray

from engine.artifact.arrays import load_array, save_array
from engine.errors import PersonaEngineError

MISSING = -1


class UnknownIdError(PersonaEngineError, KeyError):
    """Raised by strict look-ups; names the first unknown ids so the caller can report them."""

    def __init__(self, kind: str, unknown: Sequence[str]) -> None:
        shown = ", ".join(repr(u) for u in list(unknown)[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        super().__init__(f"unknown {kind} id(s): {shown}{more}")
        self.kind = kind
        self.unknown = list(unknown)

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class IdMap:
    """An immutable, ordered set of string ids with O(1) id -> index look-up."""

    def __init__(self, ids: Iterable[str] | pl.Series, kind: str = "item") -> None:
        if isinstance(ids, np.ndarray) and ids.ndim != 1:
            raise ValueError("ids must be one-dimensional")
        if isinstance(ids, pl.Series):
            series = ids.cast(pl.String)
            if series.null_count():
                raise ValueError(f"{kind} ids must not be null")
        else:
            values = ids.tolist() if isinstance(ids, np.ndarray) else [str(v) for v in ids]
            try:
                series = pl.Series("id", values, dtype=pl.String)
            except UnicodeEncodeError:
                # a lone surrogate: Parquet, protobuf and UTF-8 JSON cannot hold it either
                raise ValueError(f"{kind} ids must be valid Unicode text (no lone surrogates)") from None
        series = series.rename("id").rechunk()
        if series.str.contains("\x00", literal=True).any():
            # numpy's fixed-width strings drop trailing NULs, so such ids would not survive save/load
            raise ValueError(f"{kind} ids must not contain NUL characters")
        if series.n_unique() != series.len():
            raise ValueError(f"{kind} ids are not unique")
        self._ids: NDArray[np.str_] = np.asarray(series.to_numpy(), dtype=np.str_)
        self.kind = kind
        # kept for ``index_expr``, the look-up of id columns, so that it is not rebuilt from the array
        self._id_series = series

    @property
    def id_series(self) -> pl.Series:
        """The ids as a polars String Series named "id", in index order: for joins, without a Python
        string per id (a million of them took a third of a second to build a frame from)."""
        return self._id_series

    @cached_property
    def _index(self) -> dict[str, int]:
        """Id -> index for look-ups one id at a time, built on first use.

        Maps of a million customers are built and mostly used through ``index_expr`` (polars' own hash
        table); a Python dict of them cost more than the rest of the map (0.4 s of about 0.6 s).
        """
        return dict(zip(self._ids.tolist(), range(len(self._ids)), strict=True))

    @classmethod
    def from_values(cls, values: Iterable[str] | pl.Series, kind: str = "item") -> IdMap:
        """Build a map from values that may repeat; ids are kept in order of first appearance.

        A polars Series (an id column) is deduplicated by polars, without a Python string per row.
        """
        if isinstance(values, pl.Series):
            return cls(values.cast(pl.String).unique(maintain_order=True), kind=kind)
        seen: dict[str, None] = dict.fromkeys(str(v) for v in values)
        return cls(list(seen), kind=kind)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, external_id: object) -> bool:
        return external_id in self._index

    @property
    def ids(self) -> NDArray[np.str_]:
        return self._ids

    def index(self, external_id: str) -> int:
        """The index of one id; raises UnknownIdError naming it when absent."""
        try:
            return self._index[external_id]
        except KeyError:
            raise UnknownIdError(self.kind, [external_id]) from None

    def to_internal(
        self, external_ids: Iterable[str] | pl.Series, *, strict: bool = True
    ) -> NDArray[np.int64]:
        """Indices of many ids. With strict=False unknown ids map to MISSING (-1) instead of raising.

        A polars Series (an id column of a frame) is mapped in one vectorised hash look-up, without
        making a Python string of every cell: ten million events map in about a second, not a minute.
        """
        if isinstance(external_ids, pl.Series):
            return self._series_to_internal(external_ids, strict)
        values = external_ids if isinstance(external_ids, list) else list(external_ids)
        lookup = self._index.get
        out = np.fromiter((lookup(str(e), MISSING) for e in values), dtype=np.int64, count=len(values))
        if strict and (out == MISSING).any():
            unknown = [str(values[i]) for i in np.flatnonzero(out == MISSING)]
            raise UnknownIdError(self.kind, unknown)
        return out

    def known_indices(self, external_ids: Iterable[str]) -> NDArray[np.int64]:
        """Indices of the ids this map knows, in their order; unknown ids are dropped (as with
        ``to_internal(..., strict=False)`` and the MISSING entries taken out).

        One dict look-up per id into a list: a request names a handful of item ids (viewed, in the
        cart, excluded), and for a handful ``to_internal``'s generator, ``np.fromiter`` and mask cost
        four times as much (3.3 against 0.8 µs for three ids), several times per page.
        """
        get = self._index.get
        return np.array([i for i in map(get, map(str, external_ids)) if i is not None], dtype=np.int64)

    def index_expr(self, column: str | pl.Expr, dtype: type[pl.DataType] = pl.Int64) -> pl.Expr:
        """A polars expression mapping an id column to indices (MISSING for unknown or null ids).

        As an expression it runs inside a frame's ``select`` beside the other columns' work, which
        polars spreads over its threads; ``to_internal`` maps one Series on its own. Polars builds
        the look-up table once per chunk of the column, so rechunk a frame joined from many parts
        first (a training split's ten million events took 27 s to map, instead of 5).
        """
        expr = pl.col(column) if isinstance(column, str) else column
        indices = pl.Series("index", np.arange(len(self), dtype=np.int64))
        return (
            expr.cast(pl.String)
            .replace_strict(self._id_series, indices, default=MISSING, return_dtype=dtype)
            .fill_null(MISSING)
        )

    def _series_to_internal(self, external_ids: pl.Series, strict: bool) -> NDArray[np.int64]:
        text = external_ids.cast(pl.String).rechunk()  # one look-up table, not one per chunk
        mapped = pl.select(self.index_expr(pl.lit(text))).to_series()
        out = mapped.to_numpy().astype(np.int64, copy=False)
        if strict and (out == MISSING).any():
            unknown = text.filter(pl.Series(out == MISSING)).cast(pl.String).to_list()
            raise UnknownIdError(self.kind, [str(u) for u in unknown])
        return out

    def to_external(self, indices: NDArray[np.integer] | Sequence[int]) -> NDArray[np.str_]:
        return self._ids[np.asarray(indices, dtype=np.int64)]

    def add_ids(self, new_ids: Iterable[str]) -> IdMap:
        """A new map with the unseen ids appended; existing ids keep their indices."""
        extra = [i for i in dict.fromkeys(str(v) for v in new_ids) if i not in self._index]
        return IdMap(np.concatenate([self._ids, np.asarray(extra, dtype=np.str_)]), kind=self.kind)

    def save(self, path: Path) -> None:
        save_array(path, self._ids)

    @classmethod
    def load(cls, path: Path, kind: str = "item") -> IdMap:
        """Read a map ``save`` wrote; a missing or unreadable file is a PersonaEngineError naming it."""
        return cls(load_array(path), kind=kind)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and np.array_equal(self._ids, other._ids)

    def __hash__(self) -> int:
        return hash(tuple(self._ids.tolist()))

    def __repr__(self) -> str:
        return f"IdMap(kind={self.kind!r}, size={len(self)})"
