"""The PersonalizationService RPCs: protobuf in, engine core, protobuf out.

Each call reads the serving model once (``ModelHolder.current()``) and uses that object from
validation to response, so a reload in the middle of a call never mixes two models. The work of a
call is split in two: translating and validating the request (``serving.request_validation``), then
serving it with the engine (``engine.personalizer``). Between the two the caller's deadline is
checked, so a request whose deadline has already passed is refused with DEADLINE_EXCEEDED before any
scoring is done.

Errors: a request outside the documented limits is INVALID_ARGUMENT with the message naming the field
path; anything unexpected is logged with its traceback and answered INTERNAL with a generic message,
so internal details (paths, array shapes, library messages) never reach callers. Request counts and
latency are measured by the server's interceptor; this module records what only it knows: whether
each customer was served cold, and which offers and layouts were chosen.

The live loop: with an event log configured, every offer and layout served by Personalize, RankOffers
and SelectLayout is queued for the decision log (``engine.live.decision_log_writer``; off the request path),
and RecordEvents checks a batch record by record (``serving.event_translation``), appends the valid
records to the log in one durable transaction, and only then hands the newly accepted ones (never a
retried duplicate) to the registered ``LiveEventObserver``s. An observer that fails is logged and
skipped: the records are already durable and acknowledged, and the caller must not retry them.
Observers run on the handler threads, so several calls may reach one observer at once, and with
several worker processes each process's observers see only the batches that process stored.

Experiments (with ``live``, ``engine.live.decisions``): each request's customer is assigned an
experiment arm, which every response names and every logged decision records with the journey stage.
An arm may use another recommender of the artifact, and an ``online-bandit`` arm gets its offers and
layout from the online bandit instead of the artifact's policy; the bandit learns from RecordEvents.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

import grpc

from engine.decisions.experiment import ArmPolicy
from engine.decisions.journey_stage import JourneyStage
from engine.decisions.page_decision import LayoutDecision, RankedOffer
from engine.invalid_request import InvalidRequestError
from engine.live.decision_log_writer import DecisionLogWriter, served_arms
from engine.live.decisions import Assignment, LiveDecisions
from engine.live.event_log import EventLog
from engine.live.events import LiveEventObserver
from engine.personalization_request import SessionContext
from engine.personalizer import DecisionInfo, Personalizer, ProductList, RecommendedItem
from engine.personas.catalog import Persona
from engine.personas.drift import DriftStatus
from engine.personas.mix import PersonaMix
from engine.personas.mix_resolution import MixSource
from engine.personas.profile import PersonaProfile, by_weight
from engine.personas.shopping_context import CONTEXTS
from engine.ranking.list_assembly import ItemReason
from serving import event_translation
from serving import request_validation as validate
from serving.generated.persona.v1 import personalization_service_pb2 as pb
from serving.generated.persona.v1 import personalization_service_pb2_grpc as pb_grpc
from serving.generated.persona.v1 import types_pb2
from serving.metrics import ServingMetrics
from serving.model_holder import ModelHolder

LOGGER = logging.getLogger("persona_engine.personalization")

MIX_SOURCES: Final = {
    MixSource.REQUEST: types_pb2.PERSONA_MIX_SOURCE_REQUEST,
    MixSource.INFERRED: types_pb2.PERSONA_MIX_SOURCE_INFERRED,
    MixSource.PRIOR: types_pb2.PERSONA_MIX_SOURCE_PRIOR,
    MixSource.LIVE: types_pb2.PERSONA_MIX_SOURCE_LIVE,
}
SHOPPING_CONTEXT_VALUES: Final = {name: value for value, name in validate.SHOPPING_CONTEXTS.items()}
# Looked up once: an enum lookup by name per item costs more than building the rest of the item.
REASON_CODES: Final = {
    reason: types_pb2.ReasonCode.Value(f"REASON_CODE_{reason.value.upper()}") for reason in ItemReason
}

_Call = TypeVar("_Call")
_Response = TypeVar("_Response")


def mix_to_proto(mix: PersonaMix) -> types_pb2.PersonaMix:
    """Every persona, highest weight first, ties in catalog order (as the contract promises)."""
    return types_pb2.PersonaMix(
        weights=[
            types_pb2.PersonaWeight(persona_id=mix.personas[k], weight=float(mix.weights[k]))
            for k in by_weight(mix)
        ]
    )


def decision_to_proto(decision: DecisionInfo) -> types_pb2.DecisionInfo:
    return types_pb2.DecisionInfo(
        decision_id=decision.decision_id,
        persona_mix=mix_to_proto(decision.mix),
        persona_mix_source=MIX_SOURCES[decision.mix_source],
        cold_start=decision.cold_start,
        shopping_context=SHOPPING_CONTEXT_VALUES.get(
            decision.shopping_context or "", types_pb2.SHOPPING_CONTEXT_UNSPECIFIED
        ),
        model_version=decision.model_version,
        model_name=decision.model_name,
    )


def item_to_proto(item: RecommendedItem) -> types_pb2.RecommendedItem:
    message = types_pb2.RecommendedItem(
        item_id=item.item_id,
        score=item.score,
        rank=item.rank,
        title=item.title,
        category=item.category,
        brand=item.brand,
        price=item.price,
        reason=REASON_CODES[item.reason],
        promotion_id=item.promotion_id,
    )
    if item.persona_shares:
        message.persona_contributions.extend(
            types_pb2.PersonaContribution(persona_id=persona, share=share)
            for persona, share in item.persona_shares
        )
    return message


_OFFER_KINDS: Final = {name: types_pb2.OfferKind.Value(name) for name in types_pb2.OfferKind.keys()}  # noqa: SIM118


def offer_kind(kind: str) -> types_pb2.OfferKind.ValueType:
    return _OFFER_KINDS.get(f"OFFER_KIND_{kind.upper()}", types_pb2.OFFER_KIND_UNSPECIFIED)


def offer_to_proto(offer: RankedOffer) -> types_pb2.RankedOffer:
    return types_pb2.RankedOffer(
        offer_id=offer.offer_id,
        kind=offer_kind(offer.kind),
        description=offer.description,
        rank=offer.rank,
        score=offer.score,
        propensity=offer.propensity,
        reason=offer.reason,
    )


def layout_to_proto(layout: LayoutDecision) -> types_pb2.LayoutDecision:
    return types_pb2.LayoutDecision(
        variant_id=layout.variant_id,
        description=layout.description,
        slots=[
            types_pb2.LayoutSlot(name=slot.name, item_ids=list(slot.item_ids), offer_ids=list(slot.offer_ids))
            for slot in layout.slots
        ],
        score=layout.score,
        propensity=layout.propensity,
    )


def drift_to_proto(drift: DriftStatus) -> pb.DriftStatus:
    message = pb.DriftStatus(
        drifting=drift.drifting,
        divergence=drift.divergence,
        from_persona_id=drift.from_persona,
        to_persona_id=drift.to_persona,
    )
    if drift.since is not None:
        message.since.FromDatetime(drift.since)
    return message


def profile_to_proto(profile: PersonaProfile) -> pb.GetPersonaProfileResponse:
    """Drift is set only when the server keeps live state for the customer (events recorded live)."""
    response = pb.GetPersonaProfileResponse(
        customer_id=profile.customer_id,
        cold_start=profile.cold_start,
        persona_mix=mix_to_proto(profile.mix),
        persona_mix_source=MIX_SOURCES[profile.mix_source],
        context_mixes=[
            pb.ContextPersonaMix(
                shopping_context=SHOPPING_CONTEXT_VALUES[context], persona_mix=mix_to_proto(mix)
            )
            for context, mix in profile.context_mixes
            if context in CONTEXTS
        ],
        evidence=[
            pb.PersonaEvidence(
                persona_id=evidence.persona_id,
                weight=evidence.weight,
                signals=[
                    pb.SignalContribution(
                        signal=signal.feature,
                        description=signal.description,
                        customer_value=signal.customer_value,
                        population_value=signal.population_value,
                        persona_value=signal.persona_value,
                        contribution=signal.contribution,
                    )
                    for signal in evidence.signals
                ],
            )
            for evidence in profile.evidence
        ],
        leading_personas=[
            pb.LeadingPersona(
                persona_id=leader.persona_id,
                name=leader.name,
                weight=leader.weight,
                preferred_channels=list(leader.preferred_channels),
                decision_factors=list(leader.decision_factors),
            )
            for leader in profile.leading_personas
        ],
        model_version=profile.model_version,
    )
    if profile.drift is not None:
        response.drift.CopyFrom(drift_to_proto(profile.drift))
    return response


def persona_to_proto(persona: Persona) -> pb.Persona:
    demographics = persona.demographics
    return pb.Persona(
        persona_id=persona.id,
        name=persona.name,
        description=persona.description,
        demographics=pb.PersonaDemographics(
            summary=demographics.summary,
            age_bands=list(demographics.age_bands),
            income_bands=list(demographics.income_bands),
            regions=list(demographics.regions),
        ),
        goals=list(persona.goals),
        pain_points=list(persona.pain_points),
        preferred_channels=list(persona.preferred_channels),
        decision_factors=list(persona.decision_factors),
    )


@dataclass(frozen=True)
class _LiveContext:
    """One request's place in the live loop: its experiment arm, the personalizer and journey stage."""

    assignment: Assignment
    personalizer: Personalizer
    stage: JourneyStage

    @property
    def uses_bandit(self) -> bool:
        return self.assignment.policy is ArmPolicy.ONLINE_BANDIT


