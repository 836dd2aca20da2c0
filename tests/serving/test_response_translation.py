"""Responses assembled from prepared wire bytes are byte for byte the ones built field by field.

The oracle is the translation the server used before (``field_by_field_translation``). Real engine
results from the session's small artifact cover the request kinds (explain, cold start, backfill,
promotions and pins, given mixes, experiment arms served by another model or by the online bandit);
a property test covers values the engine rarely produces (non-ASCII text, NaN and signed zeros,
ranks past the prepared table, items of another catalog, empty strings).
"""

from __future__ import annotations

import gc
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.data.id_map import IdMap
from engine.data.item_catalog import ItemCatalog
from engine.decisions.experiment import ArmPolicy, Experiment, ExperimentArm
from engine.decisions.page_decision import FilledSlot, LayoutDecision, RankedOffer
from engine.live.decisions import LiveDecisions
from engine.live.live_loop import LiveLoop, ServedLayout, ServedOffers, ServedPage, ServedProductLists
from engine.live.state_store import MemoryStateStore
from engine.personalizer import (
    DecisionInfo,
    LayoutSelection,
    OfferRanking,
    PagePersonalization,
    Personalizer,
    ProductList,
    RecommendedItem,
)
from engine.personas.mix import PersonaMix
from engine.personas.mix_resolution import MixSource
from engine.personas.profile import by_weight
from engine.ranking.list_assembly import ItemReason
from serving import request_validation as validate
from serving import response_translation as translate
from serving.generated.persona.v1 import personalization_service_pb2 as pb
from serving.generated.persona.v1 import types_pb2
from serving.item_messages import (
    PER_CALL_FIELDS,
    STATIC_FIELDS,
    PreparedItems,
    append_items,
    prepare_items,
    prepared_items,
)
from tests.serving import field_by_field_translation as reference
from tests.serving.server_harness import trained_artifacts

PERSONAS = ("bargain_hunter", "tech_savvy", "luxury_enthusiast")


@dataclass
class Engine:
    personalizer: Personalizer
    plain: LiveLoop
    experimenting: LiveLoop

    @property
    def prepared(self) -> PreparedItems:
        return prepared_items(self.personalizer)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    personalizer = Personalizer.from_path(trained_artifacts(tmp_path_factory).older, "als")
    decisions = LiveDecisions(MemoryStateStore())
    decisions.experiment.set(
        Experiment(
            "translation",
            "static",
            (
                ExperimentArm("static", 0.4),
                ExperimentArm("bandit", 0.3, ArmPolicy.ONLINE_BANDIT),
                ExperimentArm("popular", 0.3, model="popularity"),
            ),
        )
    )
    experimenting = LiveLoop(decisions=decisions)
    experimenting.prepare(personalizer)
    prepare_items(personalizer)
    return Engine(personalizer, LiveLoop(), experimenting)


def _same(new: Message, old: Message) -> None:
    assert new.SerializeToString() == old.SerializeToString()


def _page_requests(personalizer: Personalizer) -> list[pb.PersonalizeRequest]:
    catalog = personalizer.item_catalog
    known = [str(c) for c in personalizer.model_customers.ids[:4]]
    pinned = str(catalog.ids.ids[int(np.argmax(catalog.prices))])
    cheapest = float(np.sort(catalog.prices)[5])
    mix = types_pb2.PersonaMix(
        weights=[
            types_pb2.PersonaWeight(persona_id="tech_savvy", weight=1),
            types_pb2.PersonaWeight(persona_id="bargain_hunter", weight=1),  # a tie, in catalog order
        ]
    )
    context = types_pb2.RequestContext(
        page_type=types_pb2.PAGE_TYPE_PRODUCT_DETAIL,
        channel="search",
        device="mobile",
        session_item_ids=[str(i) for i in catalog.ids.ids[:3]],
        cart_item_ids=[str(catalog.ids.ids[3])],
        basket_value=250.0,
    )
    promotions = types_pb2.Promotions(
        rules=[types_pb2.PromotionRule(promotion_id="fashion-week", share=0.2, categories=["fashion"])],
        pins=[types_pb2.PinnedItem(item_id=pinned, position=2)],
    )
    return [
        pb.PersonalizeRequest(customer_id=known[0], num_results=20, num_offers=3),
        pb.PersonalizeRequest(customer_id=known[1], num_results=20, explain=True, context=context),
        pb.PersonalizeRequest(customer_id="never-seen", num_results=20),  # cold start
        pb.PersonalizeRequest(customer_id="never-seen", num_results=10, explain=True, persona_mix=mix),
        pb.PersonalizeRequest(customer_id=known[2], num_results=20, promotions=promotions, explain=True),
        pb.PersonalizeRequest(customer_id=known[3], num_results=200, diversity=0.7, num_offers=20),
        pb.PersonalizeRequest(  # too few items pass the filters: backfilled from popularity
            customer_id=known[0],
            num_results=50,
            filters=types_pb2.ItemFilters(price_max=cheapest, include_out_of_stock=True),
        ),
        pb.PersonalizeRequest(customer_id=known[1], num_results=1, context=context),
    ]


