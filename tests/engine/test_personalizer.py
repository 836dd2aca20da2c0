"""The serving core on a real (small) trained artifact: batches, filters, explanations, pages, profiles."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest

from engine.invalid_request import InvalidRequestError
from engine.personalization_request import CustomerTarget, PageRequest, ProductRequest, SessionContext
from engine.personalizer import Personalizer
from engine.personas.mix_resolution import MixSource
from engine.personas.shopping_context import CONTEXTS
from engine.ranking.filters import ItemFilters
from engine.ranking.list_assembly import ItemReason
from engine.ranking.promotions import PinnedItem, PromotionRule, Promotions
from tests.engine.small_artifact import train_small_artifact

SATURDAY = dt.datetime(2026, 3, 7, 12, tzinfo=dt.UTC)
TUESDAY = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def personalizer(tmp_path_factory: pytest.TempPathFactory) -> Personalizer:
    return Personalizer.from_path(train_small_artifact(tmp_path_factory.mktemp("personalizer")), "als")


def known_customer(personalizer: Personalizer, *, with_purchases: bool = False) -> str:
    rows = np.flatnonzero(personalizer._model_row >= 0)
    if with_purchases:
        rows = rows[np.diff(personalizer.purchases.indptr)[rows] > 0]
    return str(personalizer.customers.ids[rows[0]])


def test_a_batch_gives_the_same_lists_as_one_call_per_target(personalizer: Personalizer) -> None:
    targets = [
        CustomerTarget(known_customer(personalizer)),
        CustomerTarget("never-seen"),
        CustomerTarget(known_customer(personalizer), personalizer.persona_mix({"tech_savvy": 1.0})),
    ]
    request = ProductRequest(k=8, diversity=0.4, explain=True)
    session = SessionContext(timestamp=SATURDAY)
    ids = ["a", "b", "c"]
    batch = personalizer.recommend_products(targets, request, session, decision_ids=ids)
    singles = [
        personalizer.recommend_products([t], request, session, decision_ids=[i])[0]
        for t, i in zip(targets, ids, strict=True)
    ]
    # the same lists to the last bit of every score: each row is scored as if alone
    assert [r.items for r in batch] == [r.items for r in singles]
    for together, alone in zip(batch, singles, strict=True):
        np.testing.assert_array_equal(together.decision.mix.weights, alone.decision.mix.weights)
    assert [r.decision.decision_id for r in batch] == ids
    assert (
        len({r.decision.decision_id for r in personalizer.recommend_products(targets, request, session)}) == 3
    )


def test_pages_served_together_are_the_pages_served_alone(personalizer: Personalizer) -> None:
    pages = [
        PageRequest(
            CustomerTarget(known_customer(personalizer)),
            ProductRequest(k=5),
            SessionContext(timestamp=SATURDAY),
        ),
        PageRequest(CustomerTarget("never-seen"), ProductRequest(k=3, explain=True), num_offers=1),
        PageRequest(
            CustomerTarget(known_customer(personalizer, with_purchases=True)),
            ProductRequest(k=4, diversity=0.5),
            SessionContext(timestamp=TUESDAY, cart_item_ids=(str(personalizer.items.ids[3]),)),
            num_offers=4,
        ),
    ]
    ids = ["p1", "p2", "p3"]
    together = personalizer.personalize_many(pages, decision_ids=ids)
    alone = [
        personalizer.personalize(p.target, p.products, p.session, num_offers=p.num_offers, decision_id=i)
        for p, i in zip(pages, ids, strict=True)
    ]
    for a, b in zip(together, alone, strict=True):
        assert (a.items, a.offers, a.layout) == (b.items, b.offers, b.layout)
        assert a.decision.decision_id == b.decision.decision_id
    assert personalizer.personalize_many([]) == [] and personalizer.recommend_products_many([]) == []
    with pytest.raises(ValueError, match="2 decision ids for 3 pages"):
        personalizer.personalize_many(pages, decision_ids=["x", "y"])
    with pytest.raises(ValueError, match="num_offers"):
        personalizer.personalize_many([PageRequest(CustomerTarget("c"), num_offers=0)])


def test_page_eligibility_is_the_offer_rules_over_the_pages_items(personalizer: Personalizer) -> None:
    """The per-item rules compiled at load give what the offer rules give for the page's items."""
    rules = personalizer.decisions.rules
    assert rules is not None
    rng = np.random.default_rng(11)
    ids = personalizer.items.ids
    for _ in range(60):
        view = tuple(str(ids[i]) for i in rng.integers(0, len(ids), rng.integers(0, 4)))
        cart = tuple(str(ids[i]) for i in rng.integers(0, len(ids), rng.integers(0, 3)))
        basket = None if rng.random() < 0.5 else float(rng.choice([0.0, 40.0, 300.0]))
        session = SessionContext(session_item_ids=view, cart_item_ids=cart, basket_value=basket)
        catalog = personalizer.item_catalog
        fast = personalizer.decisions.page_eligibility_many(
            [catalog.indices(view)], [catalog.indices(cart)], [basket]
        )[0]
        np.testing.assert_array_equal(fast, rules.eligible(personalizer._eligibility(session)))


