"""From PersonalizationService protobuf requests to the engine's request values, enforcing every limit.

The limits are the ones the ``.proto`` comments promise (list lengths, string lengths, numeric ranges,
enum values); a request outside them raises ``InvalidRequestError`` whose message starts with the
field path, e.g. ``targets[3].persona_mix.weights[1].weight: must be >= 0, got -0.2``. Every string
has a length limit, including each id of a repeated field (``filters.exclude_item_ids[7]: at most 256
characters, got 70000``), so no request makes the server hold, compare or quote an unbounded string:
messages quote an offending value only once its length is known to be small. Checks that
need the serving artifact (persona ids, pinned items) take the personalizer serving the request, so
one request is validated and served against the same model. A persona mix is validated once, by the
engine as it builds the mix (``PersonaMix.from_entries``), with the mix's path in the request.

Proto3 scalars cannot say "unset", so "0 means the default" fields (num_results, num_offers) map 0 to
the default here; optional fields (basket_value, price_min, price_max) are read only when present.

Every request pays for this module, so it does only what a valid request needs: enum look-ups are
tables built at import (``PageType.values()`` builds a list per call and cost 5 µs), a request
without a context, filters or promotions gets the shared (immutable) default value instead of
reading every field of an empty message, the persona ids are read only when a mix is given, and a
repeated field is copied only when it has entries (iterating a upb container costs about a
microsecond even when empty). Error messages and the order of the checks, hence which error a
request with several gets, are unchanged.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from typing import Final, TypeVar

from engine.data.contract import MAX_AMOUNT
from engine.data.id_cells import id_problem
from engine.data.item_catalog import ItemCatalog
from engine.invalid_request import InvalidRequestError
from engine.personalization_request import (
    DEFAULT_OFFERS,
    DEFAULT_RESULTS,
    CustomerTarget,
    LayoutRequest,
    OfferRankingRequest,
    PageRequest,
    ProductListsRequest,
    ProductRequest,
    SessionContext,
)
from engine.personalizer import Personalizer
from engine.personas.mix import PersonaMix
from engine.personas.shopping_context import WEEKDAY, WEEKEND_HOLIDAY
from engine.ranking.filters import ItemFilters
from engine.ranking.promotions import PinnedItem, PromotionRule, Promotions
from serving.generated.persona.v1 import personalization_service_pb2 as pb
from serving.generated.persona.v1 import types_pb2
from serving.wire_timestamps import checked_timestamp

MAX_CUSTOMER_ID_CHARS: Final = 256
MAX_RESULTS: Final = 200
MAX_OFFERS: Final = 20
MAX_TARGETS: Final = 1000
MAX_EXCLUDED_ITEMS: Final = 1000
MAX_CONTEXT_ITEMS: Final = 200
MAX_CONTEXT_STRING_CHARS: Final = 64
MAX_CATEGORIES: Final = 100
MAX_RULES: Final = 10
MAX_PROMOTION_ID_CHARS: Final = 64
MAX_RULE_NAMES: Final = 100
MAX_RULE_ITEMS: Final = 1000
MAX_PINS: Final = 20
MAX_CANDIDATE_OFFERS: Final = 1000
MAX_CANDIDATE_VARIANTS: Final = 100
# Each string of a repeated field, and the ids the engine checks against the artifact (which quotes them).
MAX_ITEM_ID_CHARS: Final = 256
MAX_NAME_CHARS: Final = 128  # categories and brands
MAX_ARM_ID_CHARS: Final = 256  # candidate offer and layout variant ids
MAX_PERSONA_ID_CHARS: Final = 64
MAX_MIX_WEIGHTS: Final = 100

SHOPPING_CONTEXTS: Final = {
    types_pb2.SHOPPING_CONTEXT_WEEKDAY: WEEKDAY,
    types_pb2.SHOPPING_CONTEXT_WEEKEND_HOLIDAY: WEEKEND_HOLIDAY,
}
# Every PageType value and the engine's name for it ("" for unspecified), e.g. 3 -> "product_detail".
PAGE_TYPES: Final = {
    value: "" if value == types_pb2.PAGE_TYPE_UNSPECIFIED else name.removeprefix("PAGE_TYPE_").lower()
    for name, value in types_pb2.PageType.items()
}
# What an absent context, filters or promotions message means; immutable, so shared by all requests.
_NO_SESSION: Final = SessionContext()
_NO_FILTERS: Final = ItemFilters()
_NO_PROMOTIONS: Final = Promotions()


_Entry = TypeVar("_Entry")


def _at_most(values: Sequence[_Entry], limit: int, field: str) -> tuple[_Entry, ...]:
    size = len(values)
    if size > limit:
        raise InvalidRequestError(field, f"at most {limit} entries, got {size}")
    return tuple(values[:]) if size else ()  # a slice of a upb container is a list: quick to copy


def _strings(values: Sequence[str], limit: int, field: str, max_chars: int) -> tuple[str, ...]:
    """``_at_most`` for a repeated string field, each string at most ``max_chars`` long."""
    entries = _at_most(values, limit, field)
    if entries and max(map(len, entries)) > max_chars:
        i = next(i for i, value in enumerate(entries) if len(value) > max_chars)
        raise InvalidRequestError(f"{field}[{i}]", f"at most {max_chars} characters, got {len(entries[i])}")
    return entries


def _text(value: str, field: str, *, low: int, high: int) -> str:
    if not low <= len(value) <= high:
        raise InvalidRequestError(field, f"must be {low} to {high} characters, got {len(value)}")
    return value


def customer_id(value: str, field: str = "customer_id") -> str:
    """1 to 256 characters, and the data contract's rule for ids, as RecordEvents holds the same id to:
    an id with whitespace at an end or a control character matches no customer, so it would be served
    as a stranger, and outcomes of its decisions could never be recorded."""
    _text(value, field, low=1, high=MAX_CUSTOMER_ID_CHARS)
    if (problem := id_problem(value)) is not None:
        raise InvalidRequestError(field, problem)
    return value


def count(value: int, field: str, *, default: int, high: int) -> int:
    """A "0 means the default" count: 0 -> default, otherwise 1..high."""
    if value == 0:
        return default
    if not 1 <= value <= high:
        raise InvalidRequestError(field, f"must be 1..{high} (0 for the default, {default}), got {value}")
    return value


def fraction(value: float, field: str) -> float:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise InvalidRequestError(field, f"must be in [0, 1], got {value}")
    return value


def persona_mix(message: types_pb2.PersonaMix, personas: Sequence[str], field: str) -> PersonaMix:
    """A request's mix; the engine validates it entry by entry, so the message names the offending
    weight by its path in the request. The number of entries and the length of each persona id are
    checked first: the engine's message quotes an unknown id."""
    entries = [(entry.persona_id, entry.weight) for entry in message.weights]
    if len(entries) > MAX_MIX_WEIGHTS:
        raise InvalidRequestError(
            f"{field}.weights", f"at most {MAX_MIX_WEIGHTS} entries, got {len(entries)}"
        )
    for i, (persona_id, _) in enumerate(entries):
        if len(persona_id) > MAX_PERSONA_ID_CHARS:
            raise InvalidRequestError(
                f"{field}.weights[{i}].persona_id",
                f"at most {MAX_PERSONA_ID_CHARS} characters, got {len(persona_id)}",
            )
    return PersonaMix.from_entries(entries, personas, field)


