"""One-hot attribute features for customers and items, with a stable name for every column.

Models take attributes as sparse one-hot rows ("age_band=25-34", "category=fashion", "tag=organic").
The names are fixed at training time and saved in the artifact, so serving builds exactly the same
row for a customer it has never seen, and a value unseen in training is simply absent (not an error:
a new region should not break cold start).

A numeric column (a customer's ``feature__household_size``) is standardized with the training frame's
mean and standard deviation, z = (x - mean) / std, and carried as two features, ``<column>:above_mean``
= max(z, 0) and ``<column>:below_mean`` = max(-z, 0). Every model treats a demographic feature as a
non-negative mass (ALS/BPR average the vectors of the attributes a customer has, LightFM normalises a
row by its total), so a signed value would break them; split in two, a far-above-average household
weighs more than a slightly-above-average one and neither is ever negative. An empty cell (or the
mean itself) adds nothing, like an unseen category.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.data.contract import CUSTOMER_FEATURE_PREFIX

DEMOGRAPHIC_COLUMNS: tuple[str, ...] = ("age_band", "region", "income_band", "gender", "occupation")
PRICE_BANDS: tuple[str, ...] = ("low", "mid", "high")
ABOVE_MEAN = ":above_mean"
BELOW_MEAN = ":below_mean"


def demographic_columns(frame: pl.DataFrame) -> tuple[str, ...]:
    """The fixed demographics plus the customers table's extra ``feature__<name>`` columns in ``frame``."""
    extras = sorted(c for c in frame.columns if c.startswith(CUSTOMER_FEATURE_PREFIX))
    return (*DEMOGRAPHIC_COLUMNS, *extras)


def is_numeric(series: pl.Series) -> bool:
    return series.dtype.is_numeric()