def _sparse(serving: Personalizer) -> Personalizer:
    """The same model (loaded apart) scoring only every third item, so lists are backfilled."""
    personalizer = Personalizer.from_path(serving.artifact.path, "als")
    score = personalizer.model.score

    def sparse_score(batch: Any) -> Any:
        scores = np.array(score(batch), copy=True)
        scores[:, 1::3] = -np.inf
        scores[:, 2::3] = -np.inf
        return scores

    personalizer.model.score = sparse_score  # type: ignore[method-assign]
    personalizer.lists.item_vectors = None  # score every row through ``score``, not inner products
    return personalizer


def test_personalize_responses_are_byte_identical(engine: Engine) -> None:
    reasons = set()
    sparse = _sparse(engine.personalizer)
    runs = [
        (engine.personalizer, engine.plain),
        (engine.personalizer, engine.experimenting),
        (sparse, LiveLoop()),
    ]
    for personalizer, loop in runs:
        for request in _page_requests(engine.personalizer):
            served = loop.personalize(personalizer, validate.personalize_call(request, personalizer))
            reasons |= {item.reason for item in served.page.items}
            old = reference.page_response(served)
            _same(translate.page_response(served, prepared_items(personalizer)), old)
            _same(translate.page_response(served), old)
    assert reasons == set(ItemReason), "the requests cover every reason, backfill and promotions included"


def test_arms_served_by_another_model_or_the_bandit_are_byte_identical(engine: Engine) -> None:
    arms = set()
    for n in range(60):
        request = pb.PersonalizeRequest(customer_id=f"c{n:07d}", num_results=20, explain=n % 2 == 0)
        served = engine.experimenting.personalize(
            engine.personalizer, validate.personalize_call(request, engine.personalizer)
        )
        arms.add(served.experiment_arm)
        _same(translate.page_response(served, engine.prepared), reference.page_response(served))
    assert arms == {"static", "bandit", "popular"}


def test_the_other_responses_are_byte_identical(engine: Engine) -> None:
    personalizer = engine.personalizer
    known = str(personalizer.model_customers.ids[0])
    batch = pb.RecommendProductsRequest(
        targets=[
            pb.CustomerTarget(customer_id=known),
            pb.CustomerTarget(customer_id="never-seen", exclude_item_ids=["i001"]),
            pb.CustomerTarget(customer_id=f"c{7:07d}"),
        ],
        num_results=15,
        explain=True,
    )
    offers = pb.RankOffersRequest(customer_id=known, num_offers=5)
    layouts = pb.SelectLayoutRequest(customer_id=known)
    for loop in (engine.plain, engine.experimenting):
        lists = loop.recommend_products(personalizer, validate.recommend_products_call(batch, personalizer))
        old_lists = reference.product_lists_response(lists)
        _same(translate.product_lists_response(lists, engine.prepared), old_lists)
        _same(translate.product_lists_response(lists), old_lists)
        ranked = loop.rank_offers(personalizer, validate.rank_offers_call(offers, personalizer))
        _same(translate.offers_response(ranked), reference.offers_response(ranked))
        chosen = loop.select_layout(personalizer, validate.select_layout_call(layouts, personalizer))
        _same(translate.layout_response(chosen), reference.layout_response(chosen))
        no_layout = ServedLayout(replace(chosen.selection, layout=None), chosen.experiment_arm)
        _same(translate.layout_response(no_layout), reference.layout_response(no_layout))


