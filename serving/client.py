"""A small typed Python client for the persona-engine gRPC API (``proto/persona/v1``).

Backends mostly call the engine while rendering a page, where a slow or failed call must degrade the
page rather than stall it. So every call carries a deadline (``timeout_s``, shared by all attempts of
the call), and only the failure that says "the request did not get served, try again" (UNAVAILABLE)
is retried, with exponential backoff and jitter. Whether a method may be retried at all is read from
the contract itself (its ``idempotency_level`` option), so ReloadModel, which changes server state,
is never replayed. Everything else (INVALID_ARGUMENT, DEADLINE_EXCEEDED, ...) surfaces at once as the
``grpc.RpcError`` the server raised.

Methods take plain Python values (ids, ``{"bargain_hunter": 0.7}`` mixes, small dataclasses for the
page context, filters and promotions) and return the generated protobuf responses, whose fields are
documented in the ``.proto`` files. Usage::

    with PersonaEngineClient("localhost:50051") as engine:
        engine.wait_until_serving(timeout_s=10)
        page = engine.personalize("c0042", context=PageContext(page_type="home"), k=8)
        for item in page.items:
            print(item.rank, item.item_id, item.title)
"""

from __future__ import annotations

import datetime as dt
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Generic, Self, TypeVar

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2

from engine.errors import PersonaEngineError
from engine.live.events import BehaviorEvent, DecisionOutcome, OutcomeKind
from serving.generated.persona.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    personalization_service_pb2,
    personalization_service_pb2_grpc,
    types_pb2,
)

DEFAULT_TARGET: Final = "localhost:50051"
DEFAULT_TIMEOUT_S: Final = 0.5
DEFAULT_RELOAD_TIMEOUT_S: Final = 120.0  # loading and verifying an artifact takes seconds, not milliseconds
ADMIN_METADATA_KEY: Final = "authorization"
PERSONALIZATION_SERVICE: Final = personalization_service_pb2.DESCRIPTOR.services_by_name[
    "PersonalizationService"
].full_name
ADMIN_SERVICE: Final = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
HEALTH_CHECK_METHOD: Final = "/grpc.health.v1.Health/Check"

_Request = TypeVar("_Request", bound=Message)
_Response = TypeVar("_Response", bound=Message)


def _retryable_methods() -> frozenset[str]:
    """Full names (``/package.Service/Method``) of the methods the contract declares idempotent."""
    names = set()
    for file in (personalization_service_pb2.DESCRIPTOR, admin_service_pb2.DESCRIPTOR):
        for service in file.services_by_name.values():
            for method in service.methods:
                level = method.GetOptions().idempotency_level
                if level != descriptor_pb2.MethodOptions.IDEMPOTENCY_UNKNOWN:
                    names.add(f"/{service.full_name}/{method.name}")
    return frozenset(names)


RETRYABLE_METHODS: Final = _retryable_methods()


@dataclass(frozen=True)
class PageContext:
    """The moment and page of a request (``RequestContext``); every field is optional.

    ``shopping_context`` is ``"weekday"`` or ``"weekend_holiday"`` (default: derived from the
    timestamp by the server); ``page_type`` is a ``PageType`` name without prefix, e.g. ``"home"``,
    ``"product_detail"``, ``"cart"``, ``"email"``. A naive ``timestamp`` is taken as UTC.
    """

    timestamp: dt.datetime | None = None
    shopping_context: str | None = None
    channel: str = ""
    device: str = ""
    page_type: str | None = None
    session_item_ids: Sequence[str] = ()
    cart_item_ids: Sequence[str] = ()
    basket_value: float | None = None

    def to_proto(self) -> types_pb2.RequestContext:
        message = types_pb2.RequestContext(
            channel=self.channel,
            device=self.device,
            session_item_ids=list(self.session_item_ids),
            cart_item_ids=list(self.cart_item_ids),
        )
        if self.timestamp is not None:
            moment = self.timestamp if self.timestamp.tzinfo else self.timestamp.replace(tzinfo=dt.UTC)
            message.timestamp.CopyFrom(_timestamp(moment))
        if self.shopping_context is not None:
            key = _enum_key(
                types_pb2.ShoppingContext.keys(),
                "SHOPPING_CONTEXT_",
                self.shopping_context,
                "shopping_context",
            )
            message.shopping_context = types_pb2.ShoppingContext.Value(key)
        if self.page_type is not None:
            key = _enum_key(types_pb2.PageType.keys(), "PAGE_TYPE_", self.page_type, "page_type")
            message.page_type = types_pb2.PageType.Value(key)
        if self.basket_value is not None:
            message.basket_value = self.basket_value
        return message


