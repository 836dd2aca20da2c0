"""The events a served model has not learned from, per request row: what it folds in to place a customer.

A model that can solve a customer's vector from their events (``Recommender.folds_in_events``: ALS,
the linear autoencoder and blends of them) is given, per row of a batch, the events it should solve
from, in the form of its training matrix (log1p of the summed event weights per item):

- a customer the model never saw (a cold-start hold-out, an id first seen after training): their
  history in the artifact, their live events since the artifact's data, and everything they bought
  live (the bought list outlasts the kept events);
- a customer the model knows, once they did something since the artifact's data: their whole history
  and those live events. Without this a live session reached a known customer's list only through
  their persona mix, which weighs little against their own vector: four views of tech items moved a
  demo customer's mix from bargain hunter 0.95 to tech savvy 0.55 and brought one tech item into the
  top 5. Folding the first test day of each known customer into their ALS vector raised NDCG@10 on
  the rest of the test period by +0.0029 [+0.0006, +0.0055] on the synthetic shop (1,998 customers;
  ``persona-engine evaluate``, which measures it on every artifact: ``training.session_evaluation``,
  which builds its rows here).

Only live events after the artifact's data (``served_models.data_until``) count for a customer the
artifact holds: live state outlives reloads, and an artifact retrained on the server's event log has
learned the older ones already. An id the artifact has never seen brings only new events. Events of
types the artifact gives no weight are left out, as training leaves them out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.artifact.manifest import served_data_until
from engine.data.contract import PURCHASE
from engine.data.id_map import IdMap
from engine.data.interactions import artifact_event_weights
from engine.personas.mix_resolution import LiveView

_MAX_REMEMBERED = 20_000  # rows remembered for the pages of live sessions
_UNKNOWN = object()


def artifact_data_until(manifest: Mapping[str, Any]) -> float | None:
    """UTC seconds of the newest event or decision the artifact's models were fitted on, or None for an
    artifact that does not record it (every live event then counts as new)."""
    moment = served_data_until(manifest)
    return None if moment is None else moment.timestamp()


def artifact_folds_in_live_events(manifest: Mapping[str, Any]) -> bool:
    """``[output] fold_in_live_events`` of the artifact's training config (on for older artifacts)."""
    output = manifest.get("config", {}).get("output", {})
    return bool(output.get("fold_in_live_events", True)) if isinstance(output, Mapping) else True


