"""From the engine's answers to PersonalizationService protobuf responses.

Kept apart from the servicer so that the RPC handlers read as "translate, serve, translate". Responses
carry exactly what the engine decided, in the order and with the enum values the ``.proto`` contract
documents.

The four responses on the page path (Personalize, RecommendProducts, RankOffers, SelectLayout) are
encoded as wire bytes and parsed in one call rather than built field by field:
``serving.protobuf_wire`` says why that is several times cheaper and why the bytes sent are the same.
What does not change between calls is encoded once: the items' catalog fields per artifact
(``serving.item_messages``, prepared when a model loads and passed in as ``items``), and the static
fields of offers (id, kind, description), layout variants (id, description), slot names, personas and
the model's identity on first use, remembered under the values themselves, so a fragment can never be
stale and nothing needs preparing per artifact. The profile and catalog responses are built field by
field: they are off the page path.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Final, Generic, TypeVar

from google.protobuf.message import Message

from engine.decisions.page_decision import LayoutDecision, RankedOffer
from engine.errors import PersonaEngineError
from engine.live.live_loop import ServedLayout, ServedOffers, ServedPage, ServedProductLists
from engine.personalizer import DecisionInfo
from engine.personas.catalog import Persona
from engine.personas.drift import DriftStatus
from engine.personas.mix import PersonaMix
from engine.personas.mix_resolution import MixSource
from engine.personas.profile import PersonaProfile, by_weight
from engine.personas.shopping_context import CONTEXTS
from serving.generated.persona.v1 import personalization_service_pb2 as pb
from serving.generated.persona.v1 import types_pb2
from serving.item_messages import PreparedItems, append_items
from serving.protobuf_wire import (
    append_strings,
    double,
    field_key,
    length_delimited,
    string_field,
    varint,
    varint_field,
)
from serving.request_validation import SHOPPING_CONTEXTS

MIX_SOURCES: Final = {
    MixSource.REQUEST: types_pb2.PERSONA_MIX_SOURCE_REQUEST,
    MixSource.INFERRED: types_pb2.PERSONA_MIX_SOURCE_INFERRED,
    MixSource.PRIOR: types_pb2.PERSONA_MIX_SOURCE_PRIOR,
    MixSource.LIVE: types_pb2.PERSONA_MIX_SOURCE_LIVE,
    MixSource.DRIFT: types_pb2.PERSONA_MIX_SOURCE_DRIFT,
}
SHOPPING_CONTEXT_VALUES: Final = {name: value for value, name in SHOPPING_CONTEXTS.items()}


class ResponseTooLargeError(PersonaEngineError):
    """A response whose encoding is over the server's ``--max-response-bytes``.

    Sent anyway, a client at gRPC's default receive limit (4 MiB) drops it with "Received message
    larger than max" while the server logs the call as OK: the caller learns neither why nor what to
    ask instead. Refused here, the call ends RESOURCE_EXHAUSTED with a message naming the request's
    fields that make it large, and the access log and metrics record what the caller saw.
    """


def mix_to_proto(mix: PersonaMix) -> types_pb2.PersonaMix:
    """Every persona, highest weight first, ties in catalog order (as the contract promises)."""
    return types_pb2.PersonaMix(
        weights=[
            types_pb2.PersonaWeight(persona_id=mix.personas[k], weight=float(mix.weights[k]))
            for k in by_weight(mix)
        ]
    )


_OFFER_KINDS: Final = {name: types_pb2.OfferKind.Value(name) for name in types_pb2.OfferKind.keys()}  # noqa: SIM118


def offer_kind(kind: str) -> types_pb2.OfferKind.ValueType:
    return _OFFER_KINDS.get(f"OFFER_KIND_{kind.upper()}", types_pb2.OFFER_KIND_UNSPECIFIED)


def drift_to_proto(drift: DriftStatus) -> pb.DriftStatus:
    message = pb.DriftStatus(
        drifting=drift.drifting,
        from_persona_id=drift.from_persona,
        to_persona_id=drift.to_persona,
        statistic=drift.statistic,
        confidence=drift.confidence,
        threshold=drift.threshold,
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


# ------------------------------------------------------------------ the page path, as wire bytes

_Key = TypeVar("_Key", bound=Hashable)
_REMEMBERED_LIMIT: Final = 4096


class _Remembered(Generic[_Key]):
    """Wire bytes of values that recur across calls, encoded on first use under the values themselves.

    A changed value is a new key, so a fragment is never stale (a reloaded artifact with a reworded
    offer gets new bytes). Full means a process has met thousands of distinct values (artifacts
    reloaded for days); it then starts over rather than grow.
    """

    def __init__(self, encode: Callable[[_Key], bytes]) -> None:
        self._encode = encode
        self._fragments: dict[_Key, bytes] = {}

    def __call__(self, value: _Key) -> bytes:
        fragment = self._fragments.get(value)
        if fragment is None:
            fragment = self._encode(value)
            if len(self._fragments) >= _REMEMBERED_LIMIT:
                self._fragments.clear()
            self._fragments[value] = fragment
        return fragment


def _keys(message: type[Message], *names: str) -> tuple[bytes, ...]:
    return tuple(field_key(message, name) for name in names)


(_MIX_WEIGHTS,) = _keys(types_pb2.PersonaMix, "weights")
_WEIGHT_PERSONA, _WEIGHT_VALUE = _keys(types_pb2.PersonaWeight, "persona_id", "weight")
_DECISION_ID, _DECISION_MIX, _DECISION_SOURCE, _DECISION_COLD, _DECISION_CONTEXT = _keys(
    types_pb2.DecisionInfo,
    "decision_id",
    "persona_mix",
    "persona_mix_source",
    "cold_start",
    "shopping_context",
)
_MODEL_VERSION, _MODEL_NAME, _DECISION_ARM = _keys(
    types_pb2.DecisionInfo, "model_version", "model_name", "experiment_arm"
)
_OFFER_ID, _OFFER_KIND, _OFFER_DESCRIPTION, _OFFER_RANK, _OFFER_SCORE, _OFFER_PROPENSITY, _OFFER_REASON = (
    _keys(types_pb2.RankedOffer, "offer_id", "kind", "description", "rank", "score", "propensity", "reason")
)
_VARIANT_ID, _VARIANT_DESCRIPTION, _SLOTS, _LAYOUT_SCORE, _LAYOUT_PROPENSITY = _keys(
    types_pb2.LayoutDecision, "variant_id", "description", "slots", "score", "propensity"
)
_SLOT_NAME, _SLOT_ITEM, _SLOT_OFFER = _keys(types_pb2.LayoutSlot, "name", "item_ids", "offer_ids")
_PAGE_ITEMS, _PAGE_OFFERS, _PAGE_LAYOUT, _PAGE_DECISION, _PAGE_ARM = _keys(
    pb.PersonalizeResponse, "items", "offers", "layout", "decision", "experiment_arm"
)
(_RESULTS,) = _keys(pb.RecommendProductsResponse, "results")
_RESULT_CUSTOMER, _RESULT_ITEMS, _RESULT_DECISION, _RESULT_ARM = _keys(
    pb.ProductRecommendation, "customer_id", "items", "decision", "experiment_arm"
)
_RANKING_OFFERS, _RANKING_DECISION, _RANKING_ARM = _keys(
    pb.RankOffersResponse, "offers", "decision", "experiment_arm"
)
_SELECTION_LAYOUT, _SELECTION_DECISION, _SELECTION_ARM = _keys(
    pb.SelectLayoutResponse, "layout", "decision", "experiment_arm"
)

_SOURCE_FIELDS: Final = {
    source: varint_field(_DECISION_SOURCE, value) for source, value in MIX_SOURCES.items()
}
_CONTEXT_FIELDS: Final = {
    name: varint_field(_DECISION_CONTEXT, value) for name, value in SHOPPING_CONTEXT_VALUES.items()
}
_COLD_START: Final = varint_field(_DECISION_COLD, True)


def _weight_head(persona_id: str) -> bytes:
    """A PersonaWeight entry up to its weight's 8 bytes: key, length, persona id, the weight's key."""
    persona = string_field(_WEIGHT_PERSONA, persona_id)
    return _MIX_WEIGHTS + varint(len(persona) + 1 + 8) + persona + _WEIGHT_VALUE


def _model_identity(identity: tuple[str, str]) -> bytes:
    return string_field(_MODEL_VERSION, identity[0]) + string_field(_MODEL_NAME, identity[1])


def _offer_static(offer: tuple[str, str, str]) -> bytes:
    offer_id, kind, description = offer
    return b"".join(
        (
            string_field(_OFFER_ID, offer_id),
            varint_field(_OFFER_KIND, offer_kind(kind)),
            string_field(_OFFER_DESCRIPTION, description),
        )
    )


def _variant_static(variant: tuple[str, str]) -> bytes:
    return string_field(_VARIANT_ID, variant[0]) + string_field(_VARIANT_DESCRIPTION, variant[1])


_weight_heads: Final = _Remembered(_weight_head)
_model_identities: Final = _Remembered(_model_identity)
_offer_statics: Final = _Remembered(_offer_static)
_variant_statics: Final = _Remembered(_variant_static)
_slot_names: Final[_Remembered[str]] = _Remembered(lambda name: string_field(_SLOT_NAME, name))


def _mix_bytes(mix: PersonaMix) -> bytes:
    """The PersonaMix message: every persona, highest weight first, ties in catalog order.

    ``sorted`` is stable, also with ``reverse``, so ties keep catalog order exactly as ``by_weight``
    (a lexsort) orders them, without numpy's per-call overhead on a handful of personas.
    """
    weights = mix.weights.tolist()
    personas = mix.personas
    parts: list[bytes] = []
    for k in sorted(range(len(weights)), key=weights.__getitem__, reverse=True):
        parts.append(_weight_heads(personas[k]))
        parts.append(double(weights[k]))
    return b"".join(parts)


def _decision_field(field: bytes, decision: DecisionInfo, experiment_arm: str) -> bytes:
    """The DecisionInfo message; ``experiment_arm`` is the response's own (the same arm in both places,
    so a caller that keeps only the decision still knows which arm served it)."""
    body = b"".join(
        (
            string_field(_DECISION_ID, decision.decision_id),
            length_delimited(_DECISION_MIX, _mix_bytes(decision.mix)),
            _SOURCE_FIELDS[decision.mix_source],
            _COLD_START if decision.cold_start else b"",
            _CONTEXT_FIELDS.get(decision.shopping_context or "", b""),
            _model_identities((decision.model_version, decision.model_name)),
            string_field(_DECISION_ARM, experiment_arm) if experiment_arm else b"",
        )
    )
    return length_delimited(field, body)


def _append_offers(parts: list[bytes], field: bytes, offers: Sequence[RankedOffer]) -> None:
    for offer in offers:
        body = b"".join(
            (
                _offer_statics((offer.offer_id, offer.kind, offer.description)),
                varint_field(_OFFER_RANK, offer.rank),
                _OFFER_SCORE,
                double(offer.score),
                _OFFER_PROPENSITY,
                double(offer.propensity),
                string_field(_OFFER_REASON, offer.reason),
            )
        )
        parts.append(field)
        parts.append(varint(len(body)))
        parts.append(body)


def _layout_field(field: bytes, layout: LayoutDecision) -> bytes:
    parts = [_variant_statics((layout.variant_id, layout.description))]
    for slot in layout.slots:
        slot_parts = [_slot_names(slot.name)]
        append_strings(slot_parts, _SLOT_ITEM, slot.item_ids)
        append_strings(slot_parts, _SLOT_OFFER, slot.offer_ids)
        parts.append(length_delimited(_SLOTS, b"".join(slot_parts)))
    parts.append(_LAYOUT_SCORE)
    parts.append(double(layout.score))
    parts.append(_LAYOUT_PROPENSITY)
    parts.append(double(layout.propensity))
    return length_delimited(field, b"".join(parts))


def page_response(served: ServedPage, items: PreparedItems | None = None) -> pb.PersonalizeResponse:
    """``items``: the serving artifact's prepared items (``item_messages.prepared_items``); without
    them every item's catalog fields are encoded from the result, which gives the same response."""
    page = served.page
    parts: list[bytes] = []
    append_items(parts, _PAGE_ITEMS, page.items, items)
    _append_offers(parts, _PAGE_OFFERS, page.offers)
    if page.layout is not None:
        parts.append(_layout_field(_PAGE_LAYOUT, page.layout))
    parts.append(_decision_field(_PAGE_DECISION, page.decision, served.experiment_arm))
    if served.experiment_arm:
        parts.append(string_field(_PAGE_ARM, served.experiment_arm))
    return pb.PersonalizeResponse.FromString(b"".join(parts))