# ---------------------------------------------------------------------------------------- properties

CATALOG = ItemCatalog(
    IdMap(["i1", "i2", "é-3", "🛒4", "i5"]),
    titles=np.asarray(["Kettle", "", "Crème brûlée", "Κούπα 🍵", "x" * 300]),
    categories=np.asarray(["kitchen", "kitchen", "food", "", "books"]),
    brands=np.asarray(["Acme", "", "Maison", "Ηλιος", ""]),
    prices=np.asarray([19.5, 0.0, -0.0, 1e300, 3.25]),
    in_stock=np.ones(5, dtype=bool),
)
_text = st.text(max_size=20)
_floats = st.floats(allow_nan=True, allow_infinity=True)


@st.composite
def _items(draw: st.DrawFn) -> RecommendedItem:
    """Catalog items (their fields as the catalog has them) and, now and then, an item of another."""
    if draw(st.booleans()):
        n = draw(st.integers(0, len(CATALOG) - 1))
        fields: dict[str, Any] = {
            "item_id": str(CATALOG.ids.ids[n]),
            "title": str(CATALOG.titles[n]),
            "category": str(CATALOG.categories[n]),
            "brand": str(CATALOG.brands[n]),
            "price": float(CATALOG.prices[n]),
        }
    else:
        item_id = draw(_text.filter(lambda text: text not in CATALOG.ids))  # a catalog id has its fields
        fields = {"item_id": item_id, "title": draw(_text), "category": draw(_text)}
        fields |= {"brand": draw(_text), "price": draw(_floats)}
    shares = draw(st.lists(st.tuples(st.sampled_from(PERSONAS), _floats), max_size=3))
    return RecommendedItem(
        **fields,
        score=draw(_floats),
        rank=draw(st.one_of(st.integers(0, 40), st.integers(0, 2**31 - 1))),
        reason=draw(st.sampled_from(list(ItemReason))),
        promotion_id=draw(st.one_of(st.just(""), _text)),
        persona_shares=tuple(shares),
    )


_offers = st.builds(
    RankedOffer,
    offer_id=_text,
    kind=st.sampled_from(["percent_off", "bundle", "free_shipping", "loyalty_points", "early_access", "?"]),
    description=_text,
    rank=st.integers(0, 2**31 - 1),
    score=_floats,
    propensity=_floats,
    reason=_text,
)
_layouts = st.builds(
    LayoutDecision,
    variant_id=_text,
    description=_text,
    slots=st.lists(
        st.builds(
            FilledSlot,
            name=_text,
            item_ids=st.lists(_text, max_size=4).map(tuple),
            offer_ids=st.lists(_text, max_size=2).map(tuple),
        ),
        max_size=3,
    ).map(tuple),
    score=_floats,
    propensity=_floats,
)


@st.composite
def _decisions(draw: st.DrawFn) -> DecisionInfo:
    raw = draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, 3.0]), min_size=3, max_size=3))
    weights = np.asarray(raw if sum(raw) > 0 else [1.0, 1.0, 0.0])
    return DecisionInfo(
        decision_id=draw(_text),
        mix=PersonaMix(PERSONAS, weights / weights.sum()),
        mix_source=draw(st.sampled_from(list(MixSource))),
        cold_start=draw(st.booleans()),
        shopping_context=draw(st.sampled_from([None, "", "weekday", "weekend_holiday"])),
        model_version=draw(_text),
        model_name=draw(_text),
    )


