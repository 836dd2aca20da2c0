"""Live customer state: what the last few events say about a customer, applied to the next request.

Each accepted behaviour event updates its customer's state at once (``observe``, a LiveEventObserver):

- a purchase puts the item on the customer's bought list, which serving excludes like the purchases
  the artifact was trained on;
- every event with an item the artifact knows is kept (time, item, discounted, channel, device, event
  type; the last ``max_events``) as evidence for the session mix, and as what serving folds into a
  customer's vector (``LiveView.events``, ``engine.ranking.unlearned_events``);
- drift is re-checked with the change test ``persona-engine drift`` runs offline
  (``engine.personas.change_detection``): the detector's state (baseline evidence, one CUSUM per
  persona, the events still younger than the baseline lag) is part of the customer's state and
  advances a UTC day at a time. A day is committed once an event of a later day arrives (a customer's
  events come in time order); until then the day's test is provisional and redone with each batch, so
  how a day's events are split into batches changes nothing, and the state after a day is exactly the
  offline test's. A customer the artifact knows starts with their long-term mix as baseline, worth
  ``drift.artifact_baseline_events`` events, so live drift does not wait weeks for a baseline of live
  events; an unknown customer learns it from their own events, as offline.
- while a customer drifts, serving starts the session blend from their *recent* mix (their events
  since the drift began, decayed with half-life ``drift.half_life_days``, folded in around the
  long-term mix) instead of the long-term one, and says so (``MixSource.DRIFT``).

The session mix is a blend, computed per request from the kept events (``live_view``):

    live = (1 - lam) * long_term + lam * session,   lam = E / (E + kappa),   E = sum_i w_i

where ``w_i = 2 ** (-age_i / half_life)`` (``session_half_life_minutes``, divided among repeats of
the same item on the same day, as training does), ``kappa = long_term_strength`` pseudo-events, and
``session = sum_i w_i r_i / E`` with ``r_i`` event i's persona posterior under ``live`` itself. That is
the MAP mix of the session's events under a Dirichlet prior centred on the long-term mix worth kappa
events, solved by a few EM steps on at most ``max_events`` rows: tens of microseconds. With the
defaults (kappa 3, half-life 30 minutes) one typical session of three fresh interactions moves the
mix half-way to what the session shows, and an hour later its weight has dropped to a fifth.

State is one JSON document per customer in a StateStore (never pickle), rewritten with a TTL on every
event, so idle customers expire. The update is read-modify-write. Within a process, updates of one
customer are serialised (RecordEvents handlers run on several threads); two *replicas* writing the
same customer in the same millisecond can still drop one event from the live state (the event log,
which is what learning replays, keeps every event), and a customer's events normally arrive through
one call anyway.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import functools
import operator
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import orjson
from numpy.typing import NDArray

from engine.data.contract import PURCHASE
from engine.live.event_scoring import LiveEventScorer
from engine.live.events import BehaviorEvent, DecisionOutcome
from engine.live.state_store import StateStore
from engine.numeric_settings import check_numeric_settings
from engine.personas.change_detection import MAX_PENDING, DayCheck, DetectorState, advance_day
from engine.personas.drift import (
    DriftConfig,
    DriftStatus,
    decay_weights,
    population_mean_mix,
    recent_mixes,
    scaled_likelihoods,
    status_of,
)
from engine.personas.mix import PersonaMix
from engine.personas.mix_resolution import CustomerMixes, LiveInteraction, LiveView

# 3: kept events carry their event type; 2: the change detector replaced the divergence check
STATE_FORMAT = 3
# Format 2 differs only in its kept events, which lack the type: read as events of unknown type (they
# still move the session mix and the drift test, and are not folded in), so an upgrade keeps every
# customer's session, purchases and drift state.
_READABLE_FORMATS = frozenset({2, STATE_FORMAT})
KEY_PREFIX = "live:customer:"
_SECONDS_PER_DAY = 86_400.0
_EM_STEPS = 50
# Shares settle to this within about ten steps; it is far below anything serving or drift can notice.
_EM_TOLERANCE = 1e-4
# Session events weighing less than this no longer move the mix; skipping them bounds per-request work.
_NEGLIGIBLE_WEIGHT = 1.0 / 64
_UPDATE_LOCKS = 64  # updates of one customer share a lock; different customers rarely collide
# A computed view is reused for this long while the state is unchanged: decay over 10 s moves session
# weights by 0.4% at the default half-life, far below anything that changes a list.
_VIEW_SECONDS = 10.0
_MAX_VIEWS = 50_000
_MAX_SCORES = 200_000  # remembered event scores (a row of persona scores per item and facts)
MAX_KEPT_EVENTS = MAX_PENDING  # kept events of one customer, uncommitted days included (_fold_events)


@dataclass(frozen=True)
class LiveStateConfig:
    """How live state blends into serving. See the module docstring for the formula."""

    session_half_life_minutes: float = 30.0
    long_term_strength: float = 3.0  # kappa: pseudo-events the long-term mix is worth against the session
    max_events: int = 64
    max_purchases: int = 200
    ttl_days: float = 60.0  # idle state expires; longer than the drift window so drift survives a lull
    drift: DriftConfig = field(default_factory=DriftConfig)

    def __post_init__(self) -> None:
        checks = [
            ("session_half_life_minutes", self.session_half_life_minutes > 0, "> 0"),
            ("long_term_strength", self.long_term_strength > 0, "> 0"),
            ("max_events", self.max_events >= 1, "an integer >= 1"),
            ("max_purchases", self.max_purchases >= 0, "an integer >= 0"),
            ("ttl_days", self.ttl_days > 0, "> 0"),
        ]
        check_numeric_settings(self, checks)


class KeptEvent(NamedTuple):
    """One event as the live state keeps it: the facts scoring needs, not the whole record.

    A named tuple, not a dataclass: a rebuild decodes and re-encodes up to ``max_events`` of them per
    customer and event batch, and a tuple is built several times faster and is its own JSON array.
    """

    timestamp: float  # UTC seconds since the epoch
    item_id: str
    discounted: bool | None
    channel: str | None
    device: str | None
    event_type: str | None  # None: kept by a server from before types were kept (state format 2)


@dataclass
class LiveCustomerState:
    """One customer's live state; ``to_bytes``/``from_bytes`` are its compact JSON form in the store.

    ``detector`` is the change test's state through its last committed day; ``check`` the test at the
    end of the latest day seen (committed or provisional), ``drift_since`` the UTC seconds the current
    drift started (set while drifting).
    """

    events: list[KeptEvent] = field(default_factory=list)
    purchased: list[str] = field(default_factory=list)
    detector: DetectorState | None = None
    check: DayCheck | None = None
    drift_since: float | None = None

    def to_bytes(self) -> bytes:
        check = self.check
        document: dict[str, Any] = {
            "v": STATE_FORMAT,
            "e": self.events,
            "p": self.purchased,
            "c": None if self.detector is None else self.detector.to_json(),
            "k": None
            if check is None
            else [check.tested, check.statistic, check.towards, check.since_day, check.baseline_top],
            "s": self.drift_since,
        }
        return orjson.dumps(document, default=list)  # default: a KeptEvent (a tuple subclass) as an array

    @classmethod
    def from_bytes(cls, data: bytes, n_personas: int | None = None) -> LiveCustomerState:
        """Parse stored state; state of another format or persona count is dropped (it is a cache of
        events: the event log rebuilds it)."""
        try:
            document = orjson.loads(data)
            if document.get("v") not in _READABLE_FORMATS:
                return cls()
            detector = None
            if document["c"] is not None:
                k = n_personas if n_personas is not None else len(document["c"][0])
                detector = DetectorState.from_json(document["c"], k)
            check = None
            if document["k"] is not None:
                tested, statistic, towards, since, top = document["k"]
                check = DayCheck(bool(tested), float(statistic), int(towards), int(since), int(top))
            since = document["s"]
            return cls(
                events=_kept_events(document["e"]),
                purchased=[str(p) for p in document["p"]],
                detector=detector,
                check=check,
                drift_since=None if since is None else float(since),
            )
        except (ValueError, KeyError, TypeError):  # orjson.JSONDecodeError is a ValueError
            return cls()


def _kept_events(rows: list[list[Any]]) -> list[KeptEvent]:
    """Stored rows as kept events, built by C-level calls: a rebuild decodes up to ``max_events`` of
    them per customer and batch, and a Python-level constructor per row was most of a decode. Rows of
    format 2 (one field fewer, no event type) get a type of None."""
    width = len(KeptEvent._fields)
    lengths = set(map(len, rows))
    if not lengths <= {width, width - 1}:
        raise ValueError(f"a kept event has {width} fields")
    if width - 1 in lengths:
        rows = [row if len(row) == width else [*row, None] for row in rows]
    return list(map(_NEW_KEPT_EVENT, rows))


_NEW_KEPT_EVENT = functools.partial(tuple.__new__, KeptEvent)
_TIMESTAMP = operator.attrgetter("timestamp")


def _first_after_day(events: list[KeptEvent], day: int) -> int:
    """Index of the first of ``events`` (in time order) later than UTC day ``day``: the uncommitted ones
    start there, and a bisection finds them without decoding the committed days' events."""
    return bisect.bisect_left(events, (day + 1) * _SECONDS_PER_DAY, key=_TIMESTAMP)


