"""The live loop on a real trained artifact, without gRPC: arms, the bandit's offers, logging, learning."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from engine.decisions.experiment import ArmPolicy, Experiment, ExperimentArm
from engine.decisions.journey_stage import JourneyStage
from engine.live.decision_log_writer import DecisionLogWriter
from engine.live.decisions import Assignment, LiveDecisions
from engine.live.event_log import EventLog
from engine.live.events import BehaviorEvent, DecisionOutcome, OutcomeKind
from engine.live.live_loop import EventsNotStoredError, LiveLoop, NoEventLogError
from engine.live.live_state import LiveState
from engine.live.state_store import MemoryStateStore
from engine.personalization_request import (
    CustomerTarget,
    LayoutRequest,
    OfferRankingRequest,
    PageRequest,
    ProductListsRequest,
    ProductRequest,
    SessionContext,
)
from engine.personalizer import Personalizer
from tests.engine.live.recording_observers import FailingObserver, RecordingObserver
from tests.engine.small_artifact import train_small_artifact

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
EXPERIMENT = Experiment(
    "loop-test",
    "static",
    (ExperimentArm("static", 0.5), ExperimentArm("bandit", 0.5, ArmPolicy.ONLINE_BANDIT)),
)


@dataclass
class Loop:
    loop: LiveLoop
    decisions: LiveDecisions
    log: EventLog
    writer: DecisionLogWriter
    live_state: LiveState
    observer: RecordingObserver


@pytest.fixture(scope="module")
def personalizer(tmp_path_factory: pytest.TempPathFactory) -> Personalizer:
    return Personalizer.from_path(train_small_artifact(tmp_path_factory.mktemp("loop")), "als")


@pytest.fixture
def loop(personalizer: Personalizer, tmp_path: Path) -> Iterator[Loop]:
    store = MemoryStateStore()
    decisions = LiveDecisions(store, clock=lambda: NOW)
    decisions.experiment.set(EXPERIMENT)
    log = EventLog.open(tmp_path / "events.db")
    writer = DecisionLogWriter(tmp_path / "events.db")
    live_state = LiveState(store, clock=lambda: NOW)
    without_live = personalizer.resolver
    live_state.attach(personalizer)
    observer = RecordingObserver()
    loop = LiveLoop(
        decisions=decisions,
        event_log=log,
        decision_writer=writer,
        observers=[live_state, FailingObserver(), observer],
        clock=lambda: NOW,
    )
    loop.prepare(personalizer)
    yield Loop(loop, decisions, log, writer, live_state, observer)
    personalizer.resolver = without_live
    writer.close()
    log.close()


def customers(personalizer: Personalizer, n: int) -> list[str]:
    return [str(c) for c in personalizer.model_customers.ids[:n]]


def in_arm(personalizer: Personalizer, arm: str) -> str:
    return next(c for c in customers(personalizer, 60) if EXPERIMENT.assign(c).name == arm)


SESSION = SessionContext(timestamp=NOW)


def test_every_call_names_the_customers_experiment_arm(personalizer: Personalizer, loop: Loop) -> None:
    chosen = customers(personalizer, 12)
    for customer in chosen:
        expected = EXPERIMENT.assign(customer).name
        target = CustomerTarget(customer)
        assert (
            loop.loop.personalize(personalizer, PageRequest(target, session=SESSION)).experiment_arm
            == expected
        )
        assert (
            loop.loop.rank_offers(personalizer, OfferRankingRequest(target, SESSION)).experiment_arm
            == expected
        )
        assert (
            loop.loop.select_layout(personalizer, LayoutRequest(target, SESSION)).experiment_arm == expected
        )
    lists = loop.loop.recommend_products(
        personalizer, ProductListsRequest(tuple(CustomerTarget(c) for c in chosen), ProductRequest(k=3))
    )
    assert lists.experiment_arms == [EXPERIMENT.assign(c).name for c in chosen]
    assert [products.customer_id for products in lists.lists] == chosen
    assert {"static", "bandit"} <= set(lists.experiment_arms)


def test_without_an_experiment_the_artifacts_decisions_stand(personalizer: Personalizer) -> None:
    plain = LiveLoop()
    customer = customers(personalizer, 1)[0]
    served = plain.rank_offers(personalizer, OfferRankingRequest(CustomerTarget(customer), SESSION))
    assert served.experiment_arm == ""
    assert all("online bandit" not in offer.reason for offer in served.ranking.offers)
    with pytest.raises(NoEventLogError):
        plain.record_events([])


def test_the_bandit_arm_gets_the_bandits_offers_and_layout_with_exact_propensities(
    personalizer: Personalizer, loop: Loop
) -> None:
    customer = in_arm(personalizer, "bandit")
    request = PageRequest(CustomerTarget(customer), ProductRequest(k=4), SESSION, num_offers=2)
    page = loop.loop.personalize(personalizer, request).page
    assert page.offers and all("online bandit" in offer.reason for offer in page.offers)
    # The same decision made directly by the bandit (from a fresh, identical state) is the same.
    reference = LiveDecisions(MemoryStateStore(), clock=lambda: NOW)
    stage = reference.stage(personalizer, customer, SESSION)
    decision_id, mix = page.decision.decision_id, page.decision.mix
    offers = reference.rank_offers(
        personalizer,
        decision_id=decision_id,
        customer_id=customer,
        mix=mix,
        session=SESSION,
        stage=stage,
        n=2,
    )
    assert page.offers == offers
    assert all(0 < offer.propensity <= 1 for offer in offers)
    layout = reference.choose_layout(
        personalizer,
        decision_id=decision_id,
        customer_id=customer,
        mix=mix,
        stage=stage,
        timestamp=NOW,
        item_ids=[item.item_id for item in page.items],
        offer_ids=[offer.offer_id for offer in offers],
    )
    assert page.layout == layout


def test_the_static_arm_keeps_the_artifacts_offers(personalizer: Personalizer, loop: Loop) -> None:
    customer = in_arm(personalizer, "static")
    served = loop.loop.rank_offers(personalizer, OfferRankingRequest(CustomerTarget(customer), SESSION))
    assert served.ranking.offers and all("online bandit" not in o.reason for o in served.ranking.offers)


def test_served_offers_and_layouts_are_logged_with_arm_and_stage(
    personalizer: Personalizer, loop: Loop
) -> None:
    served = {}
    for customer in customers(personalizer, 8):
        page = loop.loop.personalize(
            personalizer, PageRequest(CustomerTarget(customer), session=SESSION)
        ).page
        served[page.decision.decision_id] = (customer, page)
    loop.loop.recommend_products(personalizer, ProductListsRequest((CustomerTarget("someone"),)))
    loop.writer.flush()
    logged = loop.log.served_decisions()
    assert {d.decision_id for d in logged} == set(served)
    for record in logged:
        customer, page = served[record.decision_id]
        assert record.customer_id == customer and record.timestamp == NOW
        assert record.experiment_arm == EXPERIMENT.assign(customer).name
        assert record.journey_stage in {stage.value for stage in JourneyStage}
        if record.decision_type == "offer":
            offer = next(o for o in page.offers if o.offer_id == record.arm_id)
            assert record.propensity == pytest.approx(offer.propensity)
        else:
            assert page.layout is not None and record.arm_id == page.layout.variant_id
            assert record.propensity == pytest.approx(page.layout.propensity)


def test_the_journey_stage_is_worked_out_only_where_it_is_read(
    personalizer: Personalizer, loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision log records each page's stage (the value LiveDecisions.stage gives); a loop with
    neither a log nor a bandit arm never asks for it (a state-store read and the clock per page)."""
    asked: list[str] = []
    stage_of = loop.decisions.stage

    def counted(chosen: Personalizer, customer_id: str, session: SessionContext) -> JourneyStage:
        asked.append(customer_id)
        return stage_of(chosen, customer_id, session)

    monkeypatch.setattr(loop.decisions, "stage", counted)
    static = in_arm(personalizer, "static")
    expected = stage_of(personalizer, static, SESSION).value
    page = loop.loop.personalize(personalizer, PageRequest(CustomerTarget(static), session=SESSION)).page
    loop.writer.flush()
    logged = [d for d in loop.log.served_decisions() if d.decision_id == page.decision.decision_id]
    assert logged and {d.journey_stage for d in logged} == {expected}
    assert asked == [static]  # once for the page's offers and layout

    asked.clear()
    unlogged = LiveLoop(decisions=loop.decisions, clock=lambda: NOW)  # no writer; no bandit arm runs
    loop.decisions.experiment.set(Experiment("plain", "only", (ExperimentArm("only", 1.0),)))
    targets = [CustomerTarget(c) for c in customers(personalizer, 5)]
    unlogged.personalize_many(personalizer, [PageRequest(t, session=SESSION) for t in targets])
    assert asked == []


