"""One-hot attribute features for customers and items, with a stable name for every column.

Models take attributes as sparse one-hot rows ("age_band=25-34", "category=fashion", "tag=organic").
The names are fixed at training time and saved in the artifact, so serving builds exactly the same
row for a customer it has never seen, and a value unseen in training is simply absent (not an error:
a new region should not break cold start).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

DEMOGRAPHIC_COLUMNS: tuple[str, ...] = ("age_band", "region", "income_band", "gender", "occupation")
PRICE_BANDS: tuple[str, ...] = ("low", "mid", "high")


@dataclass(frozen=True)
class FeatureSpace:
    """An ordered vocabulary of ``column=value`` feature names."""

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {name: i for i, name in enumerate(self.names)})

    def __len__(self) -> int:
        return len(self.names)

    @property
    def index(self) -> Mapping[str, int]:
        return self._index  # type: ignore[attr-defined]

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, columns: Sequence[str]) -> FeatureSpace:
        """Vocabulary of every non-null value of the given columns (list columns contribute each element)."""
        names: list[str] = []
        for column in columns:
            if column not in frame.columns:
                continue
            series = frame[column]
            if isinstance(series.dtype, pl.List):
                series = series.explode()
            values = sorted(str(v) for v in series.drop_nulls().unique().to_list() if str(v) != "")
            names.extend(f"{feature_prefix(column)}={v}" for v in values)
        return cls(tuple(names))

    def encode(self, frame: pl.DataFrame, columns: Sequence[str]) -> sp.csr_matrix:
        """One row per frame row; unknown values are left out of the row."""
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        n = frame.height
        for column in columns:
            if column not in frame.columns:
                continue
            series = frame[column]
            prefix = feature_prefix(column)
            if isinstance(series.dtype, pl.List):
                series = series.list.drop_nulls()
                lengths = series.list.len().fill_null(0).to_numpy()
                row_ids = np.repeat(np.arange(n), lengths)
                # explode yields one null per empty or null list; those rows have length 0 above
                values = series.explode().drop_nulls().cast(pl.Utf8).to_list()
            else:
                row_ids = np.arange(n)
                values = series.cast(pl.Utf8).to_list()
            lookup = self.index
            col_idx = np.fromiter(
                (lookup.get(f"{prefix}={v}", -1) if v is not None else -1 for v in values),
                dtype=np.int64,
                count=len(values),
            )
            keep = col_idx >= 0
            rows.append(row_ids[keep])
            cols.append(col_idx[keep])
        row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        col = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        data = np.ones(len(row), dtype=np.float32)
        matrix = sp.csr_matrix((data, (row, col)), shape=(n, len(self)), dtype=np.float32)
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return matrix

    def encode_one(self, attributes: Mapping[str, str | Iterable[str] | None]) -> sp.csr_matrix:
        """A single row from ``{"age_band": "25-34", "region": "north"}``; for serving and cold start."""
        indices = set()
        for column, value in attributes.items():
            if value is None:
                continue
            values = [value] if isinstance(value, str) else list(value)
            for v in values:
                i = self.index.get(f"{feature_prefix(column)}={v}")
                if i is not None:
                    indices.add(i)
        cols = np.asarray(sorted(indices), dtype=np.int64)
        return sp.csr_matrix(
            (np.ones(len(cols), dtype=np.float32), (np.zeros(len(cols), dtype=np.int64), cols)),
            shape=(1, len(self)),
        )


def feature_prefix(column: str) -> str:
    """``tags`` becomes ``tag=`` so feature names read naturally; other columns keep their name."""
    return "tag" if column == "tags" else column


def with_price_band(items: pl.DataFrame) -> pl.DataFrame:
    """Add ``price_band`` (low/mid/high): the item's price tertile within its own category.

    Relative bands, not absolute prices, because 'expensive' means different things for socks and TVs.
    """
    ranked = items.with_columns(
        ((pl.col("price").rank("average").over("category") - 0.5) / pl.len().over("category")).alias(
            "_price_pct"
        )
    )
    return ranked.with_columns(
        pl.when(pl.col("_price_pct") < 1 / 3)
        .then(pl.lit("low"))
        .when(pl.col("_price_pct") < 2 / 3)
        .then(pl.lit("mid"))
        .otherwise(pl.lit("high"))
        .alias("price_band")
    ).drop("_price_pct")


ITEM_FEATURE_COLUMNS: tuple[str, ...] = ("category", "brand", "tags", "price_band")
