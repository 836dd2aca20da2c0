"""A trained artifact, loaded and verified, answering "what should this customer see".

This is the domain-level entry point that the CLI and the gRPC server share. Per request it resolves
the customer (known to the model, known only to the artifact, or never seen), picks the persona mix
(``engine.personas.mix_resolution``), builds the product lists (``engine.ranking.product_lists``:
filters, promotions, diversity and explanations over one model batch), and decides offers and the
layout (``engine.decisions.page_decision``).

Every scoring call is a batch: ``personalize_many`` serves many pages and ``recommend_products_many``
many product-list requests together, whatever they ask (known, unknown or cold customers, given
mixes, filters, k, promotions, diversity, numbers of offers, explanations), sharing one user batch,
one query build and one scoring pass of the offer and layout policies. The single calls are batches
of one, so a page is served identically alone and in any batch: the same products, scores, offers,
propensities and layout, given the same decision id.

Everything that does not depend on the request is computed at load: item attribute codes, padded
per-customer matrices, the priors of customers without events, the pure-persona scores behind
explanations and diversity, the compiled offer rules and policies. A request is then look-ups, one
query vector, a candidate search or score row, and a top-k.

Every decision carries a decision id (a UUID4 string unless the caller gives one); the draws of its
offers and layout are derived from it (``engine.decisions.decision_draws``), so the same request with
the same decision id against the same artifact makes the same choices, which is what replaying a
decision log needs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.artifact.contents import LoadedArtifact, load_artifact
from engine.data.interactions import empty_csr_matrix
from engine.decisions.decision_draws import DecisionDraws, new_decision_id
from engine.decisions.decision_policy import DEFAULT_EPSILON, PolicyMode
from engine.decisions.offer_eligibility import EligibilityContext
from engine.decisions.page_decision import (
    LayoutDecision,
    PageDecisions,
    RankedOffer,
    eligibility_context,
)
from engine.models.base import Recommender, UserBatch
from engine.personalization_request import (
    CustomerTarget,
    PageRequest,
    ProductListsRequest,
    ProductRequest,
    SessionContext,
)
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
from engine.personas.steering import artifact_steering, check_steering
from engine.ranking.candidate_index import CandidateIndex, CandidateIndexSettings
from engine.ranking.diversity import DiversitySpace
from engine.ranking.filters import ItemFilters
from engine.ranking.product_lists import (
    SCORING_CHUNK,
    ListRow,
    ListSpec,
    ProductListBuilder,
    RecommendedItem,
    row_indices,
)
from engine.ranking.score_explanation import PersonaAffinity
from engine.ranking.unlearned_events import UnlearnedEvents

__all__ = [
    "BACKFILL_MODEL",
    "SCORING_CHUNK",
    "DecisionInfo",
    "LayoutSelection",
    "OfferRanking",
    "PagePersonalization",
    "Personalizer",
    "ProductList",
    "RecommendedItem",
    "new_decision_id",
]

BACKFILL_MODEL = "persona_popularity"
OFFER_STREAM = "offer"  # the decision-draw streams of a page's offers and its layout
LAYOUT_STREAM = "layout"


@dataclass(frozen=True)
class DecisionInfo:
    """How a response was produced: which mix from where, which model, and the id to log outcomes by."""

    decision_id: str
    mix: PersonaMix
    mix_source: MixSource
    # the model never saw the customer: scored from mix and demographics (ALS also folds in the events
    # the artifact holds for them)
    cold_start: bool
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


def _with_empty_row(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """``matrix`` plus one all-zero last row, so row -1 (unknown customer) indexes an empty row."""
    return sp.csr_matrix(sp.vstack([matrix, empty_csr_matrix(1, matrix.shape[1])], format="csr"))


def _ids_for(count: int, given: Sequence[str] | None, what: str) -> list[str]:
    """The decision ids of ``count`` results: the caller's, or new ones."""
    if given is None:
        return [new_decision_id() for _ in range(count)]
    if len(given) != count:
        raise ValueError(f"{len(given)} decision ids for {count} {what}")
    return list(given)


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
        steering: float | None = None,
    ) -> None:
        """``clock`` gives the current time for requests without a timestamp (UTC now by default).

        ``candidate_index`` decides whether the served model is searched through an IVF index
        (``engine.ranking.candidate_index``; built here, at load, for inner-product models over catalogs of
        at least ``min_items``) or scanned in full. Personalizers of other models over the same loaded
        artifact share its arrays.

        ``steering`` is how strongly a mix given in a request overrides a known customer's history
        (``engine.personas.steering``); None takes the artifact's (its training config's
        ``[personas] steering``, the default for artifacts written before the setting existed).
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
        # Every model the artifact holds: an experiment arm may name any of them (``with_model``).
        self.model_names: tuple[str, ...] = tuple(available)
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
        self.steering = check_steering(
            steering if steering is not None else artifact_steering(manifest), "steering"
        )
        self.lists = ProductListBuilder(
            model=self.model,
            backfill=self.backfill,
            index=self.index,
            catalog=self.item_catalog,
            purchases_padded=self._purchases_padded,
            demographics_padded=self._demographics_padded,
            mix_overall=self.mix_overall,
            diversity_space=self.diversity_space,
            affinity=self.affinity,
            model_knows_customers=self.model_knows_customers,
            steering=self.steering,
            unlearned=UnlearnedEvents.of_artifact(manifest, self.history, self.items),
        )

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
        sibling = Personalizer(self.artifact, model_name, steering=self.steering)
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

    def _spec(self, request: ProductRequest, filters: ItemFilters | None = None) -> ListSpec:
        return ListSpec.compile(
            self.item_catalog,
            k=request.k,
            filters=filters or request.filters,
            promotions=request.promotions,
            diversity=request.diversity,
            explain=request.explain,
        )

    def _row(
        self,
        target: CustomerTarget,
        spec: ListSpec,
        context: str | None,
        cart: NDArray[np.int64] | None,
        extra: NDArray[np.int64] | None = None,
    ) -> ListRow:
        """One target resolved into a list row; ``cart`` (indices) and ``extra`` are never listed."""
        resolved = self.resolver.resolve(target.customer_id, target.mix, context)
        excluded = [cart] if cart is not None and cart.size else []
        if target.exclude_item_ids:
            excluded.append(self.item_catalog.indices(target.exclude_item_ids))
        if extra is not None and extra.size:
            excluded.append(extra)
        return ListRow(resolved, self._model_row_of(resolved.row), spec, tuple(excluded))

    def _cart(self, session: SessionContext) -> NDArray[np.int64] | None:
        return self.item_catalog.indices(session.cart_item_ids) if session.cart_item_ids else None

    # ------------------------------------------------------------------ products

    def recommend_products(
        self,
        targets: Sequence[CustomerTarget],
        request: ProductRequest,
        session: SessionContext | None = None,
        *,
        decision_ids: Sequence[str] | None = None,
        overall_mix: bool = False,
    ) -> list[ProductList]:
        """One product list per target, in order; all targets are scored in one model batch."""
        call = ProductListsRequest(tuple(targets), request, session or SessionContext())
        return self.recommend_products_many(
            [call], decision_ids=None if decision_ids is None else [decision_ids], overall_mix=overall_mix
        )[0]

    def recommend_products_many(
        self,
        requests: Sequence[ProductListsRequest],
        *,
        decision_ids: Sequence[Sequence[str]] | None = None,
        overall_mix: bool = False,
    ) -> list[list[ProductList]]:
        """The lists of many requests, scored together; result i is exactly ``recommend_products`` of
        request i (with the same decision ids: ``decision_ids[i]`` holds one per target of request i,
        new ones when not given).

        ``overall_mix``: every customer is scored with their overall mix rather than the mix of the
        session's shopping context, and a mix a target gives steers by its distance from that overall
        mix. A campaign list is not shown at a moment of the week (``recommend`` and
        ``batch-recommend`` without ``--context``); scoring it with the clock's context would make the
        same command give other lists on a Saturday, and a restated own mix would steer.
        """
        if decision_ids is not None and len(decision_ids) != len(requests):
            raise ValueError(f"{len(decision_ids)} decision id lists for {len(requests)} requests")
        ids = [
            _ids_for(len(r.targets), None if decision_ids is None else decision_ids[i], "targets")
            for i, r in enumerate(requests)
        ]
        contexts = [None if overall_mix else self.shopping_context(r.session) for r in requests]
        rows: list[ListRow] = []
        for request, context in zip(requests, contexts, strict=True):
            spec = self._spec(request.products)
            cart = self._cart(request.session)
            rows.extend(self._row(target, spec, context, cart) for target in request.targets)
        lists = iter(zip(rows, self.lists.build(rows), strict=True))
        results = []
        for request, context, request_ids in zip(requests, contexts, ids, strict=True):
            out = []
            for target, decision_id in zip(request.targets, request_ids, strict=True):
                row, items = next(lists)
                out.append(
                    ProductList(target.customer_id, items, self._decision(row.resolved, context, decision_id))
                )
            results.append(out)
        return results

    def scoring_batch(self, customer_ids: Sequence[str], context: str | None = None) -> UserBatch:
        """The model batch these customers are scored with, as requests without a given mix would be
        (for measuring the scoring path, e.g. the candidate index's recall, outside a request)."""
        spec = self._spec(ProductRequest())
        return self.lists.user_batch(
            [self._row(CustomerTarget(c), spec, context, None) for c in customer_ids]
        )

    def recommend(
        self,
        customer_id: str,
        k: int = 10,
        *,
        mix: Mapping[str, float] | PersonaMix | None = None,
        context: str | None = None,
        exclude_seen: bool = True,
        steering: float | None = None,
    ) -> ProductList:
        """One customer's top-k as the offline evaluation scores it, for scripts and notebooks: everything
        they engaged with left out.

        Unlike the API's default (only purchases are left out), ``exclude_seen`` drops every item the
        customer viewed, carted or bought in training: the offline-evaluation protocol, so a caller
        sees what the metrics measured. The CLI's ``recommend`` and ``summary`` show the served lists
        instead (``training.batch_recommend.customer_lists``). Without ``context`` the overall mix is
        used. ``steering`` overrides the personalizer's setting for this call (it matters only when
        ``mix`` is given).
        """
        if steering is not None:
            check_steering(steering, "steering")
        given = mix if isinstance(mix, PersonaMix) or mix is None else self.persona_mix(mix)
        row = self.mixes.row_of(customer_id)
        seen = (
            row_indices(self.history, row).astype(np.int64)
            if exclude_seen and row != UNKNOWN_ROW
            else np.zeros(0, dtype=np.int64)
        )
        spec = self._spec(ProductRequest(k=k), ItemFilters(include_purchased=not exclude_seen))
        listed = self._row(CustomerTarget(customer_id, given), spec, context, None, seen)
        if steering is not None:
            listed = dataclasses.replace(listed, steering=steering)
        items = self.lists.build([listed])[0]
        return ProductList(customer_id, items, self._decision(listed.resolved, context, new_decision_id()))

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
        page = PageRequest(target, request, session or SessionContext(), num_offers)
        return self.personalize_many([page], decision_ids=None if decision_id is None else [decision_id])[0]

    def personalize_many(
        self, requests: Sequence[PageRequest], *, decision_ids: Sequence[str] | None = None
    ) -> list[PagePersonalization]:
        """Many pages scored together; page i is exactly ``personalize`` of request i with decision id
        ``decision_ids[i]`` (new ids when not given).

        Offers and layouts are decided for every page in one pass of each policy (the expected scores
        of all mixes at once), each page then drawing from its own decision id's streams.
        """
        ids = _ids_for(len(requests), decision_ids, "pages")
        for request in requests:
            if request.num_offers < 1:
                raise ValueError(f"num_offers must be >= 1, got {request.num_offers}")
        contexts = [self.shopping_context(r.session) for r in requests]
        rows = [
            self._row(r.target, self._spec(r.products), context, self._cart(r.session))
            for r, context in zip(requests, contexts, strict=True)
        ]
        items = self.lists.build(rows)
        mixes = [row.resolved.mix for row in rows]
        catalog = self.item_catalog
        offers = self.decisions.rank_offers_many(
            mixes,
            self.decisions.page_eligibility_many(
                [catalog.indices(r.session.session_item_ids) for r in requests],
                [catalog.indices(r.session.cart_item_ids) for r in requests],
                [r.session.basket_value for r in requests],
            ),
            [r.num_offers for r in requests],
            [DecisionDraws(i, OFFER_STREAM) for i in ids],
        )
        layouts = self.decisions.choose_layouts_many(
            mixes,
            [DecisionDraws(i, LAYOUT_STREAM) for i in ids],
            [
                ([item.item_id for item in listed], [offer.offer_id for offer in offered])
                for listed, offered in zip(items, offers, strict=True)
            ],
        )
        return [
            PagePersonalization(listed, offered, layout, self._decision(row.resolved, context, decision_id))
            for row, listed, offered, layout, context, decision_id in zip(
                rows, items, offers, layouts, contexts, ids, strict=True
            )
        ]

    def _eligibility(self, session: SessionContext) -> EligibilityContext:
        catalog = self.item_catalog
        return eligibility_context(
            catalog,
            catalog.indices(session.session_item_ids),
            catalog.indices(session.cart_item_ids),
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
            DecisionDraws(decision_id, OFFER_STREAM),
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
        layout = self.decisions.choose_layout(
            resolved.mix, DecisionDraws(decision_id, LAYOUT_STREAM), candidate_variant_ids
        )
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