def test_a_batch_of_pages_gets_each_pages_own_eligibility(personalizer: Personalizer) -> None:
    """Pages with and without viewed or carted items, in any order, gathered in one batch."""
    rules = personalizer.decisions.rules
    assert rules is not None
    rng = np.random.default_rng(12)
    ids = personalizer.items.ids
    catalog = personalizer.item_catalog
    for _ in range(25):
        sessions = [
            SessionContext(
                session_item_ids=tuple(str(ids[i]) for i in rng.integers(0, len(ids), rng.integers(0, 4))),
                cart_item_ids=tuple(str(ids[i]) for i in rng.integers(0, len(ids), rng.integers(0, 3))),
                basket_value=None if rng.random() < 0.5 else float(rng.choice([0.0, 40.0, 300.0])),
            )
            for _ in range(int(rng.integers(1, 7)))
        ]
        batch = personalizer.decisions.page_eligibility_many(
            [catalog.indices(s.session_item_ids) for s in sessions],
            [catalog.indices(s.cart_item_ids) for s in sessions],
            [s.basket_value for s in sessions],
        )
        expected = np.array([rules.eligible(personalizer._eligibility(s)) for s in sessions])
        np.testing.assert_array_equal(batch, expected)


def test_known_customers_are_scored_against_the_mix_their_history_was_learned_under(
    personalizer: Personalizer,
) -> None:
    known = known_customer(personalizer)
    row = personalizer.mixes.row_of(known)
    given = personalizer.persona_mix({"tech_savvy": 1.0})
    spec = personalizer._spec(ProductRequest())
    chunk = [
        personalizer._row(CustomerTarget(known, given), spec, None, None),
        personalizer._row(CustomerTarget("never-seen", given), spec, None, None),
    ]
    batch = personalizer.lists.user_batch(chunk)
    assert batch.base_mix is not None
    np.testing.assert_array_equal(batch.mix, [given.weights, given.weights])
    # The known customer's base is their overall mix; a stranger has no history to re-base.
    np.testing.assert_allclose(batch.base_mix, [personalizer.mix_overall[row], given.weights])
    # Stating the customer's own weekday mix in the request changes nothing on a weekday.
    request, session = ProductRequest(k=10), SessionContext(timestamp=TUESDAY)
    weekday = personalizer.mix_for(known, personalizer.shopping_context(session))[0]
    plain = personalizer.recommend_products([CustomerTarget(known)], request, session)[0]
    restated = personalizer.recommend_products([CustomerTarget(known, weekday)], request, session)[0]
    assert restated.decision.mix_source is MixSource.REQUEST
    assert [i.item_id for i in plain.items] == [i.item_id for i in restated.items]
    assert [i.score for i in plain.items] == pytest.approx([i.score for i in restated.items], rel=1e-6)


def test_known_and_unknown_customers_are_scored_with_the_right_reason_and_source(
    personalizer: Personalizer,
) -> None:
    known, unknown = personalizer.recommend_products(
        [CustomerTarget(known_customer(personalizer)), CustomerTarget("never-seen")],
        ProductRequest(k=10),
        SessionContext(timestamp=TUESDAY),
    )
    assert not known.cold_start and known.decision.mix_source is MixSource.INFERRED
    assert {i.reason for i in known.items} == {ItemReason.PERSONALIZED}
    assert known.decision.shopping_context == "weekday"
    row = personalizer.customers.index(known.customer_id)
    np.testing.assert_allclose(
        known.mix.weights, personalizer.mixes.by_context[row, CONTEXTS.index("weekday")]
    )
    assert unknown.cold_start and unknown.decision.mix_source is MixSource.PRIOR
    assert {i.reason for i in unknown.items} == {ItemReason.PERSONA}
    assert len(known.items) == len(unknown.items) == 10


