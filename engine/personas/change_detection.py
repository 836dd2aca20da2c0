"""Sequential change detection on a customer's events: has their persona mix moved, towards whom, since when.

The question drift asks is a change-point question, so it is answered with a change-point test rather
than a divergence between two estimated mixes. Per customer, events in time order, a UTC day at a time
(``advance_day``), the same steps offline (``check_changes``, every customer of a history) and live
(``engine.live.customer_state``, a customer's state carried from one batch of events to the next):

- **Baseline.** The customer's mix before the change is learnt from their own events once they are
  older than ``baseline_lag_days``, so a baseline never contains the recent events it is tested
  against. Each event that ages past the lag is absorbed by a one-pass Bayesian update (quasi-Bayes:
  its persona posterior under the current baseline is added to the baseline's counts; the baseline is
  the counts plus the population's mean mix worth ``prior_strength`` events). That keeps the state a
  few numbers per persona plus the events still younger than the lag (at most ``MAX_PENDING``, older
  ones are absorbed early), so the live path carries exactly what the offline test computes. On the
  demo shop it scored as the MAP fold-in of all old events did (see the report), at a bounded state.
  A customer whose baseline holds under ``min_baseline_evidence`` (de-duplicated) events is not
  tested: drift is relative to a known past.
- **Statistic.** One CUSUM per persona p against the alternative "the customer now shops as a new mix
  led by p": ``a_p = shift * e_p + (1 - shift) * r`` with ``r`` the population's mean mix ``m``
  (``keep_baseline`` 0, the default) or, towards ``keep_baseline`` 1, the baseline itself ("the mix
  moved ``shift`` of the way towards p", the test before). Each event adds
  ``w * log(sum_q a_p,q L_q / sum_q b_q L_q)``, where ``L`` are the event's persona likelihoods (the
  artifact's persona model) and ``b`` the baseline. The sum restarts at 0 whenever it would fall below
  it, so old evidence for "no change" does not mask a new change, and each CUSUM's last restart is the
  estimated start of the change. Three odd events add little; a run of consistent ones adds up: the
  statistic is evidence in nats, not a distance between noisy mixes. Only personas under half of the
  baseline count (more of the dominant persona is not a drift).
  Why the new mix leaves the baseline behind: a customer who changes takes up a new main interest and
  drops the old one (the synthetic shop plants exactly that: a new mix led by another persona), so
  the old dominant persona's events become rare too. Against ``(1 - shift) * b + shift * e_p`` that
  drop is no evidence (the alternative keeps half of the old dominant share); against ``a_p`` it is.
  On both synthetic shops (seeds 7 and 3, 5% target) recall rose from 0.48 / 0.47 to 0.53 / 0.56 at
  5.9% / 5.5% measured false alarms and the median delay fell from 33 / 31 to 28 / 27 days; at equal
  measured false alarms (5%) from 0.47 / 0.46 to 0.52 / 0.54. On top of it, variants gained at most
  0.03 (an upper credible bound of the baseline, a full EM fold-in of the old events, prior strength
  1 to 3, shift 0.3 to 0.5) or lost (shift 0.7 and more, the largest over several shifts, learning
  the alternative from the recent events, a prior worth 10 events or more); with the former
  alternative, other lags (14 to 56 days) and context-tilted baselines moved recall by 0.025 at
  most. What is left to an oracle that knows each drifter's new mix (recall 0.77 / 0.80 at 5%
  measured false alarms) is mostly not knowing *which* persona a customer drifts to: with it given,
  the same test reaches 0.68 / 0.715, while the largest of the four CUSUMs needs a threshold about 2
  nats higher under the null.
- **One day is not a trend** (``min_run_days``, 2 by default). A CUSUM may raise the alarm only once
  its run spans two UTC days: the day it last restarted and a later day with events that did not undo
  it. Four telling views in one browsing session add about 5.5 nats, over the threshold, and flagged a
  known customer live, who was then served from that session's mix (a new user's walkthrough of the
  demo); real sessions hold one intent, so their events are not the independent evidence the CUSUM
  counts them as, and shuffling events across days (the calibration below) cannot show that. On the
  synthetic shops, whose events are drawn independently (the case most favourable to one-day alarms),
  the rule cost little: at 5% target false alarms recall 0.53 -> 0.51 (seed 7) and 0.56 -> 0.54 (seed
  3), median delay 28 -> 31 and 27 -> 29 days, measured false alarms 5.9% -> 5.4% and 5.5% -> 5.1%
  (closer to the target); at equal measured false alarms recall moved by -0.02 to +0.01.
- **Threshold from a false-alarm rate.** Shuffling a customer's events in time keeps everything about
  them except the order, so it destroys any change point: the (1 - rate) quantile of shuffled
  customers' largest statistic (of customers tested at all) is the threshold at which about ``rate``
  of customers without a change would be flagged (``calibrate_threshold``). On the demo shop (seed
  7), targets of 2%, 5% and 10% gave 2.6%, 5.4% and 10.5% on customers without planted drift (seed
  3: 2.2%, 5.1%, 10.5%).

Checks run at the end of each UTC day with events, as the live path does when a day's events arrive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

from engine.numeric_settings import check_numeric_settings

# A persona already this big in the baseline cannot be what the customer drifts to.
_DOMINANT_SHARE = 0.5
# Events younger than the lag kept per customer; beyond this the oldest is absorbed early (a customer
# with hundreds of events in four weeks has a baseline long before that matters).
MAX_PENDING = 256


@dataclass(frozen=True)
class ChangeDetectorConfig:
    """How the change test runs; ``threshold`` None means calibrate it to ``false_alarm_rate``.

    shift:                 weight of the persona p the alternative mix is led by.
    keep_baseline:         share of the alternative's rest (``1 - shift``) that is the customer's baseline
                           rather than the population's mean mix: 0 tests "a new mix led by p", 1 "the
                           mix moved ``shift`` of the way towards p" (module doc).
    baseline_lag_days:     events younger than this are tested, older ones make the baseline.
    min_baseline_evidence: (de-duplicated) events the baseline needs before a customer is tested.
    prior_strength:        events the population's mean mix is worth in the baseline's fold-in.
    min_run_days:          UTC days a CUSUM's run must span (from the day it last restarted to the
                           check, both counted) before it may raise the alarm: 2 means one day's
                           events, however telling, are not a trend (module doc).
    false_alarm_rate:      share of customers without a change the calibrated threshold may flag.
    threshold:             the CUSUM threshold in nats, when given instead of calibrated.
    """

    shift: float = 0.5
    keep_baseline: float = 0.0
    baseline_lag_days: float = 28.0
    min_baseline_evidence: float = 3.0
    prior_strength: float = 3.0
    min_run_days: int = 2
    false_alarm_rate: float = 0.05
    threshold: float | None = None

    def __post_init__(self) -> None:
        checks = [
            ("shift", 0 < self.shift < 1, "in (0, 1)"),
            ("keep_baseline", 0 <= self.keep_baseline <= 1, "in [0, 1]"),
            ("baseline_lag_days", self.baseline_lag_days > 0, "> 0"),
            ("min_baseline_evidence", self.min_baseline_evidence >= 0, ">= 0"),
            ("prior_strength", self.prior_strength > 0, "> 0"),
            (
                "min_run_days",
                self.min_run_days >= 1 and float(self.min_run_days).is_integer(),
                "a whole number >= 1",
            ),
            ("false_alarm_rate", 0 < self.false_alarm_rate < 1, "in (0, 1)"),
        ]
        if self.threshold is not None:
            checks.append(("threshold", self.threshold > 0, "> 0"))
        check_numeric_settings(self, checks)


@dataclass(frozen=True)
class ChangeChecks:
    """Every end-of-day check of every tested customer, in customer then time order.

    ``statistic`` is the largest CUSUM over the personas that may be drifted to, ``towards`` that
    persona, ``since_day`` the day its CUSUM last restarted (the estimated start of the change) and
    ``baseline_top`` the baseline's dominant persona at the check. Days count from 1970-01-01.
    """

    customer: NDArray[np.int64]
    day: NDArray[np.int64]
    statistic: NDArray[np.float64]
    towards: NDArray[np.int64]
    since_day: NDArray[np.int64]
    baseline_top: NDArray[np.int64]

    def first_alarms(self, threshold: float, n_customers: int) -> NDArray[np.int64]:
        """Per customer, the index of the first check at or over ``threshold`` (-1: never)."""
        over = np.flatnonzero(self.statistic >= threshold)
        first = np.full(n_customers, -1, dtype=np.int64)
        if over.size:
            customers, where = np.unique(self.customer[over], return_index=True)
            first[customers] = over[where]
        return first

    def largest(self, n_customers: int) -> NDArray[np.float64]:
        """Per customer, the largest statistic of any check (0 for customers never tested)."""
        out = np.zeros(n_customers)
        np.maximum.at(out, self.customer, self.statistic)
        return out


def check_changes(
    likelihoods: NDArray[np.float64],
    weight: NDArray[np.float64],
    day: NDArray[np.int64],
    indptr: NDArray[np.int64],
    prior_mean: NDArray[np.float64],
    config: ChangeDetectorConfig,
) -> ChangeChecks:
    """Run the change test over each customer's events (module doc).

    ``likelihoods`` is (personas x events), each event's scaled by a constant (only ratios matter);
    customer c's events are ``indptr[c]:indptr[c + 1]``, in time order, with their UTC ``day``.
    """
    k, n = likelihoods.shape
    if weight.shape != (n,) or day.shape != (n,) or int(indptr[-1]) != n:
        raise ValueError(f"weight, day and indptr must cover the {n} events of likelihoods")
    if prior_mean.shape != (k,):
        raise ValueError(f"prior_mean has shape {prior_mean.shape}, expected ({k},)")
    columns = _checks(
        np.ascontiguousarray(likelihoods, dtype=np.float64),
        np.ascontiguousarray(weight, dtype=np.float64),
        np.ascontiguousarray(day, dtype=np.int64),
        np.ascontiguousarray(indptr, dtype=np.int64),
        np.ascontiguousarray(prior_mean, dtype=np.float64),
        *_settings(config),
    )
    return ChangeChecks(*columns)


def time_shuffled(indptr: NDArray[np.int64], rng: np.random.Generator) -> NDArray[np.int64]:
    """An event order that shuffles each customer's events among their own positions (their days stay)."""
    order = np.arange(int(indptr[-1]), dtype=np.int64)
    lengths = np.diff(indptr)
    owner = np.repeat(np.arange(lengths.size), lengths)
    # Sort by customer, then by a random key: a uniform permutation within every customer at once.
    return order[np.lexsort((rng.random(order.size), owner))]


