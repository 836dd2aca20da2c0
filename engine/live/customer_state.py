"""Live customer state: what the last few events say about a customer, applied to the next request.

Each accepted behaviour event updates its customer's state at once (``observe``, a LiveEventObserver):

- a purchase puts the item on the customer's bought list, which serving excludes like the purchases
  the artifact was trained on;
- every event with an item the artifact knows is kept (time, item, discounted, channel, device; the
  last ``max_events``) as evidence for the session mix;
- drift is re-checked (``engine.personas.drift``, the same rule as offline): the mix of the decayed
  recent events (half-life ``drift.half_life_days``) against the long-term mix, with the date the
  current drift started.

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

import contextlib
import datetime as dt
import json
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.live.event_scoring import LiveEventScorer
from engine.live.events import BehaviorEvent, DecisionOutcome
from engine.live.state_store import StateStore
from engine.numeric_settings import check_numeric_settings
from engine.personas.drift import DriftConfig, DriftStatus, decay_weights, js_divergence
from engine.personas.mix import PersonaMix
from engine.personas.mix_resolution import CustomerMixes, LiveView

STATE_FORMAT = 1
KEY_PREFIX = "live:customer:"
PURCHASE = "purchase"
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


@dataclass(frozen=True)
class KeptEvent:
    """One event as the live state keeps it: the facts scoring needs, not the whole record."""

    timestamp: float  # UTC seconds since the epoch
    item_id: str
    discounted: bool | None
    channel: str | None
    device: str | None


@dataclass
class LiveCustomerState:
    """One customer's live state; ``to_bytes``/``from_bytes`` are its compact JSON form in the store."""

    events: list[KeptEvent] = field(default_factory=list)
    purchased: list[str] = field(default_factory=list)
    drift_since: float | None = None  # UTC seconds; set while the customer drifts
    drift_divergence: float = 0.0
    drift_evidence: float = 0.0
    drift_to: str = ""
    # The UTC day of the last drift check and ``drift_since`` as it was before that day's first check:
    # a later check of the same day replaces the earlier one instead of adding to it, so the state
    # after a day does not depend on how that day's events were split into batches.
    drift_day: int | None = None
    drift_since_before: float | None = None

    def to_bytes(self) -> bytes:
        document: dict[str, Any] = {
            "v": STATE_FORMAT,
            "e": [[e.timestamp, e.item_id, e.discounted, e.channel, e.device] for e in self.events],
            "p": self.purchased,
            "d": [
                self.drift_since,
                round(self.drift_divergence, 6),
                round(self.drift_evidence, 4),
                self.drift_to,
                self.drift_day,
                self.drift_since_before,
            ],
        }
        return json.dumps(document, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> LiveCustomerState:
        """Parse stored state; state of an unknown format version is dropped (it is a cache of events)."""
        try:
            document = json.loads(data)
            if document.get("v") != STATE_FORMAT:
                return cls()
            since, divergence, evidence, to, *day = document["d"]  # four fields before drift_day
            check_day, before = day if day else (None, None)
            return cls(
                events=[KeptEvent(float(t), str(i), d, c, v) for t, i, d, c, v in document["e"]],
                purchased=[str(p) for p in document["p"]],
                drift_since=None if since is None else float(since),
                drift_divergence=float(divergence),
                drift_evidence=float(evidence),
                drift_to=str(to),
                drift_day=None if check_day is None else int(check_day),
                drift_since_before=None if before is None else float(before),
            )
        except (ValueError, KeyError, TypeError):
            return cls()


_Facts = tuple[str, bool | None, str | None, str | None]  # what an event's score depends on


@dataclass
class _DriftCheck:
    """One drift check: its inputs, taken when the day's last event was folded in, then its result."""

    moment: float  # UTC seconds: the day's last event
    scores: NDArray[np.float64]
    weights: NDArray[np.float64]
    long_term: NDArray[np.float64]
    divergence: float = 0.0
    evidence: float = 0.0
    to: str = ""

    def apply(self, state: LiveCustomerState, drift: DriftConfig) -> None:
        day = int(self.moment // _SECONDS_PER_DAY)
        if state.drift_day == day:
            state.drift_since = state.drift_since_before  # this check replaces the day's earlier one
        else:
            state.drift_day, state.drift_since_before = day, state.drift_since
        state.drift_divergence, state.drift_evidence, state.drift_to = self.divergence, self.evidence, self.to
        if self.divergence > drift.threshold and self.evidence >= drift.min_evidence:
            if state.drift_since is None:
                state.drift_since = self.moment
        else:
            state.drift_since = None


@dataclass
class _CustomerUpdate:
    """One customer's part of an ``observe`` call: the state being updated and its pending checks."""

    customer_id: str
    state: LiveCustomerState
    was_drifting: bool
    checks: list[_DriftCheck] = field(default_factory=list)


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
    ) -> None:
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
        self._locks = [threading.Lock() for _ in range(_UPDATE_LOCKS)]
        self._views: dict[tuple[str, bytes], tuple[bytes, int, LiveView]] = {}
        self._scores: dict[_Facts, NDArray[np.float64]] = {}

    @staticmethod
    def key(customer_id: str) -> str:
        return f"{KEY_PREFIX}{customer_id}"

    def state_of(self, customer_id: str) -> LiveCustomerState | None:
        data = self.store.get(self.key(customer_id))
        return None if data is None else LiveCustomerState.from_bytes(data)

    # ------------------------------------------------------------------ writing
    def observe(self, events: Sequence[BehaviorEvent], outcomes: Sequence[DecisionOutcome]) -> None:
        """Fold newly accepted events into their customers' state (outcomes are the bandits' business).

        The drift checks of every customer of the batch are folded in together (one batched fold-in
        instead of one per customer and day, which was most of the cost of replaying a log); each
        check depends only on its own customer's events, so batching changes no result.
        """
        by_customer: dict[str, list[BehaviorEvent]] = {}
        for event in events:
            by_customer.setdefault(event.customer_id, []).append(event)
        if not by_customer:
            return
        # Updates of one customer are serialised; the locks are taken in index order, so two batches
        # that share customers never wait on each other in a cycle.
        indices = sorted({zlib.crc32(c.encode("utf-8")) % _UPDATE_LOCKS for c in by_customer})
        with contextlib.ExitStack() as held:
            for index in indices:
                held.enter_context(self._locks[index])
            updates = [
                self._fold_events(customer_id, sorted(own, key=lambda e: e.timestamp))
                for customer_id, own in by_customer.items()
            ]
            self._run_checks([check for update in updates for check in update.checks])
            ttl = self.config.ttl_days * _SECONDS_PER_DAY
            for update in updates:
                state = update.state
                for check in update.checks:
                    check.apply(state, self.config.drift)
                del state.purchased[: max(0, len(state.purchased) - self.config.max_purchases)]
                self.store.set(self.key(update.customer_id), state.to_bytes(), ttl_seconds=ttl)
        for update in updates:
            state = update.state
            if not update.was_drifting and state.drift_since is not None and self._on_drift_started:
                self._on_drift_started(update.customer_id, self._drift_status(update.customer_id, state))

    def _fold_events(self, customer_id: str, events: Sequence[BehaviorEvent]) -> _CustomerUpdate:
        """Add ``events`` (in time order) to the customer's state and collect the drift checks they call
        for, with the kept events as each check sees them; the checks themselves run batched."""
        cfg = self.config
        state = self.state_of(customer_id) or LiveCustomerState()
        update = _CustomerUpdate(customer_id, state, state.drift_since is not None)
        known = self.scorer.item_positions
        half_life = cfg.drift.half_life_days * _SECONDS_PER_DAY
        for n, event in enumerate(events):
            if event.item_id in known:  # others: no evidence, and not recommendable
                discounted = None if event.discount is None else event.discount > 0
                state.events.append(
                    KeptEvent(
                        event.timestamp.timestamp(), event.item_id, discounted, event.channel, event.device
                    )
                )
                if event.event_type == PURCHASE and event.item_id not in state.purchased:
                    state.purchased.append(event.item_id)
            # Drift is checked at the last event of each UTC day, as offline, so a batch replaying weeks
            # of history dates the drift's start as if the events had arrived one by one.
            following = events[n + 1] if n + 1 < len(events) else None
            if following is None or following.timestamp.date() != event.timestamp.date():
                state.events.sort(key=lambda e: e.timestamp)
                del state.events[: max(0, len(state.events) - cfg.max_events)]
                scores, weights = self._scored(customer_id, state, event.timestamp, half_life)
                if weights.size:
                    moment = event.timestamp.timestamp()
                    long_term = self._long_term(customer_id).weights
                    update.checks.append(_DriftCheck(moment, scores, weights, long_term))
        return update

    def _run_checks(self, checks: Sequence[_DriftCheck]) -> None:
        """The recent mix of every check, in one fold-in; fills each check's result."""
        if not checks:
            return
        lengths = np.asarray([check.weights.size for check in checks], dtype=np.int64)
        recent = self.scorer.model.mixes_of_scored_events(
            np.concatenate([check.scores for check in checks]),
            np.concatenate([check.weights for check in checks]),
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            np.vstack([check.long_term for check in checks]),
            self.config.drift.prior_strength,
        )
        long_terms = np.vstack([check.long_term for check in checks])
        divergences = js_divergence(recent, long_terms)
        tops = np.argmax(recent, axis=1)
        for n, check in enumerate(checks):
            check.divergence = float(divergences[n])
            check.evidence = float(check.weights.sum())
            check.to = self.scorer.persona_ids[int(tops[n])]

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
        state = LiveCustomerState.from_bytes(data)
        half_life = self.config.session_half_life_minutes * 60.0
        scores, weights = self._scored(customer_id, state, now, half_life)
        mix = None
        if weights.size:
            blended = session_blend(long_term.weights, scores, weights, self.config.long_term_strength)
            mix = PersonaMix(long_term.personas, blended)
        view = LiveView(mix, tuple(state.purchased), self._drift_status(customer_id, state))
        if len(self._views) >= _MAX_VIEWS:
            self._views.clear()  # a crude bound; the next requests refill what is still in use
        self._views[memo_key] = (data, bucket, view)
        return view

    def _drift_status(self, customer_id: str, state: LiveCustomerState) -> DriftStatus:
        home = self._long_term(customer_id).dominant
        return DriftStatus(
            drifting=state.drift_since is not None,
            divergence=state.drift_divergence,
            since=None if state.drift_since is None else dt.datetime.fromtimestamp(state.drift_since, dt.UTC),
            from_persona=home,
            to_persona=state.drift_to or home,
            evidence=state.drift_evidence,
        )

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
