"""The evidence behind a mix: which feature values pulled a customer's events towards each persona.

The computation works on a chunk of customers at once (one sparse product), so ``explain`` for one
customer and ``strongest_signals`` for a million share it; the model methods only validate and chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.personas.inference.behaviour import PersonaBehaviour
from engine.personas.inference.segments import sum_segments
from engine.personas.traits import EventFeatures, EventFeatureSpace, describe_feature


@dataclass(frozen=True)
class SignalContribution:
    """How much one feature value pulled a customer's events towards a persona.

    ``contribution`` is the responsibility-weighted log-likelihood ratio (nats) of that feature under
    the persona versus the population: positive means the customer's events look like the persona's
    there. ``customer_value``/``population_value``/``persona_value`` are shares of events with the value.
    """

    feature: str
    description: str
    customer_value: float
    population_value: float
    persona_value: float
    contribution: float


SIGNAL_VALUES: tuple[str, ...] = ("customer_value", "population_value", "persona_value", "contribution")


@dataclass(frozen=True)
class StrongestSignals:
    """``explain`` for many customers as arrays: per customer and persona the ``top`` strongest columns.

    column:  (customers, personas, top) int32 feature-space column of each signal, strongest first,
             -1 after the last positive contribution.
    values:  per name in ``SIGNAL_VALUES``, (customers, personas, top) float32 (0 where column is -1),
             the fields of ``SignalContribution``.
    names, descriptions: per feature-space column.
    """

    names: tuple[str, ...]
    descriptions: tuple[str, ...]
    column: NDArray[np.int32]
    values: dict[str, NDArray[np.float32]]


@dataclass(frozen=True)
class ColumnFacts:
    """Names, descriptions and group layout of a feature space's columns, for explanations."""

    space: EventFeatureSpace
    names: tuple[str, ...]
    descriptions: tuple[str, ...]
    group: NDArray[np.int64]
    item_columns: NDArray[np.bool_]
    binary_columns: NDArray[np.bool_]

    @classmethod
    def of(cls, space: EventFeatureSpace) -> ColumnFacts:
        names = space.column_names
        return cls(
            space,
            names,
            tuple(describe_feature(name) for name in names),
            space.column_group,
            space.item_columns,
            space.binary_columns,
        )