_Facts = tuple[str, bool | None, str | None, str | None]  # what an event's score depends on


@dataclass
class _CustomerUpdate:
    """One customer's part of an ``observe`` call: the state being updated."""

    customer_id: str
    state: LiveCustomerState
    was_drifting: bool


def session_blend(
    long_term: NDArray[np.float64],
    scores: NDArray[np.float64],
    weights: NDArray[np.float64],
    strength: float,
) -> NDArray[np.float64]:
    """The live mix: MAP mix of scored events under a Dirichlet centred on ``long_term`` (kappa = strength).

    ``scores`` is (events, personas) log-likelihoods, ``weights`` the events' decayed weights.
    Equivalently ``(1 - lam) * long_term + lam * session`` with ``lam = sum(weights) / (sum + strength)``.
    """
    if weights.size == 0:
        return long_term.copy()
    likelihoods = np.exp(scores - scores.max(axis=1, keepdims=True))
    prior = strength * long_term
    scale = 1.0 / (float(weights.sum()) + strength)
    theta = long_term.copy()
    for _ in range(_EM_STEPS):
        # sum_i w_i r_i with r_i = theta * L_i / (L_i . theta), as two matrix-vector products
        updated = (theta * ((weights / (likelihoods @ theta)) @ likelihoods) + prior) * scale
        change = float(np.max(np.abs(updated - theta)))
        theta = updated
        if change < _EM_TOLERANCE:
            break
    return np.asarray(theta / theta.sum())