@dataclass(frozen=True)
class FeatureSpace:
    """An ordered vocabulary of ``column=value`` (and numeric ``column:above_mean``/``:below_mean``) names.

    ``scales`` holds each numeric column's (mean, std) from the frame the space was built on; it is
    needed only to encode raw values, which happens in training (an artifact keeps the encoded rows).
    """

    names: tuple[str, ...]
    scales: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {name: i for i, name in enumerate(self.names)})

    def __len__(self) -> int:
        return len(self.names)

    @property
    def index(self) -> Mapping[str, int]:
        return self._index  # type: ignore[attr-defined]

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, columns: Sequence[str]) -> FeatureSpace:
        """Vocabulary of every non-null value of the given columns (list columns contribute each element);
        a numeric column contributes its two standardized features."""
        names: list[str] = []
        scales: dict[str, tuple[float, float]] = {}
        for column in columns:
            if column not in frame.columns:
                continue
            series = frame[column]
            if is_numeric(series):
                values = series.cast(pl.Float64).drop_nulls()
                if values.len() == 0:
                    continue
                mean = float(values.mean())  # type: ignore[arg-type]
                std = float(values.std(ddof=0) or 0.0)  # type: ignore[arg-type]
                scales[column] = (mean, std if std > 0 else 1.0)
                names.extend((f"{column}{ABOVE_MEAN}", f"{column}{BELOW_MEAN}"))
                continue
            if isinstance(series.dtype, pl.List):
                series = series.explode()
            values_text = sorted(str(v) for v in series.drop_nulls().unique().to_list() if str(v) != "")
            names.extend(f"{feature_prefix(column)}={v}" for v in values_text)
        return cls(tuple(names), scales)

    def _standardized(self, column: str, values: NDArray[np.float64]) -> NDArray[np.float64]:
        if column not in self.scales:
            raise ValueError(
                f"numeric column {column!r} is not in this feature space's scales (a space read back from "
                "an artifact encodes no raw values; build it with FeatureSpace.from_frame)"
            )
        mean, std = self.scales[column]
        return (values - mean) / std

    def encode(self, frame: pl.DataFrame, columns: Sequence[str]) -> sp.csr_matrix:
        """One row per frame row; unknown values are left out of the row.

        Row and column indices are int32 and values float32 from the start, the matrix's own types: a
        million customers' demographics are three million entries, and int64 and float64 copies of
        them cast down afterwards were a third of a second of fresh memory in a shop-sized build.
        """
        n = frame.height
        index_dtype = np.int32 if max(n, len(self)) < np.iinfo(np.int32).max else np.int64
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        data: list[np.ndarray] = []
        lookup = self.index
        for column in columns:
            if column not in frame.columns:
                continue
            series = frame[column]
            above = lookup.get(f"{column}{ABOVE_MEAN}")
            if above is not None and is_numeric(series):
                z = self._standardized(column, series.cast(pl.Float64).fill_null(np.nan).to_numpy())
                z = np.nan_to_num(z, nan=0.0)
                for index, part in (
                    (above, np.maximum(z, 0.0)),
                    (lookup[f"{column}{BELOW_MEAN}"], np.maximum(-z, 0.0)),
                ):
                    present = np.flatnonzero(part > 0)
                    rows.append(present.astype(index_dtype))
                    cols.append(np.full(len(present), index, dtype=index_dtype))
                    data.append(part[present].astype(np.float32))
                continue
            prefix = feature_prefix(column)
            is_list = isinstance(series.dtype, pl.List)
            if is_list:
                series = series.list.drop_nulls()
                lengths = series.list.len().fill_null(0).to_numpy()
                row_ids = np.repeat(np.arange(n, dtype=index_dtype), lengths)
                # explode yields one null per empty or null list; those rows have length 0 above
                values = series.explode().drop_nulls().cast(pl.Utf8)
            else:
                row_ids = np.arange(n, dtype=index_dtype)
                values = series.cast(pl.Utf8)
            col_idx = self._value_indices(values, prefix)
            keep = col_idx >= 0
            present_rows: np.ndarray = row_ids[keep]
            present_cols: np.ndarray = col_idx[keep].astype(index_dtype)
            if is_list:
                # a value repeated in one list cell (tags "a|a") is one feature, not two
                cell = np.unique(present_rows.astype(np.int64) * len(self) + present_cols)
                present_rows = (cell // len(self)).astype(index_dtype)
                present_cols = (cell % len(self)).astype(index_dtype)
            rows.append(present_rows)
            cols.append(present_cols)
            data.append(np.ones(len(present_rows), dtype=np.float32))
        row: NDArray[np.integer] = np.concatenate(rows) if rows else np.zeros(0, dtype=index_dtype)
        col: NDArray[np.integer] = np.concatenate(cols) if cols else np.zeros(0, dtype=index_dtype)
        values_out: NDArray[np.float32] = np.concatenate(data) if data else np.zeros(0, dtype=np.float32)
        matrix = sp.csr_matrix((values_out, (row, col)), shape=(n, len(self)), dtype=np.float32)
        matrix.sum_duplicates()
        return matrix

    def _value_indices(self, values: pl.Series, prefix: str) -> NDArray[np.int64]:
        """Column index of ``<prefix>=<value>`` per value (-1 for nulls and values not in the space),
        looked up in one vectorised pass: a million customers' cells are not a million dict look-ups."""
        if values.len() == 0:
            return np.zeros(0, dtype=np.int64)
        head = f"{prefix}="
        known = [(name[len(head) :], i) for i, name in enumerate(self.names) if name.startswith(head)]
        if not known:
            return np.full(values.len(), -1, dtype=np.int64)
        vocabulary = pl.Series([v for v, _ in known], dtype=pl.Utf8)
        indices = pl.Series([i for _, i in known], dtype=pl.Int64)
        mapped = values.replace_strict(vocabulary, indices, default=-1, return_dtype=pl.Int64)
        return mapped.fill_null(-1).to_numpy().astype(np.int64, copy=False)

    def encode_one(self, attributes: Mapping[str, str | float | Iterable[str] | None]) -> sp.csr_matrix:
        """A single row from ``{"age_band": "25-34", "feature__household_size": 4}``; for cold start."""
        entries: dict[int, float] = {}
        for column, value in attributes.items():
            if value is None:
                continue
            if isinstance(value, int | float) and not isinstance(value, bool):
                above = self.index.get(f"{column}{ABOVE_MEAN}")
                if above is None:
                    continue
                z = float(self._standardized(column, np.array([float(value)]))[0])
                if z > 0:
                    entries[above] = z
                elif z < 0:
                    entries[self.index[f"{column}{BELOW_MEAN}"]] = -z
                continue
            values = [value] if isinstance(value, str) else list(value)  # type: ignore[arg-type]
            for v in values:
                i = self.index.get(f"{feature_prefix(column)}={v}")
                if i is not None:
                    entries[i] = 1.0
        cols = np.asarray(sorted(entries), dtype=np.int64)
        return sp.csr_matrix(
            (
                np.asarray([entries[c] for c in cols.tolist()], dtype=np.float32),
                (np.zeros(len(cols), dtype=np.int64), cols),
            ),
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