def session_context(message: types_pb2.RequestContext, field: str = "context") -> SessionContext:
    shopping: str | None = None
    shopping_context = message.shopping_context
    if shopping_context != types_pb2.SHOPPING_CONTEXT_UNSPECIFIED:
        shopping = SHOPPING_CONTEXTS.get(shopping_context)
        if shopping is None:
            raise InvalidRequestError(f"{field}.shopping_context", f"unknown value {shopping_context}")
    page_type = PAGE_TYPES.get(message.page_type)
    if page_type is None:
        raise InvalidRequestError(f"{field}.page_type", f"unknown value {message.page_type}")
    basket_value: float | None = None
    if message.HasField("basket_value"):
        basket_value = message.basket_value
        if not (math.isfinite(basket_value) and 0 <= basket_value <= MAX_AMOUNT):
            raise InvalidRequestError(
                f"{field}.basket_value", f"must be in [0, {MAX_AMOUNT:g}], got {basket_value}"
            )
    timestamp = (
        checked_timestamp(message.timestamp, f"{field}.timestamp") if message.HasField("timestamp") else None
    )
    channel, device = message.channel, message.device
    if len(channel) > MAX_CONTEXT_STRING_CHARS:
        _text(channel, f"{field}.channel", low=0, high=MAX_CONTEXT_STRING_CHARS)
    if len(device) > MAX_CONTEXT_STRING_CHARS:
        _text(device, f"{field}.device", low=0, high=MAX_CONTEXT_STRING_CHARS)
    return SessionContext(
        timestamp=timestamp,
        shopping_context=shopping,
        channel=channel,
        device=device,
        page_type=page_type,
        session_item_ids=_strings(
            message.session_item_ids, MAX_CONTEXT_ITEMS, f"{field}.session_item_ids", MAX_ITEM_ID_CHARS
        ),
        cart_item_ids=_strings(
            message.cart_item_ids, MAX_CONTEXT_ITEMS, f"{field}.cart_item_ids", MAX_ITEM_ID_CHARS
        ),
        basket_value=basket_value,
    )


