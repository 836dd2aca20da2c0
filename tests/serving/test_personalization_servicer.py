"""The PersonalizationService over real gRPC transport, on a small trained artifact.

A real ``grpc.aio`` server on a free loopback port (on an event loop thread) serves
``PersonalizationServicer`` with a real model holder and real metrics; calls go through
``serving.client.PersonaEngineClient`` (or, for requests the client refuses to build, the generated
stub). Every RPC is exercised, and every documented limit is checked to fail with INVALID_ARGUMENT and
a message naming the field path.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, cast

import grpc
import numpy as np
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import CollectorRegistry

from engine.personalizer import Personalizer
from serving.client import Filters, PageContext, PersonaEngineClient, Promotion, Target
from serving.event_loop import EventLoopThread
from serving.generated.persona.v1 import personalization_service_pb2 as pb
from serving.generated.persona.v1 import personalization_service_pb2_grpc as pb_grpc
from serving.generated.persona.v1 import types_pb2
from serving.metrics import ServingMetrics
from serving.model_holder import ModelHolder
from serving.personalization_servicer import PersonalizationServicer, add_to_server
from tests.engine.small_artifact import train_small_artifact

SATURDAY = dt.datetime(2026, 3, 7, 12, tzinfo=dt.UTC)
TUESDAY = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)
TIMEOUT_S = 10.0


@dataclass
class Served:
    client: PersonaEngineClient
    stub: pb_grpc.PersonalizationServiceStub
    personalizer: Personalizer
    registry: CollectorRegistry
    artifact: Path

    def known_customer(self) -> str:
        return str(self.personalizer.model_customers.ids[0])

    def sample(self, name: str, labels: dict[str, str]) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


async def _start(holder: ModelHolder, metrics: ServingMetrics) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    add_to_server(PersonalizationServicer(holder, metrics), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@contextlib.contextmanager
def serving(holder: ModelHolder, metrics: ServingMetrics) -> Iterator[str]:
    """The servicer alone on an aio server on a loopback port; yields its address."""
    loop = EventLoopThread(threads=4, name="servicer-test")
    try:
        server, target = loop.run(_start(holder, metrics))
        try:
            yield target
        finally:
            loop.run(server.stop(None))
    finally:
        loop.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    artifact = train_small_artifact(tmp_path_factory.mktemp("servicer"))
    personalizer = Personalizer.from_path(artifact, "als")
    registry = CollectorRegistry()
    with serving(ModelHolder(personalizer, artifact), ServingMetrics(registry)) as target:
        channel = grpc.insecure_channel(target)
        with PersonaEngineClient(target, timeout_s=TIMEOUT_S) as client:
            stub = pb_grpc.PersonalizationServiceStub(channel)
            yield Served(client, stub, personalizer, registry, artifact)
        channel.close()


# ---------------------------------------------------------------------------------------------- RPCs


def test_personalize_returns_a_full_page_for_a_known_customer(served: Served) -> None:
    customer = served.known_customer()
    page = served.client.personalize(
        customer,
        context=PageContext(timestamp=SATURDAY, page_type="home", basket_value=400.0),
        k=8,
        num_offers=3,
        explain=True,
    )
    assert [item.rank for item in page.items] == list(range(1, 9))
    assert len({item.item_id for item in page.items}) == 8
    assert {item.reason for item in page.items} == {types_pb2.REASON_CODE_PERSONALIZED}
    for item in page.items:
        assert item.title and item.category and item.price >= 0
        assert sum(c.share for c in item.persona_contributions) == pytest.approx(1.0)
    decision = page.decision
    assert uuid.UUID(decision.decision_id).version == 4
    assert decision.persona_mix_source == types_pb2.PERSONA_MIX_SOURCE_INFERRED and not decision.cold_start
    assert decision.shopping_context == types_pb2.SHOPPING_CONTEXT_WEEKEND_HOLIDAY
    assert decision.model_version == served.personalizer.version and decision.model_name == "als"
    weights = [w.weight for w in decision.persona_mix.weights]
    assert weights == sorted(weights, reverse=True) and sum(weights) == pytest.approx(1.0)
    assert len(weights) == len(served.personalizer.catalog)
    assert 1 <= len(page.offers) <= 3 and all(0 < o.propensity <= 1 and o.reason for o in page.offers)
    assert all(o.kind != types_pb2.OFFER_KIND_UNSPECIFIED for o in page.offers)
    assert page.HasField("layout") and 0 < page.layout.propensity <= 1
    listed_items = {item.item_id for item in page.items}
    listed_offers = {offer.offer_id for offer in page.offers}
    for slot in page.layout.slots:
        assert set(slot.item_ids) <= listed_items and set(slot.offer_ids) <= listed_offers


def test_a_given_mix_is_normalised_and_reported_highest_first(served: Served) -> None:
    page = served.client.personalize(
        served.known_customer(), persona_mix={"tech_savvy": 3, "bargain_hunter": 1}, k=5
    )
    mix = [(w.persona_id, w.weight) for w in page.decision.persona_mix.weights]
    assert mix[:2] == [("tech_savvy", pytest.approx(0.75)), ("bargain_hunter", pytest.approx(0.25))]
    assert page.decision.persona_mix_source == types_pb2.PERSONA_MIX_SOURCE_REQUEST


def test_an_unknown_customer_is_served_cold_from_the_population_prior(served: Served) -> None:
    page = served.client.personalize("visitor-1234", context=PageContext(timestamp=TUESDAY), k=6)
    assert page.decision.cold_start
    assert page.decision.persona_mix_source == types_pb2.PERSONA_MIX_SOURCE_PRIOR
    assert page.decision.shopping_context == types_pb2.SHOPPING_CONTEXT_WEEKDAY
    assert len(page.items) == 6 and {i.reason for i in page.items} == {types_pb2.REASON_CODE_PERSONA}


def test_filters_pins_and_promotions_shape_the_list(served: Served) -> None:
    catalog = served.personalizer.item_catalog
    cap = float(np.median(catalog.prices))
    pinned = str(catalog.ids.ids[int(np.argmax(catalog.prices))])
    cart = [str(i) for i in catalog.ids.ids[:5]]
    page = served.client.personalize(
        "visitor-42",
        context=PageContext(cart_item_ids=cart),
        filters=Filters(price_max=cap, exclude_categories=["toys"]),
        promotions=[Promotion("fashion-week", 0.2, categories=["fashion"])],
        pins={3: pinned},
        k=10,
    )
    items = list(page.items)
    assert len(items) == 10 and items[2].item_id == pinned and items[2].reason == types_pb2.REASON_CODE_PINNED
    promoted = [i for i in items if i.reason == types_pb2.REASON_CODE_PROMOTED]
    assert len(promoted) == 2 and all(
        i.promotion_id == "fashion-week" and i.category == "fashion" for i in promoted
    )
    others = [i for i in items if i.reason != types_pb2.REASON_CODE_PINNED]
    assert all(i.price <= cap and i.category != "toys" and i.item_id not in cart for i in others)


def test_batches_answer_in_target_order_like_single_calls(served: Served) -> None:
    known = served.known_customer()
    first_pick = served.client.recommend_products(known, k=5).items[0].item_id
    targets = [
        Target(known, exclude_item_ids=[first_pick]),
        Target("visitor-9"),
        Target(known, persona_mix={"luxury_enthusiast": 1}),
    ]
    batch = served.client.recommend_products_batch(targets, k=5, context=PageContext(timestamp=TUESDAY))
    assert [r.customer_id for r in batch.results] == [known, "visitor-9", known]
    assert first_pick not in {i.item_id for i in batch.results[0].items}
    single = served.client.recommend_products("visitor-9", k=5, context=PageContext(timestamp=TUESDAY))
    assert [i.item_id for i in batch.results[1].items] == [i.item_id for i in single.items]
    assert batch.results[2].decision.persona_mix_source == types_pb2.PERSONA_MIX_SOURCE_REQUEST
    assert len({r.decision.decision_id for r in batch.results}) == 3


def test_rank_offers_respects_candidates_and_eligibility(served: Served) -> None:
    all_offers = served.client.rank_offers(
        "visitor-5", context=PageContext(basket_value=10_000.0), num_offers=20
    )
    offered = [o.offer_id for o in all_offers.offers]
    assert len(offered) == len(set(offered)) >= 2
    assert [o.rank for o in all_offers.offers] == list(range(1, len(offered) + 1))
    chosen = served.client.rank_offers(
        "visitor-5", context=PageContext(basket_value=10_000.0), candidate_offer_ids=offered[-2:]
    )
    assert {o.offer_id for o in chosen.offers} == set(offered[-2:])
    nothing = served.client.rank_offers("visitor-5", context=PageContext(basket_value=0.0), num_offers=20)
    assert len(nothing.offers) < len(offered), "minimum baskets rule offers out"


def test_select_layout_returns_slot_names_only(served: Served) -> None:
    response = served.client.select_layout(
        served.known_customer(), candidate_variant_ids=["premium", "wellness"]
    )
    assert response.layout.variant_id in {"premium", "wellness"}
    assert response.layout.slots and all(not s.item_ids and not s.offer_ids for s in response.layout.slots)
    assert 0 < response.layout.propensity <= 1 and response.decision.decision_id


def test_persona_profile_of_a_known_and_an_unknown_customer(served: Served) -> None:
    customer = served.known_customer()
    profile = served.client.get_persona_profile(customer)
    assert profile.customer_id == customer and not profile.cold_start
    assert profile.persona_mix_source == types_pb2.PERSONA_MIX_SOURCE_INFERRED
    assert [c.shopping_context for c in profile.context_mixes] == [
        types_pb2.SHOPPING_CONTEXT_WEEKDAY,
        types_pb2.SHOPPING_CONTEXT_WEEKEND_HOLIDAY,
    ]
    assert not profile.HasField("drift"), "drift is unset while the server does not track it"
    assert profile.evidence and profile.evidence[0].persona_id == profile.persona_mix.weights[0].persona_id
    signals = [s for e in profile.evidence for s in e.signals]
    assert signals and all(s.signal and s.contribution > 0 and 0 <= s.customer_value <= 1 for s in signals)
    leaders = profile.leading_personas
    assert 1 <= len(leaders) <= 3 and all(p.weight >= 0.1 and p.preferred_channels for p in leaders)
    assert profile.model_version == served.personalizer.version
    cold = served.client.get_persona_profile("someone-new")
    assert cold.cold_start and not cold.evidence
    assert cold.persona_mix_source == types_pb2.PERSONA_MIX_SOURCE_PRIOR


def test_list_personas_is_the_artifacts_catalog(served: Served) -> None:
    response = served.client.list_personas()
    catalog = served.personalizer.catalog
    assert [p.persona_id for p in response.personas] == list(catalog.ids)
    first = response.personas[0]
    assert first.name == catalog.personas[0].name and first.goals and first.demographics.age_bands
    assert response.model_version == served.personalizer.version


def test_customers_and_decisions_are_counted(served: Served) -> None:
    cold_before = served.sample("persona_engine_customers_total", {"cold_start": "true"})
    layouts_before = sum(
        served.sample("persona_engine_decisions_total", {"kind": "layout", "arm": arm})
        for arm in served.personalizer.decisions.layouts
    )
    page = served.client.personalize("counted-visitor", k=3)
    assert served.sample("persona_engine_customers_total", {"cold_start": "true"}) == cold_before + 1
    layouts_after = sum(
        served.sample("persona_engine_decisions_total", {"kind": "layout", "arm": arm})
        for arm in served.personalizer.decisions.layouts
    )
    assert layouts_after == layouts_before + 1
    for offer in page.offers:
        assert served.sample("persona_engine_decisions_total", {"kind": "offer", "arm": offer.offer_id}) >= 1


# ---------------------------------------------------------------------------------------------- errors


def _mix(*weights: tuple[str, float]) -> types_pb2.PersonaMix:
    return types_pb2.PersonaMix(weights=[types_pb2.PersonaWeight(persona_id=p, weight=w) for p, w in weights])


def _rule(promotion_id: str = "p", share: float = 0.2, **kwargs: Any) -> types_pb2.PromotionRule:
    return types_pb2.PromotionRule(promotion_id=promotion_id, share=share, **kwargs)


def _personalize(**kwargs: Any) -> tuple[str, Message]:
    return "Personalize", pb.PersonalizeRequest(**{"customer_id": "c", **kwargs})


def _recommend(**kwargs: Any) -> tuple[str, Message]:
    fields = {"targets": [pb.CustomerTarget(customer_id="c")], **kwargs}
    return "RecommendProducts", pb.RecommendProductsRequest(**fields)


MANY_IDS = [f"i{i}" for i in range(1001)]
BAD_REQUESTS: list[tuple[str, Callable[[], tuple[str, Message]], str]] = [
    (
        "empty customer",
        lambda: _personalize(customer_id=""),
        "customer_id: must be 1 to 256 characters, got 0",
    ),
    ("long customer", lambda: _personalize(customer_id="x" * 257), "customer_id: must be 1 to 256"),
    ("empty mix", lambda: _personalize(persona_mix=types_pb2.PersonaMix()), "persona_mix.weights: empty"),
    (
        "negative weight",
        lambda: _personalize(persona_mix=_mix(("bargain_hunter", 1), ("tech_savvy", -0.2))),
        "persona_mix.weights[1].weight: must be >= 0, got -0.2",
    ),
    (
        "nan weight",
        lambda: _personalize(persona_mix=_mix(("bargain_hunter", float("nan")))),
        "persona_mix.weights[0].weight: must be finite",
    ),
    (
        "unknown persona",
        lambda: _personalize(persona_mix=_mix(("bargain_huntr", 1))),
        "persona_mix.weights[0].persona_id: unknown persona 'bargain_huntr'",
    ),
    (
        "repeated persona",
        lambda: _personalize(persona_mix=_mix(("tech_savvy", 1), ("tech_savvy", 2))),
        "persona_mix.weights[1].persona_id: 'tech_savvy' already appears",
    ),
    (
        "zero mix",
        lambda: _personalize(persona_mix=_mix(("tech_savvy", 0), ("bargain_hunter", 0))),
        "persona_mix.weights: all weights are zero",
    ),
    ("too many results", lambda: _personalize(num_results=500), "num_results: must be 1..200"),
    ("negative results", lambda: _personalize(num_results=-1), "num_results: must be 1..200"),
    ("too many offers", lambda: _personalize(num_offers=21), "num_offers: must be 1..20"),
    ("diversity above one", lambda: _personalize(diversity=1.5), "diversity: must be in [0, 1]"),
    ("diversity nan", lambda: _personalize(diversity=float("nan")), "diversity: must be in [0, 1]"),
    (
        "negative price",
        lambda: _personalize(filters=types_pb2.ItemFilters(price_min=-1)),
        "filters.price_min: must be a finite number >= 0",
    ),
    (
        "price range reversed",
        lambda: _personalize(filters=types_pb2.ItemFilters(price_min=50, price_max=10)),
        "filters.price_max: must be >= price_min",
    ),
    (
        "too many exclusions",
        lambda: _personalize(filters=types_pb2.ItemFilters(exclude_item_ids=MANY_IDS)),
        "filters.exclude_item_ids: at most 1000 entries, got 1001",
    ),
    (
        "too many categories",
        lambda: _personalize(filters=types_pb2.ItemFilters(include_categories=MANY_IDS[:101])),
        "filters.include_categories: at most 100",
    ),
    (
        "too many excluded categories",
        lambda: _personalize(filters=types_pb2.ItemFilters(exclude_categories=MANY_IDS[:101])),
        "filters.exclude_categories: at most 100",
    ),
    (
        "too many session items",
        lambda: _personalize(context=types_pb2.RequestContext(session_item_ids=MANY_IDS[:201])),
        "context.session_item_ids: at most 200",
    ),
    (
        "too many cart items",
        lambda: _personalize(context=types_pb2.RequestContext(cart_item_ids=MANY_IDS[:201])),
        "context.cart_item_ids: at most 200",
    ),
    (
        "long channel",
        lambda: _personalize(context=types_pb2.RequestContext(channel="c" * 65)),
        "context.channel: must be 0 to 64 characters",
    ),
    (
        "long device",
        lambda: _personalize(context=types_pb2.RequestContext(device="d" * 65)),
        "context.device: must be 0 to 64 characters",
    ),
    (
        "negative basket",
        lambda: _personalize(context=types_pb2.RequestContext(basket_value=-5)),
        "context.basket_value: must be in [0, 1e+15], got -5.0",
    ),
    (
        "basket beyond any amount",
        lambda: _personalize(context=types_pb2.RequestContext(basket_value=1e308)),
        "context.basket_value: must be in [0, 1e+15], got 1e+308",
    ),
    (
        "the zero timestamp (a JavaScript Date object through protobuf.js)",
        lambda: _personalize(context=types_pb2.RequestContext(timestamp=Timestamp())),
        "context.timestamp: 1970-01-01T00:00:00Z is before 2000-01-01 (the zero Timestamp: seconds left "
        "unset, or a JavaScript Date object, which protobuf.js encodes as an empty message; send "
        "{seconds, nanos})",
    ),
    (
        "a timestamp before any shop's data",
        lambda: _personalize(context=types_pb2.RequestContext(timestamp=Timestamp(seconds=-2208988800))),
        "context.timestamp: 1900-01-01T00:00:00Z is before 2000-01-01",
    ),
    (
        "negative nanos",
        lambda: _personalize(
            context=types_pb2.RequestContext(timestamp=Timestamp(seconds=1_800_000_000, nanos=-1))
        ),
        "context.timestamp: nanos must be 0 to 999,999,999, got -1",
    ),
    (
        "a category the catalog does not have (the list could only be empty)",
        lambda: _personalize(filters=types_pb2.ItemFilters(include_categories=["fitness", "fitnes"])),
        "filters.include_categories[1]: 'fitnes' is not a category of the serving catalog",
    ),
    (
        "the empty category name",
        lambda: _recommend(filters=types_pb2.ItemFilters(include_categories=[""])),
        "filters.include_categories[0]: '' is not a category of the serving catalog",
    ),
    (
        "a customer id with a trailing space",
        lambda: ("GetPersonaProfile", pb.GetPersonaProfileRequest(customer_id="c0042 ")),
        "customer_id: 'c0042 ' has leading or trailing whitespace",
    ),
    (
        "a customer id with a control character",
        lambda: _personalize(customer_id="c0042\n"),
        "customer_id: 'c0042\\n' contains a control character (U+000A)",
    ),
    (
        "unknown shopping context",
        lambda: _personalize(context=types_pb2.RequestContext(shopping_context=cast(Any, 7))),
        "context.shopping_context: unknown value 7",
    ),
    (
        "unknown page type",
        lambda: _personalize(context=types_pb2.RequestContext(page_type=cast(Any, 99))),
        "context.page_type: unknown value 99",
    ),
    (
        "unrepresentable timestamp",
        lambda: _personalize(context=types_pb2.RequestContext(timestamp=Timestamp(seconds=10**13))),
        "context.timestamp: seconds 10000000000000 is outside the years 1 to 9999 a Timestamp can hold",
    ),
    (
        "too many rules",
        lambda: _personalize(
            promotions=types_pb2.Promotions(rules=[_rule(f"p{i}", 0.05, brands=["b"]) for i in range(11)])
        ),
        "promotions.rules: at most 10 entries",
    ),
    (
        "zero share",
        lambda: _personalize(promotions=types_pb2.Promotions(rules=[_rule(share=0, brands=["b"])])),
        "promotions.rules[0].share: must be in (0, 1]",
    ),
    (
        "rule without condition",
        lambda: _personalize(promotions=types_pb2.Promotions(rules=[_rule()])),
        "promotions.rules[0]: a rule needs at least one of categories, brands or item_ids",
    ),
    (
        "empty promotion id",
        lambda: _personalize(promotions=types_pb2.Promotions(rules=[_rule("", brands=["b"])])),
        "promotions.rules[0].promotion_id: must be 1 to 64 characters",
    ),
    (
        "repeated promotion id",
        lambda: _personalize(
            promotions=types_pb2.Promotions(rules=[_rule("p", brands=["b"]), _rule("p", brands=["c"])])
        ),
        "promotions.rules[1].promotion_id: 'p' is already used by rules[0]",
    ),
    (
        "shares above one",
        lambda: _personalize(
            promotions=types_pb2.Promotions(
                rules=[_rule("p", 0.7, brands=["b"]), _rule("q", 0.4, brands=["c"])]
            )
        ),
        "promotions.rules: shares add up to 1.1",
    ),
    (
        "too many rule categories",
        lambda: _personalize(promotions=types_pb2.Promotions(rules=[_rule(categories=MANY_IDS[:101])])),
        "promotions.rules[0].categories: at most 100",
    ),
    (
        "too many pins",
        lambda: _personalize(
            num_results=50,
            promotions=types_pb2.Promotions(
                pins=[types_pb2.PinnedItem(item_id=f"i{i:03d}", position=i + 1) for i in range(21)]
            ),
        ),
        "promotions.pins: at most 20 entries",
    ),
    (
        "more pins than results",
        lambda: _personalize(
            num_results=2,
            promotions=types_pb2.Promotions(
                pins=[types_pb2.PinnedItem(item_id=f"i{i:03d}", position=1 + i) for i in range(3)]
            ),
        ),
        "promotions.pins: 3 pins do not fit a list of 2 items",
    ),
    (
        "pin past the list",
        lambda: _personalize(
            num_results=5,
            promotions=types_pb2.Promotions(pins=[types_pb2.PinnedItem(item_id="i001", position=6)]),
        ),
        "promotions.pins[0].position: must be 1..5",
    ),
    (
        "unknown pinned item",
        lambda: _personalize(
            promotions=types_pb2.Promotions(pins=[types_pb2.PinnedItem(item_id="zz", position=1)])
        ),
        "promotions.pins[0].item_id: unknown item 'zz'",
    ),
    ("no targets", lambda: _recommend(targets=[]), "targets: must hold 1 to 1000 targets, got 0"),
    (
        "too many targets",
        lambda: _recommend(targets=[pb.CustomerTarget(customer_id="c")] * 1001),
        "targets: must hold 1 to 1000 targets, got 1001",
    ),
    (
        "bad target mix",
        lambda: _recommend(
            targets=[pb.CustomerTarget(customer_id="c")] * 3
            + [pb.CustomerTarget(customer_id="d", persona_mix=_mix(("bargain_huntr", 1)))]
        ),
        "targets[3].persona_mix.weights[0].persona_id: unknown persona 'bargain_huntr'",
    ),
    (
        "empty target id",
        lambda: _recommend(targets=[pb.CustomerTarget(customer_id="c"), pb.CustomerTarget()]),
        "targets[1].customer_id: must be 1 to 256 characters",
    ),
    (
        "too many target exclusions",
        lambda: _recommend(targets=[pb.CustomerTarget(customer_id="c", exclude_item_ids=MANY_IDS)]),
        "targets[0].exclude_item_ids: at most 1000",
    ),
    ("batch results", lambda: _recommend(num_results=201), "num_results: must be 1..200"),
    (
        "unknown offer",
        lambda: ("RankOffers", pb.RankOffersRequest(customer_id="c", candidate_offer_ids=["nope"])),
        "candidate_offer_ids[0]: unknown offer 'nope'",
    ),
    (
        "too many offers asked",
        lambda: ("RankOffers", pb.RankOffersRequest(customer_id="c", num_offers=25)),
        "num_offers: must be 1..20",
    ),
    (
        "too many candidate offers",
        lambda: ("RankOffers", pb.RankOffersRequest(customer_id="c", candidate_offer_ids=MANY_IDS)),
        "candidate_offer_ids: at most 1000",
    ),
    (
        "offer ranking mix",
        lambda: ("RankOffers", pb.RankOffersRequest(customer_id="c", persona_mix=_mix(("tech_savvy", -1)))),
        "persona_mix.weights[0].weight: must be >= 0, got -1.0",
    ),
    (
        "unknown variant",
        lambda: (
            "SelectLayout",
            pb.SelectLayoutRequest(customer_id="c", candidate_variant_ids=["premium", "x"]),
        ),
        "candidate_variant_ids[1]: unknown layout variant 'x'",
    ),
    (
        "too many variants",
        lambda: (
            "SelectLayout",
            pb.SelectLayoutRequest(customer_id="c", candidate_variant_ids=MANY_IDS[:101]),
        ),
        "candidate_variant_ids: at most 100",
    ),
    (
        "empty profile id",
        lambda: ("GetPersonaProfile", pb.GetPersonaProfileRequest()),
        "customer_id: must be 1 to 256 characters, got 0",
    ),
]


@pytest.mark.parametrize(
    ("build", "message"), [(b, m) for _, b, m in BAD_REQUESTS], ids=[n for n, _, _ in BAD_REQUESTS]
)
def test_requests_outside_the_limits_are_invalid_and_name_the_field(
    served: Served, build: Callable[[], tuple[str, Message]], message: str
) -> None:
    method, request = build()
    with pytest.raises(grpc.RpcError) as caught:
        getattr(served.stub, method)(request, timeout=TIMEOUT_S)
    error = cast(grpc.Call, caught.value)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (error.details() or ""), error.details()


class AbortedError(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class ExpiredContext:
    """The two ServicerContext methods the servicer uses, for a call whose deadline has passed."""

    def time_remaining(self) -> float:
        return 0.0

    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise AbortedError(code, details)


def test_a_request_whose_deadline_passed_is_refused_before_scoring(served: Served) -> None:
    servicer = PersonalizationServicer(
        ModelHolder(served.personalizer, served.artifact), ServingMetrics(CollectorRegistry())
    )
    with pytest.raises(AbortedError) as aborted:
        asyncio.run(
            servicer.Personalize(
                pb.PersonalizeRequest(customer_id="c"), cast(grpc.aio.ServicerContext, ExpiredContext())
            )
        )
    assert aborted.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and "Personalize" in aborted.value.details


def test_unexpected_failures_are_internal_without_details(
    served: Served, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Personalizer.from_path(served.artifact, "als")

    def fail(*_: object) -> NoReturn:
        raise RuntimeError("secret: /srv/models/als/item_factors.npy is corrupt")

    monkeypatch.setattr(broken.model, "score", fail)
    monkeypatch.setattr(broken.model, "query_vectors", fail)  # what the engine scores inner products with
    with serving(ModelHolder(broken, served.artifact), ServingMetrics(CollectorRegistry())) as target:
        with (
            PersonaEngineClient(target, timeout_s=TIMEOUT_S) as client,
            pytest.raises(grpc.RpcError) as caught,
        ):
            client.personalize("c", k=3)
        error = cast(grpc.Call, caught.value)
        assert error.code() == grpc.StatusCode.INTERNAL
        assert "secret" not in (error.details() or "") and "internal error" in (error.details() or "")
        assert "secret" in caplog.text, "the detail goes to the server log"
        with PersonaEngineClient(target, timeout_s=TIMEOUT_S) as client:
            assert client.list_personas().personas, "other RPCs keep working"
