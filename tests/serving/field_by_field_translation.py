"""The Personalize, RecommendProducts, RankOffers and SelectLayout responses as the server built them
before responses were assembled from prepared wire bytes: every field set through the protobuf API.

Kept, frozen, as the oracle the prepared translation (``serving.response_translation``) must match
byte for byte (``test_response_translation.py``), and as the "before" of its cost
(``benchmarks/translation_cost.py``). Not used by the server.
"""

from __future__ import annotations

from engine.decisions.page_decision import LayoutDecision, RankedOffer
from engine.live.live_loop import ServedLayout, ServedOffers, ServedPage, ServedProductLists
from engine.personalizer import DecisionInfo, RecommendedItem
from serving.generated.persona.v1 import personalization_service_pb2 as pb
from serving.generated.persona.v1 import types_pb2
from serving.item_messages import REASON_CODES
from serving.response_translation import MIX_SOURCES, SHOPPING_CONTEXT_VALUES, mix_to_proto, offer_kind


def decision_to_proto(decision: DecisionInfo, experiment_arm: str = "") -> types_pb2.DecisionInfo:
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
        experiment_arm=experiment_arm,  # the response's arm, repeated (added after this oracle was frozen)
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


def page_response(served: ServedPage) -> pb.PersonalizeResponse:
    page = served.page
    response = pb.PersonalizeResponse(
        items=[item_to_proto(item) for item in page.items],
        offers=[offer_to_proto(offer) for offer in page.offers],
        decision=decision_to_proto(page.decision, served.experiment_arm),
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
                decision=decision_to_proto(products.decision, arm),
                experiment_arm=arm,
            )
            for products, arm in zip(served.lists, served.experiment_arms, strict=True)
        ]
    )


def offers_response(served: ServedOffers) -> pb.RankOffersResponse:
    return pb.RankOffersResponse(
        offers=[offer_to_proto(offer) for offer in served.ranking.offers],
        decision=decision_to_proto(served.ranking.decision, served.experiment_arm),
        experiment_arm=served.experiment_arm,
    )


def layout_response(served: ServedLayout) -> pb.SelectLayoutResponse:
    selection = served.selection
    response = pb.SelectLayoutResponse(
        decision=decision_to_proto(selection.decision, served.experiment_arm),
        experiment_arm=served.experiment_arm,
    )
    if selection.layout is not None:
        response.layout.CopyFrom(layout_to_proto(selection.layout))
    return response