def shuffled_largest(
    likelihoods: NDArray[np.float64],
    weight: NDArray[np.float64],
    day: NDArray[np.int64],
    indptr: NDArray[np.int64],
    prior_mean: NDArray[np.float64],
    config: ChangeDetectorConfig,
    rng: np.random.Generator,
) -> NDArray[np.float64]:
    """Each tested customer's largest statistic once their events are shuffled in time: the null
    distribution the threshold is calibrated on (module doc).

    Customers never tested (a baseline too thin all along) are left out: they cannot raise an alarm,
    so counting them would lower the threshold by their share (on a shop of short histories, to zero),
    and the live path tests every customer the artifact knows from their first live event.
    """
    shuffled = time_shuffled(indptr, rng)
    null = check_changes(likelihoods[:, shuffled], weight[shuffled], day, indptr, prior_mean, config)
    return null.largest(indptr.size - 1)[np.unique(null.customer)]


def threshold_for(largest: NDArray[np.float64], false_alarm_rate: float) -> float:
    """The threshold that about ``false_alarm_rate`` of the customers behind ``largest`` reach."""
    if largest.size == 0:
        raise ValueError("no customer has a baseline to test against: no threshold can be calibrated")
    return float(max(np.quantile(largest, 1.0 - false_alarm_rate), 1e-9))