_arms = st.one_of(st.just(""), _text)
_quick = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_quick
@given(
    items=st.lists(_items(), max_size=6),
    offers=st.lists(_offers, max_size=3),
    layout=st.one_of(st.none(), _layouts),
    decision=_decisions(),
    arm=_arms,
)
def test_any_page_is_byte_identical(
    items: list[RecommendedItem],
    offers: list[RankedOffer],
    layout: LayoutDecision | None,
    decision: DecisionInfo,
    arm: str,
) -> None:
    served = ServedPage(PagePersonalization(items, offers, layout, decision), arm)
    old = reference.page_response(served)
    _same(translate.page_response(served, PreparedItems(CATALOG)), old)
    _same(translate.page_response(served), old)


@_quick
@given(
    lists=st.lists(st.tuples(_text, st.lists(_items(), max_size=3), _decisions(), _arms), max_size=3),
    offers=st.lists(_offers, max_size=3),
    layout=st.one_of(st.none(), _layouts),
    decision=_decisions(),
    arm=_arms,
)
def test_any_list_ranking_or_selection_is_byte_identical(
    lists: list[tuple[str, list[RecommendedItem], DecisionInfo, str]],
    offers: list[RankedOffer],
    layout: LayoutDecision | None,
    decision: DecisionInfo,
    arm: str,
) -> None:
    served = ServedProductLists(
        [ProductList(customer, items, made) for customer, items, made, _ in lists],
        [target_arm for *_, target_arm in lists],
    )
    _same(
        translate.product_lists_response(served, PreparedItems(CATALOG)),
        reference.product_lists_response(served),
    )
    ranking = ServedOffers(OfferRanking(offers, decision), arm)
    _same(translate.offers_response(ranking), reference.offers_response(ranking))
    selection = ServedLayout(LayoutSelection(layout, decision), arm)
    _same(translate.layout_response(selection), reference.layout_response(selection))


@given(st.lists(st.sampled_from([0.0, 0.1, 0.2, 0.5]), min_size=1, max_size=8))
def test_mixes_are_listed_highest_first_ties_in_catalog_order_as_by_weight(raw: list[float]) -> None:
    weights = np.asarray(raw) + (0.0 if sum(raw) > 0 else 1.0)
    mix = PersonaMix(tuple(f"p{k}" for k in range(len(weights))), weights / weights.sum())
    encoded = types_pb2.PersonaMix.FromString(translate._mix_bytes(mix))
    assert [w.persona_id for w in encoded.weights] == [mix.personas[k] for k in by_weight(mix)]


# ---------------------------------------------------------------------------------------- prepared items


def test_every_recommended_item_field_is_either_prepared_or_set_per_call() -> None:
    """A field added to RecommendedItem must be placed here (and in the reference) before it ships."""
    fields = {field.name for field in types_pb2.RecommendedItem.DESCRIPTOR.fields}
    assert fields == set(STATIC_FIELDS) | set(PER_CALL_FIELDS)


@pytest.mark.parametrize(
    ("message", "encoded"),
    [
        (types_pb2.RankedOffer, {"offer_id", "kind", "description", "rank", "score", "propensity", "reason"}),
        (types_pb2.LayoutDecision, {"variant_id", "description", "slots", "score", "propensity"}),
        (types_pb2.LayoutSlot, {"name", "item_ids", "offer_ids"}),
        (types_pb2.PersonaMix, {"weights"}),
        (types_pb2.PersonaWeight, {"persona_id", "weight"}),
        # experiment_arm repeats the response's; degraded_reason is set after encoding, on calls
        # served without live state (mark_without_live_state)
        (
            types_pb2.DecisionInfo,
            {"decision_id", "persona_mix", "persona_mix_source", "cold_start", "shopping_context"}
            | {"model_version", "model_name", "experiment_arm", "degraded_reason"},
        ),
        (pb.PersonalizeResponse, {"items", "offers", "layout", "decision", "experiment_arm"}),
        (pb.ProductRecommendation, {"customer_id", "items", "decision", "experiment_arm"}),
        (pb.RecommendProductsResponse, {"results"}),
        (pb.RankOffersResponse, {"offers", "decision", "experiment_arm"}),
        (pb.SelectLayoutResponse, {"layout", "decision", "experiment_arm"}),
    ],
)
def test_the_encoders_know_every_field_of_the_messages_they_write(
    message: type[Message], encoded: set[str]
) -> None:
    assert {field.name for field in message.DESCRIPTOR.fields} == encoded


