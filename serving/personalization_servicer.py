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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

import grpc

from engine.invalid_request import InvalidRequestError
from engine.list_assembly import ItemReason
from engine.mix_resolution import MixSource
from engine.page_decision import LayoutDecision, RankedOffer
from engine.persona_catalog import Persona
from engine.persona_mix import PersonaMix
from engine.persona_profile import PersonaProfile, by_weight
from engine.personalizer import DecisionInfo, Personalizer, RecommendedItem
from engine.shopping_context import CONTEXTS
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


def profile_to_proto(profile: PersonaProfile) -> pb.GetPersonaProfileResponse:
    """Drift stays unset: the artifact holds no recent-versus-long-run mixes; the live loop fills it."""
    return pb.GetPersonaProfileResponse(
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


class PersonalizationServicer(pb_grpc.PersonalizationServiceServicer):
    """The six PersonalizationService RPCs over the model ``holder`` currently serves."""

    def __init__(self, holder: ModelHolder, metrics: ServingMetrics) -> None:
        self._holder = holder
        self._metrics = metrics

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
        self, decision: DecisionInfo, offers: Sequence[RankedOffer], layout: LayoutDecision | None
    ) -> None:
        self._metrics.record_customer(decision.cold_start)
        for offer in offers:
            self._metrics.record_decision("offer", offer.offer_id)
        if layout is not None:
            self._metrics.record_decision("layout", layout.variant_id)

    # ------------------------------------------------------------------ RPCs

    def Personalize(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.PersonalizeRequest, context: grpc.ServicerContext
    ) -> pb.PersonalizeResponse:
        def serve(personalizer: Personalizer, call: validate.PersonalizeCall) -> pb.PersonalizeResponse:
            page = personalizer.personalize(
                call.target, call.products, call.session, num_offers=call.num_offers
            )
            self._record(page.decision, page.offers, page.layout)
            response = pb.PersonalizeResponse(
                items=[item_to_proto(item) for item in page.items],
                offers=[offer_to_proto(offer) for offer in page.offers],
                decision=decision_to_proto(page.decision),
            )
            if page.layout is not None:
                response.layout.CopyFrom(layout_to_proto(page.layout))
            return response

        return self._handle("Personalize", context, lambda p: validate.personalize_call(request, p), serve)

    def RecommendProducts(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.RecommendProductsRequest, context: grpc.ServicerContext
    ) -> pb.RecommendProductsResponse:
        def serve(
            personalizer: Personalizer, call: validate.RecommendProductsCall
        ) -> pb.RecommendProductsResponse:
            lists = personalizer.recommend_products(call.targets, call.products, call.session)
            for products in lists:
                self._record(products.decision, (), None)
            return pb.RecommendProductsResponse(
                results=[
                    pb.ProductRecommendation(
                        customer_id=products.customer_id,
                        items=[item_to_proto(item) for item in products.items],
                        decision=decision_to_proto(products.decision),
                    )
                    for products in lists
                ]
            )

        return self._handle(
            "RecommendProducts", context, lambda p: validate.recommend_products_call(request, p), serve
        )

    def RankOffers(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.RankOffersRequest, context: grpc.ServicerContext
    ) -> pb.RankOffersResponse:
        def serve(personalizer: Personalizer, call: validate.RankOffersCall) -> pb.RankOffersResponse:
            ranking = personalizer.rank_offers(
                call.target,
                call.session,
                num_offers=call.num_offers,
                candidate_offer_ids=call.candidate_offer_ids,
            )
            self._record(ranking.decision, ranking.offers, None)
            return pb.RankOffersResponse(
                offers=[offer_to_proto(offer) for offer in ranking.offers],
                decision=decision_to_proto(ranking.decision),
            )

        return self._handle("RankOffers", context, lambda p: validate.rank_offers_call(request, p), serve)

    def SelectLayout(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.SelectLayoutRequest, context: grpc.ServicerContext
    ) -> pb.SelectLayoutResponse:
        def serve(personalizer: Personalizer, call: validate.SelectLayoutCall) -> pb.SelectLayoutResponse:
            selection = personalizer.select_layout(
                call.target, call.session, candidate_variant_ids=call.candidate_variant_ids
            )
            self._record(selection.decision, (), selection.layout)
            response = pb.SelectLayoutResponse(decision=decision_to_proto(selection.decision))
            if selection.layout is not None:
                response.layout.CopyFrom(layout_to_proto(selection.layout))
            return response

        return self._handle("SelectLayout", context, lambda p: validate.select_layout_call(request, p), serve)

    def GetPersonaProfile(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.GetPersonaProfileRequest, context: grpc.ServicerContext
    ) -> pb.GetPersonaProfileResponse:
        return self._handle(
            "GetPersonaProfile",
            context,
            lambda p: validate.customer_id(request.customer_id),
            lambda personalizer, customer: profile_to_proto(personalizer.persona_profile(customer)),
        )

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


def add_to_server(servicer: PersonalizationServicer, server: grpc.Server) -> None:
    pb_grpc.add_PersonalizationServiceServicer_to_server(servicer, server)
