"""The event encoding as one polars pipeline over the whole table: the reference the compiled one must equal.

This was the engine's implementation until the encoding of ten million events had to take seconds:
every per-customer fact is a window expression here, which makes it easy to check by reading.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import polars as pl
import scipy.sparse as sp

from engine.data.id_map import IdMap
from engine.personas.event_encoding import _feature_space, _item_info, _item_matrix
from engine.personas.shopping_context import CONTEXTS, DEFAULT_HOLIDAYS, context_expr
from engine.personas.traits import (
    BRAND_REPEAT,
    BULK,
    BULK_QUANTITY,
    DISCOUNTED,
    FEATURE_MATRIX_DTYPE,
    HABITUAL_BRAND_SHARE,
    NO,
    YES,
    EventFeatures,
    EventFeatureSpace,
)

_MICROSECONDS_PER_DAY = 86_400_000_000
_ARRAYS = ("customer_index", "customer_indptr", "item_index", "weight", "context_index", "brand_code", "day")


def reference_event_features(
    events: pl.DataFrame,
    items: pl.DataFrame,
    customer_ids: IdMap,
    space: EventFeatureSpace | None = None,
    holidays: Iterable[tuple[int, int]] = DEFAULT_HOLIDAYS,
) -> EventFeatures:
    item_info = _item_info(items)
    optional = [c for c in ("discount", "quantity", "channel", "device") if c in events.columns]
    frame = events.select(
        pl.col("customer_id").cast(pl.Utf8), pl.col("item_id").cast(pl.Utf8), "timestamp", *optional
    )
    for column in ("discount", "quantity", "channel", "device"):
        if column not in optional:
            dtype = pl.Float64 if column in ("discount", "quantity") else pl.Utf8
            frame = frame.with_columns(pl.lit(None, dtype=dtype).alias(column))
    frame = frame.join(
        item_info.select("item_id", "_item", "brand", "_brand_code", "price_percentile"),
        on="item_id",
        how="left",
        maintain_order="left",
    )
    customer_frame = pl.DataFrame(
        {"customer_id": customer_ids.ids.tolist(), "_customer": np.arange(len(customer_ids), dtype=np.int64)},
        schema={"customer_id": pl.Utf8, "_customer": pl.Int64},
    )
    frame = frame.join(customer_frame, on="customer_id", how="left", maintain_order="left")
    frame = frame.sort("_customer", "timestamp", maintain_order=True).with_row_index("_row")
    brand_count = pl.when(pl.col("brand").is_not_null()).then(pl.len().over("_customer", "brand"))
    frame = frame.with_columns(
        brand_count.alias("_brand_count"), pl.col("timestamp").dt.epoch("us").alias("_us")
    )
    top_count = pl.col("_brand_count").max().over("_customer")
    branded = pl.col("brand").is_not_null().sum().over("_customer")
    is_habitual = (pl.col("_brand_count") == top_count) | (
        pl.col("_brand_count") >= HABITUAL_BRAND_SHARE * branded
    )
    is_repeat = is_habitual & (pl.col("_brand_count") >= 2)

    def yes_no(unknown: pl.Expr, yes: pl.Expr, name: str) -> pl.Expr:
        return pl.when(unknown).then(None).when(yes).then(pl.lit(YES)).otherwise(pl.lit(NO)).alias(name)

    frame = frame.with_columns(
        yes_no(pl.col("brand").is_null(), is_repeat, BRAND_REPEAT),
        yes_no(pl.col("discount").is_null(), pl.col("discount") > 0, DISCOUNTED),
        yes_no(pl.col("quantity").is_null(), pl.col("quantity") >= BULK_QUANTITY, BULK),
        context_expr("timestamp", holidays)
        .replace_strict({name: i for i, name in enumerate(CONTEXTS)}, return_dtype=pl.Int64)
        .alias("_context"),
        pl.col("_us").floordiv(_MICROSECONDS_PER_DAY).alias("_day"),
    )
    frame = frame.with_columns((1.0 / pl.len().over("_customer", "_item", "_day")).alias("_weight"))
    space = space or _feature_space(frame, item_info)
    item_matrix = _item_matrix(item_info, space)
    item_index = frame["_item"].to_numpy().astype(np.int64)
    rows, cols = [], []
    for group in space.groups:
        if group.item_level:
            continue
        mapping = {value: group.start + i for i, value in enumerate(group.values)}
        coded = frame.select(
            "_row",
            pl.col(group.name).replace_strict(mapping, default=None, return_dtype=pl.Int64).alias("_col"),
        ).drop_nulls()
        rows.append(coded["_row"].to_numpy().astype(np.int64))
        cols.append(coded["_col"].to_numpy().astype(np.int64))
    row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    col = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    event_part = sp.csr_matrix(
        (np.ones(row.size, dtype=FEATURE_MATRIX_DTYPE), (row, col)), shape=(frame.height, space.n_columns)
    )
    matrix = sp.csr_matrix(event_part + item_matrix[item_index])
    matrix.sort_indices()
    customer_index = frame["_customer"].to_numpy().astype(np.int64)
    counts = np.bincount(customer_index, minlength=len(customer_ids))
    return EventFeatures(
        space=space,
        matrix=matrix,
        customer_ids=customer_ids,
        customer_index=customer_index,
        customer_indptr=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        item_ids=IdMap(item_info["item_id"].to_list(), kind="item"),
        item_index=item_index,
        item_matrix=item_matrix,
        weight=frame["_weight"].to_numpy().astype(np.float64),
        context_index=frame["_context"].to_numpy().astype(np.int8),
        price_percentile=frame["price_percentile"]
        .cast(pl.Float64)
        .fill_null(np.nan)
        .to_numpy()
        .astype(np.float64),
        brand_code=frame["_brand_code"].to_numpy().astype(np.int64),
        day=frame["_day"].to_numpy().astype(np.int64),
        timestamp_us=frame["_us"].to_numpy().astype(np.int64),
    )


def assert_same_features(actual: EventFeatures, expected: EventFeatures) -> None:
    assert actual.space == expected.space
    assert actual.matrix.shape == expected.matrix.shape and actual.matrix.dtype == FEATURE_MATRIX_DTYPE
    assert np.array_equal(actual.matrix.indptr, expected.matrix.indptr)
    assert np.array_equal(actual.matrix.indices, expected.matrix.indices)
    assert np.array_equal(actual.matrix.data, expected.matrix.data)
    for name in (*_ARRAYS, "timestamp_us"):
        assert np.array_equal(getattr(actual, name), getattr(expected, name)), name
        expected_dtype = {"weight": np.float64, "context_index": np.int8}.get(name, np.int64)
        assert getattr(actual, name).dtype == expected_dtype, name
    assert np.array_equal(actual.price_percentile, expected.price_percentile, equal_nan=True)
    assert actual.customer_ids == expected.customer_ids and actual.item_ids == expected.item_ids
