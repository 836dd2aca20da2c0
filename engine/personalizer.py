"""A trained artifact, loaded and verified, answering "what should this customer see".

This is the domain-level entry point that the CLI and the gRPC server share. Per request it resolves
the customer (known to the model, known only to the artifact, or never seen), picks the persona mix
(``engine.personas.mix_resolution``), scores every target of the request in one model batch, applies the
filters, promotions and diversity (``engine.ranking.list_assembly``), explains scores per persona when
asked (``engine.ranking.score_explanation``), and decides offers and the layout
(``engine.decisions.page_decision``).

Everything that does not depend on the request is computed at load: item attribute codes, padded
per-customer matrices, the priors of customers without events, the pure-persona scores behind
explanations and diversity, the compiled offer rules and policies. A request is then look-ups, one
matrix product per batch, masks and a top-k per target.

Every decision carries a decision id (a UUID4 string); the random generator of offers and layouts is
seeded from it, so the same request with the same decision id against the same artifact makes the
same choices, which is what replaying a decision log needs.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.artifact.contents import LoadedArtifact, load_artifact
from engine.data.interactions import empty_csr_matrix
from engine.decisions.decision_policy import DEFAULT_EPSILON, PolicyMode
from engine.decisions.offer_eligibility import EligibilityContext
from engine.decisions.page_decision import (
    LayoutDecision,
    PageDecisions,
    RankedOffer,
    eligibility_context,
    fill_slots,
)
from engine.models.base import Recommender, UserBatch
from engine.personalization_request import CustomerTarget, ProductRequest, SessionContext
from engine.personas.catalog import PersonaCatalog
from engine.personas.explanations import MixExplanations
from engine.personas.mix import PersonaMix
from engine.personas.mix_resolution import (
    UNKNOWN_ROW,
    CustomerMixes,
    LiveMixes,
    MixResolver,
    MixSource,
    ResolvedMix,
)
from engine.personas.profile import PersonaProfile, evidence_for, leading_personas
from engine.personas.shopping_context import CONTEXTS, context_of
from engine.ranking.candidate_index import CandidateIndex, CandidateIndexSettings
from engine.ranking.diversity import DiversitySpace, pool_size
from engine.ranking.filters import ItemFilters
from engine.ranking.list_assembly import ItemReason, ListEntry, assemble_list
from engine.ranking.promotions import CompiledPromotions
from engine.ranking.score_explanation import PersonaAffinity

BACKFILL_MODEL = "persona_popularity"
# Targets scored per model call: bounds the dense (targets x items) score matrix of big batches.
SCORING_CHUNK = 256


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class DecisionInfo:
    """How a response was produced: which mix from where, which model, and the id to log outcomes by."""

    decision_id: str
    mix: PersonaMix
    mix_source: MixSource
    cold_start: bool  # the model has no history for the customer: scored from mix and demographics
    shopping_context: str | None  # None: the overall mix was used (CLI without --context)
    model_version: str
    model_name: str


@dataclass(frozen=True)
class ProductList:
    customer_id: str
    items: list[RecommendedItem]
    decision: DecisionInfo

    @property
    def mix(self) -> PersonaMix:
        return self.decision.mix

    @property
    def cold_start(self) -> bool:
        return self.decision.cold_start

    @property
    def model(self) -> str:
        return self.decision.model_name

    @property
    def model_version(self) -> str:
        return self.decision.model_version


@dataclass(frozen=True)
class PagePersonalization:
    items: list[RecommendedItem]
    offers: list[RankedOffer]
    layout: LayoutDecision | None  # None when the artifact has no layouts table
    decision: DecisionInfo


@dataclass(frozen=True)
class OfferRanking:
    offers: list[RankedOffer]
    decision: DecisionInfo


@dataclass(frozen=True)
class LayoutSelection:
    layout: LayoutDecision | None
    decision: DecisionInfo


@dataclass(frozen=True)
class _Scored:
    """One target after resolution: its mix and model row, and what it must never be shown."""

    target: CustomerTarget
    resolved: ResolvedMix
    model_row: int
    excluded: list[NDArray[np.int64]] = field(default_factory=list)


def new_decision_id() -> str:
    return str(uuid.uuid4())


def decision_rng(decision_id: str) -> np.random.Generator:
    """The random generator of one decision, seeded from its id so the decision can be replayed."""
    try:
        seed = uuid.UUID(decision_id).int
    except ValueError:
        seed = int.from_bytes(decision_id.encode("utf-8"), "big")
    return np.random.default_rng(seed)


def _with_empty_row(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """``matrix`` plus one all-zero last row, so row -1 (unknown customer) indexes an empty row."""
    return sp.csr_matrix(sp.vstack([matrix, empty_csr_matrix(1, matrix.shape[1])], format="csr"))


def _rows_of(matrix: sp.csr_matrix, rows: NDArray[np.int64]) -> sp.csr_matrix:
    """``matrix[rows]`` for a handful of rows, sliced from the CSR arrays (scipy's fancy indexing is
    several times slower for the one or few rows of a request)."""
    rows = rows % matrix.shape[0]
    starts, ends = matrix.indptr[rows], matrix.indptr[rows + 1]
    picked = np.concatenate([np.arange(a, b) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)])
    indptr = np.concatenate([[0], np.cumsum(ends - starts)])
    return sp.csr_matrix(
        (matrix.data[picked], matrix.indices[picked], indptr), shape=(len(rows), matrix.shape[1])
    )


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


def _row_indices(matrix: sp.csr_matrix, row: int) -> NDArray[np.int32]:
    """Column indices of one CSR row (negative rows count from the end), without building a matrix."""
    row = row % matrix.shape[0]
    return np.asarray(matrix.indices[matrix.indptr[row] : matrix.indptr[row + 1]])


class _ChunkScores:
    """Scores of one chunk of targets, computed only as far as a list needs them.

    With a candidate index only the query vectors are needed; the full score rows (and the backfill
    model's) are computed on first use, for targets whose list the candidates could not fill.
    """

    def __init__(self, personalizer: Personalizer, batch: UserBatch) -> None:
        self._personalizer = personalizer
        self._batch = batch
        self._queries: NDArray[np.float32] | None = None
        self._rows: NDArray[np.float32] | None = None
        self._backfill: NDArray[np.float32] | None = None

    def query(self, j: int) -> NDArray[np.float32]:
        if self._queries is None:
            self._queries = self._personalizer.model.query_vectors(self._batch)
        return self._queries[j]

    def row(self, j: int) -> NDArray[np.float32]:
        if self._rows is None:
            self._rows = self._personalizer.model.score(self._batch)
        return self._rows[j]

    def backfill(self, j: int) -> NDArray[np.float32] | None:
        backfill = self._personalizer.backfill
        if backfill is None:
            return None
        if self._backfill is None:
            self._backfill = backfill.score(self._batch)
        return self._backfill[j]


class Personalizer:
    """Serves one model of a verified artifact: product lists, pages, offers, layouts and profiles."""

    def __init__(
        self,
        artifact: LoadedArtifact,
        model_name: str | None = None,
        *,
        decision_epsilon: float = DEFAULT_EPSILON,
        decision_mode: PolicyMode = PolicyMode.EPSILON_GREEDY,
        clock: Callable[[], dt.datetime] | None = None,
        candidate_index: CandidateIndexSettings | None = None,
    ) -> None:
        """``clock`` gives the current time for requests without a timestamp (UTC now by default).

        ``candidate_index`` decides whether the served model is searched through an IVF index
        (``engine.ranking.candidate_index``; built here, at load, for inner-product models over catalogs of
        at least ``min_items``) or scanned in full. Personalizers of other models over the same loaded
        artifact share its arrays.
        """
        self.artifact = artifact
        manifest = artifact.manifest
        self.version = artifact.version
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.catalog: PersonaCatalog = artifact.catalog
        personas = self.catalog.ids
        self.item_catalog = artifact.item_catalog
        self.items = self.item_catalog.ids
        self.customers = artifact.customers
        self.model_customers = artifact.model_customers
        self._model_row = self.model_customers.to_internal(self.customers.ids.tolist(), strict=False)
        self.demographic_space = artifact.demographic_space
        self.demographics = artifact.demographics
        self.history = artifact.history
        # Artifacts written before purchases were stored fall back to all engagement (stricter).
        self.purchases = artifact.purchases if artifact.purchases is not None else self.history
        self._demographics_padded = _with_empty_row(self.demographics)
        self._purchases_padded = _with_empty_row(self.purchases)
        self.mix_overall = artifact.mix_overall
        n_events = artifact.n_events
        self.holidays: tuple[tuple[int, int], ...] = artifact.holidays
        prior = artifact.demographic_prior
        if prior is not None:
            self.mixes = CustomerMixes.with_demographic_prior(
                personas,
                self.customers,
                overall=self.mix_overall,
                by_context=artifact.mix_by_context,
                n_events=n_events,
                prior=prior,
                demographics=self.demographics,
                demographic_space=self.demographic_space,
            )
        else:
            with_events = self.mix_overall[n_events > 0]
            self.mixes = CustomerMixes(
                personas,
                self.customers,
                overall=self.mix_overall,
                by_context=artifact.mix_by_context,
                n_events=n_events,
                population_mix=with_events.mean(axis=0) if len(with_events) else np.ones(len(personas)),
            )
        self.population_mix = self.mixes.population_mix
        self.resolver = MixResolver(self.mixes)  # without live state until ``use_live_state``
        available = list(artifact.models)
        chosen = model_name or manifest.get("summary", {}).get("best_model") or available[0]
        if chosen not in available:
            raise ValueError(
                f"artifact {artifact.path} has no model {chosen!r}; it has {', '.join(available)}"
            )
        self.model_name: str = chosen
        self.model: Recommender = artifact.models[chosen]
        self.backfill: Recommender | None = (
            artifact.models[BACKFILL_MODEL] if BACKFILL_MODEL in available else None
        )
        self.model_knows_customers = self._scores_depend_on_identity()
        self.index_settings = candidate_index or CandidateIndexSettings()
        item_vectors = self.model.item_vectors()
        started = time.perf_counter()
        self.index: CandidateIndex | None = (
            CandidateIndex.build(item_vectors, self.index_settings)
            if item_vectors is not None and self.index_settings.wants_index(len(item_vectors))
            else None
        )
        self.index_build_seconds = time.perf_counter() - started if self.index is not None else 0.0
        self.affinity = PersonaAffinity.of_model(self.model, len(personas), len(self.demographic_space))
        self.diversity_space = DiversitySpace(
            category=self.item_catalog.category_codes, persona=self.affinity.favourite_persona()
        )
        self.explanations: MixExplanations | None = artifact.explanations
        self.decisions = PageDecisions.from_artifact(artifact, epsilon=decision_epsilon, mode=decision_mode)

    def _scores_depend_on_identity(self, sample: int = 3) -> bool:
        """Whether the model scores a known customer differently from a stranger with the same mix.

        Only then is a list PERSONALIZED (built on the customer's own history); a persona popularity
        model, say, scores everyone from their mix alone, so its lists are PERSONA for everyone.
        """
        modelled = np.flatnonzero(self._model_row >= 0)[:sample]
        if modelled.size == 0:
            return False
        known = UserBatch(
            user_index=self._model_row[modelled].astype(np.int64),
            mix=self.mixes.overall[modelled],
            demographics=self.demographics[modelled],
        )
        stranger = UserBatch(np.full(modelled.size, -1, dtype=np.int64), known.mix, known.demographics)
        return not np.allclose(self.model.score(known), self.model.score(stranger))

    @classmethod
    def from_path(cls, path: Path, model_name: str | None = None) -> Personalizer:
        """The personalizer of the verified artifact at ``path`` (see ``load_artifact``)."""
        return cls(load_artifact(path), model_name)

    # ------------------------------------------------------------------ context and mixes

    def shopping_context(self, session: SessionContext) -> str:
        """The request's context: given explicitly, else from its timestamp, else from the clock."""
        if session.shopping_context is not None:
            return session.shopping_context
        moment = session.timestamp or self._clock()
        return context_of(moment.astimezone(dt.UTC), self.holidays)

    def mix_for(self, customer_id: str, context: str | None = None) -> tuple[PersonaMix, bool]:
        """The customer's stored mix (per context when given) and whether the artifact never saw them."""
        row = self.mixes.row_of(customer_id)
        return self.mixes.stored(row, context), row == UNKNOWN_ROW

    def use_live_state(self, live: LiveMixes) -> None:
        """Serve with ``live`` customer state from now on; call before this model serves.

        The resolver is replaced, not changed: one built with the live state from the start, so a
        request that already holds the old one resolves consistently.
        """
        self.resolver = MixResolver(self.mixes, live)

    def with_model(self, model_name: str) -> Personalizer:
        """The same artifact served by another of its models (an experiment arm's), resolving mixes
        exactly as this one does: same customers, same live state."""
        sibling = Personalizer(self.artifact, model_name)
        sibling.resolver = self.resolver
        return sibling

    def persona_mix(self, weights: Mapping[str, float]) -> PersonaMix:
        """A request's weights as a validated mix over the artifact's personas (PersonaMixError if not)."""
        return PersonaMix.from_mapping(weights, self.catalog.ids)

    def _decision(self, resolved: ResolvedMix, context: str | None, decision_id: str) -> DecisionInfo:
        return DecisionInfo(
            decision_id=decision_id,
            mix=resolved.mix,
            mix_source=resolved.source,
            cold_start=self._model_row_of(resolved.row) < 0,
            shopping_context=context,
            model_version=self.version,
            model_name=self.model_name,
        )

    def _model_row_of(self, row: int) -> int:
        return int(self._model_row[row]) if row != UNKNOWN_ROW else -1

    # ------------------------------------------------------------------ products

    def recommend_products(
        self,
        targets: Sequence[CustomerTarget],
        request: ProductRequest,
        session: SessionContext | None = None,
        *,
        decision_ids: Sequence[str] | None = None,
    ) -> list[ProductList]:
        """One product list per target, in order; all targets are scored in one model batch."""
        session = session or SessionContext()
        context = self.shopping_context(session)
        return self._product_lists(targets, request, session, context, decision_ids=decision_ids)

    def _product_lists(
        self,
        targets: Sequence[CustomerTarget],
        request: ProductRequest,
        session: SessionContext,
        context: str | None,
        *,
        decision_ids: Sequence[str] | None = None,
        extra_exclusions: Sequence[NDArray[np.int64]] | None = None,
    ) -> list[ProductList]:
        if decision_ids is not None and len(decision_ids) != len(targets):
            raise ValueError(f"{len(decision_ids)} decision ids for {len(targets)} targets")
        promotions = request.promotions.compile(request.k, self.item_catalog)
        shared = request.filters.shared_mask(self.item_catalog)
        cart = self.item_catalog.indices(session.cart_item_ids)
        scored = []
        for i, target in enumerate(targets):
            resolved = self.resolver.resolve(target.customer_id, target.mix, context)
            excluded = [cart, self.item_catalog.indices(target.exclude_item_ids)]
            if extra_exclusions is not None:
                excluded.append(extra_exclusions[i])
            scored.append(_Scored(target, resolved, self._model_row_of(resolved.row), excluded))
        results: list[ProductList] = []
        for start in range(0, len(scored), SCORING_CHUNK):
            chunk = scored[start : start + SCORING_CHUNK]
            scores = _ChunkScores(self, self._batch(chunk))
            for j, entry in enumerate(chunk):
                items = self._list_for(entry, request, shared, promotions, scores, j)
                number = start + j
                decision_id = decision_ids[number] if decision_ids is not None else new_decision_id()
                results.append(
                    ProductList(
                        entry.target.customer_id, items, self._decision(entry.resolved, context, decision_id)
                    )
                )
        return results

    def scoring_batch(self, customer_ids: Sequence[str], context: str | None = None) -> UserBatch:
        """The model batch these customers are scored with, as requests without a given mix would be
        (for measuring the scoring path, e.g. the candidate index's recall, outside a request)."""
        chunk = []
        for customer_id in customer_ids:
            resolved = self.resolver.resolve(customer_id, None, context)
            chunk.append(_Scored(CustomerTarget(customer_id), resolved, self._model_row_of(resolved.row)))
        return self._batch(chunk)

    def _batch(self, chunk: Sequence[_Scored]) -> UserBatch:
        rows = np.asarray([entry.resolved.row for entry in chunk], dtype=np.int64)
        user_index = np.asarray([entry.model_row for entry in chunk], dtype=np.int64)
        mix = np.vstack([entry.resolved.mix.weights for entry in chunk])
        # Known customers' histories were learned under their overall mix; the mix scored here may be
        # another (context, live session, request), which the model then puts in its place.
        base_mix = mix.copy()
        modelled = np.flatnonzero(user_index >= 0)
        base_mix[modelled] = self.mix_overall[rows[modelled]]
        return UserBatch(
            user_index=user_index,
            mix=mix,
            demographics=_rows_of(self._demographics_padded, rows),
            base_mix=base_mix,
        )

    def _list_for(
        self,
        entry: _Scored,
        request: ProductRequest,
        shared: NDArray[np.bool_],
        promotions: CompiledPromotions,
        scores: _ChunkScores,
        j: int,
    ) -> list[RecommendedItem]:
        purchased = _row_indices(self._purchases_padded, entry.resolved.row)
        live = entry.resolved.live
        if live is not None and live.purchased_item_ids:  # bought since training, through live events
            purchased = np.concatenate([purchased, self.item_catalog.indices(live.purchased_item_ids)])
        eligible = request.filters.customer_mask(shared, purchased=purchased, excluded=entry.excluded)
        reason = (
            ItemReason.PERSONALIZED
            if entry.model_row >= 0 and self.model_knows_customers
            else ItemReason.PERSONA
        )
        listed = (
            self._from_candidates(scores.query(j), request, eligible, promotions, reason)
            if self.index is not None
            else None
        )
        if listed is not None:
            entries, catalog_index = listed
        else:
            row = scores.row(j)
            scorable = int(np.count_nonzero(eligible & np.isfinite(row)))
            entries = assemble_list(
                k=request.k,
                scores=row,
                eligible=eligible,
                # Backfill only fills what the model leaves empty: skip scoring it when nothing can be.
                backfill_scores=scores.backfill(j) if scorable < request.k else None,
                promotions=promotions,
                diversity=request.diversity,
                space=self.diversity_space,
                model_reason=reason,
            )
            catalog_index = np.fromiter((e.item for e in entries), dtype=np.int64, count=len(entries))
        shares = self._shares(entry.resolved.mix, entries, catalog_index) if request.explain else None
        return self._items(entries, catalog_index, shares)

    def _from_candidates(
        self,
        query: NDArray[np.float32],
        request: ProductRequest,
        eligible: NDArray[np.bool_],
        promotions: CompiledPromotions,
        reason: ItemReason,
    ) -> tuple[list[ListEntry], NDArray[np.int64]] | None:
        """The list built from the index's candidates alone, or None when they cannot fill it.

        Entries index the candidates; the array maps them to catalog items (entry by entry).

        The candidates hold every eligible item of the probed lists, so promotion rules and diversity
        work among them as they would over the catalog; pins are added with their exact scores.
        """
        assert self.index is not None
        wanted = pool_size(request.k, request.diversity, self.index.n_items) + int(sum(promotions.rule_slots))
        found = self.index.search(query, wanted, allowed=eligible)
        items, scores = found.items, found.scores
        pins = promotions.pin_items
        if pins.size:
            missing = np.setdiff1d(pins, items)
            items = np.concatenate([items, missing])
            scores = np.concatenate([scores, self._item_scores(query, missing)])
        position = {int(item): i for i, item in enumerate(pins.tolist())}
        local_pins = np.zeros(len(pins), dtype=np.int64)
        if pins.size:
            where = np.flatnonzero(np.isin(items, pins))
            for i in where.tolist():
                local_pins[position[int(items[i])]] = i
        local = CompiledPromotions(
            promotions.rule_ids,
            promotions.rule_masks[:, items],
            promotions.rule_slots,
            local_pins,
            promotions.pin_positions,
        )
        entries = assemble_list(
            k=request.k,
            scores=scores,
            eligible=eligible[items],
            backfill_scores=None,
            promotions=local,
            diversity=request.diversity,
            space=DiversitySpace(
                category=self.diversity_space.category[items], persona=self.diversity_space.persona[items]
            ),
            model_reason=reason,
        )
        if not _complete(entries, local, request.k):
            return None
        positions = np.fromiter((e.item for e in entries), dtype=np.int64, count=len(entries))
        return entries, items[positions]

    def _item_scores(self, query: NDArray[np.float32], items: NDArray[np.int64]) -> NDArray[np.float32]:
        vectors = self.model.item_vectors()
        assert vectors is not None
        return np.asarray(vectors[items] @ query, dtype=np.float32)

    def _shares(
        self, mix: PersonaMix, entries: Sequence[ListEntry], catalog_index: NDArray[np.int64]
    ) -> list[tuple[tuple[str, float], ...]]:
        if not entries:
            return []
        values = self.affinity.shares(mix.weights, catalog_index)
        out = []
        for entry, row in zip(entries, values, strict=True):
            if entry.reason is ItemReason.PINNED:
                row = np.zeros_like(row)
            order = np.lexsort((np.arange(len(row)), -row))
            out.append(tuple((mix.personas[k], float(row[k])) for k in order))
        return out

    def _items(
        self,
        entries: Sequence[ListEntry],
        index: NDArray[np.int64],
        shares: Sequence[tuple[tuple[str, float], ...]] | None,
    ) -> list[RecommendedItem]:
        """Result objects for the listed entries (catalog items ``index``); catalog columns are gathered
        once for the whole list."""
        catalog = self.item_catalog
        ids = catalog.ids.ids[index].tolist()
        titles = catalog.titles[index].tolist()
        categories = catalog.categories[index].tolist()
        brands = catalog.brands[index].tolist()
        prices = catalog.prices[index].tolist()
        return [
            RecommendedItem(
                item_id=str(ids[n]),
                title=titles[n],
                category=categories[n],
                brand=brands[n],
                price=prices[n],
                score=e.score,
                rank=n + 1,
                reason=e.reason,
                promotion_id=e.promotion_id,
                persona_shares=(shares[n] if shares is not None else ()),
            )
            for n, e in enumerate(entries)
        ]

    def recommend(
        self,
        customer_id: str,
        k: int = 10,
        *,
        mix: Mapping[str, float] | PersonaMix | None = None,
        context: str | None = None,
        exclude_seen: bool = True,
    ) -> ProductList:
        """The CLI's view: top-k for a customer, with everything they engaged with left out.

        Unlike the API's default (only purchases are left out), ``exclude_seen`` drops every item the
        customer viewed, carted or bought in training: the offline-evaluation protocol, so the CLI
        shows what the metrics measured. Without ``context`` the overall mix is used.
        """
        given = mix if isinstance(mix, PersonaMix) or mix is None else self.persona_mix(mix)
        row = self.mixes.row_of(customer_id)
        seen = (
            _row_indices(self.history, row).astype(np.int64)
            if exclude_seen and row != UNKNOWN_ROW
            else np.zeros(0, dtype=np.int64)
        )
        return self._product_lists(
            [CustomerTarget(customer_id, given)],
            ProductRequest(k=k, filters=ItemFilters(include_purchased=not exclude_seen)),
            SessionContext(shopping_context=context),
            context,
            extra_exclusions=[seen],
        )[0]

    # ------------------------------------------------------------------ pages, offers and layouts

    def personalize(
        self,
        target: CustomerTarget,
        request: ProductRequest,
        session: SessionContext | None = None,
        *,
        num_offers: int = 3,
        decision_id: str | None = None,
    ) -> PagePersonalization:
        """Products, offers and a filled layout under one mix and one decision id."""
        if num_offers < 1:
            raise ValueError(f"num_offers must be >= 1, got {num_offers}")
        session = session or SessionContext()
        decision_id = decision_id or new_decision_id()
        context = self.shopping_context(session)
        products = self._product_lists([target], request, session, context, decision_ids=[decision_id])[0]
        rng = decision_rng(decision_id)
        mix = products.decision.mix
        offers = self.decisions.rank_offers(mix, self._eligibility(session), num_offers, rng)
        layout = self.decisions.choose_layout(mix, rng)
        if layout is not None:
            slots = fill_slots(
                [slot.name for slot in layout.slots],
                [item.item_id for item in products.items],
                [offer.offer_id for offer in offers],
            )
            layout = LayoutDecision(
                layout.variant_id, layout.description, slots, layout.score, layout.propensity
            )
        return PagePersonalization(products.items, offers, layout, products.decision)

    def _eligibility(self, session: SessionContext) -> EligibilityContext:
        return eligibility_context(
            self.item_catalog,
            self.item_catalog.indices(session.session_item_ids),
            self.item_catalog.indices(session.cart_item_ids),
            session.basket_value,
        )

    def rank_offers(
        self,
        target: CustomerTarget,
        session: SessionContext | None = None,
        *,
        num_offers: int = 3,
        candidate_offer_ids: Sequence[str] = (),
        decision_id: str | None = None,
    ) -> OfferRanking:
        if num_offers < 1:
            raise ValueError(f"num_offers must be >= 1, got {num_offers}")
        session = session or SessionContext()
        decision_id = decision_id or new_decision_id()
        context = self.shopping_context(session)
        resolved = self.resolver.resolve(target.customer_id, target.mix, context)
        offers = self.decisions.rank_offers(
            resolved.mix,
            self._eligibility(session),
            num_offers,
            decision_rng(decision_id),
            candidate_offer_ids,
        )
        return OfferRanking(offers, self._decision(resolved, context, decision_id))

    def select_layout(
        self,
        target: CustomerTarget,
        session: SessionContext | None = None,
        *,
        candidate_variant_ids: Sequence[str] = (),
        decision_id: str | None = None,
    ) -> LayoutSelection:
        session = session or SessionContext()
        decision_id = decision_id or new_decision_id()
        context = self.shopping_context(session)
        resolved = self.resolver.resolve(target.customer_id, target.mix, context)
        layout = self.decisions.choose_layout(resolved.mix, decision_rng(decision_id), candidate_variant_ids)
        return LayoutSelection(layout, self._decision(resolved, context, decision_id))

    # ------------------------------------------------------------------ profiles

    def persona_profile(self, customer_id: str) -> PersonaProfile:
        """Mixes, evidence and leading personas of one customer; unknown ids get a cold-start profile."""
        resolved = self.resolver.resolve(customer_id)
        row = resolved.row
        signals = (
            self.explanations.signals(row)
            if resolved.has_events and self.explanations is not None and row < self.explanations.n_customers
            else {}
        )
        return PersonaProfile(
            customer_id=customer_id,
            cold_start=not resolved.has_events,
            mix=resolved.mix,
            mix_source=resolved.source,
            context_mixes=tuple((c, self.mixes.stored(row, c)) for c in CONTEXTS),
            evidence=evidence_for(resolved.mix, signals) if resolved.has_events else (),
            leading_personas=leading_personas(resolved.mix, self.catalog),
            model_version=self.version,
            drift=resolved.live.drift if resolved.live is not None else None,
        )
