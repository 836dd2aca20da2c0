"""The numpy explanation step that the compiled one in ``engine.personas.inference.signals`` replaced.

Kept as the tests' reference: the compiled step must give the same columns and values.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.personas.inference.behaviour import PersonaBehaviour
from engine.personas.inference.segments import sum_segments
from engine.personas.inference.signals import ColumnFacts
from engine.personas.traits import EventFeatures


def reference_strongest_signals_of(
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

    ranked = np.argsort(-contribution, axis=1, kind="stable")[:, :top, :].transpose(0, 2, 1)
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
