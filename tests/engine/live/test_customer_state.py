"""Live customer state on a real trained artifact: session mixes, live exclusions, online drift."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.live.customer_state import (
    MAX_KEPT_EVENTS,
    KeptEvent,
    LiveCustomerState,
    LiveCustomerStates,
    LiveStateConfig,
    session_blend,
)
from engine.live.event_scoring import LiveEventScorer, artifact_items
from engine.live.events import BehaviorEvent
from engine.live.state_store import MemoryStateStore
from engine.personalization_request import CustomerTarget, ProductRequest
from engine.personalizer import Personalizer
from engine.personas.change_detection import DayCheck, DetectorState
from engine.personas.drift import DriftConfig, population_mean_mix, trace_changes
from engine.personas.drift_accuracy import first_alarm_days
from engine.personas.event_encoding import build_event_features
from engine.personas.mix_resolution import MixSource
from tests.engine.small_artifact import train_small_artifact

START = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now


Live = tuple[LiveCustomerStates, Clock, list[str]]


@pytest.fixture(scope="module")
def personalizer(tmp_path_factory: pytest.TempPathFactory) -> Personalizer:
    return Personalizer.from_path(train_small_artifact(tmp_path_factory.mktemp("live")), "als")


@pytest.fixture(scope="module")
def scorer(personalizer: Personalizer) -> LiveEventScorer:
    return LiveEventScorer.from_artifact(personalizer.artifact)


@pytest.fixture
def live(personalizer: Personalizer, scorer: LiveEventScorer) -> Iterator[Live]:
    clock = Clock()
    started: list[str] = []
    states = LiveCustomerStates(
        MemoryStateStore(),
        scorer,
        personalizer.mixes,
        clock=clock,
        on_drift_started=lambda customer, status: started.append(customer),
    )
    without_live = personalizer.resolver
    personalizer.use_live_state(states)
    yield states, clock, started
    personalizer.resolver = without_live


def typical_items(scorer: LiveEventScorer, persona: int, n: int) -> list[str]:
    """Items whose choice says most clearly that persona ``persona`` is shopping."""
    scores = scorer.item_scores
    others = np.delete(scores, persona, axis=1).max(axis=1)
    order = np.argsort(-(scores[:, persona] - others))
    return [str(scorer.items.ids[i]) for i in order[:n]]


def event(customer: str, item: str, at: dt.datetime, kind: str = "view", n: int = 0) -> BehaviorEvent:
    return BehaviorEvent(f"live-{customer}-{item}-{n}", customer, item, kind, at, None, 0.0, None, None)


def known_customer(personalizer: Personalizer, persona: int) -> str:
    """A customer with events whose overall mix gives ``persona`` little weight."""
    mixes = personalizer.mixes
    rows = np.flatnonzero(mixes.has_events & (mixes.overall[:, persona] < 0.1))
    return str(mixes.customers.ids[rows[0]])


def test_live_scores_equal_training_scores_without_brand_repeat(
    personalizer: Personalizer, scorer: LiveEventScorer
) -> None:
    # Brand repeat needs the whole history, so live scoring leaves it unknown; so does this reference.
    items = artifact_items(personalizer.artifact).with_columns(pl.lit(None, dtype=pl.Utf8).alias("brand"))
    ids = scorer.items.ids.tolist()[:40]
    events = pl.DataFrame(
        {
            "customer_id": ["a"] * 20 + ["b"] * 20,
            "item_id": ids,
            "timestamp": [START + dt.timedelta(minutes=i) for i in range(40)],
            "discount": [0.2 if i % 3 == 0 else 0.0 for i in range(40)],
        }
    )
    expected = scorer.model.event_log_likelihoods(
        build_event_features(events, items, space=scorer.model.space, holidays=scorer.model.config.holidays)
    )
    for row, raw in enumerate(events.to_dicts()):
        live = dataclasses.replace(
            event(raw["customer_id"], raw["item_id"], raw["timestamp"]), discount=raw["discount"]
        )
        got = scorer.score(live)
        assert got is not None
        np.testing.assert_allclose(got, expected[row], atol=1e-9)
    assert scorer.score(event("a", "no-such-item", START)) is None
    facts = scorer.score_facts(
        ids[:3], [True, False, None], ["web", None, "no-such-channel"], [None, "app", None]
    )
    for row, (item, discounted, channel, device) in enumerate(
        zip(ids[:3], [0.3, 0.0, None], ["web", None, "no-such-channel"], [None, "app", None], strict=True)
    ):
        one = BehaviorEvent("x", "a", item, "view", START, None, discounted, channel, device)
        single = scorer.score(one)
        assert single is not None
        np.testing.assert_allclose(facts[row], single)


def test_session_events_move_the_mix_towards_their_persona_then_decay(
    personalizer: Personalizer,
    scorer: LiveEventScorer,
    live: Live,
) -> None:
    states, clock, _ = live
    persona = 0
    customer = known_customer(personalizer, persona)
    before = personalizer.resolver.resolve(customer)
    assert before.source is MixSource.INFERRED
    items = typical_items(scorer, persona, 4)
    states.observe(
        [event(customer, item, START - dt.timedelta(minutes=4 - i)) for i, item in enumerate(items)], []
    )

    during = personalizer.resolver.resolve(customer)
    assert during.source is MixSource.LIVE
    assert during.mix.weights[persona] > before.mix.weights[persona] + 0.2
    products = personalizer.recommend_products([CustomerTarget(customer)], ProductRequest(k=5))[0]
    assert products.decision.mix_source is MixSource.LIVE
    in_context = personalizer.resolver.resolve(customer, context=products.decision.shopping_context)
    np.testing.assert_allclose(products.mix.weights, in_context.mix.weights)

    clock.now = START + dt.timedelta(hours=2)  # four half-lives: a sixteenth of the weight is left
    later = personalizer.resolver.resolve(customer)
    assert before.mix.weights[persona] < later.mix.weights[persona] < during.mix.weights[persona]
    clock.now = START + dt.timedelta(hours=5)  # nothing left that counts
    assert personalizer.resolver.resolve(customer).source is MixSource.INFERRED


def test_a_known_customers_session_after_the_artifacts_data_is_folded_into_their_vector(
    personalizer: Personalizer,
    scorer: LiveEventScorer,
    live: Live,
) -> None:
    """ALS solves a known customer's vector from their history and the session, as a refit on them
    would: the session reaches their list through their own vector, not only through their mix. With
    ``[output] fold_in_live_events = false`` only the mix moves, as before."""
    states, clock, _ = live
    persona = 0
    customer = known_customer(personalizer, persona)
    clock.now = dt.datetime(2026, 6, 10, 12, 0, tzinfo=dt.UTC)  # the small artifact's data end 2026-06-03
    viewed = typical_items(scorer, persona, 4)
    states.observe(
        [event(customer, item, clock.now - dt.timedelta(minutes=4 - i)) for i, item in enumerate(viewed)], []
    )
    request = ProductRequest(k=10)
    row = personalizer._row(CustomerTarget(customer), personalizer._spec(request), None, None)
    assert row.model_row >= 0, "a customer the model has a vector for"
    batch = personalizer.lists.user_batch([row])
    assert batch.events is not None
    history = personalizer.history[int(personalizer.customers.to_internal([customer])[0])]
    assert set(batch.events[0].indices) == set(history.indices) | set(
        personalizer.item_catalog.indices(viewed)
    )
    folded = personalizer.recommend_products([CustomerTarget(customer)], request)[0]
    unlearned = personalizer.lists.unlearned
    assert unlearned is not None
    personalizer.lists.unlearned = dataclasses.replace(unlearned, known_customers=False)
    try:
        assert personalizer.lists.user_batch([row]).events is None
        mix_only = personalizer.recommend_products([CustomerTarget(customer)], request)[0]
    finally:
        personalizer.lists.unlearned = unlearned
    assert folded.mix == mix_only.mix, "the session moves the mix the same either way"
    assert [i.item_id for i in folded.items] != [i.item_id for i in mix_only.items]
    # Their vector turns towards what they viewed: those items score higher than under the mix alone.
    model = personalizer.model
    vectors = model.item_vectors()
    assert vectors is not None
    items = vectors[personalizer.item_catalog.indices(viewed)]
    turned = model.query_vectors(batch)[0] @ items.T
    unturned = model.query_vectors(batch.without_events())[0] @ items.T
    assert turned.mean() > unturned.mean()


def test_live_events_the_artifact_has_learned_are_not_folded_in_again(
    personalizer: Personalizer,
    scorer: LiveEventScorer,
    live: Live,
) -> None:
    """Live state outlives reloads: events up to the artifact's data may be in its history already."""
    states, _, _ = live
    customer = str(personalizer.model_customers.ids[7])  # in the models: a fold-in would replace a vector
    states.observe([event(customer, item, START) for item in typical_items(scorer, 1, 3)], [])  # before 06-03
    row = personalizer._row(CustomerTarget(customer), personalizer._spec(ProductRequest(k=5)), None, None)
    assert row.model_row >= 0
    assert row.resolved.live is not None and len(row.resolved.live.events) == 3
    assert personalizer.lists.user_batch([row]).events is None


