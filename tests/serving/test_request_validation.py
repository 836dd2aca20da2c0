"""Protobuf requests to engine requests, called directly (the gRPC round trip of every documented
limit is in ``test_personalization_servicer.py``): the values a valid request becomes, that an absent
message means its defaults, and which error a request with several gets (the checks' order)."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from engine.invalid_request import InvalidRequestError
from engine.personalization_request import CustomerTarget, PageRequest, ProductRequest, SessionContext
from engine.personalizer import Personalizer
from engine.ranking.filters import ItemFilters
from engine.ranking.promotions import PinnedItem, PromotionRule, Promotions
from serving import request_validation as validate
from serving.generated.persona.v1 import personalization_service_pb2 as pb
from serving.generated.persona.v1 import types_pb2
from tests.serving.server_harness import trained_artifacts


@pytest.fixture(scope="module")
def personalizer(tmp_path_factory: pytest.TempPathFactory) -> Personalizer:
    return Personalizer.from_path(trained_artifacts(tmp_path_factory).older, "als")


def test_a_typical_page_request(personalizer: Personalizer) -> None:
    item = str(personalizer.item_catalog.ids.ids[0])
    request = pb.PersonalizeRequest(
        customer_id="c0000042",
        context=types_pb2.RequestContext(
            timestamp=Timestamp(seconds=1_772_884_800),
            page_type=types_pb2.PAGE_TYPE_PRODUCT_DETAIL,
            channel="search",
            device="mobile",
            session_item_ids=["i001", "i002"],
            cart_item_ids=["i003"],
            basket_value=12.5,
        ),
        filters=types_pb2.ItemFilters(exclude_item_ids=["i001"], price_max=100.0),
        promotions=types_pb2.Promotions(
            rules=[types_pb2.PromotionRule(promotion_id="p", share=0.25, brands=["Acme"])],
            pins=[types_pb2.PinnedItem(item_id=item, position=2)],
        ),
        num_results=20,
        num_offers=3,
        diversity=0.5,
        explain=True,
    )
    assert validate.personalize_call(request, personalizer) == PageRequest(
        target=CustomerTarget("c0000042"),
        products=ProductRequest(
            k=20,
            filters=ItemFilters(exclude_item_ids=("i001",), price_max=100.0),
            promotions=Promotions(
                rules=(PromotionRule("p", 0.25, brands=("Acme",)),), pins=(PinnedItem(item, 2),)
            ),
            diversity=0.5,
            explain=True,
        ),
        session=SessionContext(
            timestamp=dt.datetime(2026, 3, 7, 12, tzinfo=dt.UTC),
            channel="search",
            device="mobile",
            page_type="product_detail",
            session_item_ids=("i001", "i002"),
            cart_item_ids=("i003",),
            basket_value=12.5,
        ),
        num_offers=3,
    )


def test_absent_and_empty_messages_both_mean_the_defaults(personalizer: Personalizer) -> None:
    bare = pb.PersonalizeRequest(customer_id="c")
    empty = pb.PersonalizeRequest(
        customer_id="c",
        context=types_pb2.RequestContext(),
        filters=types_pb2.ItemFilters(),
        promotions=types_pb2.Promotions(),
    )
    assert empty.HasField("context") and not bare.HasField("context")
    expected = PageRequest(CustomerTarget("c"), ProductRequest(), SessionContext())
    assert validate.personalize_call(bare, personalizer) == expected
    assert validate.personalize_call(empty, personalizer) == expected
    batch = pb.RecommendProductsRequest(targets=[pb.CustomerTarget(customer_id="c")])
    assert validate.recommend_products_call(batch, personalizer).session == SessionContext()


def test_every_page_type_has_its_engine_name() -> None:
    assert set(validate.PAGE_TYPES) == set(types_pb2.PageType.values())
    assert validate.PAGE_TYPES[types_pb2.PAGE_TYPE_UNSPECIFIED] == ""
    assert validate.PAGE_TYPES[types_pb2.PAGE_TYPE_ORDER_CONFIRMATION] == "order_confirmation"


def _mix(persona: str, weight: float) -> types_pb2.PersonaMix:
    return types_pb2.PersonaMix(weights=[types_pb2.PersonaWeight(persona_id=persona, weight=weight)])


LONG = "x" * 65
# Each request breaks several limits; the error is the first in the order the fields are checked:
# target (id, mix), products (count, filters, promotions, diversity), context, number of offers.
SEVERAL_ERRORS = [
    (
        pb.PersonalizeRequest(customer_id="", persona_mix=_mix("nobody", 1), num_results=500),
        "customer_id: must be 1 to 256 characters, got 0",
    ),
    (
        pb.PersonalizeRequest(customer_id="c", persona_mix=_mix("nobody", 1), num_results=500),
        "persona_mix.weights[0].persona_id: unknown persona 'nobody'",
    ),
    (
        pb.PersonalizeRequest(
            customer_id="c", num_results=500, filters=types_pb2.ItemFilters(price_min=-1), diversity=2
        ),
        "num_results: must be 1..200",
    ),
    (
        pb.PersonalizeRequest(
            customer_id="c",
            filters=types_pb2.ItemFilters(exclude_categories=[LONG] * 101, price_min=-1),
            promotions=types_pb2.Promotions(rules=[types_pb2.PromotionRule()]),
        ),
        "filters.exclude_categories: at most 100 entries, got 101",
    ),
    (
        pb.PersonalizeRequest(
            customer_id="c",
            filters=types_pb2.ItemFilters(price_min=-1),
            promotions=types_pb2.Promotions(rules=[types_pb2.PromotionRule()]),
        ),
        "filters.price_min: must be a finite number >= 0, got -1.0",
    ),
    (
        pb.PersonalizeRequest(
            customer_id="c", promotions=types_pb2.Promotions(rules=[types_pb2.PromotionRule()]), diversity=2
        ),
        "promotions.rules[0].promotion_id: must be 1 to 64 characters, got 0",
    ),
    (
        pb.PersonalizeRequest(
            customer_id="c", diversity=2, context=types_pb2.RequestContext(page_type=99), num_offers=99
        ),
        "diversity: must be in [0, 1], got 2.0",
    ),
    (
        pb.PersonalizeRequest(
            customer_id="c",
            context=types_pb2.RequestContext(shopping_context=9, page_type=99, basket_value=-1),
        ),
        "context.shopping_context: unknown value 9",
    ),
    (
        pb.PersonalizeRequest(
            customer_id="c", context=types_pb2.RequestContext(page_type=99, basket_value=-1, channel=LONG)
        ),
        "context.page_type: unknown value 99",
    ),
    (
        pb.PersonalizeRequest(
            customer_id="c",
            context=types_pb2.RequestContext(basket_value=-1, timestamp=Timestamp(seconds=10**13)),
        ),
        "context.basket_value: must be in [0, 1e+15], got -1.0",
    ),
    (
        pb.PersonalizeRequest(
            customer_id="c",
            context=types_pb2.RequestContext(timestamp=Timestamp(seconds=10**13), channel=LONG),
        ),
        "context.timestamp: seconds 10000000000000 is outside the years 1 to 9999 a Timestamp can hold",
    ),
    (
        pb.PersonalizeRequest(
            customer_id="c", context=types_pb2.RequestContext(channel=LONG, device=LONG), num_offers=99
        ),
        "context.channel: must be 0 to 64 characters, got 65",
    ),
    (
        pb.PersonalizeRequest(
            customer_id="c",
            context=types_pb2.RequestContext(device=LONG, session_item_ids=["i"] * 201),
            num_offers=99,
        ),
        "context.device: must be 0 to 64 characters, got 65",
    ),
    (
        pb.PersonalizeRequest(
            customer_id="c",
            context=types_pb2.RequestContext(session_item_ids=["i"] * 201, cart_item_ids=["i"] * 201),
        ),
        "context.session_item_ids: at most 200 entries, got 201",
    ),
    (
        pb.PersonalizeRequest(
            customer_id="c", context=types_pb2.RequestContext(cart_item_ids=["i"] * 201), num_offers=99
        ),
        "context.cart_item_ids: at most 200 entries, got 201",
    ),
    (pb.PersonalizeRequest(customer_id="c", num_offers=99), "num_offers: must be 1..20"),
]


@pytest.mark.parametrize(("request_", "message"), SEVERAL_ERRORS, ids=[m for _, m in SEVERAL_ERRORS])
def test_a_request_with_several_errors_gets_the_first_checked(
    personalizer: Personalizer, request_: pb.PersonalizeRequest, message: str
) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        validate.personalize_call(request_, personalizer)
    assert str(raised.value).startswith(message), str(raised.value)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (pb.CustomerTarget(customer_id=""), "targets[2].customer_id: must be 1 to 256 characters, got 0"),
        (
            pb.CustomerTarget(customer_id="", persona_mix=_mix("nobody", 1)),
            "targets[2].customer_id: must be 1 to 256",
        ),
        (
            pb.CustomerTarget(customer_id="d", persona_mix=_mix("tech_savvy", -1)),
            "targets[2].persona_mix.weights[0].weight: must be >= 0, got -1.0",
        ),
        (
            pb.CustomerTarget(customer_id="d", exclude_item_ids=["i"] * 1001),
            "targets[2].exclude_item_ids: at most 1000 entries, got 1001",
        ),
    ],
)
def test_a_batch_error_names_its_target(
    personalizer: Personalizer, target: pb.CustomerTarget, message: str
) -> None:
    good = pb.CustomerTarget(customer_id="c", persona_mix=_mix("tech_savvy", 1))
    request = pb.RecommendProductsRequest(targets=[good, good, target, good], num_results=500)
    with pytest.raises(InvalidRequestError) as raised:
        validate.recommend_products_call(request, personalizer)
    assert str(raised.value).startswith(message), str(raised.value)