def product_lists_response(
    served: ServedProductLists, items: PreparedItems | None = None, max_bytes: int | None = None
) -> pb.RecommendProductsResponse:
    """``items`` as in ``page_response``. An encoding over ``max_bytes`` raises
    ``ResponseTooLargeError``: only this response grows with the request (1,000 targets of 200
    explained items encode to about 41 MB), so only it is measured; the encoded bytes are at hand."""
    parts: list[bytes] = []
    for products, arm in zip(served.lists, served.experiment_arms, strict=True):
        result = [string_field(_RESULT_CUSTOMER, products.customer_id)]
        append_items(result, _RESULT_ITEMS, products.items, items)
        result.append(_decision_field(_RESULT_DECISION, products.decision, arm))
        if arm:
            result.append(string_field(_RESULT_ARM, arm))
        parts.append(length_delimited(_RESULTS, b"".join(result)))
    encoded = b"".join(parts)
    if max_bytes is not None and len(encoded) > max_bytes:
        raise ResponseTooLargeError(_too_large(served, len(encoded), max_bytes))
    return pb.RecommendProductsResponse.FromString(encoded)


def _too_large(served: ServedProductLists, size: int, max_bytes: int) -> str:
    """What made a product-lists response too large, in the request's own field names."""
    per_target = max((len(products.items) for products in served.lists), default=0)
    explained = any(item.persona_shares for products in served.lists for item in products.items)
    smaller = [f"fewer targets (this call has {len(served.lists)})", f"a smaller num_results ({per_target})"]
    if explained:
        smaller.append("explain = false")
    return (
        f"the response would be {size:,} bytes, over the server's limit of {max_bytes:,} "
        f"(serve --max-response-bytes): split the call, with {', '.join(smaller[:-1])} or {smaller[-1]}, "
        "or raise --max-response-bytes together with the client's receive limit"
    )