def test_a_mix_given_in_the_request_is_never_overridden(
    personalizer: Personalizer,
    scorer: LiveEventScorer,
    live: Live,
) -> None:
    states, _, _ = live
    customer = known_customer(personalizer, 1)
    states.observe([event(customer, item, START) for item in typical_items(scorer, 1, 3)], [])
    given = personalizer.persona_mix({personalizer.catalog.ids[0]: 1.0})
    resolved = personalizer.resolver.resolve(customer, given)
    assert resolved.source is MixSource.REQUEST
    assert resolved.mix == given


def test_an_item_just_bought_is_not_recommended_next(personalizer: Personalizer, live: Live) -> None:
    states, _, _ = live
    customer = known_customer(personalizer, 2)
    request = ProductRequest(k=10)
    first = personalizer.recommend_products([CustomerTarget(customer)], request)[0]
    bought = first.items[0].item_id
    states.observe([event(customer, bought, START, "purchase")], [])
    second = personalizer.recommend_products([CustomerTarget(customer)], request)[0]
    assert bought not in {item.item_id for item in second.items}
    assert len(second.items) == len(first.items)


def test_unknown_items_are_ignored_but_do_not_lose_the_rest(
    personalizer: Personalizer,
    scorer: LiveEventScorer,
    live: Live,
) -> None:
    states, _, _ = live
    customer = known_customer(personalizer, 0)
    known = typical_items(scorer, 0, 1)[0]
    states.observe([event(customer, "not-in-artifact", START), event(customer, known, START)], [])
    state = states.state_of(customer)
    assert state is not None
    assert [e.item_id for e in state.events] == [known]