def test_recorded_events_are_stored_once_and_update_live_state_journeys_and_the_bandit(
    personalizer: Personalizer, loop: Loop
) -> None:
    customer = in_arm(personalizer, "bandit")
    item = str(personalizer.item_catalog.ids.ids[0])
    bought = [BehaviorEvent("p1", customer, item, "purchase", NOW - dt.timedelta(minutes=1))]
    before = loop.decisions.journeys.history(customer).n_purchases
    stored = loop.loop.record_events(bought)
    assert stored.new_events == tuple(bought)
    assert loop.observer.events == bought  # the failing observer before it did not stop it
    resolved = personalizer.resolver.resolve(customer)
    assert resolved.live is not None and item in resolved.live.purchased_item_ids
    assert loop.decisions.journeys.history(customer).n_purchases == before + 1
    retried = loop.loop.record_events(bought)
    assert retried.new_events == () and retried.duplicate_events == 1
    assert loop.observer.events == bought, "a duplicate is not observed again"

    ranking = loop.loop.rank_offers(
        personalizer, OfferRankingRequest(CustomerTarget(customer), SESSION)
    ).ranking
    offer_bandit = loop.decisions.bandits(personalizer).offer
    assert offer_bandit is not None and ranking.offers
    stages = list(JourneyStage)
    alpha = sum(offer_bandit.posterior(stage).alpha.sum() for stage in stages)
    redeemed = DecisionOutcome(
        "r1",
        ranking.decision.decision_id,
        customer,
        OutcomeKind.OFFER_REDEEMED,
        NOW,
        ranking.offers[0].offer_id,
    )
    loop.loop.record_events([], [redeemed])
    assert sum(offer_bandit.posterior(stage).alpha.sum() for stage in stages) == pytest.approx(alpha + 1)