class PersonalizationServicer(pb_grpc.PersonalizationServiceServicer):
    """The PersonalizationService RPCs over the model ``holder`` currently serves.

    ``event_log`` enables RecordEvents; ``decision_writer`` logs served decisions; ``observers`` learn
    from accepted records (more can be added with ``add_observer`` before the server starts).
    """

    def __init__(
        self,
        holder: ModelHolder,
        metrics: ServingMetrics,
        *,
        event_log: EventLog | None = None,
        decision_writer: DecisionLogWriter | None = None,
        observers: Sequence[LiveEventObserver] = (),
        live: LiveDecisions | None = None,
    ) -> None:
        self._holder = holder
        self._metrics = metrics
        self._event_log = event_log
        self._decision_writer = decision_writer
        self._observers: list[LiveEventObserver] = list(observers)
        # Experiments, journey stages and the online bandit; it learns from RecordEvents like any observer.
        self._live = live
        if live is not None:
            self._observers.append(live)
            # Built now, so outcomes of decisions served before a restart (state in Redis) still teach.
            live.bandits(holder.current())

    def add_observer(self, observer: LiveEventObserver) -> None:
        self._observers.append(observer)

    def _handle(
        self,
        method: str,
        context: grpc.ServicerContext,
        parse: Callable[[Personalizer], _Call],
        serve: Callable[[Personalizer, _Call], _Response],
    ) -> _Response:
        personalizer = self._holder.current()
        try:
            call = parse(personalizer)
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                code, message = (
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"{method}: the deadline passed before serving",
                )
            else:
                return serve(personalizer, call)
        except InvalidRequestError as error:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(error)
        except Exception:  # never leak internals to callers; the log keeps the traceback
            LOGGER.exception(
                "%s failed on model %s (%s)", method, personalizer.version, personalizer.model_name
            )
            code, message = (
                grpc.StatusCode.INTERNAL,
                f"{method}: internal error; the server log has the details",
            )
        context.abort(code, message)

    def _record(
        self,
        decision: DecisionInfo,
        offers: Sequence[RankedOffer],
        layout: LayoutDecision | None,
        customer_id: str = "",
        session: SessionContext | None = None,
        live: _LiveContext | None = None,
    ) -> None:
        self._metrics.record_customer(decision.cold_start)
        for offer in offers:
            self._metrics.record_decision("offer", offer.offer_id)
        if layout is not None:
            self._metrics.record_decision("layout", layout.variant_id)
        if live is not None and self._live is not None and not live.uses_bandit:
            # Outcomes of the artifact's decisions teach the bandit too (see OnlineBandit.remember).
            self._live.remember(
                live.personalizer,
                decision_id=decision.decision_id,
                mix=decision.mix,
                stage=live.stage,
                offers=offers,
                layout=layout,
            )
        if self._decision_writer is not None and (offers or layout is not None):
            moment = (session.timestamp if session is not None else None) or dt.datetime.now(dt.UTC)
            self._decision_writer.submit(
                served_arms(
                    decision,
                    customer_id,
                    moment,
                    offers,
                    layout,
                    experiment_arm=live.assignment.experiment_arm if live else "",
                    journey_stage=live.stage.value if live else "",
                )
            )

    def _live_context(
        self, personalizer: Personalizer, customer_id: str, session: SessionContext
    ) -> _LiveContext | None:
        """The experiment arm, its personalizer and the journey stage; None without a live loop."""
        if self._live is None:
            return None
        assignment = self._live.assign(customer_id)
        chosen = self._live.personalizer_for(personalizer, assignment)
        return _LiveContext(assignment, chosen, self._live.stage(chosen, customer_id, session))

    # ------------------------------------------------------------------ RPCs

    def Personalize(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.PersonalizeRequest, context: grpc.ServicerContext
    ) -> pb.PersonalizeResponse:
        def serve(personalizer: Personalizer, call: validate.PersonalizeCall) -> pb.PersonalizeResponse:
            customer_id = call.target.customer_id
            live = self._live_context(personalizer, customer_id, call.session)
            if live is not None:
                personalizer = live.personalizer
            page = personalizer.personalize(
                call.target, call.products, call.session, num_offers=call.num_offers
            )
            offers, layout = page.offers, page.layout
            if live is not None and self._live is not None and live.uses_bandit:
                decision_id = page.decision.decision_id
                offers = self._live.rank_offers(
                    personalizer,
                    decision_id=decision_id,
                    customer_id=customer_id,
                    mix=page.decision.mix,
                    session=call.session,
                    stage=live.stage,
                    n=call.num_offers,
                )
                layout = self._live.choose_layout(
                    personalizer,
                    decision_id=decision_id,
                    customer_id=customer_id,
                    mix=page.decision.mix,
                    stage=live.stage,
                    timestamp=call.session.timestamp,
                    item_ids=[item.item_id for item in page.items],
                    offer_ids=[offer.offer_id for offer in offers],
                )
            self._record(page.decision, offers, layout, customer_id, call.session, live)
            response = pb.PersonalizeResponse(
                items=[item_to_proto(item) for item in page.items],
                offers=[offer_to_proto(offer) for offer in offers],
                decision=decision_to_proto(page.decision),
                experiment_arm=live.assignment.experiment_arm if live else "",
            )
            if layout is not None:
                response.layout.CopyFrom(layout_to_proto(layout))
            return response

        return self._handle("Personalize", context, lambda p: validate.personalize_call(request, p), serve)

    def RecommendProducts(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.RecommendProductsRequest, context: grpc.ServicerContext
    ) -> pb.RecommendProductsResponse:
        def serve(
            personalizer: Personalizer, call: validate.RecommendProductsCall
        ) -> pb.RecommendProductsResponse:
            arms = [""] * len(call.targets)
            if self._live is None:
                lists = personalizer.recommend_products(call.targets, call.products, call.session)
            else:
                # Targets in arms with their own recommender are scored in one batch per recommender.
                groups: dict[int, tuple[Personalizer, list[int]]] = {}
                for i, target in enumerate(call.targets):
                    assignment = self._live.assign(target.customer_id)
                    arms[i] = assignment.experiment_arm
                    chosen = self._live.personalizer_for(personalizer, assignment)
                    groups.setdefault(id(chosen), (chosen, []))[1].append(i)
                by_position: dict[int, ProductList] = {}
                for chosen, positions in groups.values():
                    targets = [call.targets[i] for i in positions]
                    scored = chosen.recommend_products(targets, call.products, call.session)
                    by_position.update(zip(positions, scored, strict=True))
                lists = [by_position[i] for i in range(len(call.targets))]
            for products in lists:
                self._record(products.decision, (), None)
            return pb.RecommendProductsResponse(
                results=[
                    pb.ProductRecommendation(
                        customer_id=products.customer_id,
                        items=[item_to_proto(item) for item in products.items],
                        decision=decision_to_proto(products.decision),
                        experiment_arm=arm,
                    )
                    for products, arm in zip(lists, arms, strict=True)
                ]
            )

        return self._handle(
            "RecommendProducts", context, lambda p: validate.recommend_products_call(request, p), serve
        )

    def RankOffers(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.RankOffersRequest, context: grpc.ServicerContext
    ) -> pb.RankOffersResponse:
        def serve(personalizer: Personalizer, call: validate.RankOffersCall) -> pb.RankOffersResponse:
            customer_id = call.target.customer_id
            live = self._live_context(personalizer, customer_id, call.session)
            if live is not None:
                personalizer = live.personalizer
            ranking = personalizer.rank_offers(
                call.target,
                call.session,
                num_offers=call.num_offers,
                candidate_offer_ids=call.candidate_offer_ids,
            )
            offers = ranking.offers
            if live is not None and self._live is not None and live.uses_bandit:
                offers = self._live.rank_offers(
                    personalizer,
                    decision_id=ranking.decision.decision_id,
                    customer_id=customer_id,
                    mix=ranking.decision.mix,
                    session=call.session,
                    stage=live.stage,
                    n=call.num_offers,
                    candidates=call.candidate_offer_ids,
                )
            self._record(ranking.decision, offers, None, customer_id, call.session, live)
            return pb.RankOffersResponse(
                offers=[offer_to_proto(offer) for offer in offers],
                decision=decision_to_proto(ranking.decision),
                experiment_arm=live.assignment.experiment_arm if live else "",
            )

        return self._handle("RankOffers", context, lambda p: validate.rank_offers_call(request, p), serve)

    def SelectLayout(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.SelectLayoutRequest, context: grpc.ServicerContext
    ) -> pb.SelectLayoutResponse:
        def serve(personalizer: Personalizer, call: validate.SelectLayoutCall) -> pb.SelectLayoutResponse:
            customer_id = call.target.customer_id
            live = self._live_context(personalizer, customer_id, call.session)
            if live is not None:
                personalizer = live.personalizer
            selection = personalizer.select_layout(
                call.target, call.session, candidate_variant_ids=call.candidate_variant_ids
            )
            layout = selection.layout
            if live is not None and self._live is not None and live.uses_bandit:
                layout = self._live.choose_layout(
                    personalizer,
                    decision_id=selection.decision.decision_id,
                    customer_id=customer_id,
                    mix=selection.decision.mix,
                    stage=live.stage,
                    timestamp=call.session.timestamp,
                    candidates=call.candidate_variant_ids,
                )
            self._record(selection.decision, (), layout, customer_id, call.session, live)
            response = pb.SelectLayoutResponse(
                decision=decision_to_proto(selection.decision),
                experiment_arm=live.assignment.experiment_arm if live else "",
            )
            if layout is not None:
                response.layout.CopyFrom(layout_to_proto(layout))
            return response

        return self._handle("SelectLayout", context, lambda p: validate.select_layout_call(request, p), serve)

    def GetPersonaProfile(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.GetPersonaProfileRequest, context: grpc.ServicerContext
    ) -> pb.GetPersonaProfileResponse:
        return self._handle(
            "GetPersonaProfile",
            context,
            lambda p: validate.customer_id(request.customer_id),
            lambda personalizer, customer: self._profile(personalizer, customer),
        )

    def _profile(self, personalizer: Personalizer, customer_id: str) -> pb.GetPersonaProfileResponse:
        profile = personalizer.persona_profile(customer_id)
        if profile.drift is not None:
            self._metrics.record_drift_profile(profile.drift.drifting)
        return profile_to_proto(profile)

    def ListPersonas(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.ListPersonasRequest, context: grpc.ServicerContext
    ) -> pb.ListPersonasResponse:
        return self._handle(
            "ListPersonas",
            context,
            lambda p: None,
            lambda personalizer, _: pb.ListPersonasResponse(
                personas=[persona_to_proto(persona) for persona in personalizer.catalog.personas],
                model_version=personalizer.version,
            ),
        )

    def RecordEvents(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.RecordEventsRequest, context: grpc.ServicerContext
    ) -> pb.RecordEventsResponse:
        log = self._event_log
        if log is None:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "RecordEvents: this server has no event log; start it with --event-log PATH",
            )
        try:
            batch = event_translation.record_batch(request, dt.datetime.now(dt.UTC), log.decision)
        except InvalidRequestError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED, "RecordEvents: the deadline passed before storing"
            )
        try:
            stored = log.append(batch.events, batch.outcomes)
        except Exception:  # nothing of the batch was stored (one transaction); a retry is safe
            LOGGER.exception("RecordEvents could not store a batch in %s", log.path)
            context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "RecordEvents: the event log could not store the batch; nothing was accepted, retry later",
            )
        self._metrics.record_live_records(
            "event", len(stored.new_events), stored.duplicate_events, batch.rejected_events
        )
        self._metrics.record_live_records(
            "outcome", len(stored.new_outcomes), stored.duplicate_outcomes, batch.rejected_outcomes
        )
        if stored.new_events or stored.new_outcomes:
            for observer in self._observers:
                try:
                    observer.observe(stored.new_events, stored.new_outcomes)
                except Exception:  # the records are durable and acknowledged; one observer must not undo that
                    LOGGER.exception("live event observer %r failed on an accepted batch", observer)
        return event_translation.record_events_response(
            batch, len(stored.new_events), len(stored.new_outcomes)
        )


def add_to_server(servicer: PersonalizationServicer, server: grpc.Server) -> None:
    pb_grpc.add_PersonalizationServiceServicer_to_server(servicer, server)
