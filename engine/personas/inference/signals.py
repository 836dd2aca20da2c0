"""The evidence behind a mix: which feature values pulled a customer's events towards each persona.

The computation works on a chunk of customers at once (one sparse product), so ``explain`` for one
customer and ``strongest_signals`` for a million share it; the model methods only validate and chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

from engine.personas.inference.behaviour import PersonaBehaviour
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
# The values that differ from customer to customer; the others are facts of the column (its share of all
# events) and of the column and persona (its share of the persona's events), kept once per column.
CUSTOMER_SIGNAL_VALUES: tuple[str, ...] = ("customer_value", "contribution")


def signal_index_dtype(n_signals: int) -> type[np.signedinteger[Any]]:
    """The narrowest signed integer holding signal indices 0..n_signals-1 and -1 (no signal).

    A shop's feature space and explanation vocabulary are a few dozen signals, so one byte per slot:
    a million customers' (customers, personas, top) slots are 25 MB instead of int32's 100 MB, which
    the training build fills, remaps and writes, and the server maps.
    """
    for dtype in (np.int8, np.int16, np.int32):
        if n_signals <= np.iinfo(dtype).max:
            return dtype
    return np.int64


@dataclass(frozen=True)
class StrongestSignals:
    """``explain`` for many customers as arrays: per customer and persona the ``top`` strongest columns.

    column:  (customers, personas, top) feature-space column of each signal (``signal_index_dtype``),
             -1 after the last positive contribution.
    values:  per name in ``CUSTOMER_SIGNAL_VALUES``, (customers, personas, top) float32 (0 where
             column is -1), those fields of ``SignalContribution``.
    population_value: (columns,) float32, the population's share of events with each column's value.
    persona_value:    (columns, personas) float32, each persona's share.
    names, descriptions: per feature-space column.
    """

    names: tuple[str, ...]
    descriptions: tuple[str, ...]
    column: NDArray[np.integer]
    values: dict[str, NDArray[np.float32]]
    population_value: NDArray[np.float32]
    persona_value: NDArray[np.float32]

    def values_of(self, name: str) -> NDArray[np.float32]:
        """(customers, personas, top) values of any field in ``SIGNAL_VALUES``, 0 where there is no signal."""
        if name in self.values:
            return self.values[name]
        return np.asarray(
            signal_values_of_columns(name, self.column, self.population_value, self.persona_value),
            dtype=np.float32,
        )


def signal_values_of_columns(
    name: str,
    column: NDArray[np.integer],
    population_value: NDArray[np.floating],
    persona_value: NDArray[np.floating],
) -> NDArray[np.floating]:
    """``population_value`` or ``persona_value`` of every signal in ``column`` (customers, personas, top)."""
    present = column >= 0
    at = np.where(present, column, 0)
    if name == "population_value":
        gathered = np.asarray(population_value)[at]
    elif name == "persona_value":
        personas = np.arange(column.shape[1])[None, :, None]
        gathered = np.asarray(persona_value)[at, personas]
    else:
        raise KeyError(f"{name} is not a column's signal value; those are population_value, persona_value")
    return np.where(present, gathered, 0.0).astype(gathered.dtype, copy=False)


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
) -> tuple[NDArray[np.integer], dict[str, NDArray[np.float64]]]:
    """(customers, personas, top) strongest columns of customers ``first:last`` and their values.

    Per customer c, event e and persona k: responsibility r[e, k] of the persona for the event
    under the customer's mix; per column j the responsibility-weighted count
    W[c, j, k] = sum over c's events of x[e, j] r[e, k]. Contributions follow from W as documented in
    ``PersonaInferenceModel.explain``; per customer and persona the columns are ranked (ties keep
    column order) and only positive contributions kept (-1 pads the rest).

    One compiled pass per customer: as numpy expressions over a chunk the step built several
    (customers x columns x personas) arrays and a sparse (customer*column x events) matrix per chunk,
    and explaining a million customers took 20 s; the numpy version is the tests' reference.
    """
    k = len(behaviour.persona_ids)
    n = last - first
    top = min(top, behaviour.space.n_columns)
    column = np.full((n, k, top), -1, dtype=signal_index_dtype(behaviour.space.n_columns))
    values = np.zeros((len(CUSTOMER_SIGNAL_VALUES), n, k, top), dtype=np.float64)
    explain_into(behaviour, columns, features, overall, first, last, column, values)
    return column, {
        name: values[CUSTOMER_SIGNAL_VALUES.index(name)]
        if name in CUSTOMER_SIGNAL_VALUES
        else np.asarray(
            signal_values_of_columns(name, column, behaviour.marginals, behaviour.probabilities),
            dtype=np.float64,
        )
        for name in SIGNAL_VALUES
    }


def explain_into(
    behaviour: PersonaBehaviour,
    columns: ColumnFacts,
    features: EventFeatures,
    overall: NDArray[np.float64],
    first: int,
    last: int,
    column: NDArray[np.integer],
    values: NDArray[np.floating],
) -> None:
    """``strongest_signals_of`` written into ``column`` (customers, personas, top), filled with -1, and
    ``values`` (signal values, customers, personas, top), zeros: views of the whole table's arrays.

    The compiled pass reads the chunk's events where they are, in the encoded matrix's own arrays
    (int32 columns, one-byte ones), and writes float32 results in place: copying each chunk's rows to
    int64 and float64 and its results out again made the explanations of a million customers touch
    about two gigabytes of fresh memory.
    """
    indptr = features.customer_indptr
    matrix = features.matrix
    start, stop = int(indptr[first]), int(indptr[last])
    _explain_customers(
        np.ascontiguousarray(indptr[first : last + 1] - start, dtype=np.int64),
        matrix.indptr[start : stop + 1],
        matrix.indices,
        matrix.data,
        features.weight[start:stop],
        overall[first:last],
        np.ascontiguousarray(behaviour.parameters, dtype=np.float64),
        np.ascontiguousarray(behaviour.offsets, dtype=np.float64),
        np.ascontiguousarray(behaviour.marginals, dtype=np.float64),
        np.ascontiguousarray(behaviour.probabilities, dtype=np.float64),
        np.ascontiguousarray(columns.item_columns, dtype=np.bool_),
        np.ascontiguousarray(columns.binary_columns, dtype=np.bool_),
        np.ascontiguousarray(columns.group, dtype=np.int64),
        len(behaviour.space.groups),
        column,
        values,
    )


@numba.njit(cache=True, nogil=True)
def _explain_customers(
    customer_indptr: NDArray[np.int64],
    event_indptr: NDArray[np.integer],
    event_columns: NDArray[np.integer],
    event_values: NDArray[np.floating],
    weight: NDArray[np.float64],
    overall: NDArray[np.float64],
    parameters: NDArray[np.float64],
    offsets: NDArray[np.float64],
    marginals: NDArray[np.float64],
    probabilities: NDArray[np.float64],
    item_columns: NDArray[np.bool_],
    binary_columns: NDArray[np.bool_],
    column_group: NDArray[np.int64],
    n_groups: int,
    column: NDArray[np.integer],
    values: NDArray[np.floating],
) -> None:  # pragma: no cover - compiled; tested against the numpy reference in test_signals
    """``strongest_signals_of`` for customers ``customer_indptr`` (events relative to the chunk).

    ``event_indptr`` is the chunk's slice of the whole matrix's row pointers: it points into the
    whole ``event_columns`` and ``event_values``, so no rows are copied."""
    n_columns, k = parameters.shape
    top = column.shape[2]
    log_marginals = np.log(marginals)
    weighted = np.zeros((n_columns, k))
    counts = np.zeros(n_columns)
    group_counts = np.zeros(n_groups)
    contribution = np.empty((n_columns, k))
    score = np.empty(k)
    responsibility = np.empty(k)
    total_responsibility = np.empty(k)
    best = np.empty(top)
    best_column = np.empty(top, dtype=np.int64)
    for c in range(customer_indptr.size - 1):
        weighted[:, :] = 0.0
        counts[:] = 0.0
        total_responsibility[:] = 0.0
        first_event, last_event = customer_indptr[c], customer_indptr[c + 1]
        for e in range(first_event, last_event):
            for p in range(k):
                score[p] = offsets[p]
            for q in range(event_indptr[e], event_indptr[e + 1]):
                j, x = event_columns[q], event_values[q]
                for p in range(k):
                    score[p] += x * parameters[j, p]
            highest = score[0]
            for p in range(1, k):
                highest = max(highest, score[p])
            total = 0.0
            for p in range(k):
                responsibility[p] = math.exp(score[p] - highest) * overall[c, p]
                total += responsibility[p]
            scale = weight[e] / total
            for p in range(k):
                responsibility[p] *= scale
                total_responsibility[p] += responsibility[p]
            for q in range(event_indptr[e], event_indptr[e + 1]):
                j, x = event_columns[q], event_values[q]
                counts[j] += x
                for p in range(k):
                    weighted[j, p] += x * responsibility[p]
        group_counts[:] = 0.0
        for j in range(n_columns):
            group_counts[column_group[j]] += counts[j]
            for p in range(k):
                if item_columns[j]:
                    centred = weighted[j, p] - total_responsibility[p] * marginals[j]
                    contribution[j, p] = parameters[j, p] * centred
                else:
                    contribution[j, p] = weighted[j, p] * (parameters[j, p] - log_marginals[j])
        n_events = last_event - first_event
        for p in range(k):
            filled = 0
            for j in range(n_columns):  # the top columns by insertion; strict >: ties keep column order
                value = contribution[j, p]
                if filled == top and not value > best[top - 1]:
                    continue
                slot = filled if filled < top else top - 1
                while slot > 0 and value > best[slot - 1]:
                    best[slot] = best[slot - 1]
                    best_column[slot] = best_column[slot - 1]
                    slot -= 1
                best[slot] = value
                best_column[slot] = j
                if filled < top:
                    filled += 1
            for slot in range(filled):
                if not best[slot] > 0:  # only positive contributions, and none after the first other
                    break
                j = best_column[slot]
                known = float(n_events) if binary_columns[j] else group_counts[column_group[j]]
                column[c, p, slot] = j
                values[0, c, p, slot] = counts[j] / known if known > 0 else 0.0
                values[1, c, p, slot] = best[slot]
