"""From events to the customer x item confidence matrix that collaborative models learn from.

A purchase says more than a view, so event types carry different confidence weights; repeated events
on the same pair add up, then are compressed with log1p so a customer who viewed one item fifty times
does not drown out everything else they did.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numba
import numpy as np
import polars as pl
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.data.id_map import MISSING, IdMap

DEFAULT_EVENT_WEIGHTS: Mapping[str, float] = {"view": 1.0, "cart": 3.0, "purchase": 5.0}


def empty_csr_matrix(rows: int, columns: int) -> sp.csr_matrix:
    """An all-zero float32 CSR matrix without allocating a dense array."""
    empty = np.zeros(0, dtype=np.int64)
    return sp.csr_matrix((np.zeros(0, dtype=np.float32), (empty, empty)), shape=(rows, columns))


def artifact_event_weights(manifest: Mapping[str, Any]) -> dict[str, float]:
    """The event weights an artifact's models were trained with (``[interactions]``), or the defaults."""
    weights = manifest.get("config", {}).get("interactions")
    if not isinstance(weights, Mapping) or not weights:
        return dict(DEFAULT_EVENT_WEIGHTS)
    return {str(kind): float(weight) for kind, weight in weights.items()}


def interaction_matrix(
    events: pl.DataFrame,
    customers: IdMap,
    items: IdMap,
    *,
    event_weights: Mapping[str, float] = DEFAULT_EVENT_WEIGHTS,
    indices: tuple[NDArray[np.int64], NDArray[np.int64]] | None = None,
) -> sp.csr_matrix:
    """(len(customers), len(items)) float32 CSR of log1p(summed event weights).

    Events whose customer is not in ``customers`` are ignored (callers pass exactly the customers they
    train on, e.g. without the cold-start hold-out); every item must be in ``items``. ``indices`` are
    the events' ``event_indices`` when the caller has them already (training looks them up once for
    the persona features and this matrix).
    """
    if events.height == 0:
        return empty_csr_matrix(len(customers), len(items))
    unknown_types = set(events["event_type"].unique().to_list()) - set(event_weights)
    if unknown_types:
        raise ValueError(f"no confidence weight for event type(s) {sorted(unknown_types)}")
    if indices is None:
        user, item = event_indices(events, customers, items)
    else:
        user, item = (np.asarray(index, dtype=np.int64) for index in indices)
        if user.shape != (events.height,) or item.shape != (events.height,):
            raise ValueError(f"indices must be two arrays of {events.height} event rows")
        if ((user < MISSING) | (user >= len(customers))).any() or ((item < 0) | (item >= len(items))).any():
            raise ValueError("indices must be rows of the customers (or MISSING) and columns of the items")
    weight = events["event_type"].replace_strict(dict(event_weights), return_dtype=pl.Float32).to_numpy()
    keep = user >= 0
    matrix = sp.csr_matrix(
        (weight[keep], (user[keep], item[keep])), shape=(len(customers), len(items)), dtype=np.float32
    )
    matrix.sum_duplicates()
    matrix.data = np.log1p(matrix.data).astype(np.float32)
    return matrix


def interaction_ages(
    events: pl.DataFrame,
    matrix: sp.csr_matrix,
    indices: tuple[NDArray[np.int64], NDArray[np.int64]],
) -> sp.csr_matrix:
    """float32 CSR with the pairs of ``matrix``: days from each pair's latest event to the last event.

    ``matrix`` is ``interaction_matrix`` of the same ``events`` and ``indices`` (their ``event_indices``),
    so the two share their structure and are read side by side (``TrainingSet.interaction_age_days``).
    Ages are measured from the newest event (the end of the training period, the "now" of the models
    fitted on it): what a shop's customers bought last week says more about what they want next than
    what they bought last year, and the recency-weighted persona prior (``engine.models.persona_prior``)
    reads it. One compiled pass over the events finds each one's pair by bisection in its row (ten
    million events in well under a second, no sort and no per-event copies).
    """
    ages = sp.csr_matrix(
        (np.zeros(matrix.nnz, dtype=np.float32), matrix.indices, matrix.indptr), shape=matrix.shape
    )
    if events.height == 0 or matrix.nnz == 0:
        return ages
    micros = events["timestamp"].dt.epoch("us").to_numpy()
    user, item = (np.asarray(index, dtype=np.int64) for index in indices)
    if user.shape != micros.shape or item.shape != micros.shape:
        raise ValueError(f"indices must be two arrays of {events.height} event rows")
    never = np.iinfo(np.int64).min
    latest = np.full(matrix.nnz, never, dtype=np.int64)
    rows, columns = matrix.indptr.astype(np.int64), matrix.indices.astype(np.int64)
    _latest_per_pair(rows, columns, user, item, micros, latest)
    if (latest == never).any():
        raise ValueError(
            "matrix holds pairs without an event: it is not the interaction matrix of these events"
        )
    ages.data = ((int(micros.max()) - latest) / 86_400_000_000.0).astype(np.float32)
    return ages