def calibrate_threshold(
    likelihoods: NDArray[np.float64],
    weight: NDArray[np.float64],
    day: NDArray[np.int64],
    indptr: NDArray[np.int64],
    prior_mean: NDArray[np.float64],
    config: ChangeDetectorConfig,
    rng: np.random.Generator,
) -> float:
    """The threshold that flags about ``config.false_alarm_rate`` of the tested customers once their
    events are shuffled in time (module doc)."""
    largest = shuffled_largest(likelihoods, weight, day, indptr, prior_mean, config, rng)
    return threshold_for(largest, config.false_alarm_rate)


@dataclass(frozen=True)
class DayCheck:
    """The test at the end of one day: ``tested`` False while the baseline is too thin to test against.

    ``since_day`` is -1 when no persona's CUSUM is above 0 (then ``towards`` is the baseline's top).
    """

    tested: bool
    statistic: float
    towards: int
    since_day: int
    baseline_top: int


@dataclass
class DetectorState:
    """One customer's detector state between two days: what live state stores per customer.

    ``counts`` and ``absorbed`` are the baseline's absorbed evidence, ``cusum`` and ``started`` the
    CUSUM per persona and the day it last restarted, the ``pending_`` arrays the events not yet old
    enough for the baseline (likelihoods scaled to a maximum of 1 per event), ``last_day`` the last day
    advanced (-1: none).
    """

    counts: NDArray[np.float64]
    absorbed: float
    cusum: NDArray[np.float64]
    started: NDArray[np.int64]
    pending_day: NDArray[np.int64]
    pending_weight: NDArray[np.float64]
    pending_likelihoods: NDArray[np.float64]  # (personas, pending events)
    last_day: int = -1

    @classmethod
    def empty(cls, n_personas: int) -> DetectorState:
        return cls(
            counts=np.zeros(n_personas),
            absorbed=0.0,
            cusum=np.zeros(n_personas),
            started=np.full(n_personas, -1, dtype=np.int64),
            pending_day=np.zeros(0, dtype=np.int64),
            pending_weight=np.zeros(0),
            pending_likelihoods=np.zeros((n_personas, 0)),
        )

    def copy(self) -> DetectorState:
        return DetectorState(
            self.counts.copy(),
            self.absorbed,
            self.cusum.copy(),
            self.started.copy(),
            self.pending_day.copy(),
            self.pending_weight.copy(),
            self.pending_likelihoods.copy(),
            self.last_day,
        )

    def baseline(self, prior_mean: NDArray[np.float64], prior_strength: float) -> NDArray[np.float64]:
        """The baseline mix: absorbed evidence plus the population's mean mix worth ``prior_strength``."""
        return np.asarray((self.counts + prior_strength * prior_mean) / (self.absorbed + prior_strength))

    def to_json(self) -> list[Any]:
        """A JSON-able form that restores every float exactly (JSON numbers are Python float reprs)."""
        return [
            self.counts.tolist(),
            self.absorbed,
            self.cusum.tolist(),
            self.started.tolist(),
            self.pending_day.tolist(),
            self.pending_weight.tolist(),
            self.pending_likelihoods.T.tolist(),
            self.last_day,
        ]

    @classmethod
    def from_json(cls, document: list[Any], n_personas: int) -> DetectorState:
        """Inverse of ``to_json``; raises ValueError when the shapes do not fit ``n_personas``."""
        counts, absorbed, cusum, started, days, weights, columns, last_day = document
        if any(len(column) != n_personas for column in columns):
            raise ValueError(f"detector state does not fit {n_personas} personas")
        state = cls(
            counts=np.asarray(counts, dtype=np.float64),
            absorbed=float(absorbed),
            cusum=np.asarray(cusum, dtype=np.float64),
            started=np.asarray(started, dtype=np.int64),
            pending_day=np.asarray(days, dtype=np.int64),
            pending_weight=np.asarray(weights, dtype=np.float64),
            pending_likelihoods=np.asarray(columns, dtype=np.float64).reshape(-1, n_personas).T.copy(),
            last_day=int(last_day),
        )
        sizes = {state.counts.size, state.cusum.size, state.started.size}
        if (
            sizes != {n_personas}
            or not state.pending_day.size == state.pending_weight.size == (state.pending_likelihoods.shape[1])
        ):
            raise ValueError(f"detector state does not fit {n_personas} personas")
        return state


