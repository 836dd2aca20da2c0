"""Product lists for many rows at once: one user batch, one query build, then each row's list.

A row is one customer to list products for, under one request's filters, promotions, diversity and
explanations; a batch holds the rows of many requests (the targets of a RecommendProducts call, or
the pages of concurrent Personalize calls), and rows of different requests can differ in everything.
What the rows share is computed once: the model batch (mixes, model rows, demographics) and the query
vectors or score rows of every row; the filters' shared mask and the compiled promotions once per
distinct request (``ListSpec``). Then each row's list is built on its own: candidates from the index
when the model has one (``engine.ranking.candidate_index``), else the full score row, through
``engine.ranking.list_assembly``.

A row's list never depends on the other rows of its batch, to the last bit of every score: a page
served alone and the same page served in a batch of 32 must be identical, or the decision log would
record what cannot be replayed. BLAS products do not give that (a matrix product rounds each row
differently depending on how many rows it multiplies: measured with OpenBLAS, rows of ``U[:n] @ V.T``
differ in the last bit from those of ``U @ V.T`` for every n tried), so every product here is either
row-independent by construction (query vectors, see ``ImplicitFactorsModel.user_vectors``; models
that declare ``row_independent_scores``) or a matrix-vector product per row (the index's candidate
scores, full score rows of inner-product models), and models that guarantee neither are scored one
row at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.data.item_catalog import ItemCatalog
from engine.models.base import Recommender, UserBatch
from engine.personas.mix import PersonaMix
from engine.personas.mix_resolution import MixSource, ResolvedMix
from engine.personas.steering import steering_shares
from engine.ranking.candidate_index import CandidateIndex
from engine.ranking.diversity import DiversitySpace, pool_size
from engine.ranking.filters import ItemFilters
from engine.ranking.list_assembly import ItemReason, ListEntry, assemble_list, ranked_only
from engine.ranking.promotions import CompiledPromotions, Promotions
from engine.ranking.score_explanation import PersonaAffinity
from engine.ranking.unlearned_events import UnlearnedEvents

# Rows scored per model call: bounds the dense (rows x items) score matrix of big batches.
SCORING_CHUNK = 256
_NO_ITEMS = np.zeros(0, dtype=np.int64)


# Not frozen: a page builds dozens of these per call, and a frozen dataclass costs five times as much
# to construct (every field goes through object.__setattr__); results are built per call, never shared.
# No slots either: callers read them as plain records (``vars(item)``).
@dataclass
class RecommendedItem:
    item_id: str
    title: str
    category: str
    brand: str
    price: float
    score: float
    rank: int
    reason: ItemReason
    promotion_id: str = ""
    # (persona id, share), highest first; empty unless the request asked for explanations
    persona_shares: tuple[tuple[str, float], ...] = ()


@dataclass(slots=True)  # per request, like the rows: plain values, cheap to build (frozen costs 5x)
class ListSpec:
    """How one request's lists are built, compiled once for all its rows.

    ``shared`` is the filters' customer-independent mask before their excluded ids
    (``ItemFilters.attribute_mask``: read-only, the catalog's own when only stock is filtered) and
    ``excluded`` those ids' indices, taken out in each customer's mask (``eligible``), which is a copy
    anyway: a page then copies one catalog-sized mask instead of two. ``promotions`` are the request's
    rules and pins compiled for its k.
    """

    k: int
    filters: ItemFilters
    shared: NDArray[np.bool_]
    excluded: NDArray[np.int64]
    promotions: CompiledPromotions
    diversity: float
    explain: bool

    def eligible(
        self, purchased: NDArray[np.integer], excluded: tuple[NDArray[np.int64], ...] = ()
    ) -> NDArray[np.bool_]:
        """One customer's mask: ``ItemFilters.shared_mask`` minus their purchases (unless included) and
        their own ``excluded`` indices (cart, the target's exclusions)."""
        return self.filters.customer_mask(
            self.shared, purchased=purchased, excluded=self._with_request_exclusions(excluded)
        )

    def blocked(
        self, purchased: NDArray[np.integer], excluded: tuple[NDArray[np.int64], ...] = ()
    ) -> list[NDArray[np.integer]]:
        """The item indices ``eligible`` takes out of ``shared`` for one customer
        (``ItemFilters.blocked_items``), as arrays."""
        return self.filters.blocked_items(purchased, self._with_request_exclusions(excluded))

    def _with_request_exclusions(
        self, excluded: tuple[NDArray[np.int64], ...]
    ) -> tuple[NDArray[np.int64], ...]:
        return (self.excluded, *excluded) if self.excluded.size else excluded

    @property
    def plain(self) -> bool:
        """Nothing but the ranking: no promotion rules, pins or diversity."""
        return not self.promotions.rule_ids and not self.promotions.pin_items.size and self.diversity <= 0

    @classmethod
    def compile(
        cls,
        catalog: ItemCatalog,
        *,
        k: int,
        filters: ItemFilters,
        promotions: Promotions,
        diversity: float,
        explain: bool,
    ) -> ListSpec:
        """Raises InvalidRequestError for pins that do not fit (see ``Promotions.check_for``)."""
        return cls(
            k,
            filters,
            filters.attribute_mask(catalog),
            catalog.indices(filters.exclude_item_ids),
            promotions.compile(k, catalog),
            diversity,
            explain,
        )


@dataclass(slots=True)  # one per listed customer per call
class ListRow:
    """One customer's list to build: their resolved mix and model row (-1: unknown to the model), the
    request's spec, and the item indices never to show them (cart, their own exclusions, ...)."""

    resolved: ResolvedMix
    model_row: int
    spec: ListSpec
    excluded: tuple[NDArray[np.int64], ...] = ()
    steering: float | None = None  # this request's steering (engine.personas.steering); None: the builder's


def dense_rows(matrix: sp.csr_matrix, rows: NDArray[np.int64]) -> NDArray[np.floating]:
    """``matrix[rows]`` as a dense array (negative rows count from the end), filled from the CSR arrays
    by one compiled loop: a scipy matrix costs several times that for the few rows of a request, and
    the numpy gather it replaces (ten calls) cost 26 µs for a page batch of six rows."""
    rows = rows % matrix.shape[0]
    out = np.zeros((len(rows), matrix.shape[1]), dtype=matrix.dtype)
    _fill_rows(matrix.indptr, matrix.indices, matrix.data, rows.astype(np.int64, copy=False), out)
    return out


@numba.njit(cache=True, nogil=True)
def _fill_rows(
    indptr: NDArray[np.integer],
    indices: NDArray[np.integer],
    data: NDArray[np.floating],
    rows: NDArray[np.int64],
    out: NDArray[np.floating],
) -> None:
    for i in range(rows.shape[0]):
        row = rows[i]
        for j in range(indptr[row], indptr[row + 1]):
            out[i, indices[j]] = data[j]


def row_indices(matrix: sp.csr_matrix, row: int) -> NDArray[np.int32]:
    """Column indices of one CSR row (negative rows count from the end), without building a matrix."""
    row = row % matrix.shape[0]
    return np.asarray(matrix.indices[matrix.indptr[row] : matrix.indptr[row + 1]])


def _complete(entries: Sequence[ListEntry], promotions: CompiledPromotions, k: int) -> bool:
    """Whether a list built from candidates got everything it asked for: k entries, no backfill, and
    every promotion rule its slots. Otherwise the exact full-catalog path decides (it may find more)."""
    if len(entries) < k or any(e.reason is ItemReason.POPULAR_BACKFILL for e in entries):
        return False
    free = k - len(promotions.pin_items)
    for rule_id, slots in zip(promotions.rule_ids, promotions.rule_slots, strict=True):
        got = sum(1 for e in entries if e.reason is ItemReason.PROMOTED and e.promotion_id == rule_id)
        if got < min(slots, free):
            return False
        free -= got
    return True


def score_rows(model: Recommender, batch: UserBatch) -> NDArray[np.float32]:
    """(rows, items) scores, each row exactly what the model gives that row in a batch of its own."""
    if len(batch) == 1 or model.row_independent_scores:
        return model.score(batch)
    return np.vstack([model.score(batch.rows(np.arange(j, j + 1))) for j in range(len(batch))])


class _ChunkScores:
    """Scores of one chunk of rows, computed only as far as the lists need them.

    With a candidate index only the query vectors are needed; full score rows (and the backfill
    model's) are computed on first use, for rows whose list the candidates could not fill.
    """

    def __init__(self, builder: ProductListBuilder, batch: UserBatch) -> None:
        self._builder = builder
        self._batch = batch
        self._queries: NDArray[np.float32] | None = None
        self._rows: dict[int, NDArray[np.float32]] = {}
        self._full: NDArray[np.float32] | None = None
        self._backfill: NDArray[np.float32] | None = None

    def folded_in(self, j: int) -> bool:
        """Whether row j is a customer the model never saw, placed by their own events."""
        events = self._batch.events
        return (
            events is not None
            and bool(self._batch.user_index[j] < 0)
            and bool(events.indptr[j + 1] > events.indptr[j])
        )

    def queries(self) -> NDArray[np.float32]:
        if self._queries is None:
            self._queries = self._builder.model.query_vectors(self._batch)
        return self._queries

    def query(self, j: int) -> NDArray[np.float32]:
        return self.queries()[j]

    def row(self, j: int) -> NDArray[np.float32]:
        vectors = self._builder.item_vectors
        if vectors is not None:  # one matrix-vector product per row: the same for any batch
            if j not in self._rows:
                self._rows[j] = np.asarray(vectors @ self.query(j), dtype=np.float32)
            return self._rows[j]
        if self._full is None:
            self._full = score_rows(self._builder.model, self._batch)
        return self._full[j]

    def backfill(self, j: int) -> NDArray[np.float32] | None:
        backfill = self._builder.backfill
        if backfill is None:
            return None
        if self._backfill is None:
            self._backfill = score_rows(backfill, self._batch)
        return self._backfill[j]


class ProductListBuilder:
    """Builds the product lists of a batch of rows from one served model (see the module docstring).

    Everything here is fixed at load: the model and its backfill, the candidate index, the catalog,
    per-customer purchases and demographics (each with an empty last row, so row -1 of an unknown
    customer indexes nothing), the mixes known customers were learned under, and the item spaces of
    diversity and explanations.
    """

    def __init__(
        self,
        *,
        model: Recommender,
        backfill: Recommender | None,
        index: CandidateIndex | None,
        catalog: ItemCatalog,
        purchases_padded: sp.csr_matrix,
        demographics_padded: sp.csr_matrix,
        mix_overall: NDArray[np.float64],
        diversity_space: DiversitySpace,
        affinity: PersonaAffinity,
        model_knows_customers: bool,
        steering: float = 0.0,
        unlearned: UnlearnedEvents | None = None,
    ) -> None:
        """A model that folds in events (``Recommender.folds_in_events``) places customers by the
        events it has not learned from, ``unlearned`` (``engine.ranking.unlearned_events``): the
        customers it never saw from their artifact history and live events, known ones from their
        history and what they did since the artifact's data. None, or a model that cannot fold
        events in, scores every customer without."""
        self.model = model
        self.unlearned = unlearned if model.folds_in_events else None
        self.steering = steering
        self.backfill = backfill
        self.index = index
        self.catalog = catalog
        self.item_vectors = model.item_vectors()
        self._purchases = purchases_padded
        self._demographics = demographics_padded
        self._mix_overall = mix_overall
        self.diversity_space = diversity_space
        self.affinity = affinity
        self.model_knows_customers = model_knows_customers
        # Paid at load, not by the first request: the catalog's columns as lists, and the compiled
        # search and top-k (numba compiles them, or reads them from its cache, on first use).
        catalog.listing_columns  # noqa: B018
        ranked_only(np.zeros(1, dtype=np.float32), 1)
        dense_rows(demographics_padded, np.zeros(1, dtype=np.int64))
        if index is not None:
            index.search(np.zeros(index.vectors.shape[1], dtype=np.float32), 1)
            index.search_top_many(
                np.zeros((1, index.vectors.shape[1]), dtype=np.float32),
                1,
                catalog.in_stock_mask,
                np.zeros(2, dtype=np.int64),
                _NO_ITEMS,
            )

    def build(self, rows: Sequence[ListRow]) -> list[list[RecommendedItem]]:
        """Each row's list, in row order; rows are scored in chunks of ``SCORING_CHUNK``."""
        lists: list[list[RecommendedItem]] = []
        for start in range(0, len(rows), SCORING_CHUNK):
            chunk = rows[start : start + SCORING_CHUNK]
            scores = _ChunkScores(self, self.user_batch(chunk))
            tops, short = self._plain_tops(chunk, scores)
            lists.extend(
                self._list_for(row, scores, j, tops.get(j), candidates_short=j in short)
                for j, row in enumerate(chunk)
            )
        return lists

    def _plain_tops(
        self, chunk: Sequence[ListRow], scores: _ChunkScores
    ) -> tuple[dict[int, tuple[NDArray[np.int64], NDArray[np.float32]]], set[int]]:
        """The ranking of every row of the chunk whose list is nothing but the ranking (``plain``),
        from one batch search of the candidate index per filter mask and k: row j's catalog items and
        scores, where the candidates fill the list (other rows take ``_list_for``'s own paths); and the
        rows whose candidates are too few to fill it, which the candidate path would search again
        only to find the same few (they go straight to the full path).

        The rows' purchases and exclusions go to the search as blocked items; their lists are what
        ``_from_candidates`` lists with each row's ``eligible`` mask (tested row by row).
        """
        tops: dict[int, tuple[NDArray[np.int64], NDArray[np.float32]]] = {}
        short: set[int] = set()
        index = self.index
        if index is None:
            return tops, short
        groups: dict[tuple[int, int], list[int]] = {}
        for j, row in enumerate(chunk):
            if row.spec.plain:
                groups.setdefault((id(row.spec.shared), row.spec.k), []).append(j)
        if not groups:
            return tops, short
        queries = scores.queries()
        for (_, k), members in groups.items():
            spec = chunk[members[0]].spec
            parts: list[NDArray[np.integer]] = []
            ends = [0]  # where each row's blocked items end in their concatenation
            for j in members:
                row = chunk[j]
                total = ends[-1]
                for part in row.spec.blocked(self._purchased(row), row.excluded):
                    if len(part):
                        parts.append(part)
                        total += len(part)
                ends.append(total)
            top = index.search_top_many(
                queries if len(members) == len(chunk) else queries[members],
                pool_size(k, 0.0, index.n_items),
                spec.shared,
                np.array(ends, dtype=np.int64),
                np.concatenate(parts) if parts else _NO_ITEMS,
            )
            found, finite = top.found.tolist(), top.finite.tolist()
            for m, j in enumerate(members):
                if found[m] < k:
                    short.add(j)
                elif finite[m]:
                    tops[j] = (top.items[m, :k], top.scores[m, :k])
        return tops, short

    def _purchased(self, row: ListRow) -> NDArray[np.integer]:
        """The customer's purchases: the artifact's and those made since training (live events)."""
        purchased = row_indices(self._purchases, row.resolved.row)
        live = row.resolved.live
        if live is not None and live.purchased_item_ids:  # bought since training, through live events
            purchased = np.concatenate([purchased, self.catalog.indices(live.purchased_item_ids)])
        return purchased

    def user_batch(self, rows: Sequence[ListRow]) -> UserBatch:
        """The model batch of these rows: their mixes, model rows and demographics.

        Known customers' histories were learned under their overall mix; the mix scored here may be
        another (context, live session, request), which the model then puts in its place. A mix given
        in a request also overrides their history by the steering setting (``engine.personas.steering``).
        The batch is marked validated: every value in it is a validated PersonaMix or the artifact's own
        data.
        """
        customer_rows = np.array([row.resolved.row for row in rows], dtype=np.int64)
        user_index = np.array([row.model_row for row in rows], dtype=np.int64)
        mix = np.array([row.resolved.mix.weights for row in rows], dtype=np.float64)
        base_mix = mix.copy()
        modelled = user_index >= 0
        base_mix[modelled] = self._mix_overall[customer_rows[modelled]]
        steering = None
        if any(row.resolved.source is MixSource.REQUEST for row in rows):  # a mix given in a request
            requested = np.array([row.resolved.source is MixSource.REQUEST for row in rows]) & modelled
            settings = np.array([self.steering if row.steering is None else row.steering for row in rows])
            own = base_mix.copy()  # the customer's own mix in the request's context, where known
            for i, row in enumerate(rows):
                if requested[i] and row.resolved.own is not None:
                    own[i] = row.resolved.own.weights
            steering = steering_shares(mix, own, requested, settings)
        return UserBatch(
            user_index=user_index,
            mix=mix,
            demographics=dense_rows(self._demographics, customer_rows),
            base_mix=base_mix,
            validated=True,
            steering=steering,
            events=self._events(rows, user_index, customer_rows),
        )

    def _events(
        self, rows: Sequence[ListRow], user_index: NDArray[np.int64], customer_rows: NDArray[np.int64]
    ) -> sp.csr_matrix | None:
        """The rows' events the model has not learned from (``engine.ranking.unlearned_events``); None
        when no row has any, or the model does not fold events in."""
        if self.unlearned is None:
            return None
        return self.unlearned.rows([row.resolved.live for row in rows], user_index, customer_rows)

    def _list_for(
        self,
        row: ListRow,
        scores: _ChunkScores,
        j: int,
        top: tuple[NDArray[np.int64], NDArray[np.float32]] | None = None,
        *,
        candidates_short: bool = False,
    ) -> list[RecommendedItem]:
        """``top``: the row's ranking from the batch search (``_plain_tops``), when it has one;
        ``candidates_short``: that search found too few candidates to fill the list."""
        spec = row.spec
        resolved = row.resolved
        reason = (
            ItemReason.PERSONALIZED
            if (row.model_row >= 0 and self.model_knows_customers) or scores.folded_in(j)
            else ItemReason.PERSONA
        )
        if top is not None:
            top_items, top_scores = top
            shares = self._shares(resolved.mix, top_items, None) if spec.explain else None
            return self._ranked_items(
                top_items.tolist(), top_scores.astype(np.float64).tolist(), reason, shares
            )
        # A plain list the batch search could not fill goes on to the general paths: with a
        # non-finite score to the candidate path, with too few candidates straight to the full path
        # (the candidate path's search, with the same mask and pool, finds the same few).
        eligible = spec.eligible(self._purchased(row), row.excluded)
        listed = (
            self._from_candidates(scores.query(j), spec, eligible, reason)
            if self.index is not None and not candidates_short
            else None
        )
        if listed is not None:
            entries, catalog_index = listed
        else:
            full = scores.row(j)
            if spec.plain:  # the k best scorable items, as assemble_list picks them, when there are k
                scorable_items = np.flatnonzero(eligible & np.isfinite(full))
                ranked = ranked_only(full[scorable_items], spec.k)
                if ranked is not None and len(scorable_items) >= spec.k:
                    index = scorable_items[ranked[0]]
                    shares = self._shares(resolved.mix, index, None) if spec.explain else None
                    return self._ranked_items(index.tolist(), ranked[1].tolist(), reason, shares)
            scorable = int(np.count_nonzero(eligible & np.isfinite(full)))
            entries = assemble_list(
                k=spec.k,
                scores=full,
                eligible=eligible,
                # Backfill only fills what the model leaves empty: skip scoring it when nothing can be.
                backfill_scores=scores.backfill(j) if scorable < spec.k else None,
                promotions=spec.promotions,
                diversity=spec.diversity,
                space=self.diversity_space,
                model_reason=reason,
            )
            catalog_index = np.fromiter((e.item for e in entries), dtype=np.int64, count=len(entries))
        shares = (
            self._shares(resolved.mix, catalog_index, [e.reason is ItemReason.PINNED for e in entries])
            if spec.explain
            else None
        )
        return self._items(entries, catalog_index.tolist(), shares)

    def _from_candidates(
        self, query: NDArray[np.float32], spec: ListSpec, eligible: NDArray[np.bool_], reason: ItemReason
    ) -> tuple[list[ListEntry], NDArray[np.int64]] | None:
        """The list built from the index's candidates alone, or None when they cannot fill it.

        Entries index the candidates; the array maps them to catalog items (entry by entry).

        The candidates hold every eligible item of the probed lists, so promotion rules and diversity
        work among them as they would over the catalog; pins are added with their exact scores.
        """
        index = self.index
        assert index is not None
        promotions = spec.promotions
        wanted = pool_size(spec.k, spec.diversity, index.n_items) + int(sum(promotions.rule_slots))
        found = index.search(query, wanted, allowed=eligible)
        items, scores = found.items, found.scores
        pins = promotions.pin_items
        plain = not pins.size and not promotions.rule_ids
        if pins.size:
            missing = np.setdiff1d(pins, items)
            items = np.concatenate([items, missing])
            scores = np.concatenate([scores, self._item_scores(query, missing)])
        local_pins = np.zeros(len(pins), dtype=np.int64)
        if pins.size:
            position = {int(item): i for i, item in enumerate(pins.tolist())}
            for i in np.flatnonzero(np.isin(items, pins)).tolist():
                local_pins[position[int(items[i])]] = i
        local = (
            promotions
            if plain
            else CompiledPromotions(
                promotions.rule_ids,
                promotions.rule_masks[:, items],
                promotions.rule_slots,
                local_pins,
                promotions.pin_positions,
            )
        )
        space = self.diversity_space
        entries = assemble_list(
            k=spec.k,
            scores=scores,
            # Candidates are eligible by construction (``allowed``), pins are added regardless.
            eligible=eligible[items] if pins.size else np.ones(len(items), dtype=bool),
            backfill_scores=None,
            promotions=local,
            diversity=spec.diversity,
            space=(
                DiversitySpace(category=space.category[items], persona=space.persona[items])
                if spec.diversity > 0
                else space
            ),
            model_reason=reason,
        )
        if not _complete(entries, local, spec.k):
            return None
        positions = np.fromiter((e.item for e in entries), dtype=np.int64, count=len(entries))
        return entries, items[positions]

    def _item_scores(self, query: NDArray[np.float32], items: NDArray[np.int64]) -> NDArray[np.float32]:
        vectors = self.item_vectors
        assert vectors is not None
        return np.asarray(vectors[items] @ query, dtype=np.float32)

    def _shares(
        self, mix: PersonaMix, catalog_index: NDArray[np.int64], pinned: Sequence[bool] | None
    ) -> list[tuple[tuple[str, float], ...]]:
        """Each listed item's persona shares, highest first (pinned items: none of them, all zero)."""
        if not len(catalog_index):
            return []
        values = self.affinity.shares(mix.weights, catalog_index)
        if pinned is not None and any(pinned):
            values[np.asarray(pinned, dtype=bool)] = 0.0
        # Highest first, ties to the earlier persona (a stable sort of the negated shares).
        order = np.argsort(-values, axis=1, kind="stable")
        ranked = np.take_along_axis(values, order, axis=1).tolist()
        personas = mix.personas
        return [
            tuple((personas[k], share) for k, share in zip(row_order, row_shares, strict=True))
            for row_order, row_shares in zip(order.tolist(), ranked, strict=True)
        ]

    def _ranked_items(
        self,
        index: list[int],
        scores: list[float],
        reason: ItemReason,
        shares: Sequence[tuple[tuple[str, float], ...]] | None,
    ) -> list[RecommendedItem]:
        """Result objects for a list with nothing but the ranking (catalog items ``index``)."""
        ids, titles, categories, brands, prices = self.catalog.listing_columns
        return [
            RecommendedItem(
                ids[i],
                titles[i],
                categories[i],
                brands[i],
                prices[i],
                score,
                n + 1,
                reason,
                "",
                shares[n] if shares is not None else (),
            )
            for n, (i, score) in enumerate(zip(index, scores, strict=True))
        ]

    def _items(
        self,
        entries: Sequence[ListEntry],
        index: list[int],
        shares: Sequence[tuple[tuple[str, float], ...]] | None,
    ) -> list[RecommendedItem]:
        """Result objects for the listed entries (catalog items ``index``)."""
        ids, titles, categories, brands, prices = self.catalog.listing_columns
        return [
            RecommendedItem(
                ids[i],
                titles[i],
                categories[i],
                brands[i],
                prices[i],
                e.score,
                n + 1,
                e.reason,
                e.promotion_id,
                shares[n] if shares is not None else (),
            )
            for n, (e, i) in enumerate(zip(entries, index, strict=True))
        ]