@dataclass(frozen=True)
class UnlearnedEvents:
    """Builds a batch's ``UserBatch.events`` (see the module docstring); fixed at load.

    ``history`` is the artifact's events per customer (referenced, not copied), ``items`` the item ids
    of its columns, ``event_weights`` the training matrix's weight per event type, ``data_until`` the
    artifact's ``artifact_data_until``, ``known_customers`` whether known customers' live events are
    folded in at all.
    """

    history: sp.csr_matrix
    items: IdMap
    event_weights: Mapping[str, float]
    data_until: float | None = None
    known_customers: bool = True
    _memo: dict[tuple[Any, ...], Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def of_artifact(
        cls, manifest: Mapping[str, Any], history: sp.csr_matrix, items: IdMap
    ) -> UnlearnedEvents:
        return cls(
            history=history,
            items=items,
            event_weights=artifact_event_weights(manifest),
            data_until=artifact_data_until(manifest),
            known_customers=artifact_folds_in_live_events(manifest),
        )

    def forget(self) -> None:
        """Drop the remembered rows: what the first page after a customer's new event costs."""
        self._memo.clear()

    def rows(
        self,
        lives: Sequence[LiveView | None],
        user_index: NDArray[np.int64],
        customer_rows: NDArray[np.int64],
    ) -> sp.csr_matrix | None:
        """(len(lives), n_items) CSR of each row's unlearned events, empty for a row with none; None when
        no row has any. ``user_index`` is each row's model row (-1: unknown to the model),
        ``customer_rows`` its artifact row (-1: unknown to the artifact)."""
        built: list[tuple[int, NDArray[np.integer], NDArray[np.floating]]] = []
        memo = self._memo
        for i, live in enumerate(lives):
            known = bool(user_index[i] >= 0)
            if known and not self.known_customers:
                continue
            customer = int(customer_rows[i])
            if live is None:
                row = None if known else self._row(None, known, customer)
            else:  # the pages of a session between two of its events build the same row
                key = (customer, known, live.events, () if known else live.purchased_item_ids)
                row = memo.get(key, _UNKNOWN)
                if row is _UNKNOWN:
                    row = self._row(live, known, customer)
                    if len(memo) >= _MAX_REMEMBERED:
                        memo.clear()  # a crude bound: the next pages refill what is still in use
                    memo[key] = row
            if row is not None:
                built.append((i, *row))
        if not built:
            return None
        # Straight into CSR (rows come in order, items are distinct within a row): scipy's COO route
        # would sort and sum duplicates on every such page.
        # int32 throughout: scipy then takes the arrays as they are instead of checking their contents.
        lengths = np.zeros(len(lives), dtype=np.int32)
        lengths[[i for i, _, _ in built]] = [items.size for _, items, _ in built]
        indptr = np.concatenate([np.zeros(1, dtype=np.int32), np.cumsum(lengths, dtype=np.int32)])
        columns = np.concatenate([items for _, items, _ in built]).astype(np.int32)
        values = np.concatenate([values for _, _, values in built]).astype(np.float32)
        return sp.csr_matrix((values, columns, indptr), shape=(len(lives), self.history.shape[1]))

    def _row(
        self, live: LiveView | None, known: bool, customer: int
    ) -> tuple[NDArray[np.integer], NDArray[np.floating]] | None:
        """One row's items and values (log1p of summed weights), or None when it has nothing to fold in."""
        history = self.history
        start, end = (history.indptr[customer], history.indptr[customer + 1]) if customer >= 0 else (0, 0)
        new_items, new_weights = self._live_weights(live, known, customer >= 0)
        if not new_items.size:
            if not known and end > start:  # the history as training holds it, to the bit
                return history.indices[start:end], history.data[start:end]
            return None
        return _merged(history.indices[start:end], history.data[start:end], new_items, new_weights)

    def _live_weights(
        self, live: LiveView | None, known: bool, in_artifact: bool
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """The item index and weight of each live event the model has not learned from: for a customer
        the artifact holds, those after its data; for an id it has never seen, all of them."""
        if live is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        weights = self.event_weights
        since = self.data_until if in_artifact and self.data_until is not None else -np.inf
        fresh = [e for e in live.events if e.timestamp > since and weights.get(e.event_type, 0.0) > 0]
        item_ids = [e.item_id for e in fresh]
        amounts = [weights[e.event_type] for e in fresh]
        purchase = weights.get(PURCHASE, 0.0)
        if not known and purchase > 0:  # bought live, though the purchase event is no longer kept
            kept = {e.item_id for e in fresh if e.event_type == PURCHASE}
            bought = [item for item in live.purchased_item_ids if item not in kept]
            item_ids += bought
            amounts += [purchase] * len(bought)
        if not item_ids:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        indices = self.items.to_internal(item_ids, strict=False).astype(np.int64)
        present = indices >= 0  # kept under an artifact with another catalog, say
        return indices[present], np.asarray(amounts, dtype=np.float64)[present]


@numba.njit(nogil=True, cache=True)
def _merged(
    history_items: NDArray[np.integer],
    history_values: NDArray[np.floating],
    new_items: NDArray[np.int64],
    new_weights: NDArray[np.float64],
) -> tuple[NDArray[np.int32], NDArray[np.float32]]:  # pragma: no cover - compiled; tested through rows
    """A row of history (log1p of summed weights) with live events added: the items in order, each the
    log1p of its summed weights, summed history first and then event by event, as training sums them.
    Compiled: the numpy steps (unique, bincount, the logs) cost a first page 15 us in per-call overhead."""
    n_history, total = history_items.size, history_items.size + new_items.size
    items = np.empty(total, dtype=np.int64)
    weights = np.empty(total, dtype=np.float64)
    for i in range(n_history):
        items[i] = history_items[i]
        weights[i] = np.expm1(np.float64(history_values[i]))
    for i in range(new_items.size):
        items[n_history + i] = new_items[i]
        weights[n_history + i] = new_weights[i]
    order = np.argsort(items, kind="mergesort")  # stable: an item's weights add up in the order above
    merged_items = np.empty(total, dtype=np.int32)
    sums = np.empty(total, dtype=np.float64)
    n = 0
    for at in order:
        if n > 0 and merged_items[n - 1] == items[at]:
            sums[n - 1] += weights[at]
        else:
            merged_items[n] = items[at]
            sums[n] = weights[at]
            n += 1
    values = np.empty(n, dtype=np.float32)
    for i in range(n):
        values[i] = np.float32(np.log1p(sums[i]))
    return merged_items[:n].copy(), values