def advance_day(
    state: DetectorState,
    likelihoods: NDArray[np.float64],
    weight: NDArray[np.float64],
    day: int,
    prior_mean: NDArray[np.float64],
    config: ChangeDetectorConfig,
) -> DayCheck:
    """Fold one day's events (personas x events likelihoods, scaled per event to a maximum of 1) into
    ``state`` and test at the end of it: the same step ``check_changes`` takes for every customer-day."""
    if day <= state.last_day:
        raise ValueError(f"day {day} is not after the state's last day {state.last_day}")
    n_pending = state.pending_day.size
    columns = np.ascontiguousarray(np.hstack([state.pending_likelihoods, likelihoods]), dtype=np.float64)
    weights = np.concatenate([state.pending_weight, np.asarray(weight, dtype=np.float64)])
    days = np.concatenate([state.pending_day, np.full(weight.size, day, dtype=np.int64)])
    absorbed = np.array([state.absorbed])
    old_end, tested, statistic, towards, since, top = _advance(
        state.counts,
        absorbed,
        state.cusum,
        state.started,
        columns,
        weights,
        days,
        0,
        n_pending,
        days.size,
        np.ascontiguousarray(prior_mean, dtype=np.float64),
        *_settings(config),
    )
    state.absorbed = float(absorbed[0])
    state.pending_day = days[old_end:].copy()
    state.pending_weight = weights[old_end:].copy()
    state.pending_likelihoods = columns[:, old_end:].copy()
    state.last_day = day
    return DayCheck(bool(tested), float(statistic), int(towards), int(since), int(top))