@dataclass(frozen=True)
class Filters:
    """Which items may be recommended (``ItemFilters``). The defaults are the safe ones: items the
    customer already purchased and out-of-stock items are left out."""

    exclude_item_ids: Sequence[str] = ()
    include_purchased: bool = False
    include_categories: Sequence[str] = ()
    exclude_categories: Sequence[str] = ()
    price_min: float | None = None
    price_max: float | None = None
    include_out_of_stock: bool = False

    def to_proto(self) -> types_pb2.ItemFilters:
        message = types_pb2.ItemFilters(
            exclude_item_ids=list(self.exclude_item_ids),
            include_purchased=self.include_purchased,
            include_categories=list(self.include_categories),
            exclude_categories=list(self.exclude_categories),
            include_out_of_stock=self.include_out_of_stock,
        )
        if self.price_min is not None:
            message.price_min = self.price_min
        if self.price_max is not None:
            message.price_max = self.price_max
        return message


@dataclass(frozen=True)
class Promotion:
    """Part of the result list reserved for items meeting every non-empty condition (``PromotionRule``)."""

    promotion_id: str
    share: float
    categories: Sequence[str] = ()
    brands: Sequence[str] = ()
    item_ids: Sequence[str] = ()

    def to_proto(self) -> types_pb2.PromotionRule:
        return types_pb2.PromotionRule(
            promotion_id=self.promotion_id,
            share=self.share,
            categories=list(self.categories),
            brands=list(self.brands),
            item_ids=list(self.item_ids),
        )


@dataclass(frozen=True)
class Target:
    """One customer of a batched product request, optionally with their own mix and exclusions."""

    customer_id: str
    persona_mix: Mapping[str, float] | None = None
    exclude_item_ids: Sequence[str] = ()

    def to_proto(self) -> personalization_service_pb2.CustomerTarget:
        message = personalization_service_pb2.CustomerTarget(
            customer_id=self.customer_id, exclude_item_ids=list(self.exclude_item_ids)
        )
        if self.persona_mix is not None:
            message.persona_mix.CopyFrom(persona_mix_to_proto(self.persona_mix))
        return message


def persona_mix_to_proto(mix: Mapping[str, float]) -> types_pb2.PersonaMix:
    """``{"bargain_hunter": 0.7, "tech_savvy": 0.3}`` as a ``PersonaMix``; the server normalises it.

    An empty mapping is refused here: on the wire it would be a present-but-empty mix, which the server
    rejects; pass ``None`` to use the customer's inferred mix instead.
    """
    if not mix:
        raise ValueError("persona_mix is empty; pass None to use the customer's inferred mix")
    return types_pb2.PersonaMix(
        weights=[types_pb2.PersonaWeight(persona_id=p, weight=float(w)) for p, w in mix.items()]
    )