def test_online_drift_starts_when_recent_days_diverge_and_ends_when_they_return(
    personalizer: Personalizer,
    scorer: LiveEventScorer,
    live: Live,
) -> None:
    states, clock, started = live
    persona = 3
    customer = known_customer(personalizer, persona)
    home = int(np.argmax(personalizer.mixes.stored(personalizer.mixes.row_of(customer)).weights))
    away = typical_items(scorer, persona, 12)
    days = [START + dt.timedelta(days=d) for d in range(6)]
    for n, day in enumerate(days):
        clock.now = day
        states.observe([event(customer, away[(2 * n + j) % len(away)], day, n=n) for j in range(2)], [])
    profile = personalizer.persona_profile(customer)
    assert profile.drift is not None and profile.drift.drifting
    assert profile.drift.to_persona == personalizer.catalog.ids[persona]
    assert profile.drift.since is not None and days[0].date() <= profile.drift.since.date() <= days[-1].date()
    assert profile.drift.confidence > 0.99 and profile.drift.statistic >= states.config.drift.threshold
    assert started == [customer]
    # Serving starts from the recent mix while the customer drifts, and says so.
    resolved = personalizer.resolver.resolve(customer)
    long_term = personalizer.mixes.stored(personalizer.mixes.row_of(customer)).weights
    assert resolved.source is MixSource.DRIFT
    assert resolved.mix.weights[persona] > long_term[persona] + 0.2
    # Weeks of behaviour like the long-term mix again: the drift ends.
    back = typical_items(scorer, home, 12)
    for n in range(20):
        day = days[-1] + dt.timedelta(days=3 * (n + 1))
        clock.now = day
        states.observe([event(customer, back[(3 * n + j) % len(back)], day, n=100 + n) for j in range(3)], [])
    profile = personalizer.persona_profile(customer)
    assert profile.drift is not None and not profile.drift.drifting and profile.drift.since is None