def _settings(config: ChangeDetectorConfig) -> tuple[float, float, float, float, float, int, int]:
    return (
        config.prior_strength,
        config.shift,
        config.keep_baseline,
        config.baseline_lag_days,
        config.min_baseline_evidence,
        int(config.min_run_days),
        MAX_PENDING,
    )


@numba.njit(cache=True, nogil=True)
def _absorb(
    counts: NDArray[np.float64],
    likelihoods: NDArray[np.float64],
    weight: NDArray[np.float64],
    e: int,
    prior_mean: NDArray[np.float64],
    prior_strength: float,
) -> None:  # pragma: no cover - compiled; tested through ``check_changes`` and ``advance_day``
    """Add event e's persona posterior under the current baseline, times its weight, to ``counts``."""
    k = counts.size
    expected = 0.0
    for q in range(k):
        expected += (counts[q] + prior_strength * prior_mean[q]) * likelihoods[q, e]
    if expected <= 0.0:
        return
    share = weight[e] / expected
    for q in range(k):
        counts[q] += share * (counts[q] + prior_strength * prior_mean[q]) * likelihoods[q, e]


@numba.njit(cache=True, nogil=True)
def _advance(
    counts: NDArray[np.float64],
    absorbed: NDArray[np.float64],
    cusum: NDArray[np.float64],
    started: NDArray[np.int64],
    likelihoods: NDArray[np.float64],
    weight: NDArray[np.float64],
    day: NDArray[np.int64],
    old_end: int,
    lo: int,
    hi: int,
    prior_mean: NDArray[np.float64],
    prior_strength: float,
    shift: float,
    keep_baseline: float,
    lag_days: float,
    min_evidence: float,
    min_run_days: int,
    max_pending: int,
) -> tuple[int, bool, float, int, int, int]:  # pragma: no cover - compiled; tested through its callers
    """One day: events ``lo:hi`` (all of ``day[lo]``) after the pending events ``old_end:lo``.

    Absorbs the pending events older than the lag, runs the CUSUMs over the day's events when the
    baseline is known, absorbs the oldest pending events beyond ``max_pending``, and tests. Returns
    the new ``old_end`` and the check (tested, statistic, towards, since day, baseline top).
    """
    k = counts.size
    today = day[lo]
    while old_end < lo and day[old_end] < today - lag_days:
        _absorb(counts, likelihoods, weight, old_end, prior_mean, prior_strength)
        absorbed[0] += weight[old_end]
        old_end += 1
    scale = 1.0 / (absorbed[0] + prior_strength)
    baseline = np.empty(k)
    for q in range(k):
        baseline[q] = (counts[q] + prior_strength * prior_mean[q]) * scale
    tested = absorbed[0] >= min_evidence
    if tested:
        for e in range(lo, hi):
            expected, typical = 0.0, 0.0
            for q in range(k):
                expected += baseline[q] * likelihoods[q, e]
                typical += prior_mean[q] * likelihoods[q, e]
            # The alternative's rest (1 - shift), over the baseline's expectation: keep_baseline of the
            # baseline itself, the other part the population's mean mix.
            rest = (1.0 - shift) * (keep_baseline + (1.0 - keep_baseline) * typical / expected)
            for p in range(k):
                step = weight[e] * np.log(rest + shift * likelihoods[p, e] / expected)
                if cusum[p] <= 0.0 and step > 0.0:
                    started[p] = day[e]
                cusum[p] = max(0.0, cusum[p] + step)
    while hi - old_end > max_pending:
        _absorb(counts, likelihoods, weight, old_end, prior_mean, prior_strength)
        absorbed[0] += weight[old_end]
        old_end += 1
    best, statistic = -1, 0.0
    for p in range(k):
        spans = today - started[p] + 1 >= min_run_days
        if baseline[p] < _DOMINANT_SHARE and cusum[p] > statistic and spans:
            best, statistic = p, cusum[p]
    top = 0
    for p in range(1, k):
        if baseline[p] > baseline[top]:
            top = p
    towards = best if best >= 0 else top
    since = started[best] if best >= 0 else -1
    return old_end, tested, statistic, towards, since, top


