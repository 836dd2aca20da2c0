"""The live loop at request time: which experiment arm a customer is in, their journey stage, and the
online bandit's offers and layout for arms that use it.

The Personalizer answers from the artifact alone; this layer sits beside it (``engine.live.live_loop``
calls both) so that the artifact's request path stays as it is for customers outside the bandit arm. For a
customer in an ``online-bandit`` arm the artifact's offers and layout are replaced by the bandit's:
same eligibility rules and candidate restrictions, the bandit's ranking and exact propensities, and
the layout's slots refilled with the same products and the new offers.

All shared state (bandit statistics, budgets, journey history, the running experiment) lives in one
StateStore, so replicas behind a Redis store agree. The bandits are rebuilt, seeded from the new
artifact's estimates, when the serving artifact changes; their live statistics are keyed by persona
and arm ids and so carry over.

It is a LiveEventObserver: the live loop hands it each accepted batch, which it forwards to the
journey tracker and to the current bandits.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from engine.decisions.decision_draws import DecisionDraws
from engine.decisions.experiment import ArmPolicy, CurrentExperiment, ExperimentArm
from engine.decisions.journey_stage import CustomerHistory, JourneyStage, JourneyTracker, journey_stage
from engine.decisions.online_bandit import BanditConfig, NoEligibleArmsError, OnlineBandit
from engine.decisions.page_decision import (
    FilledSlot,
    LayoutDecision,
    RankedOffer,
    eligibility_context,
    fill_slots,
)
from engine.invalid_request import InvalidRequestError
from engine.live.events import BehaviorEvent, DecisionOutcome
from engine.live.state_store import StateStore
from engine.personalization_request import SessionContext
from engine.personalizer import Personalizer
from engine.personas.mix import PersonaMix
from engine.personas.mix_resolution import UNKNOWN_ROW

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Assignment:
    """What the live loop decided about one request before any arm is chosen."""

    experiment_arm: str  # "" outside any experiment
    policy: ArmPolicy
    model: str  # "" for the serving model


_NO_EXPERIMENT = Assignment("", ArmPolicy.ARTIFACT, "")


@dataclass
class _Bandits:
    version: str
    offer: OnlineBandit | None
    layout: OnlineBandit | None


class LiveDecisions:
    def __init__(
        self,
        store: StateStore,
        *,
        experiment: CurrentExperiment | None = None,
        config: BanditConfig | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.store = store
        self.experiment = experiment or CurrentExperiment(store)
        self.config = config or BanditConfig()
        self.journeys = JourneyTracker(store)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._bandits: _Bandits | None = None
        self._models: dict[tuple[str, str], Personalizer] = {}
        self._warned: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ per request

    def bandit_running(self) -> bool:
        """Whether the running experiment has an online-bandit arm.

        Only then are the artifact's decisions remembered for the bandit (``remember``): a memory is
        about 1 KB per served decision, kept for ``decision_ttl_seconds`` (days), so remembering every
        page of a server without a bandit grew each worker by tens of MB an hour (the soak benchmark)
        and cost a JSON encoding per decision for nothing.
        """
        current = self.experiment.get()
        return current is not None and any(arm.policy is ArmPolicy.ONLINE_BANDIT for arm in current.arms)

    def assign(self, customer_id: str, serving: Personalizer) -> Assignment:
        """The customer's arm of the running experiment, as ``serving`` can serve it.

        An arm whose model the serving artifact does not hold (an experiment set, or shared through
        Redis, for another artifact; ``ReloadModel`` refuses to load such an artifact, but a replica
        may start with one) cannot be served as its arm: its customers are served as outside the
        experiment, by the serving model, and logged without an arm, so the experiment's figures never
        count a page the arm did not make. Failing those requests instead would turn an operator's
        mismatch into errors for a share of the shop's customers.
        """
        current = self.experiment.get()
        if current is None:
            return _NO_EXPERIMENT
        arm: ExperimentArm = current.assign(customer_id)
        if not arm.servable_by(serving.model_names):
            self._warn_unservable(current.name, arm, serving)
            return _NO_EXPERIMENT
        return Assignment(arm.name, arm.policy, arm.model)

    def _warn_unservable(self, experiment: str, arm: ExperimentArm, serving: Personalizer) -> None:
        key = (serving.version, experiment, arm.name)
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        LOGGER.warning(
            "experiment %s: arm %s names model %r, which artifact %s lacks (it has %s); its customers "
            "are served by %s outside the experiment until the experiment or the artifact changes",
            experiment,
            arm.name,
            arm.model,
            serving.version,
            ", ".join(serving.model_names),
            serving.model_name,
        )

    def personalizer_for(self, serving: Personalizer, assignment: Assignment) -> Personalizer:
        """The serving personalizer, or one over the same artifact with the arm's recommender."""
        if not assignment.model or assignment.model == serving.model_name:
            return serving
        key = (serving.version, assignment.model)
        with self._lock:
            cached = self._models.get(key)
            if cached is None:
                # Drop models of artifacts no longer serving, so a reload frees them.
                self._models = {k: v for k, v in self._models.items() if k[0] == serving.version}
                cached = serving.with_model(assignment.model)
                self._models[key] = cached
        return cached

    def stage(self, personalizer: Personalizer, customer_id: str, session: SessionContext) -> JourneyStage:
        row = personalizer.mixes.row_of(customer_id)
        trained = CustomerHistory()
        if row != UNKNOWN_ROW:
            trained = CustomerHistory(
                n_events=int(personalizer.history.indptr[row + 1] - personalizer.history.indptr[row]),
                n_purchases=int(personalizer.purchases.indptr[row + 1] - personalizer.purchases.indptr[row]),
            )
        history = trained.combined(self.journeys.history(customer_id))
        return journey_stage(
            history, cart_items=len(session.cart_item_ids), now=session.timestamp or self._clock()
        )

    def bandits(self, personalizer: Personalizer) -> _Bandits:
        with self._lock:
            if self._bandits is None or self._bandits.version != personalizer.version:
                decisions = personalizer.decisions
                offer = layout = None
                if decisions.offer_policy is not None and decisions.rules is not None:
                    offer = OnlineBandit(
                        "offer",
                        decisions.offer_policy.estimates,
                        self.store,
                        self.config,
                        costs=decisions.rules.costs_by_id(),
                        clock=self._clock,
                    )
                if decisions.layout_policy is not None:
                    layout_config = replace(self.config, budgets={})
                    layout = OnlineBandit(
                        "layout",
                        decisions.layout_policy.estimates,
                        self.store,
                        layout_config,
                        clock=self._clock,
                    )
                self._bandits = _Bandits(personalizer.version, offer, layout)
            return self._bandits

    def rank_offers(
        self,
        personalizer: Personalizer,
        *,
        decision_id: str,
        customer_id: str,
        mix: PersonaMix,
        session: SessionContext,
        stage: JourneyStage,
        n: int,
        candidates: Sequence[str] = (),
    ) -> list[RankedOffer]:
        """The bandit's offers under the same eligibility and candidate rules as the artifact's policy."""
        bandit = self.bandits(personalizer).offer
        rules = personalizer.decisions.rules
        if bandit is None or rules is None:
            if candidates:
                raise InvalidRequestError("candidate_offer_ids[0]", f"unknown offer {candidates[0]!r}")
            return []
        catalog = personalizer.item_catalog
        context = eligibility_context(
            catalog,
            catalog.indices(session.session_item_ids),
            catalog.indices(session.cart_item_ids),
            session.basket_value,
        )
        eligible = rules.eligible(context, order=bandit.arm_ids)
        if candidates:
            eligible = eligible & _candidate_mask(bandit.arm_ids, candidates, "candidate_offer_ids", "offer")
        try:
            decision = bandit.choose(
                decision_id=decision_id,
                customer_id=customer_id,
                mix=mix.weights,
                stage=stage,
                rng=_bandit_rng(decision_id, "offer"),
                n=n,
                eligible_mask=eligible,
                timestamp=session.timestamp,
            )
        except NoEligibleArmsError:
            return []
        offers = personalizer.decisions.offers
        return [
            RankedOffer(
                offer_id=choice.arm_id,
                kind=offers[choice.arm_id].kind,
                description=offers[choice.arm_id].description,
                rank=choice.rank,
                score=choice.expected_response,
                propensity=choice.propensity,
                reason=(
                    f"online bandit (Thompson sampling, {stage.value} stage): chosen with probability "
                    f"{choice.propensity:.0%}; expected response for this mix {choice.expected_response:.0%}"
                ),
            )
            for choice in decision.choices
        ]

    def choose_layout(
        self,
        personalizer: Personalizer,
        *,
        decision_id: str,
        customer_id: str,
        mix: PersonaMix,
        stage: JourneyStage,
        timestamp: dt.datetime | None = None,
        candidates: Sequence[str] = (),
        item_ids: Sequence[str] = (),
        offer_ids: Sequence[str] = (),
    ) -> LayoutDecision | None:
        """The bandit's layout variant, slots filled with ``item_ids`` and ``offer_ids`` when given."""
        bandit = self.bandits(personalizer).layout
        if bandit is None:
            if candidates:
                raise InvalidRequestError(
                    "candidate_variant_ids[0]", f"unknown layout variant {candidates[0]!r}"
                )
            return None
        eligible = (
            _candidate_mask(bandit.arm_ids, candidates, "candidate_variant_ids", "layout variant")
            if candidates
            else None
        )
        decision = bandit.choose(
            decision_id=decision_id,
            customer_id=customer_id,
            mix=mix.weights,
            stage=stage,
            rng=_bandit_rng(decision_id, "layout"),
            eligible_mask=eligible,
            timestamp=timestamp,
        )
        choice = decision.choices[0]
        variant = personalizer.decisions.layouts[choice.arm_id]
        slots: tuple[FilledSlot, ...] = (
            fill_slots(variant.slots, item_ids, offer_ids)
            if item_ids or offer_ids
            else tuple(FilledSlot(name) for name in variant.slots)
        )
        return LayoutDecision(
            variant.variant_id, variant.description, slots, choice.expected_response, choice.propensity
        )

    def remember(
        self,
        personalizer: Personalizer,
        *,
        decision_id: str,
        mix: PersonaMix,
        stage: JourneyStage,
        offers: Sequence[RankedOffer] = (),
        layout: LayoutDecision | None = None,
    ) -> None:
        """Let the bandits learn from the outcomes of a decision the artifact's policy made."""
        bandits = self.bandits(personalizer)
        if bandits.offer is not None and offers:
            bandits.offer.remember(decision_id, mix.weights, stage, [o.offer_id for o in offers])
        if bandits.layout is not None and layout is not None:
            bandits.layout.remember(decision_id, mix.weights, stage, [layout.variant_id])

    # ------------------------------------------------------------------ learning

    def observe(self, events: Sequence[BehaviorEvent], outcomes: Sequence[DecisionOutcome]) -> None:
        self.journeys.observe(events, outcomes)
        bandits = self._bandits
        if bandits is None:
            return
        for bandit in (bandits.offer, bandits.layout):
            if bandit is not None:
                bandit.observe(events, outcomes)


def _bandit_rng(decision_id: str, decision_type: str) -> np.random.Generator:
    """Seeded from the decision id (replayable, like the artifact's policy), distinct per decision type:
    Thompson sampling needs thousands of normal draws, so here a generator is worth building."""
    return DecisionDraws(decision_id, f"bandit-{decision_type}").generator()


def _candidate_mask(
    arm_ids: Sequence[str], candidates: Sequence[str], field: str, kind: str
) -> NDArray[np.bool_]:
    position: Mapping[str, int] = {arm: i for i, arm in enumerate(arm_ids)}
    mask = np.zeros(len(arm_ids), dtype=bool)
    for i, arm in enumerate(candidates):
        if arm not in position:
            raise InvalidRequestError(f"{field}[{i}]", f"unknown {kind} {arm!r}")
        mask[position[arm]] = True
    return mask
