"""Events encoded as persona trait features (``EventFeatures``).

Persona inference reads every event of a shop through these features, so their cost is paid on every
training run: ten million events have to encode in seconds. String work (customer and item ids,
channel and device names, the calendar) is done once per batch, in vectorised look-ups over whole
columns that polars runs side by side; what is left is a narrow table of small integers sorted by
customer and time (about 40 bytes an event), from which compiled passes over each customer's run of
events derive the per-customer facts (brand repeats, the weight of repeated events) and write the
rows of the sparse feature matrix in order. Nothing holds a string per event past the look-ups.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import polars as pl
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.data.id_map import MISSING, IdMap, UnknownIdError
from engine.personas.shopping_context import CONTEXTS, DEFAULT_HOLIDAYS, context_expr
from engine.personas.traits import (
    BRAND_REPEAT,
    BULK,
    BULK_QUANTITY,
    CATEGORY,
    CHANNEL,
    DEVICE,
    DISCOUNTED,
    FEATURE_MATRIX_DTYPE,
    HABITUAL_BRAND_SHARE,
    NO,
    PRICE_LEVEL,
    PRICE_LEVELS,
    TAG_PREFIX,
    YES,
    EventFeatures,
    EventFeatureSpace,
    GroupKind,
)

_MICROSECONDS_PER_DAY = 86_400_000_000
# The yes/no event facts, in the order of the rows of ``facts`` in ``_feature_rows``.
_YES_NO_GROUPS: tuple[str, ...] = (DISCOUNTED, BRAND_REPEAT, BULK)


def item_price_levels(items: pl.DataFrame) -> pl.DataFrame:
    """Each item's price percentile within its category (0-1, ties share a value) and its tertile.

    Percentiles are relative to the category because a cheap television still costs more than an
    expensive shampoo: "price level" is about where a shopper picks within a shelf.
    """
    _require_columns(items, ("item_id", "category", "price"), "items")
    rank = pl.col("price").rank("average").over("category")
    size = pl.len().over("category")
    percentile = ((rank - 0.5) / size).alias("price_percentile")
    frame = items.select("item_id", "category", "price").with_columns(percentile)
    level = (
        pl.when(pl.col("price_percentile") < 1 / 3)
        .then(pl.lit(PRICE_LEVELS[0]))
        .when(pl.col("price_percentile") < 2 / 3)
        .then(pl.lit(PRICE_LEVELS[1]))
        .otherwise(pl.lit(PRICE_LEVELS[2]))
        .alias(PRICE_LEVEL)
    )
    return frame.with_columns(level).select("item_id", "price_percentile", PRICE_LEVEL)


def build_event_features(
    events: pl.DataFrame,
    items: pl.DataFrame,
    *,
    customer_ids: IdMap | None = None,
    space: EventFeatureSpace | None = None,
    holidays: Iterable[tuple[int, int]] = DEFAULT_HOLIDAYS,
    indices: tuple[NDArray[np.int64], NDArray[np.int64]] | None = None,
) -> EventFeatures:
    """Encode events as persona trait features.

    ``customer_ids`` fixes the customer rows (customers without events get empty rows); when None the
    map is every customer in ``events``, sorted. Events of customers missing from a given map raise
    UnknownIdError; events naming items missing from ``items`` raise ValueError, as do events without
    a timestamp. ``space`` fixes the vocabulary (values it does not know count as missing); when None
    it is built from the items (categories, tags) and the events (channels, devices).

    ``indices``: each event's row in ``customer_ids`` (MISSING when absent) and in ``items`` (table
    order), when the caller looked them up already (``engine.data.interactions.event_indices``;
    training does, once for these features and its interaction matrix); they are then not looked up
    again.
    """
    _require_columns(events, ("customer_id", "item_id", "timestamp"), "events")
    if indices is not None and customer_ids is None:
        raise ValueError("indices need the customer_ids they index")
    item_info = _item_info(items)
    item_ids = IdMap(item_info["item_id"].to_list(), kind="item")
    if customer_ids is None:
        customer_ids = IdMap(sorted(events["customer_id"].cast(pl.Utf8).unique().to_list()), kind="customer")
    if space is None:
        space = _feature_space(events, item_info)
    table = _coded_events(events, item_info, item_ids, customer_ids, space, tuple(holidays), indices)
    customer_index = table["_customer"].to_numpy().astype(np.int64, copy=False)
    indptr = np.zeros(len(customer_ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(customer_index, minlength=len(customer_ids)), out=indptr[1:])
    item_index = table["_item"].to_numpy().astype(np.int64, copy=False)
    brand_code = table["_brand_code"].to_numpy().astype(np.int64, copy=False)
    timestamp_us = table["_us"].to_numpy()
    day = timestamp_us // _MICROSECONDS_PER_DAY
    facts = np.stack(
        [
            table["_discounted"].to_numpy(),
            _brand_repeats(indptr, brand_code, HABITUAL_BRAND_SHARE),
            table["_bulk"].to_numpy(),
        ]
    )
    fact_columns = np.array(
        [[_column_or_missing(space, group, value) for value in (NO, YES)] for group in _YES_NO_GROUPS],
        dtype=np.int32,
    ).reshape(len(_YES_NO_GROUPS), 2)
    item_matrix = _item_matrix(item_info, space)
    row_indptr, feature_columns = _feature_rows(
        item_matrix.indptr.astype(np.int64),
        item_matrix.indices.astype(np.int32),
        item_index,
        facts,
        fact_columns,
        np.stack([table["_channel"].to_numpy(), table["_device"].to_numpy()]),
    )
    matrix = sp.csr_matrix(
        (np.ones(feature_columns.size, dtype=FEATURE_MATRIX_DTYPE), feature_columns, row_indptr),
        shape=(item_index.size, space.n_columns),
    )
    return EventFeatures(
        space=space,
        matrix=matrix,
        customer_ids=customer_ids,
        customer_index=customer_index,
        customer_indptr=indptr,
        item_ids=item_ids,
        item_index=item_index,
        item_matrix=item_matrix,
        weight=_repeat_weights(indptr, day, item_index),
        context_index=table["_context"].to_numpy(),  # int8: an int64 copy was 80 MB per 10M events
        price_percentile=table["price_percentile"].to_numpy().astype(np.float64, copy=False),
        brand_code=brand_code,
        day=day,
        timestamp_us=timestamp_us.astype(np.int64, copy=False),
    )


def _column_or_missing(space: EventFeatureSpace, group: str, value: str) -> int:
    column = space.column(group, value)
    return -1 if column is None else column


def _coded_events(
    events: pl.DataFrame,
    item_info: pl.DataFrame,
    item_ids: IdMap,
    customer_ids: IdMap,
    space: EventFeatureSpace,
    holidays: tuple[tuple[int, int], ...],
    indices: tuple[NDArray[np.int64], NDArray[np.int64]] | None = None,
) -> pl.DataFrame:
    """The events as small integers and numbers only, sorted by customer then time (stable).

    Every string of the batch is looked up here, once per column: customer and item ids become row
    indices (unless given as ``indices``), channel and device names their feature columns (-1:
    unknown), timestamps microseconds and a context; discount and quantity become yes/no facts (1, 0,
    -1: unknown).
    """
    loaded = events
    columns = events.columns
    wanted = ("timestamp", "discount", "quantity", CHANNEL, DEVICE)
    if indices is None:
        # one chunk per column: the id look-ups build their tables once per chunk (see IdMap.index_expr)
        events = events.select(c for c in ("customer_id", "item_id", *wanted) if c in columns).rechunk()
        ids = [
            customer_ids.index_expr("customer_id", pl.Int64).alias("_customer"),
            item_ids.index_expr("item_id", pl.Int64).alias("_item"),
        ]
    else:
        # ids already looked up: the id columns are not read, and nothing is copied into one chunk (the
        # string columns of ten million events are a gigabyte of memory to touch)
        events = events.select(c for c in wanted if c in columns)
        rows, at = (np.asarray(index) for index in indices)
        if rows.shape != (events.height,) or at.shape != (events.height,):
            raise ValueError(f"indices must be two arrays of {events.height} event rows")
        at = _in_range_or_missing(at, len(item_ids))
        rows = _in_range_or_missing(rows, len(customer_ids))
        ids = [
            pl.lit(pl.Series(rows, dtype=pl.Int64)).alias("_customer"),
            pl.lit(pl.Series(at, dtype=pl.Int64)).alias("_item"),
        ]
    selected = [
        *ids,
        pl.col("timestamp").dt.epoch("us").alias("_us"),
        _yes_no("discount" in columns, "discount", pl.col("discount") > 0).alias("_discounted"),
        _yes_no("quantity" in columns, "quantity", pl.col("quantity") >= BULK_QUANTITY).alias("_bulk"),
    ]
    for group_name in (CHANNEL, DEVICE):
        group = space.group(group_name)
        code = pl.lit(-1, dtype=pl.Int32)
        if group_name in columns and group is not None:
            mapping = {value: group.start + i for i, value in enumerate(group.values)}
            code = (
                pl.col(group_name).cast(pl.Utf8).replace_strict(mapping, default=-1, return_dtype=pl.Int32)
            ).fill_null(-1)
        selected.append(code.alias(f"_{group_name}"))
    table = events.select(*selected)  # polars maps the columns side by side, on all its threads
    customer = table["_customer"].to_numpy()
    if (customer == MISSING).any():
        unknown = loaded.filter(pl.Series(customer == MISSING))["customer_id"].cast(pl.Utf8)
        raise UnknownIdError("customer", unknown.unique(maintain_order=True).to_list())
    at = table["_item"].to_numpy()
    if (at == MISSING).any():
        unknown_items = (
            loaded.filter(pl.Series(at == MISSING))["item_id"].cast(pl.Utf8).unique(maintain_order=True)
        )
        shown = ", ".join(repr(i) for i in unknown_items.head(5).to_list())
        raise ValueError(f"events name {unknown_items.len()} item id(s) missing from items: {shown}")
    brand_code = item_info["_brand_code"].to_numpy()[at]
    price = item_info["price_percentile"].cast(pl.Float64).fill_null(np.nan).to_numpy()[at]
    if table["_us"].null_count() > 0:
        rows = np.flatnonzero(table["_us"].is_null().to_numpy())[:5].tolist()
        raise ValueError(f"events have no timestamp in row(s) {', '.join(map(str, rows))} (0-based)")
    timestamp_us = table["_us"].to_numpy()
    table = table.with_columns(
        pl.Series("_context", _contexts(timestamp_us, holidays, _time_zone(events))),
        pl.Series("_brand_code", brand_code),
        pl.Series("price_percentile", price, nan_to_null=False),
    )
    if _in_customer_time_order(customer, timestamp_us):
        return table  # a stable sort would leave it as it is: no copy of every column
    return table.sort("_customer", "_us", maintain_order=True)


def _in_range_or_missing(index: NDArray[np.integer], size: int) -> NDArray[np.int64]:
    """``index`` with every value outside 0..size-1 made MISSING, as int64; copied only when it must be.

    Looked-up indices are in range or MISSING already, and ten million of them copied are 80 MB of
    fresh memory for nothing.
    """
    values = np.asarray(index)
    # MISSING is -1, the one negative value a look-up gives: min and max say whether all are as wanted
    if values.dtype == np.int64 and (values.size == 0 or (values.min() >= MISSING and values.max() < size)):
        return values
    return np.where((values >= 0) & (values < size), values, MISSING).astype(np.int64, copy=False)


def _in_customer_time_order(customer: NDArray[np.int64], timestamp_us: NDArray[np.int64]) -> bool:
    """Whether the events are sorted by customer, then time (as a generated or exported shop often is)."""
    if customer.size < 2:
        return True
    later_customer = customer[1:] > customer[:-1]
    same_customer = customer[1:] == customer[:-1]
    return bool(np.all(later_customer | (same_customer & (timestamp_us[1:] >= timestamp_us[:-1]))))


def _yes_no(present: bool, column: str, yes: pl.Expr) -> pl.Expr:
    """1 where ``yes`` holds, 0 where it does not, -1 where ``column`` is null or absent."""
    if not present:
        return pl.lit(-1, dtype=pl.Int8)
    return pl.when(pl.col(column).is_null()).then(-1).when(yes).then(1).otherwise(0).cast(pl.Int8)


def _contexts(
    timestamp_us: NDArray[np.int64], holidays: tuple[tuple[int, int], ...], time_zone: str | None
) -> NDArray[np.int8]:
    """Position in CONTEXTS of each timestamp's context, through a table of the days the batch spans.

    The context is a fact of the calendar day (in the column's time zone, UTC by the data contract),
    and a batch spans a few hundred days: the calendar work is done once per day instead of once per
    event (a fifth of the encoding's time before).
    """
    if timestamp_us.size == 0:
        return np.zeros(0, dtype=np.int8)
    if time_zone not in (None, "UTC"):
        local = pl.Series(timestamp_us).cast(pl.Datetime("us", "UTC")).dt.convert_time_zone(time_zone)
        timestamp_us = local.dt.replace_time_zone(None).dt.epoch("us").to_numpy()
    first = int(timestamp_us.min()) // _MICROSECONDS_PER_DAY
    last = int(timestamp_us.max()) // _MICROSECONDS_PER_DAY
    spanned = last - first < 4 * timestamp_us.size + 1_000
    if spanned:
        days = np.arange(first, last + 1, dtype=np.int64)
    else:  # a few events centuries apart: a table of the distinct days instead of the span
        days, position = np.unique(timestamp_us // _MICROSECONDS_PER_DAY, return_inverse=True)
    calendar = pl.DataFrame({"timestamp": days * _MICROSECONDS_PER_DAY}).select(
        pl.col("timestamp").cast(pl.Datetime("us"))
    )
    lookup = calendar.select(
        context_expr("timestamp", holidays).replace_strict(
            {name: i for i, name in enumerate(CONTEXTS)}, return_dtype=pl.Int8
        )
    ).to_series()
    table = np.asarray(lookup.to_numpy(), dtype=np.int8)
    if spanned:
        return _context_of_each_day(timestamp_us, first, table)
    return table[position]


@numba.njit(cache=True, nogil=True)
def _context_of_each_day(
    timestamp_us: NDArray[np.int64], first_day: int, table: NDArray[np.int8]
) -> NDArray[np.int8]:  # pragma: no cover - compiled; tested through build_event_features
    """``table[day - first_day]`` per event, the day taken in the loop: as numpy the days and their
    offsets were two arrays of eight bytes per event (160 MB at ten million events) for a one-byte
    result."""
    out = np.empty(timestamp_us.size, dtype=np.int8)
    for e in range(timestamp_us.size):
        out[e] = table[timestamp_us[e] // _MICROSECONDS_PER_DAY - first_day]
    return out


def _time_zone(events: pl.DataFrame) -> str | None:
    dtype = events.schema["timestamp"]
    return dtype.time_zone if isinstance(dtype, pl.Datetime) else None


@numba.njit(cache=True, nogil=True)
def _equal_counts(keys: NDArray[np.int64], out: NDArray[np.int64]) -> None:  # pragma: no cover
    """``out[i]`` = how many of ``keys`` equal ``keys[i]``; pairwise for short runs, sorted for long."""
    n = keys.size
    if n <= 24:
        for i in range(n):
            count = 0
            for j in range(n):
                if keys[j] == keys[i]:
                    count += 1
            out[i] = count
        return
    order = np.argsort(keys)
    i = 0
    while i < n:
        j = i
        while j < n and keys[order[j]] == keys[order[i]]:
            j += 1
        for m in range(i, j):
            out[order[m]] = j - i
        i = j


@numba.njit(cache=True, nogil=True)
def _brand_repeats(
    indptr: NDArray[np.int64], brand_code: NDArray[np.int64], habitual_share: float
) -> NDArray[np.int8]:  # pragma: no cover - compiled; tested through build_event_features
    """Per event: 1 when its brand is a repeat of a habitual brand of its customer, 0 when not, -1 unbranded.

    A brand is habitual for a customer when it is their most frequent or holds ``habitual_share`` of
    their branded events, and a repeat when also bought twice. Compiled because it groups each
    customer's events by brand: as a window over (customer, brand) in polars it hashed every event,
    here a customer's few events are compared in place.
    """
    out = np.full(brand_code.size, -1, dtype=np.int8)
    count = np.zeros(_longest(indptr), dtype=np.int64)  # one customer's counts at a time
    for c in range(indptr.size - 1):
        start, stop = indptr[c], indptr[c + 1]
        _equal_counts(brand_code[start:stop], count[: stop - start])
        top = branded = 0
        for e in range(start, stop):
            if brand_code[e] >= 0:
                branded += 1
                top = max(top, count[e - start])
        for e in range(start, stop):
            if brand_code[e] >= 0:
                habitual = count[e - start] == top or count[e - start] >= habitual_share * branded
                out[e] = 1 if habitual and count[e - start] >= 2 else 0
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _longest(indptr: NDArray[np.int64]) -> int:  # pragma: no cover - compiled
    """The most events of one customer: the scratch per-customer passes need (not one slot per event,
    which for ten million events was 80 MB of fresh memory per pass)."""
    longest = 0
    for c in range(indptr.size - 1):
        longest = max(longest, indptr[c + 1] - indptr[c])
    return longest


@numba.njit(cache=True, nogil=True)
def _repeat_weights(
    indptr: NDArray[np.int64], day: NDArray[np.int64], item: NDArray[np.int64]
) -> NDArray[np.float64]:  # pragma: no cover - compiled; tested through build_event_features
    """1/(events of the same customer, item and UTC day) per event, events sorted by customer and time.

    A view followed by a cart and a purchase is one decision, and counting it three times would
    triple its evidence. Sorted by time, a customer's events of one day are a contiguous run, so
    each run's items are counted within the run alone.
    """
    weight = np.empty(item.size)
    count = np.empty(_longest(indptr), dtype=np.int64)  # one run's counts at a time
    for c in range(indptr.size - 1):
        start = indptr[c]
        while start < indptr[c + 1]:
            stop = start + 1
            while stop < indptr[c + 1] and day[stop] == day[start]:
                stop += 1
            _equal_counts(item[start:stop], count[: stop - start])
            for e in range(start, stop):
                weight[e] = 1.0 / count[e - start]
            start = stop
    return weight


_PARALLEL_ROWS_FROM = 200_000  # events; below this a second thread costs more than it saves


def _feature_rows(
    item_indptr: NDArray[np.int64],
    item_indices: NDArray[np.int32],
    item_index: NDArray[np.int64],
    facts: NDArray[np.int8],
    fact_columns: NDArray[np.int32],
    coded_columns: NDArray[np.int32],
) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """CSR structure of the event rows: the item's row plus the known event-level columns, sorted.

    ``facts`` (yes/no groups x events) holds 1, 0 or -1 (unknown), ``fact_columns`` (groups x 2) the
    columns of "no" and "yes" (-1: the space lacks the group), ``coded_columns`` (groups x events)
    columns already looked up (channel, device). Its passes are compiled because the rows are short and
    there are millions of them: one pass writes each row in order, where scipy would gather the item
    rows, add a second sparse matrix and sort. Rows are independent once their lengths are known, so both
    passes (lengths, then the rows) run on two threads over halves of the events.
    """
    n = item_index.size
    indptr = np.zeros(n + 1, dtype=np.int64)
    parts = 2 if n >= _PARALLEL_ROWS_FROM else 1
    bounds = [n * i // parts for i in range(parts + 1)]
    halves = list(itertools.pairwise(bounds))

    def lengths(half: tuple[int, int]) -> None:
        _row_lengths(item_indptr, item_index, facts, fact_columns, coded_columns, half[0], half[1], indptr)

    def rows(half: tuple[int, int]) -> None:
        _fill_rows(
            item_indptr, item_indices, item_index, facts, fact_columns, coded_columns, half[0], half[1],
            indptr, indices,
        )  # fmt: skip

    with ThreadPoolExecutor(parts) as pool:
        list(pool.map(lengths, halves))
        np.cumsum(indptr, out=indptr)
        indices = np.empty(indptr[n], dtype=np.int32)
        list(pool.map(rows, halves))
    return indptr, indices


@numba.njit(cache=True, nogil=True, inline="always")
def _event_columns(
    facts: NDArray[np.int8],
    fact_columns: NDArray[np.int32],
    coded_columns: NDArray[np.int32],
    e: int,
    known: NDArray[np.int32],
) -> int:  # pragma: no cover - compiled; tested through build_event_features
    """Event e's known event-level columns (its yes/no facts, then channel and device) into ``known``;
    how many. The one rule both passes of ``_feature_rows`` follow, so lengths and rows agree."""
    count = 0
    for g in range(facts.shape[0]):
        if facts[g, e] >= 0 and fact_columns[g, facts[g, e]] >= 0:
            known[count] = fact_columns[g, facts[g, e]]
            count += 1
    for g in range(coded_columns.shape[0]):
        if coded_columns[g, e] >= 0:
            known[count] = coded_columns[g, e]
            count += 1
    return count


@numba.njit(cache=True, nogil=True)
def _row_lengths(
    item_indptr: NDArray[np.int64],
    item_index: NDArray[np.int64],
    facts: NDArray[np.int8],
    fact_columns: NDArray[np.int32],
    coded_columns: NDArray[np.int32],
    start: int,
    stop: int,
    indptr: NDArray[np.int64],
) -> None:  # pragma: no cover - compiled; tested through build_event_features
    """``indptr[e + 1]`` = the length of event e's row, for events ``start:stop`` (``_feature_rows``)."""
    known = np.empty(facts.shape[0] + coded_columns.shape[0], dtype=np.int32)
    for e in range(start, stop):
        item = item_index[e]
        count = item_indptr[item + 1] - item_indptr[item]
        indptr[e + 1] = count + _event_columns(facts, fact_columns, coded_columns, e, known)


@numba.njit(cache=True, nogil=True)
def _fill_rows(
    item_indptr: NDArray[np.int64],
    item_indices: NDArray[np.int32],
    item_index: NDArray[np.int64],
    facts: NDArray[np.int8],
    fact_columns: NDArray[np.int32],
    coded_columns: NDArray[np.int32],
    start: int,
    stop: int,
    indptr: NDArray[np.int64],
    indices: NDArray[np.int32],
) -> None:  # pragma: no cover - compiled; tested through build_event_features
    """The sorted columns of events ``start:stop`` into their places of ``indices`` (``_feature_rows``)."""
    known = np.empty(facts.shape[0] + coded_columns.shape[0], dtype=np.int32)
    for e in range(start, stop):
        at = indptr[e]
        for j in range(_event_columns(facts, fact_columns, coded_columns, e, known)):
            indices[at] = known[j]
            at += 1
        item = item_index[e]
        for j in range(item_indptr[item], item_indptr[item + 1]):
            indices[at] = item_indices[j]
            at += 1
        # insertion sort of the short row; already in order when event columns come first (as built)
        for i in range(indptr[e] + 1, at):
            value = indices[i]
            j = i - 1
            while j >= indptr[e] and indices[j] > value:
                indices[j + 1] = indices[j]
                j -= 1
            indices[j + 1] = value


def _feature_space(events: pl.DataFrame, item_info: pl.DataFrame) -> EventFeatureSpace:
    """The vocabulary of a batch: categories and tags of the items, channels and devices of the events."""
    tag_values = item_info.select(pl.col("tags").explode()).drop_nulls()["tags"].unique().to_list()
    columns = events.columns
    return EventFeatureSpace.build(
        categories=item_info["category"].unique().to_list(),
        tags=tag_values,
        channels=events["channel"].drop_nulls().unique().to_list() if "channel" in columns else [],
        devices=events["device"].drop_nulls().unique().to_list() if "device" in columns else [],
        quantities=bool(events["quantity"].is_not_null().any()) if "quantity" in columns else False,
    )


def _item_matrix(item_info: pl.DataFrame, space: EventFeatureSpace) -> sp.csr_matrix:
    """(items x columns) 0/1 matrix of the item-level groups; values outside ``space`` are left out."""
    frame = item_info.select("_item", CATEGORY, PRICE_LEVEL, "tags")
    rows: list[NDArray[np.int64]] = []
    cols: list[NDArray[np.int64]] = []
    for group in space.groups:
        if not group.item_level or group.kind is GroupKind.BINARY:
            continue
        mapping = {value: group.start + i for i, value in enumerate(group.values)}
        coded = frame.select(
            "_item",
            pl.col(group.name).replace_strict(mapping, default=None, return_dtype=pl.Int64).alias("_col"),
        ).drop_nulls()
        rows.append(coded["_item"].to_numpy().astype(np.int64))
        cols.append(coded["_col"].to_numpy().astype(np.int64))
    tag_columns = {
        g.name.removeprefix(TAG_PREFIX): g.start for g in space.groups if g.kind is GroupKind.BINARY
    }
    if tag_columns:
        tagged = (
            frame.select("_item", "tags")
            .explode("tags")
            .select(
                "_item",
                pl.col("tags").replace_strict(tag_columns, default=None, return_dtype=pl.Int64).alias("_col"),
            )
            .drop_nulls()
            .unique()
        )
        rows.append(tagged["_item"].to_numpy().astype(np.int64))
        cols.append(tagged["_col"].to_numpy().astype(np.int64))
    row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    col = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    return sp.csr_matrix(
        (np.ones(row.size, dtype=FEATURE_MATRIX_DTYPE), (row, col)), shape=(item_info.height, space.n_columns)
    )


def _item_info(items: pl.DataFrame) -> pl.DataFrame:
    """Per item, in items-table order, the facts events need: index, category, brand, tags, price level."""
    _require_columns(items, ("item_id", "category", "price"), "items")
    levels = item_price_levels(items)
    info = items.select(
        pl.col("item_id").cast(pl.Utf8),
        pl.col("category").cast(pl.Utf8),
        (pl.col("brand") if "brand" in items.columns else pl.lit(None, dtype=pl.Utf8))
        .cast(pl.Utf8)
        .alias("brand"),
        (pl.col("tags") if "tags" in items.columns else pl.lit(None, dtype=pl.List(pl.Utf8)))
        .cast(pl.List(pl.Utf8))
        .alias("tags"),
    ).with_row_index("_item")
    # Brands numbered over the items table, not over a batch of events: every batch then numbers them
    # alike.
    info = info.with_columns(
        pl.col("_item").cast(pl.Int64),
        (pl.col("brand").rank("dense").cast(pl.Int64) - 1).fill_null(-1).alias("_brand_code"),
    )
    return info.join(
        levels.with_columns(pl.col("item_id").cast(pl.Utf8)), on="item_id", how="left", maintain_order="left"
    )


def _require_columns(frame: pl.DataFrame, columns: Sequence[str], table: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{table} table lacks required column(s) {', '.join(missing)}")