def _one_item_catalog() -> ItemCatalog:
    return ItemCatalog(
        IdMap(["a"]),
        titles=np.asarray(["t"]),
        categories=np.asarray(["c"]),
        brands=np.asarray(["b"]),
        prices=np.asarray([1.0]),
        in_stock=np.ones(1, dtype=bool),
    )


@dataclass
class _CatalogOwner:
    """What the registry reads of a Personalizer: its item catalog."""

    item_catalog: ItemCatalog


def test_one_table_per_artifact_shared_by_its_personalizers_and_freed_with_it(engine: Engine) -> None:
    table = prepare_items(engine.personalizer)
    assert prepare_items(engine.personalizer) is table
    assert prepared_items(engine.personalizer.with_model("popularity")) is table
    assert len(table) == len(engine.personalizer.item_catalog) and table.nbytes > 0
    owner = cast(Personalizer, _CatalogOwner(_one_item_catalog()))
    freed: list[bool] = []
    weakref.finalize(prepared_items(owner), freed.append, True)
    del owner
    gc.collect()
    assert freed == [True], "the table goes with its artifact's catalog"


def test_items_a_table_cannot_encode_fail_only_the_requests_that_list_them() -> None:
    catalog = ItemCatalog(
        IdMap(["ok", "bad"]),
        titles=np.asarray(["fine", "a\udc80"]),
        categories=np.asarray(["c", "c"]),
        brands=np.asarray(["", ""]),
        prices=np.asarray([1.0, 2.0]),
        in_stock=np.ones(2, dtype=bool),
    )
    table = PreparedItems(catalog)
    assert table.fragment("ok") is not None and table.fragment("bad") is None
    assert table.fragment("unknown") is None

    def item(item_id: str, title: str) -> RecommendedItem:
        return RecommendedItem(item_id, title, "c", "", 1.0, 0.5, 1, ItemReason.PERSONA)

    parts: list[bytes] = []
    append_items(parts, b"\x0a", [item("ok", "fine")], table)
    assert pb.PersonalizeResponse.FromString(b"".join(parts)).items[0].title == "fine"
    for build in (reference.item_to_proto, _through(table)):
        with pytest.raises(UnicodeEncodeError):
            build(item("bad", "a\udc80"))


def _through(table: PreparedItems) -> Callable[[RecommendedItem], object]:
    return lambda item: append_items([], b"\x0a", [item], table)


def test_special_doubles_keep_their_bits() -> None:
    item = RecommendedItem("i1", "Kettle", "kitchen", "Acme", 19.5, -0.0, 1, ItemReason.PINNED)
    served = ServedPage(
        PagePersonalization(
            [item, replace(item, score=math.nan, rank=2), replace(item, score=-math.inf, rank=3)],
            [],
            None,
            DecisionInfo(
                "d", PersonaMix(PERSONAS, np.asarray([1.0, 0, 0])), MixSource.PRIOR, True, None, "", ""
            ),
        )
    )
    _same(translate.page_response(served, PreparedItems(CATALOG)), reference.page_response(served))


def test_a_response_served_without_live_state_says_so_on_every_decision() -> None:
    responses: list[Message] = [
        pb.PersonalizeResponse(),
        pb.RankOffersResponse(),
        pb.SelectLayoutResponse(),
        pb.RecommendProductsResponse(results=[pb.ProductRecommendation(), pb.ProductRecommendation()]),
        pb.GetPersonaProfileResponse(),
    ]
    for response in responses:
        translate.mark_without_live_state(response)
    *single, batch, profile = responses
    reason = translate.WITHOUT_LIVE_STATE
    assert [r.decision.degraded_reason for r in single] == [reason] * 3  # type: ignore[attr-defined]
    assert [r.decision.degraded_reason for r in batch.results] == [reason] * 2  # type: ignore[attr-defined]
    assert profile.degraded_reason == reason  # type: ignore[attr-defined]