class LiveCustomerStates:
    """Live state of every customer of one deployment: updated by events, read by mix resolution.

    Bound to one artifact (its persona model scores events, its mixes are the long-term ones); the
    state itself is in the StateStore, shared by replicas and surviving artifact reloads, because it
    keeps raw event facts rather than scores.
    """

    def __init__(
        self,
        store: StateStore,
        scorer: LiveEventScorer,
        mixes: CustomerMixes,
        config: LiveStateConfig | None = None,
        *,
        clock: Callable[[], dt.datetime] | None = None,
        on_drift_started: Callable[[str, DriftStatus], None] | None = None,
        on_drift_ended: Callable[[str], None] | None = None,
        prior_mean: NDArray[np.float64] | None = None,
        drift_threshold: float | None = None,
    ) -> None:
        """``prior_mean`` centres every drift baseline: the artifact's mean customer mix (what the
        offline drift job uses); by default the mean of ``mixes.overall``. ``drift_threshold``: the
        nats a customer's change statistic must reach to drift, the one the artifact was calibrated
        with (``engine.personas.drift_calibration.live_threshold``); by default the config's."""
        if tuple(scorer.persona_ids) != tuple(mixes.persona_ids):
            raise ValueError(
                f"scorer personas {scorer.persona_ids} differ from the mixes' {mixes.persona_ids}"
            )
        self.store = store
        self.scorer = scorer
        self.mixes = mixes
        self.config = config or LiveStateConfig()
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._on_drift_started = on_drift_started
        self._on_drift_ended = on_drift_ended
        self._locks = [threading.Lock() for _ in range(_UPDATE_LOCKS)]
        self._views: dict[tuple[str, bytes], tuple[bytes, int, LiveView]] = {}
        self._scores: dict[_Facts, NDArray[np.float64]] = {}
        self.prior_mean = (
            population_mean_mix(mixes.overall) if prior_mean is None else np.asarray(prior_mean, np.float64)
        )
        self.drift_threshold = self.config.drift.threshold if drift_threshold is None else drift_threshold

    @staticmethod
    def key(customer_id: str) -> str:
        return f"{KEY_PREFIX}{customer_id}"

    def state_of(self, customer_id: str) -> LiveCustomerState | None:
        data = self.store.get(self.key(customer_id))
        return None if data is None else LiveCustomerState.from_bytes(data)

    # ------------------------------------------------------------------ writing
    def observe(self, events: Sequence[BehaviorEvent], outcomes: Sequence[DecisionOutcome]) -> None:
        """Fold newly accepted events into their customers' state (outcomes are the bandits' business)."""
        self.observe_batches([events])

    def observe_batches(self, batches: Sequence[Sequence[BehaviorEvent]]) -> None:
        """Fold several accepted batches, in the order they arrived, as ``observe`` one after another
        would, with one state read and write per customer: how a restart replays the event log.

        The order of arrival matters only for a customer's events that arrive after a later day of
        theirs was committed (a late event of a committed day is not re-tested, module doc): replaying
        them in their batches makes a restart end in the state the live path had reached.
        """
        by_customer: dict[str, list[list[BehaviorEvent]]] = {}  # each customer's part of each batch
        last_batch: dict[str, int] = {}
        for number, batch in enumerate(batches):
            for event in batch:
                own = by_customer.setdefault(event.customer_id, [])
                if last_batch.get(event.customer_id) != number:
                    own.append([])
                    last_batch[event.customer_id] = number
                own[-1].append(event)
        if not by_customer:
            return
        # Updates of one customer are serialised; the locks are taken in index order, so two batches
        # that share customers never wait on each other in a cycle.
        indices = sorted({zlib.crc32(c.encode("utf-8")) % _UPDATE_LOCKS for c in by_customer})
        with contextlib.ExitStack() as held:
            for index in indices:
                held.enter_context(self._locks[index])
            updates = [self._fold_batches(customer_id, own) for customer_id, own in by_customer.items()]
            ttl = self.config.ttl_days * _SECONDS_PER_DAY
            for update in updates:
                state = update.state
                del state.purchased[: max(0, len(state.purchased) - self.config.max_purchases)]
                self.store.set(self.key(update.customer_id), state.to_bytes(), ttl_seconds=ttl)
        for update in updates:
            state = update.state
            if not update.was_drifting and state.drift_since is not None and self._on_drift_started:
                self._on_drift_started(update.customer_id, self._drift_status(update.customer_id, state))
            if update.was_drifting and state.drift_since is None and self._on_drift_ended:
                self._on_drift_ended(update.customer_id)

    def _fold_batches(self, customer_id: str, batches: Sequence[Sequence[BehaviorEvent]]) -> _CustomerUpdate:
        """Read the customer's state and fold their part of each batch into it, in arrival order."""
        data = self.store.get(self.key(customer_id))
        k = len(self.scorer.persona_ids)
        state = LiveCustomerState() if data is None else LiveCustomerState.from_bytes(data, k)
        update = _CustomerUpdate(customer_id, state, state.drift_since is not None)
        if state.detector is None:
            state.detector = self._new_detector(customer_id)
        for batch in batches:
            self._fold_events(state, customer_id, sorted(batch, key=lambda e: e.timestamp))
        return update

    def _fold_events(
        self, state: LiveCustomerState, customer_id: str, events: Sequence[BehaviorEvent]
    ) -> None:
        """Add ``events`` (in time order) to the customer's state and advance its drift test."""
        cfg = self.config
        known = self.scorer.item_positions
        for n, event in enumerate(events):
            if event.item_id in known:  # others: no evidence, and not recommendable
                discounted = None if event.discount is None else event.discount > 0
                state.events.append(
                    KeptEvent(
                        event.timestamp.timestamp(),
                        event.item_id,
                        discounted,
                        event.channel,
                        event.device,
                        event.event_type,
                    )
                )
                if event.event_type == PURCHASE and event.item_id not in state.purchased:
                    state.purchased.append(event.item_id)
            # At the last event of each UTC day of the batch: commit the days before it (their events
            # are complete: this one is later) and test this one, provisionally. Before the kept
            # events are cut to ``max_events``, so a batch replaying weeks loses no day.
            following = events[n + 1] if n + 1 < len(events) else None
            if following is None or following.timestamp.date() != event.timestamp.date():
                state.events.sort(key=lambda e: e.timestamp)
                self._advance_drift(customer_id, state, event.timestamp)
                # Events of the day not yet committed stay, however many: the commit needs them all.
                last_day = state.detector.last_day if state.detector is not None else -1
                first_open = _first_after_day(state.events, last_day)
                del state.events[: max(0, min(len(state.events) - cfg.max_events, first_open))]
                # Bounded all the same: a customer id sending thousands of events in one day (a bot, a
                # bulk import replayed through RecordEvents) would otherwise keep them all until the day
                # is committed, and every update would decode and re-encode them. Past the bound the
                # oldest go even uncommitted; only such a day's test differs from the offline one.
                del state.events[: max(0, len(state.events) - MAX_KEPT_EVENTS)]

    def _new_detector(self, customer_id: str) -> DetectorState:
        """A customer's first detector state: their long-term mix as baseline when the artifact knows
        their events (module doc), otherwise empty."""
        detector = DetectorState.empty(len(self.scorer.persona_ids))
        worth = self.config.drift.artifact_baseline_events
        row = self.mixes.row_of(customer_id)
        if worth > 0 and row >= 0 and bool(self.mixes.has_events[row]):
            detector.counts = self.mixes.overall[row] * worth
            detector.absorbed = worth
        return detector

    def _advance_drift(self, customer_id: str, state: LiveCustomerState, moment: dt.datetime) -> None:
        """Commit the uncommitted days before ``moment``'s UTC day and test that day provisionally."""
        detector = state.detector
        assert detector is not None
        today = int(moment.timestamp() // _SECONDS_PER_DAY)
        pending: dict[int, list[KeptEvent]] = {}
        for kept in state.events[_first_after_day(state.events, detector.last_day) :]:
            day = int(kept.timestamp // _SECONDS_PER_DAY)
            if detector.last_day < day <= today:  # late events of committed days are not re-tested
                pending.setdefault(day, []).append(kept)
        detector_config = self.config.drift.detector
        check = state.check
        for day in sorted(pending):
            likelihoods, weights = self._day_evidence(pending[day])
            target = detector if day < today else detector.copy()
            check = advance_day(target, likelihoods, weights, day, self.prior_mean, detector_config)
        if check is None:
            return
        state.check = check
        status = status_of(check, self.drift_threshold, self.scorer.persona_ids, detector.absorbed)
        state.drift_since = None if status.since is None else status.since.timestamp()

    def _day_evidence(self, kept: Sequence[KeptEvent]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(personas, events) scaled likelihoods and weights of one day's events: repeats of an item
        on the day share one event's weight, as in training and the offline test."""
        counts = Counter(e.item_id for e in kept)
        weights = np.fromiter((1.0 / counts[e.item_id] for e in kept), np.float64, len(kept))
        return scaled_likelihoods(self._scores_of(kept)), weights

    # ------------------------------------------------------------------ reading
    def live_view(self, customer_id: str, long_term: PersonaMix) -> LiveView | None:
        """The session-moved mix and the live exclusions of a customer, or None without live state.

        Views are remembered per customer and long-term mix for ``_VIEW_SECONDS`` while the stored
        state is unchanged: the page views between two events of a session then cost one store read.
        """
        data = self.store.get(self.key(customer_id))
        if data is None:
            return None
        now = self._clock()
        bucket = int(now.timestamp() // _VIEW_SECONDS)
        memo_key = (customer_id, long_term.weights.tobytes())
        remembered = self._views.get(memo_key)
        if remembered is not None and remembered[0] == data and remembered[1] == bucket:
            return remembered[2]
        state = LiveCustomerState.from_bytes(data, len(self.scorer.persona_ids))
        drift = self._drift_status(customer_id, state)
        start = long_term.weights
        recent = drift.drifting and drift.since is not None
        if recent and drift.since is not None:
            start = self._recent_mix(customer_id, state, now, drift.since, long_term.weights)
        half_life = self.config.session_half_life_minutes * 60.0
        scores, weights = self._scored(customer_id, state, now, half_life)
        mix = None
        if weights.size:
            blended = session_blend(start, scores, weights, self.config.long_term_strength)
            mix = PersonaMix(long_term.personas, blended)
        elif recent:
            mix = PersonaMix(long_term.personas, start)
        events = tuple(
            LiveInteraction(e.timestamp, e.item_id, e.event_type)
            for e in state.events
            if e.event_type is not None
        )
        view = LiveView(mix, tuple(state.purchased), drift, recent_mix=recent, events=events)
        if len(self._views) >= _MAX_VIEWS:
            self._views.clear()  # a crude bound; the next requests refill what is still in use
        self._views[memo_key] = (data, bucket, view)
        return view

    def _drift_status(self, customer_id: str, state: LiveCustomerState) -> DriftStatus:
        persona_ids = self.scorer.persona_ids
        evidence = 0.0 if state.detector is None else state.detector.absorbed
        if state.check is None:
            home = self._long_term(customer_id).dominant
            return DriftStatus(False, 0.0, 0.0, None, home, home, evidence, self.drift_threshold)
        return status_of(state.check, self.drift_threshold, persona_ids, evidence)

    def _recent_mix(
        self,
        customer_id: str,
        state: LiveCustomerState,
        now: dt.datetime,
        since: dt.datetime,
        long_term: NDArray[np.float64],
    ) -> NDArray[np.float64]:
        """The MAP mix of the kept events since the drift began, decayed with the drift half-life,
        around the long-term mix (worth ``drift.prior_strength`` events): who the customer is now."""
        kept = [
            e
            for e in state.events
            if e.timestamp >= since.timestamp() and e.item_id in self.scorer.item_positions
        ]
        if not kept:
            return long_term
        stamps = np.fromiter((e.timestamp for e in kept), np.float64, len(kept))
        mix = recent_mixes(
            self.scorer.model,
            self._scores_of(kept),
            (now.timestamp() - stamps) / _SECONDS_PER_DAY,
            np.array([0, len(kept)], dtype=np.int64),
            long_term[None, :],
            self.config.drift,
        )
        return np.asarray(mix[0])

    def _long_term(self, customer_id: str) -> PersonaMix:
        return self.mixes.stored(self.mixes.row_of(customer_id))

    def _scored(
        self,
        customer_id: str,
        state: LiveCustomerState,
        moment: dt.datetime,
        half_life_seconds: float,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Scores and decayed weights of the kept events that still count at ``moment``."""
        now = moment.timestamp()
        known = self.scorer.item_positions
        kept = [e for e in state.events if e.item_id in known]
        if not kept:
            return np.zeros((0, len(self.scorer.persona_ids))), np.zeros(0)
        stamps = np.fromiter((e.timestamp for e in kept), np.float64, len(kept))
        weights = decay_weights((now - stamps) / half_life_seconds, 1.0)
        live = weights >= _NEGLIGIBLE_WEIGHT
        if not live.any():
            return np.zeros((0, len(self.scorer.persona_ids))), np.zeros(0)
        chosen = kept if live.all() else [e for e, keep in zip(kept, live.tolist(), strict=True) if keep]
        weights = weights[live]
        # Repeats of an item on one UTC day are one decision (view, cart, purchase), as in training.
        groups = [(e.item_id, int(e.timestamp // _SECONDS_PER_DAY)) for e in chosen]
        counts = Counter(groups)
        if len(counts) < len(groups):
            weights = weights / np.fromiter((counts[g] for g in groups), np.float64, len(groups))
        return self._scores_of(chosen), weights

    def _scores_of(self, events: Sequence[KeptEvent]) -> NDArray[np.float64]:
        """(events, personas) scores, each set of facts scored once and remembered: a customer's kept
        events are mostly the same from one check or request to the next."""
        remembered = self._scores
        facts = [(e.item_id, e.discounted, e.channel, e.device) for e in events]
        rows = [remembered.get(f) for f in facts]
        missing = [n for n, row in enumerate(rows) if row is None]
        if missing:
            if len(remembered) + len(missing) > _MAX_SCORES:
                remembered.clear()  # a crude bound, as for views
            for n, row in zip(missing, self._score([events[n] for n in missing]), strict=True):
                rows[n] = remembered[facts[n]] = row
        return np.array(rows)

    def _score(self, events: Sequence[KeptEvent]) -> NDArray[np.float64]:
        return self.scorer.score_facts(
            [e.item_id for e in events],
            [e.discounted for e in events],
            [e.channel for e in events],
            [e.device for e in events],
        )
