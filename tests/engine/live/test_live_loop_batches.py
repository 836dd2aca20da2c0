"""Batched serving is one-by-one serving: a property test over mixed batches of real requests.

Each example draws a batch of requests that differ in everything (known, prior-only and unknown
customers, given mixes, filters, k, promotions and pins, diversity, offers, explanations, carts,
timestamps), serves it once through ``personalize_many`` / ``recommend_products_many`` and once one
request at a time through a second, identical loop, and compares the results field for field (every
float exactly) and the side effects (decision log entries in order, the state store's bandit memory).
Both loops take decision ids from the same deterministic sequence, and the experiment puts customers
in a static arm, an online-bandit arm and an arm served by another model.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.artifact.contents import load_artifact
from engine.decisions.experiment import ArmPolicy, Experiment, ExperimentArm
from engine.live.decisions import LiveDecisions
from engine.live.events import ServedDecision
from engine.live.live_loop import LiveLoop
from engine.live.state_store import MemoryStateStore
from engine.personalization_request import (
    CustomerTarget,
    PageRequest,
    ProductListsRequest,
    ProductRequest,
    SessionContext,
)
from engine.personalizer import Personalizer
from engine.personas.mix import PersonaMix
from engine.ranking.candidate_index import CandidateIndexSettings
from engine.ranking.filters import ItemFilters
from engine.ranking.promotions import PinnedItem, PromotionRule, Promotions
from tests.engine.small_artifact import train_small_artifact

NOW = dt.datetime(2026, 3, 7, 12, 0, tzinfo=dt.UTC)  # a Saturday
TUESDAY = dt.datetime(2026, 3, 10, 9, 30, tzinfo=dt.UTC)
EXPERIMENT = Experiment(
    "batch-test",
    "static",
    (
        ExperimentArm("static", 0.4),
        ExperimentArm("bandit", 0.3, ArmPolicy.ONLINE_BANDIT),
        ExperimentArm("popular", 0.3, ArmPolicy.ARTIFACT, "persona_popularity"),
    ),
)


@pytest.fixture(scope="module", params=["full-scan", "candidate-index"])
def personalizer(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Personalizer:
    """The small artifact served by ALS, scanned in full or through a candidate index (forced on for
    its 300 items, with few clusters so that lists are probed in several rounds)."""
    artifact = load_artifact(train_small_artifact(tmp_path_factory.mktemp("batches")))
    index = CandidateIndexSettings(min_items=0, clusters=3) if request.param == "candidate-index" else None
    served = Personalizer(artifact, "als", clock=lambda: NOW, candidate_index=index)
    assert (served.index is not None) == (request.param == "candidate-index")
    return served


class RecordingWriter:
    """Stands in for the DecisionLogWriter: keeps what was submitted, in order."""

    def __init__(self) -> None:
        self.submitted: list[ServedDecision] = []

    def submit(self, decisions: Sequence[ServedDecision]) -> None:
        self.submitted.extend(decisions)


@dataclass
class Served:
    loop: LiveLoop
    store: MemoryStateStore
    writer: RecordingWriter

    def memory(self) -> tuple[list[tuple[str, bytes]], dict[str, dict[str, float]]]:
        """Everything the decisions left in the store: values (in write order) and counters."""
        values = [(key, value) for key, (value, _) in self.store._values.items()]
        return values, {key: dict(counts) for key, counts in self.store._counters.items()}


def new_loop(personalizer: Personalizer, arm_models: dict[tuple[str, str], Personalizer]) -> Served:
    store = MemoryStateStore(clock=lambda: 0.0)
    decisions = LiveDecisions(store, clock=lambda: NOW)
    decisions.experiment.set(EXPERIMENT)
    decisions._models = arm_models  # the arm's model is loaded once for every loop of the test
    writer = RecordingWriter()
    counter = itertools.count()
    loop = LiveLoop(
        decisions=decisions,
        decision_writer=writer,  # type: ignore[arg-type]
        clock=lambda: NOW,
        decision_ids=lambda: f"decision-{next(counter)}",
    )
    loop.prepare(personalizer)
    return Served(loop, store, writer)


def plain(value: Any) -> Any:
    """A result as nested dicts, lists and Python scalars, so ``==`` compares every field exactly."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