def test_one_telling_session_moves_the_live_mix_but_is_not_drift_until_a_later_day(
    personalizer: Personalizer,
    scorer: LiveEventScorer,
    live: Live,
) -> None:
    """Walkthrough: four typical views of another persona in one session flagged a known customer as
    drifting, and they were served from that session's mix. One day is not a trend (min_run_days)."""
    states, clock, started = live
    persona = 3
    customer = known_customer(personalizer, persona)
    away = typical_items(scorer, persona, 12)
    clock.now = START
    session = [event(customer, away[j], START + dt.timedelta(minutes=j), n=j) for j in range(8)]
    states.observe(session, [])
    profile = personalizer.persona_profile(customer)
    assert profile.drift is not None and not profile.drift.drifting and started == []
    assert personalizer.resolver.resolve(customer).source is MixSource.LIVE
    next_day = START + dt.timedelta(days=1)
    clock.now = next_day
    states.observe([event(customer, away[8 + j], next_day, n=20 + j) for j in range(2)], [])
    profile = personalizer.persona_profile(customer)
    assert profile.drift is not None and profile.drift.drifting and started == [customer]
    assert profile.drift.since is not None and profile.drift.since.date() == START.date()


def test_blend_is_long_term_and_session_shares_weighted_by_evidence() -> None:
    rng = np.random.default_rng(3)
    long_term = np.array([0.6, 0.3, 0.1])
    scores = rng.normal(size=(5, 3))
    weights = rng.uniform(0.2, 1.0, 5)
    kappa = 3.0
    live = session_blend(long_term, scores, weights, kappa)
    responsibilities = np.exp(scores) * live
    responsibilities /= responsibilities.sum(axis=1, keepdims=True)
    evidence = weights.sum()
    session = (weights[:, None] * responsibilities).sum(axis=0) / evidence
    lam = evidence / (evidence + kappa)
    np.testing.assert_allclose(live, (1 - lam) * long_term + lam * session, atol=1e-3)
    np.testing.assert_allclose(session_blend(long_term, scores[:0], weights[:0], kappa), long_term)


kept_events = st.builds(
    KeptEvent,
    timestamp=st.floats(0, 2e9, allow_nan=False),
    item_id=st.text(min_size=1, max_size=8),
    discounted=st.none() | st.booleans(),
    channel=st.none() | st.text(max_size=6),
    device=st.none() | st.text(max_size=6),
    event_type=st.none() | st.sampled_from(["view", "cart", "purchase"]),
)
finite = st.floats(-1e6, 1e6, allow_nan=False)
detectors = st.builds(
    lambda counts, cusum, started, pending, last: DetectorState(
        np.array(counts),
        float(sum(counts)),
        np.array(cusum),
        np.array(started, dtype=np.int64),
        np.array([d for d, _, _ in pending], dtype=np.int64),
        np.array([w for _, w, _ in pending]),
        np.array([column for *_, column in pending]).reshape(-1, 3).T.copy(),
        last,
    ),
    st.lists(finite, min_size=3, max_size=3),
    st.lists(finite, min_size=3, max_size=3),
    st.lists(st.integers(-1, 30_000), min_size=3, max_size=3),
    st.lists(st.tuples(st.integers(0, 30_000), finite, st.lists(finite, min_size=3, max_size=3)), max_size=4),
    st.integers(-1, 30_000),
)
checks = st.builds(
    DayCheck, st.booleans(), finite, st.integers(0, 2), st.integers(-1, 30_000), st.integers(0, 2)
)