def _timestamp(moment: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def behavior_event_to_proto(event: BehaviorEvent) -> personalization_service_pb2.BehaviorEvent:
    message = personalization_service_pb2.BehaviorEvent()
    event_type = _enum_key(
        personalization_service_pb2.EventType.keys(), "EVENT_TYPE_", event.event_type, "event_type"
    )
    _set_fields(
        message,
        event_id=event.event_id,
        customer_id=event.customer_id,
        item_id=event.item_id,
        event_type=personalization_service_pb2.EventType.Value(event_type),
        timestamp=event.timestamp,
        channel=event.channel or "",
        device=event.device or "",
        price_paid=event.price_paid,
        discount=event.discount,
    )
    return message


def decision_outcome_to_proto(outcome: DecisionOutcome) -> personalization_service_pb2.DecisionOutcome:
    message = personalization_service_pb2.DecisionOutcome()
    kind = personalization_service_pb2.OutcomeKind.Value(f"OUTCOME_KIND_{_outcome_kind_name(outcome.kind)}")
    _set_fields(
        message,
        event_id=outcome.event_id,
        decision_id=outcome.decision_id,
        customer_id=outcome.customer_id,
        kind=kind,
        timestamp=outcome.timestamp,
        arm_id=outcome.arm_id or "",
        revenue=outcome.revenue,
    )
    return message


def _set_fields(message: Message, **values: object) -> None:
    """Set each field that is not None, so a value of the wrong type is named by its field (protobuf's
    own TypeError says only "must be real number, not str")."""
    for field, value in values.items():
        if value is None:
            continue
        try:
            if field == "timestamp":
                if not isinstance(value, dt.datetime):
                    raise TypeError(f"expected a datetime, got {type(value).__name__}")
                getattr(message, field).CopyFrom(_timestamp(value))
            else:
                setattr(message, field, value)
        except TypeError as error:
            raise TypeError(f"{field}: {error}") from None


class UnencodableValueError(PersonaEngineError, ValueError):
    """A value the protocol has no encoding for (an enum name it does not define, e.g. event_type
    "wishlist"); ``field`` is its field, ``problem`` what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def _enum_key(names: Sequence[str], prefix: str, name: str, field: str) -> str:
    """The enum value name ``prefix + NAME``, or an error naming the field and the valid names (in
    the order the .proto declares them, as the server lists them)."""
    key = prefix + name.upper() if isinstance(name, str) else ""
    if key not in names or key.endswith("_UNSPECIFIED"):
        valid = [n.removeprefix(prefix).lower() for n in names if not n.endswith("_UNSPECIFIED")]
        raise UnencodableValueError(field, f"unknown value {name!r}; one of {', '.join(valid)}")
    return key


_Record = TypeVar("_Record", BehaviorEvent, DecisionOutcome)
_RecordMessage = TypeVar(
    "_RecordMessage", personalization_service_pb2.BehaviorEvent, personalization_service_pb2.DecisionOutcome
)
_EVENTS: Final = ("events", personalization_service_pb2.RECORD_KIND_EVENT)
_OUTCOMES: Final = ("outcomes", personalization_service_pb2.RECORD_KIND_OUTCOME)


_M = TypeVar("_M")


@dataclass
class _EncodedRecords(Generic[_M]):
    """One list of a RecordEvents call as sent: the messages, the caller's index of each (``sent``),
    and the records refused before sending, as the server's own per-record errors."""

    messages: list[_M]
    sent: list[int]
    refused: list[personalization_service_pb2.RecordError]


def _encode_records(
    records: Sequence[_Record],
    encode: Callable[[_Record], _RecordMessage],
    which: tuple[str, personalization_service_pb2.RecordKind.ValueType],
) -> _EncodedRecords[_RecordMessage]:
    """Encode each record; one whose value the protocol cannot carry is refused on its own (partial
    acceptance, as the server does), a value of the wrong type raises naming the record."""
    name, kind = which
    encoded: _EncodedRecords[_RecordMessage] = _EncodedRecords([], [], [])
    for index, record in enumerate(records):
        try:
            encoded.messages.append(encode(record))
        except UnencodableValueError as error:
            encoded.refused.append(
                personalization_service_pb2.RecordError(
                    kind=kind,
                    index=index,
                    event_id=str(record.event_id),
                    field=f"{name}[{index}].{error.field}",
                    message=error.problem,
                )
            )
            continue
        except (TypeError, ValueError) as error:  # a bug in the calling code: nothing is sent
            wrapped = TypeError if isinstance(error, TypeError) else ValueError
            raise wrapped(f"{name}[{index}] (event_id {record.event_id!r}): {error}") from error
        encoded.sent.append(index)
    return encoded


def _merge_refused(
    response: personalization_service_pb2.RecordEventsResponse,
    events: _EncodedRecords[personalization_service_pb2.BehaviorEvent],
    outcomes: _EncodedRecords[personalization_service_pb2.DecisionOutcome],
) -> None:
    """Give the server's errors the caller's indexes (it saw the lists without the refused records)
    and add the refused records, events first, each list in the caller's order, as the server does."""
    errors = list(events.refused) + list(outcomes.refused)
    for error in response.errors:
        name, encoded = ("events", events) if error.kind == _EVENTS[1] else ("outcomes", outcomes)
        index = encoded.sent[error.index]
        sent_as = f"{name}[{error.index}]"
        field = (
            f"{name}[{index}]{error.field[len(sent_as) :]}"
            if error.field.startswith(sent_as)
            else error.field
        )
        errors.append(
            personalization_service_pb2.RecordError(
                kind=error.kind, index=index, event_id=error.event_id, field=field, message=error.message
            )
        )
    errors.sort(key=lambda error: (error.kind != _EVENTS[1], error.index))
    del response.errors[:]
    response.errors.extend(errors)


def _outcome_kind_name(kind: OutcomeKind | str) -> str:
    """The OutcomeKind's wire name; its value as a string is accepted too (``"offer_shown"``)."""
    if isinstance(kind, OutcomeKind):
        return kind.name
    try:
        return OutcomeKind(kind).name
    except ValueError:
        valid = ", ".join(k.value for k in OutcomeKind)
        raise UnencodableValueError("kind", f"unknown value {kind!r}; one of {valid}") from None


def _pins_to_proto(pins: Mapping[int, str] | None) -> list[types_pb2.PinnedItem]:
    return [types_pb2.PinnedItem(item_id=item, position=pos) for pos, item in sorted((pins or {}).items())]


def _promotions_to_proto(
    promotions: Sequence[Promotion], pins: Mapping[int, str] | None
) -> types_pb2.Promotions | None:
    if not promotions and not pins:
        return None
    return types_pb2.Promotions(rules=[p.to_proto() for p in promotions], pins=_pins_to_proto(pins))


def _status_code(error: grpc.RpcError) -> grpc.StatusCode | None:
    return error.code() if isinstance(error, grpc.Call) else None


class PersonaEngineClient:
    """A connection to one persona-engine server; use it as a context manager or call ``close()``.

    ``timeout_s`` is the default deadline of a call, covering all its attempts; each method also takes
    its own ``timeout_s``. ``retries`` is how many times an idempotent call that failed with
    UNAVAILABLE is tried again, after ``backoff_s``, then twice that, and so on (with jitter, capped
    at ``max_backoff_s``), as long as the deadline leaves room. ``tls`` switches to TLS, verified
    against ``root_certificates`` (PEM bytes) or, when those are omitted, the system's roots; giving
    ``root_certificates`` implies TLS. ``admin_token`` is sent as ``authorization: Bearer <token>``
    metadata on AdminService calls only; without TLS it travels in clear text, which is fine on
    localhost and nowhere else.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = 2,
        backoff_s: float = 0.05,
        max_backoff_s: float = 1.0,
        tls: bool = False,
        root_certificates: bytes | None = None,
        admin_token: str | None = None,
        channel_options: Sequence[tuple[str, str | int]] = (),
    ) -> None:
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if not (0 < backoff_s <= max_backoff_s):
            raise ValueError(f"need 0 < backoff_s <= max_backoff_s, got {backoff_s} and {max_backoff_s}")
        if admin_token is not None and not admin_token.strip():
            raise ValueError("admin_token is blank; pass None to make no admin calls")
        self.target = target
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._admin_metadata = (
            None if admin_token is None else ((ADMIN_METADATA_KEY, f"Bearer {admin_token}"),)
        )
        options = list(channel_options)
        if tls or root_certificates is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._personalization = personalization_service_pb2_grpc.PersonalizationServiceStub(self._channel)
        self._admin = admin_service_pb2_grpc.AdminServiceStub(self._channel)
        # grpc_health's stub class is untyped; the same call built on the channel keeps its types.
        self._health_check = self._channel.unary_unary(
            HEALTH_CHECK_METHOD,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    # -- calls -----------------------------------------------------------------------------------------

    def _call(
        self,
        method: grpc.UnaryUnaryMultiCallable[_Request, _Response],
        full_name: str,
        request: _Request,
        timeout_s: float | None,
        metadata: tuple[tuple[str, str], ...] | None = None,
    ) -> _Response:
        """One call under one deadline; UNAVAILABLE is retried for idempotent methods while time remains."""
        budget = self.timeout_s if timeout_s is None else timeout_s
        if not (budget > 0 and math.isfinite(budget)):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {budget}")
        deadline = time.monotonic() + budget
        retries_left = self.retries if full_name in RETRYABLE_METHODS else 0
        backoff = self.backoff_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                return method(request, timeout=max(remaining, 0.0), metadata=metadata)
            except grpc.RpcError as error:
                pause = backoff * random.uniform(0.5, 1.0)
                if (
                    _status_code(error) is not grpc.StatusCode.UNAVAILABLE
                    or retries_left == 0
                    or time.monotonic() + pause >= deadline
                ):
                    raise
            retries_left -= 1
            time.sleep(pause)
            backoff = min(backoff * 2, self.max_backoff_s)

    def _admin_call(
        self,
        method: grpc.UnaryUnaryMultiCallable[_Request, _Response],
        full_name: str,
        request: _Request,
        timeout_s: float | None,
    ) -> _Response:
        if self._admin_metadata is None:
            raise PermissionError(
                f"{full_name} needs an admin token: pass admin_token= to PersonaEngineClient"
            )
        return self._call(method, full_name, request, timeout_s, self._admin_metadata)

    def personalize(
        self,
        customer_id: str,
        *,
        persona_mix: Mapping[str, float] | None = None,
        context: PageContext | None = None,
        filters: Filters | None = None,
        promotions: Sequence[Promotion] = (),
        pins: Mapping[int, str] | None = None,
        k: int = 10,
        num_offers: int = 3,
        diversity: float = 0.0,
        explain: bool = False,
        timeout_s: float | None = None,
    ) -> personalization_service_pb2.PersonalizeResponse:
        """Products, offers and a filled layout for one page render. ``pins`` maps 1-based rank to item id."""
        request = personalization_service_pb2.PersonalizeRequest(
            customer_id=customer_id,
            num_results=k,
            num_offers=num_offers,
            diversity=diversity,
            explain=explain,
        )
        if persona_mix is not None:
            request.persona_mix.CopyFrom(persona_mix_to_proto(persona_mix))
        if context is not None:
            request.context.CopyFrom(context.to_proto())
        if filters is not None:
            request.filters.CopyFrom(filters.to_proto())
        promoted = _promotions_to_proto(promotions, pins)
        if promoted is not None:
            request.promotions.CopyFrom(promoted)
        return self._call(
            self._personalization.Personalize,
            f"/{PERSONALIZATION_SERVICE}/Personalize",
            request,
            timeout_s,
        )

    def recommend_products_batch(
        self,
        targets: Sequence[str | Target],
        *,
        context: PageContext | None = None,
        filters: Filters | None = None,
        promotions: Sequence[Promotion] = (),
        pins: Mapping[int, str] | None = None,
        k: int = 10,
        diversity: float = 0.0,
        explain: bool = False,
        timeout_s: float | None = None,
    ) -> personalization_service_pb2.RecommendProductsResponse:
        """Products for many customers in one call (at most 1000); results come back in target order."""
        request = personalization_service_pb2.RecommendProductsRequest(
            targets=[(Target(t) if isinstance(t, str) else t).to_proto() for t in targets],
            num_results=k,
            diversity=diversity,
            explain=explain,
        )
        if context is not None:
            request.context.CopyFrom(context.to_proto())
        if filters is not None:
            request.filters.CopyFrom(filters.to_proto())
        promoted = _promotions_to_proto(promotions, pins)
        if promoted is not None:
            request.promotions.CopyFrom(promoted)
        return self._call(
            self._personalization.RecommendProducts,
            f"/{PERSONALIZATION_SERVICE}/RecommendProducts",
            request,
            timeout_s,
        )

    def recommend_products(
        self,
        customer_id: str,
        *,
        persona_mix: Mapping[str, float] | None = None,
        context: PageContext | None = None,
        filters: Filters | None = None,
        promotions: Sequence[Promotion] = (),
        pins: Mapping[int, str] | None = None,
        k: int = 10,
        diversity: float = 0.0,
        explain: bool = False,
        timeout_s: float | None = None,
    ) -> personalization_service_pb2.ProductRecommendation:
        """Products for one customer: a batch of one, unwrapped."""
        response = self.recommend_products_batch(
            [Target(customer_id, persona_mix)],
            context=context,
            filters=filters,
            promotions=promotions,
            pins=pins,
            k=k,
            diversity=diversity,
            explain=explain,
            timeout_s=timeout_s,
        )
        if len(response.results) != 1:
            raise RuntimeError(f"server returned {len(response.results)} results for 1 target")
        return response.results[0]

    def rank_offers(
        self,
        customer_id: str,
        *,
        persona_mix: Mapping[str, float] | None = None,
        context: PageContext | None = None,
        num_offers: int = 3,
        candidate_offer_ids: Sequence[str] = (),
        timeout_s: float | None = None,
    ) -> personalization_service_pb2.RankOffersResponse:
        """Offers for one customer, best first, among those eligible for the context."""
        request = personalization_service_pb2.RankOffersRequest(
            customer_id=customer_id,
            num_offers=num_offers,
            candidate_offer_ids=list(candidate_offer_ids),
        )
        if persona_mix is not None:
            request.persona_mix.CopyFrom(persona_mix_to_proto(persona_mix))
        if context is not None:
            request.context.CopyFrom(context.to_proto())
        return self._call(
            self._personalization.RankOffers, f"/{PERSONALIZATION_SERVICE}/RankOffers", request, timeout_s
        )

    def record_events(
        self,
        events: Sequence[BehaviorEvent] = (),
        outcomes: Sequence[DecisionOutcome] = (),
        *,
        timeout_s: float | None = None,
    ) -> personalization_service_pb2.RecordEventsResponse:
        """Record events and decision outcomes; check the response's errors for rejected records.

        Safe to retry (it is, on UNAVAILABLE): records already accepted come back as duplicates.

        Partial acceptance, as the server's (README, "Batch policy"): a record with a value the protocol
        cannot carry (an ``event_type`` such as ``"wishlist"`` that EventType does not define) is not
        sent and comes back in ``errors`` like a record the server refused (``events[4].event_type``,
        its event id, ``unknown value 'wishlist'; one of view, cart, purchase``), while the others are
        sent; every error's index and field path count in the lists as passed here. The client checks
        nothing else: the server judges values (ids, timestamps, prices). A value of the wrong type (a
        bug in the calling code) raises TypeError naming the record, ``events[4] (event_id 'e9'): ...``,
        and nothing is sent.
        """
        encoded_events = _encode_records(events, behavior_event_to_proto, _EVENTS)
        encoded_outcomes = _encode_records(outcomes, decision_outcome_to_proto, _OUTCOMES)
        request = personalization_service_pb2.RecordEventsRequest(
            events=encoded_events.messages, outcomes=encoded_outcomes.messages
        )
        response = self._call(
            self._personalization.RecordEvents, f"/{PERSONALIZATION_SERVICE}/RecordEvents", request, timeout_s
        )
        if encoded_events.refused or encoded_outcomes.refused:
            _merge_refused(response, encoded_events, encoded_outcomes)
        return response

    def select_layout(
        self,
        customer_id: str,
        *,
        persona_mix: Mapping[str, float] | None = None,
        context: PageContext | None = None,
        candidate_variant_ids: Sequence[str] = (),
        timeout_s: float | None = None,
    ) -> personalization_service_pb2.SelectLayoutResponse:
        """The layout variant for one customer's page."""
        request = personalization_service_pb2.SelectLayoutRequest(
            customer_id=customer_id, candidate_variant_ids=list(candidate_variant_ids)
        )
        if persona_mix is not None:
            request.persona_mix.CopyFrom(persona_mix_to_proto(persona_mix))
        if context is not None:
            request.context.CopyFrom(context.to_proto())
        return self._call(
            self._personalization.SelectLayout, f"/{PERSONALIZATION_SERVICE}/SelectLayout", request, timeout_s
        )

    def get_persona_profile(
        self, customer_id: str, *, timeout_s: float | None = None
    ) -> personalization_service_pb2.GetPersonaProfileResponse:
        """The customer's inferred mixes, drift, evidence and leading personas."""
        return self._call(
            self._personalization.GetPersonaProfile,
            f"/{PERSONALIZATION_SERVICE}/GetPersonaProfile",
            personalization_service_pb2.GetPersonaProfileRequest(customer_id=customer_id),
            timeout_s,
        )

    def list_personas(
        self, *, timeout_s: float | None = None
    ) -> personalization_service_pb2.ListPersonasResponse:
        """The persona catalog of the serving artifact."""
        return self._call(
            self._personalization.ListPersonas,
            f"/{PERSONALIZATION_SERVICE}/ListPersonas",
            personalization_service_pb2.ListPersonasRequest(),
            timeout_s,
        )

    def get_model_info(self, *, timeout_s: float | None = None) -> admin_service_pb2.GetModelInfoResponse:
        """What the server is serving (admin token required)."""
        return self._admin_call(
            self._admin.GetModelInfo,
            f"/{ADMIN_SERVICE}/GetModelInfo",
            admin_service_pb2.GetModelInfoRequest(),
            timeout_s,
        )

    def reload_model(
        self,
        artifact_path: str,
        *,
        model_name: str = "",
        allow_rollback: bool = False,
        allow_catalog_change: bool = False,
        timeout_s: float | None = None,
    ) -> admin_service_pb2.ReloadModelResponse:
        """Switch the server to another artifact (admin token required); never retried.

        A version older than the one serving needs ``allow_rollback``, an artifact with another persona
        catalog ``allow_catalog_change`` (the response's ``persona_catalog_changed`` then says so). The
        deadline defaults to ``DEFAULT_RELOAD_TIMEOUT_S``, not the client's page-render timeout.
        """
        return self._admin_call(
            self._admin.ReloadModel,
            f"/{ADMIN_SERVICE}/ReloadModel",
            admin_service_pb2.ReloadModelRequest(
                artifact_path=artifact_path,
                model_name=model_name,
                allow_rollback=allow_rollback,
                allow_catalog_change=allow_catalog_change,
            ),
            DEFAULT_RELOAD_TIMEOUT_S if timeout_s is None else timeout_s,
        )

    def wait_until_serving(self, timeout_s: float, *, service: str = PERSONALIZATION_SERVICE) -> None:
        """Block until the standard health service reports ``service`` SERVING, e.g. after a deploy.

        Polls ``grpc.health.v1.Health/Check``; a server that is not up yet, or has not registered the
        service yet, counts as not serving. Raises ``TimeoutError`` with the last answer seen.
        """
        deadline = time.monotonic() + timeout_s
        pause = self.backoff_s
        last = "no answer"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"{self.target}: {service or 'server'} not SERVING after {timeout_s}s ({last})"
                )
            try:
                answer = self._health_check(
                    health_pb2.HealthCheckRequest(service=service), timeout=min(remaining, 1.0)
                )
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = f"status {health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)}"
            except grpc.RpcError as error:
                code = _status_code(error)
                last = f"error {code.name if code else error}"
            time.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
            pause = min(pause * 2, self.max_backoff_s)