def test_a_customer_the_artifact_holds_but_the_model_never_saw_is_placed_by_their_events(
    personalizer: Personalizer,
) -> None:
    """The cold-start hold-out of an artifact written without a refit: ALS folds their training-period
    events in (the batch carries them), so their list is their own, not their mix's, and says so."""
    held_out = np.flatnonzero((personalizer._model_row < 0) & (np.diff(personalizer.history.indptr) >= 3))
    assert held_out.size, "the small artifact holds cold-start customers with events"
    row = int(held_out[0])
    customer = str(personalizer.customers.ids[row])
    mix = personalizer.persona_mix(
        dict(zip(personalizer.catalog.ids, personalizer.mix_overall[row], strict=True))
    )
    spec = personalizer._spec(ProductRequest(k=10))
    batch = personalizer.lists.user_batch(
        [
            personalizer._row(CustomerTarget(customer, mix), spec, None, None),
            personalizer._row(CustomerTarget("never-seen", mix), spec, None, None),
        ]
    )
    assert batch.events is not None
    assert np.array_equal(batch.events[0].indices, personalizer.history[row].indices)
    assert np.array_equal(batch.events[0].data, personalizer.history[row].data), "as training holds it"
    assert batch.events[1].nnz == 0
    placed, stranger = personalizer.recommend_products(
        [CustomerTarget(customer, mix), CustomerTarget("never-seen", mix)], ProductRequest(k=10)
    )
    assert placed.cold_start and {i.reason for i in placed.items} == {ItemReason.PERSONALIZED}
    assert {i.reason for i in stranger.items} == {ItemReason.PERSONA}
    assert [i.item_id for i in placed.items] != [i.item_id for i in stranger.items]
    model = personalizer.model
    expected = model.score(dataclasses.replace(batch.rows(np.array([0])), validated=False))[0]
    scored = {i.item_id: i.score for i in placed.items}
    catalog = personalizer.item_catalog
    for item_id, score in scored.items():
        assert score == pytest.approx(float(expected[catalog.indices((item_id,))[0]]), rel=1e-5)


def test_purchases_are_left_out_unless_included_and_cart_items_always(personalizer: Personalizer) -> None:
    customer = known_customer(personalizer, with_purchases=True)
    row = personalizer.customers.index(customer)
    bought = set(personalizer.items.to_external(personalizer.purchases[row].indices).tolist())
    k = len(personalizer.items) - 5
    default = personalizer.recommend_products([CustomerTarget(customer)], ProductRequest(k=k))[0]
    assert not bought & {i.item_id for i in default.items}
    cart = tuple(personalizer.items.ids[:3].tolist())
    included = personalizer.recommend_products(
        [CustomerTarget(customer)],
        ProductRequest(k=k, filters=ItemFilters(include_purchased=True, include_out_of_stock=True)),
        SessionContext(cart_item_ids=cart),
    )[0]
    listed = {i.item_id for i in included.items}
    assert bought - set(cart) <= listed and not set(cart) & listed


def test_filters_promotions_and_pins_together(personalizer: Personalizer) -> None:
    catalog = personalizer.item_catalog
    pinned = str(catalog.ids.ids[int(np.argmax(catalog.prices))])  # the priciest item, outside the price cap
    request = ProductRequest(
        k=10,
        filters=ItemFilters(price_max=float(np.median(catalog.prices))),
        promotions=Promotions(
            rules=(PromotionRule("fashion", 0.3, categories=("fashion",)),), pins=(PinnedItem(pinned, 1),)
        ),
    )
    items = personalizer.recommend_products([CustomerTarget("never-seen")], request)[0].items
    assert items[0].item_id == pinned and items[0].reason is ItemReason.PINNED
    promoted = [i for i in items if i.reason is ItemReason.PROMOTED]
    assert len(promoted) == 3 and all(
        i.category == "fashion" and i.promotion_id == "fashion" for i in promoted
    )
    assert all(i.price <= np.median(catalog.prices) for i in items[1:])
    assert [i.rank for i in items] == list(range(1, 11))


def test_an_unknown_pin_is_an_invalid_request(personalizer: Personalizer) -> None:
    request = ProductRequest(k=3, promotions=Promotions(pins=(PinnedItem("no-such-item", 1),)))
    with pytest.raises(InvalidRequestError, match=r"pins\[0\]\.item_id: unknown item 'no-such-item'"):
        personalizer.recommend_products([CustomerTarget("x")], request)