@numba.njit(cache=True, nogil=True)
def _latest_per_pair(
    indptr: NDArray[np.int64],
    indices: NDArray[np.int64],
    user: NDArray[np.int64],
    item: NDArray[np.int64],
    micros: NDArray[np.int64],
    latest: NDArray[np.int64],
) -> None:  # pragma: no cover - compiled; tested through interaction_ages
    for event in range(len(user)):
        row = user[event]
        if row < 0:
            continue
        low, high = indptr[row], indptr[row + 1]
        while low < high:  # the row's columns are sorted (a canonical matrix)
            middle = (low + high) // 2
            if indices[middle] < item[event]:
                low = middle + 1
            else:
                high = middle
        if low < indptr[row + 1] and indices[low] == item[event] and micros[event] > latest[low]:
            latest[low] = micros[event]


def event_indices(
    events: pl.DataFrame, customers: IdMap, items: IdMap
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Customer rows (MISSING when unknown) and item columns of the events; an unknown item raises.

    Both look-ups run in one ``select`` on one chunk per column, so polars maps the two id columns side
    by side (ten million events each took about a second on their own). Events that come grouped by
    customer in the map's order (``_grouped_customer_rows``) number their customers without a look-up.
    """
    rows = _grouped_customer_rows(events["customer_id"], customers)
    columns, looked_up = ["item_id"], [items.index_expr("item_id").alias("item")]
    if rows is None:
        columns.append("customer_id")
        looked_up.append(customers.index_expr("customer_id").alias("user"))
    mapped = events.select(columns).rechunk().select(looked_up)
    item = mapped["item"].to_numpy()
    if (item == MISSING).any():
        items.to_internal(events["item_id"], strict=True)  # raises UnknownIdError naming them
    return (mapped["user"].to_numpy() if rows is None else rows), item


def _grouped_customer_rows(ids: pl.Series, customers: IdMap) -> NDArray[np.int64] | None:
    """Each event's customer row, when the events come in runs of one customer each whose ids are the
    map's first ids in order; None otherwise.

    A training split's customers are mapped in order of first appearance, so events grouped by customer
    (a generated shop, an export sorted by customer) are numbered by their run: a comparison of each id
    with the one before, where a hash look-up of ten million ids in a million took half a second. The
    runs' ids equal to the map's (distinct) first ids prove that no customer comes back in a later run.
    """
    text = ids.cast(pl.String)
    starts = text.ne_missing(text.shift(1))  # the first row starts a run (its shift is null)
    first_ids = text.filter(starts)
    if first_ids.null_count() or first_ids.len() > len(customers):
        return None
    if not first_ids.equals(customers.id_series.head(first_ids.len()), check_names=False):
        return None
    rows: NDArray[np.int64] = np.cumsum(starts.to_numpy(), dtype=np.int64)
    rows -= 1  # in place: ten million rows are 80 MB of fresh memory per array
    return rows


def relevant_matrix(
    events: pl.DataFrame,
    customers: IdMap,
    items: IdMap,
    *,
    exclude: sp.csr_matrix | None = None,
) -> sp.csr_matrix:
    """Binary held-out positives: pairs with any event, minus the pairs present in ``exclude`` (training).

    Evaluation asks "did the model surface items the customer went on to engage with and had not
    engaged with before", the standard protocol in which already-seen items are filtered from lists.
    """
    user, item = event_indices(events, customers, items)
    keep = user >= 0
    matrix = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (user[keep], item[keep])),
        shape=(len(customers), len(items)),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    if exclude is not None:
        seen = exclude.tocsr(copy=True).astype(np.float32)
        seen.data[:] = 1.0
        matrix = (matrix - matrix.multiply(seen)).tocsr()
        matrix.eliminate_zeros()
    return matrix.astype(np.float32)
