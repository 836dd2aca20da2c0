"""From the engine's answers to PersonalizationService protobuf responses.

One function per message, kept apart from the servicer so that the RPC handlers read as "translate,
serve, translate". Responses carry exactly what the engine decided, in the order and with the enum
values the ``.proto`` contract documents. Enum look-ups are built once at
import, since a look-up by name per item costs more than building the rest of the item.
"""

from __future__ import annotations

from typing import Final

from engine.decisions.page_decision import LayoutDecision, RankedOffer
from engine.live.live_loop import ServedLayout, ServedOffers, ServedPage, ServedProductLists
from engine.personalizer import DecisionInfo, RecommendedItem
from engine.personas.catalog import Persona
from engine.personas.drift import DriftStatus
from engine.personas.mix import PersonaMix
from engine.personas.mix_resolution import MixSource
from engine.personas.profile import PersonaProfile, by_weight
from engine.personas.shopping_context import CONTEXTS
from engine.ranking.list_assembly import ItemReason
from serving.generated.persona.v1 import personalization_service_pb2 as pb
from serving.generated.persona.v1 import types_pb2
from serving.request_validation import SHOPPING_CONTEXTS

MIX_SOURCES: Final = {
    MixSource.REQUEST: types_pb2.PERSONA_MIX_SOURCE_REQUEST,
    MixSource.INFERRED: types_pb2.PERSONA_MIX_SOURCE_INFERRED,
    MixSource.PRIOR: types_pb2.PERSONA_MIX_SOURCE_PRIOR,
    MixSource.LIVE: types_pb2.PERSONA_MIX_SOURCE_LIVE,
}
SHOPPING_CONTEXT_VALUES: Final = {name: value for value, name in SHOPPING_CONTEXTS.items()}
# Looked up once: an enum lookup by name per item costs more than building the rest of the item.
REASON_CODES: Final = {
    reason: types_pb2.ReasonCode.Value(f"REASON_CODE_{reason.value.upper()}") for reason in ItemReason
}


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


def page_response(served: ServedPage) -> pb.PersonalizeResponse:
    page = served.page
    response = pb.PersonalizeResponse(
        items=[item_to_proto(item) for item in page.items],
        offers=[offer_to_proto(offer) for offer in page.offers],
        decision=decision_to_proto(page.decision),
        experiment_arm=served.experiment_arm,
    )
    if page.layout is not None:
        response.layout.CopyFrom(layout_to_proto(page.layout))
    return response


def product_lists_response(served: ServedProductLists) -> pb.RecommendProductsResponse:
    return pb.RecommendProductsResponse(
        results=[
            pb.ProductRecommendation(
                customer_id=products.customer_id,
                items=[item_to_proto(item) for item in products.items],
                decision=decision_to_proto(products.decision),
                experiment_arm=arm,
            )
            for products, arm in zip(served.lists, served.experiment_arms, strict=True)
        ]
    )


def offers_response(served: ServedOffers) -> pb.RankOffersResponse:
    return pb.RankOffersResponse(
        offers=[offer_to_proto(offer) for offer in served.ranking.offers],
        decision=decision_to_proto(served.ranking.decision),
        experiment_arm=served.experiment_arm,
    )


def layout_response(served: ServedLayout) -> pb.SelectLayoutResponse:
    selection = served.selection
    response = pb.SelectLayoutResponse(
        decision=decision_to_proto(selection.decision), experiment_arm=served.experiment_arm
    )
    if selection.layout is not None:
        response.layout.CopyFrom(layout_to_proto(selection.layout))
    return response