def test_a_batch_the_log_cannot_store_is_refused_and_not_observed(
    personalizer: Personalizer, loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(loop.log, "append", fail)
    event = BehaviorEvent("v1", customers(personalizer, 1)[0], "item", "view", NOW)
    with pytest.raises(EventsNotStoredError, match="nothing was accepted"):
        loop.loop.record_events([event])
    assert loop.observer.events == []


def test_an_arm_served_by_another_model_sees_the_same_live_state(
    personalizer: Personalizer, loop: Loop
) -> None:
    customer = customers(personalizer, 1)[0]
    item = str(personalizer.item_catalog.ids.ids[0])
    loop.loop.record_events(
        [BehaviorEvent("arm-p1", customer, item, "purchase", NOW - dt.timedelta(minutes=1))]
    )
    assignment = Assignment("popularity-arm", ArmPolicy.ARTIFACT, "popularity")
    arm = loop.decisions.personalizer_for(personalizer, assignment)
    assert arm.model_name == "popularity"
    resolved = arm.resolver.resolve(customer)
    assert resolved.live is not None and item in resolved.live.purchased_item_ids
    served = personalizer.resolver.resolve(customer)
    assert (resolved.source, resolved.mix.as_dict()) == (served.source, served.mix.as_dict())


def test_decisions_are_remembered_for_the_bandit_only_while_a_bandit_arm_runs(
    personalizer: Personalizer, loop: Loop
) -> None:
    """A remembered decision (~1 KB, kept for days) is needed only for a running bandit to learn from
    outcomes; without one, a page must leave nothing behind in the store for it (the soak benchmark
    saw workers grow by tens of MB an hour from these memories)."""
    store = loop.decisions.store
    customer = in_arm(personalizer, "static")
    request = PageRequest(CustomerTarget(customer), ProductRequest(k=3), SESSION, num_offers=2)

    def memories(decision_id: str) -> list[bytes | None]:
        return [store.get(f"bandit:{kind}:decision:{decision_id}") for kind in ("offer", "layout")]

    with_bandit = loop.loop.personalize(personalizer, request).page
    assert all(memory is not None for memory in memories(with_bandit.decision.decision_id))
    loop.decisions.experiment.set(Experiment("no-bandit", "static", (ExperimentArm("static", 1.0),)))
    without = loop.loop.personalize(personalizer, request).page
    assert memories(without.decision.decision_id) == [None, None]


def test_a_customer_first_seen_after_training_is_placed_by_what_they_bought_live(
    personalizer: Personalizer, loop: Loop
) -> None:
    """ALS folds a newcomer's live purchases in (each counted as the training matrix counts a
    purchase), so from their first purchases their list is their own, and says so."""
    newcomer = "first-seen-after-training"
    catalog = personalizer.item_catalog
    bought = [str(catalog.ids.ids[i]) for i in range(3)]
    before = personalizer.recommend_products([CustomerTarget(newcomer)], ProductRequest(k=10))[0]
    assert {i.reason.value for i in before.items} == {"persona"}
    loop.loop.record_events(
        [
            BehaviorEvent(f"new-p{n}", newcomer, item, "purchase", NOW - dt.timedelta(minutes=5 - n))
            for n, item in enumerate(bought)
        ]
    )
    row = personalizer._row(CustomerTarget(newcomer), personalizer._spec(ProductRequest(k=10)), None, None)
    batch = personalizer.lists.user_batch([row])
    assert batch.events is not None
    assert sorted(batch.events[0].indices.tolist()) == sorted(catalog.indices(bought).tolist())
    weight = personalizer.artifact.manifest["config"]["interactions"]["purchase"]
    assert batch.events[0].data == pytest.approx(np.log1p(weight))
    after = personalizer.recommend_products([CustomerTarget(newcomer)], ProductRequest(k=10))[0]
    assert after.cold_start and {i.reason.value for i in after.items} == {"personalized"}
    assert [i.item_id for i in after.items] != [i.item_id for i in before.items]
    assert not set(bought) & {i.item_id for i in after.items}, "what they bought is not offered again"