def _same(a: LiveCustomerState, b: LiveCustomerState) -> bool:
    def plain(state: LiveCustomerState) -> tuple[object, ...]:
        detector = None if state.detector is None else json.dumps(state.detector.to_json())
        return (state.events, state.purchased, detector, state.check, state.drift_since)

    return plain(a) == plain(b)


@settings(max_examples=60, deadline=None)
@given(
    events=st.lists(kept_events, max_size=5),
    purchased=st.lists(st.text(max_size=8), max_size=4),
    detector=st.none() | detectors,
    check=st.none() | checks,
    since=st.none() | st.floats(0, 2e9, allow_nan=False),
)
def test_state_survives_its_stored_form(
    events: list[KeptEvent],
    purchased: list[str],
    detector: DetectorState | None,
    check: DayCheck | None,
    since: float | None,
) -> None:
    state = LiveCustomerState(events, purchased, detector, check, since)
    assert _same(LiveCustomerState.from_bytes(state.to_bytes(), 3), state)
    assert LiveCustomerState.from_bytes(state.to_bytes(), 4).detector is None or detector is None


def test_state_of_the_format_before_event_types_is_read_with_its_types_unknown() -> None:
    """An upgraded server keeps every customer's session, purchases and drift state: format 2 held
    kept events without their type, which are read as of unknown type (not folded into vectors)."""
    old = {"v": 2, "e": [[1.7e9, "i1", True, "web", None]], "p": ["i1"], "c": None, "k": None, "s": None}
    state = LiveCustomerState.from_bytes(json.dumps(old).encode())
    assert state.events == [KeptEvent(1.7e9, "i1", True, "web", None, None)]
    assert state.purchased == ["i1"]
    assert json.loads(state.to_bytes())["v"] == 3


def test_unreadable_state_is_dropped_rather_than_served() -> None:
    assert LiveCustomerState.from_bytes(b"not json") == LiveCustomerState()
    assert LiveCustomerState.from_bytes(b'{"v": 99}') == LiveCustomerState()


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="session_half_life_minutes"):
        LiveStateConfig(session_half_life_minutes=0)


def test_a_batch_replaying_days_of_history_dates_the_drift_as_if_it_had_arrived_live(
    personalizer: Personalizer, scorer: LiveEventScorer, live: Live
) -> None:
    states, clock, _ = live
    persona = 3
    customer = str(
        personalizer.mixes.customers.ids[np.flatnonzero(personalizer.mixes.overall[:, persona] < 0.1)[5]]
    )
    away = typical_items(scorer, persona, 12)
    days = [START + dt.timedelta(days=d) for d in range(8)]
    clock.now = days[-1]
    states.observe(
        [
            event(customer, away[(2 * n + j) % 12], day, n=10 * n + j)
            for n, day in enumerate(days)
            for j in range(2)
        ],
        [],
    )
    drift = personalizer.persona_profile(customer).drift
    assert drift is not None and drift.drifting and drift.since is not None
    assert drift.since < days[-1]  # not the moment the batch arrived