def item_filters(
    message: types_pb2.ItemFilters | None, items: ItemCatalog | None = None, field: str = "filters"
) -> ItemFilters:
    """None (the request has no filters) is the default filters. With ``items``, every name in
    ``include_categories`` must be one of the catalog's categories (``_known_categories``)."""
    if message is None:
        return _NO_FILTERS
    try:
        filters = ItemFilters(
            exclude_item_ids=_strings(
                message.exclude_item_ids, MAX_EXCLUDED_ITEMS, "exclude_item_ids", MAX_ITEM_ID_CHARS
            ),
            include_purchased=message.include_purchased,
            include_categories=_strings(
                message.include_categories, MAX_CATEGORIES, "include_categories", MAX_NAME_CHARS
            ),
            exclude_categories=_strings(
                message.exclude_categories, MAX_CATEGORIES, "exclude_categories", MAX_NAME_CHARS
            ),
            price_min=message.price_min if message.HasField("price_min") else None,
            price_max=message.price_max if message.HasField("price_max") else None,
            include_out_of_stock=message.include_out_of_stock,
        )
        if items is not None:  # after the lengths: a name is quoted only once it is known to be short
            _known_categories(filters.include_categories, items)
    except InvalidRequestError as error:
        raise error.within(field) from None
    return filters


def _known_categories(names: Sequence[str], items: ItemCatalog) -> None:
    """A category the serving catalog does not have can only empty the list (an include filter keeps
    no item, backfill included): a typo, or a category newer than the model. Refused, naming it, where
    the list would silently come back empty. Exclusions and promotion rules stay lenient: an unknown
    name there excludes or reserves nothing, which is what a category the shop has not stocked yet
    should do."""
    known = items.category_names
    for i, name in enumerate(names):
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InvalidRequestError(
                f"include_categories[{i}]",
                f"{name!r} is not a category of the serving catalog ({len(known)} categories){hint}",
            )


def _rule(message: types_pb2.PromotionRule) -> PromotionRule:
    _text(message.promotion_id, "promotion_id", low=1, high=MAX_PROMOTION_ID_CHARS)
    return PromotionRule(
        promotion_id=message.promotion_id,
        share=message.share,
        categories=_strings(message.categories, MAX_RULE_NAMES, "categories", MAX_NAME_CHARS),
        brands=_strings(message.brands, MAX_RULE_NAMES, "brands", MAX_NAME_CHARS),
        item_ids=_strings(message.item_ids, MAX_RULE_ITEMS, "item_ids", MAX_ITEM_ID_CHARS),
    )


def promotions(
    message: types_pb2.Promotions | None, k: int, items: ItemCatalog, field: str = "promotions"
) -> Promotions:
    """Rules and pins, checked against the list length and the artifact's items; None (the request
    has no promotions) is none."""
    if message is None:
        return _NO_PROMOTIONS
    try:
        _at_most(message.rules, MAX_RULES, "rules")
        _at_most(message.pins, MAX_PINS, "pins")
        for i, pin in enumerate(message.pins):
            if len(pin.item_id) > MAX_ITEM_ID_CHARS:
                _text(pin.item_id, f"pins[{i}].item_id", low=0, high=MAX_ITEM_ID_CHARS)
        rules = []
        for i, rule in enumerate(message.rules):
            try:
                rules.append(_rule(rule))
            except InvalidRequestError as error:
                raise error.within(f"rules[{i}]") from None
        result = Promotions(
            rules=tuple(rules), pins=tuple(PinnedItem(pin.item_id, pin.position) for pin in message.pins)
        )
        result.check_for(k, items)
    except InvalidRequestError as error:
        raise error.within(field) from None
    return result


