"""The live loop around the Personalizer: one engine call per request and one per batch of events.

The Personalizer answers from the artifact alone. A deployment that learns online wraps each of its
answers in the same steps, and they belong together, in the core, not in whichever transport serves
them (the gRPC servicer only translates messages around these calls):

- the customer is assigned an experiment arm (``engine.decisions.experiment``), which may serve
  another recommender of the artifact; the result names the arm;
- the journey stage is read (``engine.decisions.journey_stage``); an ``online-bandit`` arm gets its
  offers and layout from the online bandit (``engine.live.decisions``) with the bandit's exact
  propensities, and the artifact's decisions in other arms are remembered so their outcomes teach
  the bandit too;
- every offer and layout served is queued for the decision log (``DecisionLogWriter``, off the
  request path) with its arm and stage.

Recording events is the other half: a batch is appended to the event log in one durable transaction
and only then are the newly accepted records (never a retried duplicate) handed to the observers: the
live customer state, any extra observers, and last the experiment's journeys and bandits. An
observer that fails is logged and skipped: the records are already durable and acknowledged, and the
caller must not retry them. Calls may arrive from several threads at once.

Without ``decisions`` there is no experiment and no bandit (every arm is ``""``); without an event
log nothing is recorded and ``record_events`` refuses.

Pages and product lists are served in batches (``personalize_many``, ``recommend_products_many``), a
single call being a batch of one: a server that collects concurrent calls scores them together, and
each result is exactly what the call would have got alone, in the same order, with the same side
effects (bandit memory, decision log entries, in request order). Decision ids come from one source,
taken in request order (``decision_ids``, UUID4s by default), so a test can replay both ways. A
request the engine refuses fails the whole batch before any side effect; a caller batching
independent calls retries them one by one to find the one at fault.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from engine.decisions.decision_draws import new_decision_id
from engine.decisions.experiment import ArmPolicy
from engine.decisions.journey_stage import JourneyStage
from engine.decisions.page_decision import LayoutDecision, RankedOffer
from engine.errors import PersonaEngineError
from engine.live.decision_log_writer import DecisionLogWriter, served_arms
from engine.live.decisions import Assignment, LiveDecisions
from engine.live.event_log import AppendResult
from engine.live.event_store import EventStore
from engine.live.events import BehaviorEvent, DecisionOutcome, LiveEventObserver, ServedDecision
from engine.personalization_request import (
    LayoutRequest,
    OfferRankingRequest,
    PageRequest,
    ProductListsRequest,
    SessionContext,
)
from engine.personalizer import (
    DecisionInfo,
    LayoutSelection,
    OfferRanking,
    PagePersonalization,
    Personalizer,
    ProductList,
)

LOGGER = logging.getLogger("persona_engine.live")


class NoEventLogError(PersonaEngineError, RuntimeError):
    """Events were sent to a deployment that keeps no event log."""


class EventsNotStoredError(PersonaEngineError, RuntimeError):
    """The event log could not store a batch; nothing of it was stored, so a retry is safe."""


@dataclass(frozen=True)
class ServedPage:
    page: PagePersonalization  # offers and layout are the bandit's in an online-bandit arm
    experiment_arm: str = ""  # "" outside any experiment


@dataclass(frozen=True)
class ServedProductLists:
    lists: list[ProductList]  # one per target, in request order
    experiment_arms: list[str]  # each target's arm, in the same order


@dataclass(frozen=True)
class ServedOffers:
    ranking: OfferRanking
    experiment_arm: str = ""


@dataclass(frozen=True)
class ServedLayout:
    selection: LayoutSelection
    experiment_arm: str = ""


class _ArmContext:
    """One request's place in the live loop: its experiment arm, the personalizer and journey stage.

    The stage is worked out on first use: only an online-bandit arm, a bandit that remembers the
    artifact's decisions and the decision log read it, and working it out (the customer's counts in
    the artifact and in the state store, the clock) cost a page without either about 10 µs of the
    0.3 ms the engine spends on it.
    """

    __slots__ = ("_stage", "_stage_of", "assignment", "personalizer")

    def __init__(
        self, assignment: Assignment, personalizer: Personalizer, stage_of: Callable[[], JourneyStage]
    ) -> None:
        self.assignment = assignment
        self.personalizer = personalizer
        self._stage_of = stage_of
        self._stage: JourneyStage | None = None

    @property
    def stage(self) -> JourneyStage:
        if self._stage is None:
            self._stage = self._stage_of()
        return self._stage

    @property
    def uses_bandit(self) -> bool:
        return self.assignment.policy is ArmPolicy.ONLINE_BANDIT


class LiveLoop:
    """Serves requests with a Personalizer inside the live loop, and records the events that feed it.

    The Personalizer is an argument of every call rather than of the loop: a server swaps models on
    reload, and each call must use the one model it started with from translation to response.
    """

    def __init__(
        self,
        *,
        decisions: LiveDecisions | None = None,
        event_log: EventStore | None = None,
        decision_writer: DecisionLogWriter | None = None,
        observers: Sequence[LiveEventObserver] = (),
        clock: Callable[[], dt.datetime] | None = None,
        decision_ids: Callable[[], str] = new_decision_id,
    ) -> None:
        """``observers`` learn from accepted batches, before ``decisions`` (which learns from them too).

        ``clock`` dates logged decisions whose request carries no timestamp (UTC now by default);
        ``decision_ids`` gives each decision its id, one call per page or listed target in request order.
        """
        self._new_decision_id = decision_ids
        self._decisions = decisions
        self._event_log = event_log
        self._decision_writer = decision_writer
        self._observers: list[LiveEventObserver] = list(observers)
        if decisions is not None:
            self._observers.append(decisions)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    def prepare(self, personalizer: Personalizer) -> None:
        """Build the bandits for the serving model now, so outcomes of decisions served before a
        restart (their state kept in a shared store) teach them from the first batch on."""
        if self._decisions is not None:
            self._decisions.bandits(personalizer)

    def add_observer(self, observer: LiveEventObserver) -> None:
        """Register before serving starts; it learns after those given at construction."""
        self._observers.insert(len(self._observers) - (self._decisions is not None), observer)

    # ------------------------------------------------------------------ decisions

    def personalize(self, personalizer: Personalizer, request: PageRequest) -> ServedPage:
        return self.personalize_many(personalizer, [request])[0]

    def personalize_many(
        self, personalizer: Personalizer, requests: Sequence[PageRequest]
    ) -> list[ServedPage]:
        """Pages for many requests, scored together per serving model; result i is what
        ``personalize(requests[i])`` gives when the calls are made one by one in this order."""
        ids = [self._new_decision_id() for _ in requests]
        arms = [self._arm(personalizer, r.target.customer_id, r.session) for r in requests]
        chosen = [arm.personalizer if arm is not None else personalizer for arm in arms]
        pages: list[PagePersonalization | None] = [None] * len(requests)
        for model, positions in _grouped(chosen):
            scored = model.personalize_many(
                [requests[i] for i in positions], decision_ids=[ids[i] for i in positions]
            )
            for i, page in zip(positions, scored, strict=True):
                pages[i] = page
        served = []
        for request, arm, model, scored_page in zip(requests, arms, chosen, pages, strict=True):
            assert scored_page is not None
            page = scored_page
            if arm is not None and arm.uses_bandit:
                page = self._bandit_page(model, request, arm, page)
            customer_id = request.target.customer_id
            self._served(page.decision, page.offers, page.layout, customer_id, request.session, arm)
            served.append(ServedPage(page, _arm_name(arm)))
        return served

    def _bandit_page(
        self, chosen: Personalizer, request: PageRequest, arm: _ArmContext, page: PagePersonalization
    ) -> PagePersonalization:
        """The page with the online bandit's offers and layout (the artifact's products stay)."""
        assert self._decisions is not None
        customer_id = request.target.customer_id
        decision_id, mix = page.decision.decision_id, page.decision.mix
        offers = self._decisions.rank_offers(
            chosen,
            decision_id=decision_id,
            customer_id=customer_id,
            mix=mix,
            session=request.session,
            stage=arm.stage,
            n=request.num_offers,
        )
        layout = self._decisions.choose_layout(
            chosen,
            decision_id=decision_id,
            customer_id=customer_id,
            mix=mix,
            stage=arm.stage,
            timestamp=request.session.timestamp,
            item_ids=[item.item_id for item in page.items],
            offer_ids=[offer.offer_id for offer in offers],
        )
        return replace(page, offers=offers, layout=layout)

    def recommend_products(
        self, personalizer: Personalizer, request: ProductListsRequest
    ) -> ServedProductLists:
        """Product lists carry no offers or layout: nothing is logged or taught, only arms are named."""
        return self.recommend_products_many(personalizer, [request])[0]

    def recommend_products_many(
        self, personalizer: Personalizer, requests: Sequence[ProductListsRequest]
    ) -> list[ServedProductLists]:
        """The lists of many requests; targets in arms with their own recommender are scored in one
        batch per recommender. Result i is what ``recommend_products(requests[i])`` gives one by one."""
        ids = [[self._new_decision_id() for _ in r.targets] for r in requests]
        if self._decisions is None:
            unassigned = personalizer.recommend_products_many(requests, decision_ids=ids)
            return [ServedProductLists(one, [""] * len(one)) for one in unassigned]
        decisions = self._decisions
        arms: list[list[str]] = []
        # (request, target) positions per recommender, and that recommender's sub-requests
        chosen: list[Personalizer] = []
        places: list[tuple[int, list[int]]] = []
        for r, request in enumerate(requests):
            assignments = [decisions.assign(target.customer_id, personalizer) for target in request.targets]
            arms.append([a.experiment_arm for a in assignments])
            models = [decisions.personalizer_for(personalizer, a) for a in assignments]
            for model, positions in _grouped(models):
                chosen.append(model)
                places.append((r, positions))
        results: list[list[ProductList | None]] = [[None] * len(r.targets) for r in requests]
        for model, groups in _grouped(chosen):
            calls = [
                ProductListsRequest(
                    tuple(requests[places[g][0]].targets[t] for t in places[g][1]),
                    requests[places[g][0]].products,
                    requests[places[g][0]].session,
                )
                for g in groups
            ]
            group_ids = [[ids[places[g][0]][t] for t in places[g][1]] for g in groups]
            for g, lists in zip(
                groups, model.recommend_products_many(calls, decision_ids=group_ids), strict=True
            ):
                r, positions = places[g]
                for t, products in zip(positions, lists, strict=True):
                    results[r][t] = products
        served = []
        for one, names in zip(results, arms, strict=True):
            complete = [products for products in one if products is not None]
            assert len(complete) == len(one)
            served.append(ServedProductLists(complete, names))
        return served

    def rank_offers(self, personalizer: Personalizer, request: OfferRankingRequest) -> ServedOffers:
        customer_id = request.target.customer_id
        arm = self._arm(personalizer, customer_id, request.session)
        chosen = arm.personalizer if arm is not None else personalizer
        ranking = chosen.rank_offers(
            request.target,
            request.session,
            num_offers=request.num_offers,
            candidate_offer_ids=request.candidate_offer_ids,
            decision_id=self._new_decision_id(),
        )
        if arm is not None and arm.uses_bandit and self._decisions is not None:
            offers = self._decisions.rank_offers(
                chosen,
                decision_id=ranking.decision.decision_id,
                customer_id=customer_id,
                mix=ranking.decision.mix,
                session=request.session,
                stage=arm.stage,
                n=request.num_offers,
                candidates=request.candidate_offer_ids,
            )
            ranking = replace(ranking, offers=offers)
        self._served(ranking.decision, ranking.offers, None, customer_id, request.session, arm)
        return ServedOffers(ranking, _arm_name(arm))

    def select_layout(self, personalizer: Personalizer, request: LayoutRequest) -> ServedLayout:
        customer_id = request.target.customer_id
        arm = self._arm(personalizer, customer_id, request.session)
        chosen = arm.personalizer if arm is not None else personalizer
        selection = chosen.select_layout(
            request.target,
            request.session,
            candidate_variant_ids=request.candidate_variant_ids,
            decision_id=self._new_decision_id(),
        )
        if arm is not None and arm.uses_bandit and self._decisions is not None:
            layout = self._decisions.choose_layout(
                chosen,
                decision_id=selection.decision.decision_id,
                customer_id=customer_id,
                mix=selection.decision.mix,
                stage=arm.stage,
                timestamp=request.session.timestamp,
                candidates=request.candidate_variant_ids,
            )
            selection = replace(selection, layout=layout)
        self._served(selection.decision, (), selection.layout, customer_id, request.session, arm)
        return ServedLayout(selection, _arm_name(arm))

    def _arm(
        self, personalizer: Personalizer, customer_id: str, session: SessionContext
    ) -> _ArmContext | None:
        """The experiment arm, its personalizer and the journey stage; None without experiments."""
        if self._decisions is None:
            return None
        decisions = self._decisions
        assignment = decisions.assign(customer_id, personalizer)
        chosen = decisions.personalizer_for(personalizer, assignment)
        return _ArmContext(assignment, chosen, lambda: decisions.stage(chosen, customer_id, session))

    def _served(
        self,
        decision: DecisionInfo,
        offers: Sequence[RankedOffer],
        layout: LayoutDecision | None,
        customer_id: str,
        session: SessionContext,
        arm: _ArmContext | None,
    ) -> None:
        """Teach the bandits from the artifact's choices and queue the served arms for the log."""
        if (
            arm is not None
            and self._decisions is not None
            and not arm.uses_bandit
            and self._decisions.bandit_running()
        ):
            # Outcomes of the artifact's decisions teach the running bandit too (OnlineBandit.remember).
            self._decisions.remember(
                arm.personalizer,
                decision_id=decision.decision_id,
                mix=decision.mix,
                stage=arm.stage,
                offers=offers,
                layout=layout,
            )
        if self._decision_writer is not None and (offers or layout is not None):
            self._decision_writer.submit(
                served_arms(
                    decision,
                    customer_id,
                    session.timestamp or self._clock(),
                    offers,
                    layout,
                    experiment_arm=_arm_name(arm),
                    journey_stage=arm.stage.value if arm is not None else "",
                )
            )

    # ------------------------------------------------------------------ events

    @property
    def records_events(self) -> bool:
        return self._event_log is not None

    def logged_decision(self, decision_id: str) -> tuple[ServedDecision, ...]:
        """Every arm the event log holds for ``decision_id`` (outcomes are checked against it)."""
        log = self._event_log
        return () if log is None else _read_log(log, f"decision {decision_id!r}", log.decision, decision_id)

    def stored_record(self, kind: str, record_id: str) -> bool:
        """Whether the event log holds an event ("event") or outcome ("outcome") with this id: a retry
        of it is a duplicate even when a check it passed the first time fails now."""
        log = self._event_log
        return log is not None and _read_log(
            log, f"{kind} {record_id!r}", lambda r: log.has_record(kind, r), record_id
        )

    def record_events(
        self, events: Sequence[BehaviorEvent], outcomes: Sequence[DecisionOutcome] = ()
    ) -> AppendResult:
        """Store a batch durably, then let every observer learn from its newly accepted records.

        Raises ``EventsNotStoredError`` when the log fails (nothing was stored: one transaction).
        """
        log = self._event_log
        if log is None:
            raise NoEventLogError("this deployment keeps no event log, so it cannot record events")
        try:
            stored = log.append(events, outcomes)
        except Exception as error:  # nothing of the batch was stored (one transaction); a retry is safe
            LOGGER.exception("could not store a batch of events in %s", log.path)
            raise EventsNotStoredError(
                "the event log could not store the batch; nothing was accepted, retry later"
            ) from error
        if stored.new_events or stored.new_outcomes:
            for observer in self._observers:
                try:
                    observer.observe(stored.new_events, stored.new_outcomes)
                except Exception:  # the records are durable and acknowledged; one observer must not undo that
                    LOGGER.exception("live event observer %r failed on an accepted batch", observer)
        return stored


_Read = TypeVar("_Read")


def _read_log(log: EventStore, what: str, read: Callable[[str], _Read], key: str) -> _Read:
    """A read of the event log while checking a batch; a failure means nothing of it is stored yet
    (the shared log's Redis is away), so the caller may retry."""
    try:
        return read(key)
    except Exception as error:
        LOGGER.warning("could not read %s from %s: %s", what, log.path, error)
        raise EventsNotStoredError(
            "the event log could not be read; nothing was accepted, retry later"
        ) from error


def _grouped(models: Sequence[Personalizer]) -> list[tuple[Personalizer, list[int]]]:
    """Positions per distinct personalizer, in order of first appearance."""
    groups: dict[int, tuple[Personalizer, list[int]]] = {}
    for i, model in enumerate(models):
        groups.setdefault(id(model), (model, []))[1].append(i)
    return list(groups.values())


def _arm_name(arm: _ArmContext | None) -> str:
    return arm.assignment.experiment_arm if arm is not None else ""