def strongest_signals_of(
    behaviour: PersonaBehaviour,
    columns: ColumnFacts,
    features: EventFeatures,
    overall: NDArray[np.float64],
    first: int,
    last: int,
    top: int,
) -> tuple[NDArray[np.int32], dict[str, NDArray[np.float64]]]:
    """(customers, personas, top) strongest columns of customers ``first:last`` and their values.

    Per customer c, event e and persona k: responsibility r[e, k] of the persona for the event
    under the customer's mix; per column j the responsibility-weighted count
    W[c, j, k] = sum over c's events of x[e, j] r[e, k], one sparse (customer*column x events)
    product with r for the whole chunk. Contributions follow from W as documented in
    ``PersonaInferenceModel.explain``; columns are ranked per customer and persona (stable, so ties
    keep column order) and only positive contributions kept (-1 pads the rest).
    """
    n_columns, k = behaviour.space.n_columns, len(behaviour.persona_ids)
    indptr = features.customer_indptr
    start, stop = int(indptr[first]), int(indptr[last])
    n = last - first
    lengths = np.diff(indptr[first : last + 1])
    owner = np.repeat(np.arange(n), lengths)
    rows = features.matrix[start:stop]
    scores = np.asarray(rows @ behaviour.parameters) + behaviour.offsets[None, :]
    joint = np.exp(scores - scores.max(axis=1, keepdims=True)) * overall[first:last][owner]
    responsibilities = joint * (features.weight[start:stop] / joint.sum(axis=1))[:, None]
    event_of_entry = np.repeat(np.arange(stop - start), np.diff(rows.indptr))
    cell = owner[event_of_entry] * n_columns + rows.indices
    by_cell = sp.csr_matrix((rows.data, (cell, event_of_entry)), shape=(n * n_columns, stop - start))
    weighted = np.asarray(by_cell @ responsibilities).reshape(n, n_columns, k)
    marginals = behaviour.marginals[None, :, None]
    contribution = weighted * (behaviour.parameters - np.log(behaviour.marginals)[:, None])[None]
    centred = (
        weighted
        - sum_segments(responsibilities.T, indptr[first : last + 1] - start).T[:, None, :] * marginals
    )
    item = columns.item_columns
    contribution[:, item, :] = behaviour.parameters[None, item, :] * centred[:, item, :]
    counts = np.bincount(cell, weights=rows.data, minlength=n * n_columns).astype(np.float64)
    counts = counts.reshape(n, n_columns)
    known = np.bincount(
        np.repeat(np.arange(n), n_columns) * len(behaviour.space.groups) + np.tile(columns.group, n),
        weights=counts.ravel(),
        minlength=n * len(behaviour.space.groups),
    ).reshape(n, len(behaviour.space.groups))[:, columns.group]
    known[:, columns.binary_columns] = lengths[:, None]
    shares = np.divide(counts, known, out=np.zeros_like(counts), where=known > 0)

    ranked = ranked_columns(contribution, top)
    strength = np.take_along_axis(contribution.transpose(0, 2, 1), ranked, axis=2)
    kept = np.logical_and.accumulate(~(strength <= 0), axis=2)
    column = np.where(kept, ranked, -1).astype(np.int32)
    persona = np.broadcast_to(np.arange(k)[None, :, None], ranked.shape)
    values = {
        "customer_value": np.take_along_axis(shares[:, None, :], ranked, axis=2),
        "population_value": behaviour.marginals[ranked],
        "persona_value": behaviour.probabilities[ranked, persona],
        "contribution": strength,
    }
    return column, {name: np.where(kept, value, 0.0) for name, value in values.items()}


def ranked_columns(contribution: NDArray[np.float64], top: int) -> NDArray[np.int64]:
    """(customers, personas, top) columns of the largest contributions, largest first, ties by column.

    What ``np.argsort(-contribution, axis=1, kind="stable")[:, :top, :]`` gives (transposed), without
    sorting all columns to keep three: the sort was a third of explaining a million customers.
    """
    n, n_columns, k = contribution.shape
    top = min(top, n_columns)
    if np.isnan(contribution).any():  # the sort's NaN order is not worth a second code path
        return np.argsort(-contribution, axis=1, kind="stable")[:, :top, :].transpose(0, 2, 1)
    ranked = np.empty((n, k, top), dtype=np.int64)
    _top_columns(np.ascontiguousarray(contribution, dtype=np.float64), ranked)
    return ranked


@numba.njit(cache=True, nogil=True)
def _top_columns(contribution: NDArray[np.float64], ranked: NDArray[np.int64]) -> None:  # pragma: no cover
    """Per customer, one pass over the columns keeping each persona's ``top`` largest by insertion
    (personas innermost, as they lie in memory)."""
    n, n_columns, k = contribution.shape
    top = ranked.shape[2]
    values = np.empty((k, top))
    filled = np.empty(k, dtype=np.int64)
    for i in range(n):
        filled[:] = 0
        for j in range(n_columns):
            for p in range(k):
                value = contribution[i, j, p]
                count = filled[p]
                if count == top and not value > values[p, top - 1]:
                    continue
                slot = count if count < top else top - 1
                while slot > 0 and value > values[p, slot - 1]:  # strict: an equal earlier column stays first
                    values[p, slot] = values[p, slot - 1]
                    ranked[i, p, slot] = ranked[i, p, slot - 1]
                    slot -= 1
                values[p, slot] = value
                ranked[i, p, slot] = j
                if count < top:
                    filled[p] = count + 1