def product_request(
    *,
    num_results: int,
    filters: types_pb2.ItemFilters | None,
    promotion_message: types_pb2.Promotions | None,
    diversity: float,
    explain: bool,
    items: ItemCatalog,
) -> ProductRequest:
    """``filters`` and ``promotion_message`` are None when the request does not have them."""
    k = count(num_results, "num_results", default=DEFAULT_RESULTS, high=MAX_RESULTS)
    return ProductRequest(
        k=k,
        filters=item_filters(filters, items),
        promotions=promotions(promotion_message, k, items),
        diversity=fraction(diversity, "diversity"),
        explain=explain,
    )


def _target(customer: str, mix: types_pb2.PersonaMix | None, personalizer: Personalizer) -> CustomerTarget:
    """The catalog's persona ids are read (a tuple built per read) only for a request with a mix."""
    customer_id(customer)
    if mix is None:
        return CustomerTarget(customer)
    return CustomerTarget(customer, persona_mix(mix, personalizer.catalog.ids, "persona_mix"))


def personalize_call(request: pb.PersonalizeRequest, personalizer: Personalizer) -> PageRequest:
    return PageRequest(
        target=_target(
            request.customer_id,
            request.persona_mix if request.HasField("persona_mix") else None,
            personalizer,
        ),
        products=product_request(
            num_results=request.num_results,
            filters=request.filters if request.HasField("filters") else None,
            promotion_message=request.promotions if request.HasField("promotions") else None,
            diversity=request.diversity,
            explain=request.explain,
            items=personalizer.item_catalog,
        ),
        session=session_context(request.context) if request.HasField("context") else _NO_SESSION,
        num_offers=count(request.num_offers, "num_offers", default=DEFAULT_OFFERS, high=MAX_OFFERS),
    )


def recommend_products_call(
    request: pb.RecommendProductsRequest, personalizer: Personalizer
) -> ProductListsRequest:
    if not 1 <= len(request.targets) <= MAX_TARGETS:
        raise InvalidRequestError(
            "targets", f"must hold 1 to {MAX_TARGETS} targets, got {len(request.targets)}"
        )
    targets = []
    for i, target in enumerate(request.targets):
        try:  # paths are built only for an error: a thousand targets would pay for them
            resolved = _target(
                target.customer_id,
                target.persona_mix if target.HasField("persona_mix") else None,
                personalizer,
            )
            excluded = _strings(
                target.exclude_item_ids, MAX_EXCLUDED_ITEMS, "exclude_item_ids", MAX_ITEM_ID_CHARS
            )
        except InvalidRequestError as error:
            raise error.within(f"targets[{i}]") from None
        targets.append(CustomerTarget(resolved.customer_id, resolved.mix, excluded))
    return ProductListsRequest(
        targets=tuple(targets),
        products=product_request(
            num_results=request.num_results,
            filters=request.filters if request.HasField("filters") else None,
            promotion_message=request.promotions if request.HasField("promotions") else None,
            diversity=request.diversity,
            explain=request.explain,
            items=personalizer.item_catalog,
        ),
        session=session_context(request.context) if request.HasField("context") else _NO_SESSION,
    )


def rank_offers_call(request: pb.RankOffersRequest, personalizer: Personalizer) -> OfferRankingRequest:
    return OfferRankingRequest(
        target=_target(
            request.customer_id,
            request.persona_mix if request.HasField("persona_mix") else None,
            personalizer,
        ),
        session=session_context(request.context) if request.HasField("context") else _NO_SESSION,
        num_offers=count(request.num_offers, "num_offers", default=DEFAULT_OFFERS, high=MAX_OFFERS),
        candidate_offer_ids=_strings(
            request.candidate_offer_ids, MAX_CANDIDATE_OFFERS, "candidate_offer_ids", MAX_ARM_ID_CHARS
        ),
    )


def select_layout_call(request: pb.SelectLayoutRequest, personalizer: Personalizer) -> LayoutRequest:
    return LayoutRequest(
        target=_target(
            request.customer_id,
            request.persona_mix if request.HasField("persona_mix") else None,
            personalizer,
        ),
        session=session_context(request.context) if request.HasField("context") else _NO_SESSION,
        candidate_variant_ids=_strings(
            request.candidate_variant_ids, MAX_CANDIDATE_VARIANTS, "candidate_variant_ids", MAX_ARM_ID_CHARS
        ),
    )