def test_explanations_follow_the_mix(personalizer: Personalizer) -> None:
    mix = personalizer.persona_mix({"luxury_enthusiast": 3, "bargain_hunter": 1})
    items = personalizer.recommend_products(
        [CustomerTarget("never-seen", mix)], ProductRequest(k=10, explain=True)
    )[0].items
    for item in items:
        shares = dict(item.persona_shares)
        assert sum(shares.values()) == pytest.approx(1.0)
        assert set(shares) == set(personalizer.catalog.ids)
        assert shares["tech_savvy"] == 0.0 and shares["luxury_enthusiast"] + shares[
            "bargain_hunter"
        ] == pytest.approx(1)
        assert [s for _, s in item.persona_shares] == sorted(
            (s for _, s in item.persona_shares), reverse=True
        )
    plain = personalizer.recommend_products([CustomerTarget("never-seen", mix)], ProductRequest(k=10))[0]
    assert all(item.persona_shares == () for item in plain.items)


def test_a_page_is_reproducible_from_its_decision_id_and_fills_the_layout(personalizer: Personalizer) -> None:
    customer = known_customer(personalizer)
    session = SessionContext(
        timestamp=SATURDAY, session_item_ids=tuple(personalizer.items.ids[:20].tolist()), basket_value=500.0
    )
    decision_id = "6f1c1d36-7d3a-4b55-9d5b-2f6d7c0e9a11"
    pages = [
        personalizer.personalize(
            CustomerTarget(customer), ProductRequest(k=6), session, num_offers=3, decision_id=decision_id
        )
        for _ in range(2)
    ]
    assert pages[0].items == pages[1].items and pages[0].offers == pages[1].offers
    assert pages[0].layout == pages[1].layout and pages[0].decision.decision_id == decision_id
    page = pages[0]
    assert page.decision.shopping_context == "weekend_holiday" and len(page.items) == 6
    assert page.offers and all(0 < o.propensity <= 1 for o in page.offers)
    assert page.layout is not None and 0 < page.layout.propensity <= 1
    placed_items = [i for slot in page.layout.slots for i in slot.item_ids]
    placed_offers = [o for slot in page.layout.slots for o in slot.offer_ids]
    assert placed_items == [i.item_id for i in page.items][: len(placed_items)]
    assert set(placed_offers) <= {o.offer_id for o in page.offers}


def test_rank_offers_and_select_layout_use_the_same_mix_resolution(personalizer: Personalizer) -> None:
    mix = personalizer.persona_mix({"bargain_hunter": 1})
    offers = personalizer.rank_offers(
        CustomerTarget("x", mix), SessionContext(basket_value=1000.0), num_offers=20
    )
    assert offers.decision.mix_source is MixSource.REQUEST and offers.decision.cold_start
    assert len(offers.offers) == len({o.offer_id for o in offers.offers}) >= 1
    layout = personalizer.select_layout(CustomerTarget("x", mix), candidate_variant_ids=("premium",))
    assert layout.layout is not None and layout.layout.variant_id == "premium"


def test_profiles_explain_known_customers_and_admit_cold_starts(personalizer: Personalizer) -> None:
    customer = known_customer(personalizer)
    profile = personalizer.persona_profile(customer)
    assert not profile.cold_start and profile.mix_source is MixSource.INFERRED
    assert [c for c, _ in profile.context_mixes] == list(CONTEXTS)
    assert profile.evidence and profile.evidence[0].persona_id == profile.mix.dominant
    signals = [s for e in profile.evidence for s in e.signals]
    assert signals and all(s.contribution > 0 and s.description for s in signals)
    leading = profile.leading_personas
    assert 1 <= len(leading) <= 3 and all(p.weight >= 0.1 for p in leading)
    cold = personalizer.persona_profile("never-seen")
    assert cold.cold_start and cold.evidence == () and cold.mix_source is MixSource.PRIOR


def test_models_that_ignore_who_the_customer_is_never_claim_personalized_lists(
    personalizer: Personalizer,
) -> None:
    by_mix_only = Personalizer.from_path(personalizer.artifact.path, "persona_popularity")
    assert personalizer.model_knows_customers and not by_mix_only.model_knows_customers
    known = by_mix_only.recommend_products([CustomerTarget(known_customer(personalizer))], ProductRequest())[
        0
    ]
    assert not known.cold_start and {i.reason for i in known.items} == {ItemReason.PERSONA}


def test_the_cli_view_leaves_out_everything_seen(personalizer: Personalizer) -> None:
    customer = known_customer(personalizer)
    result = personalizer.recommend(customer, 10)
    seen = set(
        personalizer.items.to_external(personalizer.history[personalizer.customers.index(customer)].indices)
    )
    assert len(result.items) == 10 and not seen & {i.item_id for i in result.items}
    assert result.decision.shopping_context is None and result.model == personalizer.model_name