def offers_response(served: ServedOffers) -> pb.RankOffersResponse:
    parts: list[bytes] = []
    _append_offers(parts, _RANKING_OFFERS, served.ranking.offers)
    parts.append(_decision_field(_RANKING_DECISION, served.ranking.decision, served.experiment_arm))
    if served.experiment_arm:
        parts.append(string_field(_RANKING_ARM, served.experiment_arm))
    return pb.RankOffersResponse.FromString(b"".join(parts))


def layout_response(served: ServedLayout) -> pb.SelectLayoutResponse:
    selection = served.selection
    parts: list[bytes] = []
    if selection.layout is not None:
        parts.append(_layout_field(_SELECTION_LAYOUT, selection.layout))
    parts.append(_decision_field(_SELECTION_DECISION, selection.decision, served.experiment_arm))
    if served.experiment_arm:
        parts.append(string_field(_SELECTION_ARM, served.experiment_arm))
    return pb.SelectLayoutResponse.FromString(b"".join(parts))


# Said on every decision (or profile) answered without live state: the state store was unreachable.
WITHOUT_LIVE_STATE: Final = "live state unavailable: the state store is unreachable"


def mark_without_live_state(response: Message, reason: str = WITHOUT_LIVE_STATE) -> None:
    """Set ``degraded_reason`` on every decision of ``response`` (a profile carries its own field).

    Only calls served during a state store outage pay for this second pass over the message.
    """
    if isinstance(response, pb.GetPersonaProfileResponse):
        response.degraded_reason = reason
    elif isinstance(response, pb.RecommendProductsResponse):
        for result in response.results:
            result.decision.degraded_reason = reason
    elif isinstance(response, pb.PersonalizeResponse | pb.RankOffersResponse | pb.SelectLayoutResponse):
        response.decision.degraded_reason = reason