@numba.njit(cache=True, nogil=True)
def _checks(
    likelihoods: NDArray[np.float64],
    weight: NDArray[np.float64],
    day: NDArray[np.int64],
    indptr: NDArray[np.int64],
    prior_mean: NDArray[np.float64],
    prior_strength: float,
    shift: float,
    keep_baseline: float,
    lag_days: float,
    min_evidence: float,
    min_run_days: int,
    max_pending: int,
) -> tuple[
    NDArray[np.int64],
    NDArray[np.int64],
    NDArray[np.float64],
    NDArray[np.int64],
    NDArray[np.int64],
    NDArray[np.int64],
]:  # pragma: no cover - compiled; tested through ``check_changes``
    k = likelihoods.shape[0]
    n_checks = day.size  # an upper bound: at most one check per event
    out_customer = np.empty(n_checks, np.int64)
    out_day = np.empty(n_checks, np.int64)
    out_statistic = np.empty(n_checks)
    out_towards = np.empty(n_checks, np.int64)
    out_since = np.empty(n_checks, np.int64)
    out_top = np.empty(n_checks, np.int64)
    counts = np.zeros(k)
    absorbed = np.zeros(1)
    cusum = np.zeros(k)
    started = np.zeros(k, np.int64)
    written = 0
    for c in range(indptr.size - 1):
        lo, hi = indptr[c], indptr[c + 1]
        counts[:] = 0.0
        absorbed[0] = 0.0
        cusum[:] = 0.0
        started[:] = -1
        old_end = lo
        start = lo
        while start < hi:
            stop = start + 1
            while stop < hi and day[stop] == day[start]:
                stop += 1
            old_end, tested, statistic, towards, since, top = _advance(
                counts,
                absorbed,
                cusum,
                started,
                likelihoods,
                weight,
                day,
                old_end,
                start,
                stop,
                prior_mean,
                prior_strength,
                shift,
                keep_baseline,
                lag_days,
                min_evidence,
                min_run_days,
                max_pending,
            )
            if tested:
                out_customer[written] = c
                out_day[written] = day[start]
                out_statistic[written] = statistic
                out_towards[written] = towards
                out_since[written] = since
                out_top[written] = top
                written += 1
            start = stop
    return (
        out_customer[:written],
        out_day[:written],
        out_statistic[:written],
        out_towards[:written],
        out_since[:written],
        out_top[:written],
    )