@st.composite
def product_requests(draw: st.DrawFn, personalizer: Personalizer) -> ProductRequest:
    catalog = personalizer.item_catalog
    items = [str(i) for i in catalog.ids.ids.tolist()]
    categories = sorted(set(catalog.categories.tolist()))
    k = draw(st.integers(1, 12))
    filters = ItemFilters(
        exclude_item_ids=tuple(draw(st.lists(st.sampled_from(items), max_size=3))),
        include_purchased=draw(st.booleans()),
        include_categories=tuple(draw(st.lists(st.sampled_from(categories), max_size=2, unique=True))),
        price_max=draw(st.none() | st.sampled_from([20.0, 80.0, 500.0])),
        include_out_of_stock=draw(st.booleans()),
    )
    rules: tuple[PromotionRule, ...] = ()
    if draw(st.booleans()):
        rules = (PromotionRule("promo", draw(st.sampled_from([0.2, 0.5])), categories=(categories[0],)),)
    pins: tuple[PinnedItem, ...] = ()
    if draw(st.booleans()):
        pins = (PinnedItem(draw(st.sampled_from(items)), draw(st.integers(1, k))),)
    return ProductRequest(
        k=k,
        filters=filters,
        promotions=Promotions(rules, pins),
        diversity=draw(st.sampled_from([0.0, 0.0, 0.3, 0.8])),
        explain=draw(st.booleans()),
    )


@st.composite
def targets(draw: st.DrawFn, personalizer: Personalizer) -> CustomerTarget:
    modelled = [str(c) for c in personalizer.model_customers.ids[:40]]
    prior_only = [
        str(c) for c, row in zip(personalizer.customers.ids, personalizer._model_row, strict=True) if row < 0
    ][:5]
    customer = draw(
        st.sampled_from(modelled)
        | st.sampled_from(prior_only or modelled)
        | st.integers(0, 5).map(lambda i: f"visitor-{i}")
    )
    mix = None
    if draw(st.booleans()):
        personas = personalizer.catalog.ids
        weights = draw(st.lists(st.integers(0, 4), min_size=len(personas), max_size=len(personas)))
        if sum(weights) > 0:
            mix = PersonaMix.from_mapping(dict(zip(personas, weights, strict=True)), personas)
    items = [str(i) for i in personalizer.item_catalog.ids.ids[:50].tolist()]
    exclude = tuple(draw(st.lists(st.sampled_from(items), max_size=2)))
    return CustomerTarget(customer, mix, exclude)


@st.composite
def sessions(draw: st.DrawFn, personalizer: Personalizer) -> SessionContext:
    items = [str(i) for i in personalizer.item_catalog.ids.ids[:60].tolist()] + ["unknown-item"]
    return SessionContext(
        timestamp=draw(st.sampled_from([None, NOW, TUESDAY])),
        shopping_context=draw(st.sampled_from([None, None, "weekday"])),
        session_item_ids=tuple(draw(st.lists(st.sampled_from(items), max_size=3))),
        cart_item_ids=tuple(draw(st.lists(st.sampled_from(items), max_size=2))),
        basket_value=draw(st.none() | st.sampled_from([0.0, 30.0, 400.0])),
    )


def one_by_one(call: Callable[[Any], Any], requests: Sequence[Any]) -> list[Any]:
    return [call(request) for request in requests]


SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(data=st.data())
def test_a_batch_of_pages_is_served_exactly_as_one_page_at_a_time(
    personalizer: Personalizer, data: st.DataObject
) -> None:
    pages = data.draw(
        st.lists(
            st.builds(
                PageRequest,
                targets(personalizer),
                product_requests(personalizer),
                sessions(personalizer),
                st.integers(1, 4),
            ),
            min_size=1,
            max_size=6,
        )
    )
    arm_models: dict[tuple[str, str], Personalizer] = {}
    batched, single = new_loop(personalizer, arm_models), new_loop(personalizer, arm_models)
    together = batched.loop.personalize_many(personalizer, pages)
    alone = one_by_one(lambda page: single.loop.personalize(personalizer, page), pages)
    assert plain(together) == plain(alone)
    assert plain(batched.writer.submitted) == plain(single.writer.submitted)
    assert batched.memory() == single.memory()


@SETTINGS
@given(data=st.data())
def test_a_batch_of_product_list_requests_is_served_exactly_as_one_request_at_a_time(
    personalizer: Personalizer, data: st.DataObject
) -> None:
    calls = data.draw(
        st.lists(
            st.builds(
                ProductListsRequest,
                st.lists(targets(personalizer), min_size=1, max_size=4).map(tuple),
                product_requests(personalizer),
                sessions(personalizer),
            ),
            min_size=1,
            max_size=4,
        )
    )
    arm_models: dict[tuple[str, str], Personalizer] = {}
    batched, single = new_loop(personalizer, arm_models), new_loop(personalizer, arm_models)
    together = batched.loop.recommend_products_many(personalizer, calls)
    alone = one_by_one(lambda call: single.loop.recommend_products(personalizer, call), calls)
    assert plain(together) == plain(alone)


def test_every_kind_of_row_is_drawn(personalizer: Personalizer) -> None:
    """The strategies reach what the property must cover: rows the model knows, customers it only
    has a prior for, and strangers, in every experiment arm."""
    modelled = [str(c) for c in personalizer.model_customers.ids[:40]]
    assert {EXPERIMENT.assign(c).name for c in modelled} == {"static", "bandit", "popular"}
    assert (personalizer._model_row < 0).any(), "the small artifact has customers without a model row"