def test_concurrent_batches_of_one_customer_keep_every_event(
    personalizer: Personalizer, scorer: LiveEventScorer, live: Live
) -> None:
    states, _, _ = live
    customer = known_customer(personalizer, 1)
    items = scorer.items.ids.tolist()[:40]

    def record(worker: int) -> None:
        for n in range(5):
            states.observe([event(customer, items[worker * 5 + n], START, n=worker * 5 + n)], [])

    threads = [threading.Thread(target=record, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = states.state_of(customer)
    assert state is not None and sorted(e.item_id for e in state.events) == sorted(items)


def test_a_flood_of_events_in_one_day_keeps_the_state_bounded(
    personalizer: Personalizer, scorer: LiveEventScorer, live: Live
) -> None:
    """Events of a day not yet committed are kept for its drift test, but not without limit: a bot's
    thousands of events in one day must not grow the state (and every update's cost) for ever."""
    states, _, _ = live
    customer = known_customer(personalizer, 2)
    items = scorer.items.ids.tolist()
    flood = [event(customer, items[n % len(items)], START, n=n) for n in range(3_000)]
    for first in range(0, len(flood), 500):
        states.observe(flood[first : first + 500], [])
    state = states.state_of(customer)
    assert state is not None and len(state.events) == MAX_KEPT_EVENTS
    assert state.events[-1].item_id == items[2_999 % len(items)]  # the newest are the ones kept


def test_a_remembered_view_never_outlives_a_change_of_state(
    personalizer: Personalizer, scorer: LiveEventScorer, live: Live
) -> None:
    states, _, _ = live
    customer = known_customer(personalizer, 2)
    items = typical_items(scorer, 2, 4)
    states.observe([event(customer, items[0], START)], [])
    first = personalizer.resolver.resolve(customer)
    assert personalizer.resolver.resolve(customer).mix == first.mix  # same state, same moment: remembered
    states.observe([event(customer, item, START, n=i + 1) for i, item in enumerate(items[1:])], [])
    second = personalizer.resolver.resolve(customer)
    assert second.mix.weights[2] > first.mix.weights[2]
    states.observe([event(customer, items[0], START, "purchase", n=9)], [])
    assert personalizer.resolver.resolve(customer).live is not None
    assert items[0] in personalizer.resolver.resolve(customer).live.purchased_item_ids  # type: ignore[union-attr]


def test_how_a_days_events_are_split_into_batches_does_not_change_the_state(
    personalizer: Personalizer, scorer: LiveEventScorer
) -> None:
    persona = 3
    customer = str(
        personalizer.mixes.customers.ids[np.flatnonzero(personalizer.mixes.overall[:, persona] < 0.1)[5]]
    )
    away, home = typical_items(scorer, persona, 12), typical_items(scorer, 0, 12)
    days = [START + dt.timedelta(days=d) for d in range(10)]
    events = [
        event(
            customer, (away if n < 6 else home)[(2 * n + j) % 12], day + dt.timedelta(hours=j), n=10 * n + j
        )
        for n, day in enumerate(days)
        for j in range(3)
    ]
    states = []
    cuts = [None, *range(1, len(events))]  # whole, then cut at every place (inside days, and between)
    for cut in cuts:
        store = MemoryStateStore()
        live = LiveCustomerStates(store, scorer, personalizer.mixes, clock=lambda: days[-1])
        for batch in [events] if cut is None else [events[:cut], events[cut:]]:
            live.observe(batch, [])
        states.append(store.get(live.key(customer)))
    drifted = LiveCustomerState.from_bytes(states[0] or b"")
    assert drifted.check is not None and drifted.drift_since is not None
    assert states[1:] == states[:1] * (len(cuts) - 1)


def test_live_and_offline_flag_the_same_customers_after_the_same_events(
    personalizer: Personalizer, scorer: LiveEventScorer
) -> None:
    """The shop's history replayed live, a day per batch, flags a customer within one event of the
    offline job (``trace_changes``) on the same events; the same customers, and no others.

    Brand repeat needs a customer's whole history, so live scoring leaves it unknown; the offline
    reference does too (as in the scoring test above). Live state learns its baseline from the events
    alone here (``artifact_baseline_events=0``), as the offline job does.
    """
    artifact = personalizer.artifact
    shop = Path(artifact.manifest["config"]["data"]["path"])
    items = artifact_items(artifact).with_columns(pl.lit(None, dtype=pl.Utf8).alias("brand"))
    all_events = pl.read_parquet(shop / "events.parquet").filter(
        pl.col("item_id").is_in(scorer.items.ids.tolist())
    )
    truth = pl.read_parquet(shop / "truth/customer_mixes.parquet")
    planted = truth.filter(pl.col("drift_date").is_not_null())["customer_id"].to_list()
    others = truth.filter(pl.col("drift_date").is_null())["customer_id"].to_list()
    chosen = [*planted[:16], *others[:40]]
    events = all_events.filter(pl.col("customer_id").is_in(chosen)).sort("customer_id", "timestamp")
    prior = population_mean_mix(np.asarray(artifact.mix_overall))
    config = DriftConfig(artifact_baseline_events=0.0)
    threshold = config.threshold
    trace = trace_changes(scorer.model, events, items, prior, config.detector)
    alarm_day = first_alarm_days(trace, threshold)

    store = MemoryStateStore()
    live = LiveCustomerStates(
        store, scorer, personalizer.mixes, LiveStateConfig(drift=config), prior_mean=prior
    )
    offline_at: dict[str, int] = {}
    live_at: dict[str, int] = {}
    for customer, rows in events.group_by("customer_id", maintain_order=True):
        customer_id = str(customer[0])
        c = trace.customers.index(customer_id)
        records = [
            BehaviorEvent(
                str(r["event_id"]), customer_id, str(r["item_id"]), str(r["event_type"]), r["timestamp"],
                r["price_paid"], r["discount"], r["channel"], r["device"],
            )
            for r in rows.to_dicts()
        ]  # fmt: skip
        days = [int(r.timestamp.timestamp() // 86_400) for r in records]
        if alarm_day[c] >= 0:
            offline_at[customer_id] = sum(d <= alarm_day[c] for d in days)
        seen = 0
        for day in sorted(set(days)):
            batch = [r for r, d in zip(records, days, strict=True) if d == day]
            live.observe(batch, [])
            seen += len(batch)
            state = live.state_of(customer_id)
            if state is not None and state.drift_since is not None:
                live_at[customer_id] = seen
                break
    assert len(offline_at) >= 3, "the planted drifters should give the offline test something to flag"
    assert live_at.keys() == offline_at.keys()
    for customer_id, n in offline_at.items():
        assert abs(live_at[customer_id] - n) <= 1, customer_id


def test_known_customers_without_a_change_are_flagged_live_no_more_than_the_calibrated_share(
    personalizer: Personalizer, scorer: LiveEventScorer
) -> None:
    """The test period's events replayed live, a day per batch, against the split's artifact (the
    mixes know the training period only) with the threshold training calibrated: live starts a known
    customer from their long-term mix worth 20 events, which the calibration on histories does not
    model, so this checks that the share it flags without a planted change stays within the target.
    (On the demo shop the same replay flagged 0.8% of 3,485 such customers in 28 days.)"""
    artifact = personalizer.artifact
    calibration = artifact.drift_calibration
    assert calibration is not None
    shop = Path(artifact.manifest["config"]["data"]["path"])
    events = pl.read_parquet(shop / "events.parquet")
    start = events["timestamp"].max() - dt.timedelta(days=artifact.manifest["config"]["split"]["test_days"])  # type: ignore[operator]
    replayed = events.filter(
        (pl.col("timestamp") > start) & pl.col("item_id").is_in(scorer.items.ids.tolist())
    ).sort("timestamp")
    live = LiveCustomerStates(
        MemoryStateStore(),
        scorer,
        personalizer.mixes,
        prior_mean=population_mean_mix(np.asarray(artifact.mix_overall)),
        drift_threshold=calibration.threshold,
    )
    flagged: set[str] = set()
    for _, rows in replayed.group_by(pl.col("timestamp").dt.date(), maintain_order=True):
        batch = [
            BehaviorEvent(
                str(r["event_id"]), str(r["customer_id"]), str(r["item_id"]), str(r["event_type"]),
                r["timestamp"], r["price_paid"], r["discount"], r["channel"], r["device"],
            )
            for r in rows.to_dicts()
        ]  # fmt: skip
        live.observe(batch, [])
        for customer in {e.customer_id for e in batch} - flagged:
            state = live.state_of(customer)
            if state is not None and state.drift_since is not None:
                flagged.add(customer)
    truth = pl.read_parquet(shop / "truth/customer_mixes.parquet")
    unchanged = set(truth.filter(pl.col("drift_date").is_null())["customer_id"].to_list())
    known = {c for c in replayed["customer_id"].unique().to_list() if personalizer.mixes.row_of(c) >= 0}
    stationary = known & unchanged
    assert len(stationary) >= 200, "the replay should reach the known customers of the test period"
    assert len(flagged & stationary) <= calibration.target_false_alarm * len(stationary)
