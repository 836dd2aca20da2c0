"""The change test: planted changes are found, stationary customers are not, and the calibrated
threshold flags about the share of unchanged customers it was asked to."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.personas.change_detection import (
    MAX_PENDING,
    ChangeDetectorConfig,
    DetectorState,
    advance_day,
    calibrate_threshold,
    check_changes,
    shuffled_largest,
    threshold_for,
    time_shuffled,
)

K = 4


def _events(
    rng: np.random.Generator, mixes: list[tuple[np.ndarray, int]], start_day: int = 19_000
) -> tuple[np.ndarray, np.ndarray]:
    """(personas x events) likelihoods and days: each (mix, days) block draws one event a day from
    ``mix``; an event of persona z is 6 times likelier under z than under the others."""
    columns, days = [], []
    day = start_day
    for mix, n_days in mixes:
        for _ in range(n_days):
            z = rng.choice(K, p=mix)
            likelihood = rng.uniform(0.5, 1.0, K)
            likelihood[z] *= 6.0
            columns.append(likelihood / likelihood.max())
            days.append(day)
            day += 1
    return np.array(columns).T, np.array(days, dtype=np.int64)


def _run(likelihoods: np.ndarray, days: np.ndarray, threshold: float) -> tuple[int, int]:
    """(first alarm day or -1, persona it points to) for one customer."""
    indptr = np.array([0, days.size], dtype=np.int64)
    checks = check_changes(
        likelihoods, np.ones(days.size), days, indptr, np.full(K, 1.0 / K), ChangeDetectorConfig()
    )
    first = checks.first_alarms(threshold, 1)[0]
    return (-1, -1) if first < 0 else (int(checks.day[first]), int(checks.towards[first]))


MIXES = st.integers(0, K - 1).flatmap(
    lambda home: st.tuples(st.just(home), st.integers(0, K - 1).filter(lambda new: new != home))
)


@settings(max_examples=25, deadline=None)
@given(personas=MIXES, seed=st.integers(0, 2**32 - 1))
def test_a_planted_change_is_found_towards_the_new_persona(personas: tuple[int, int], seed: int) -> None:
    home, new = personas
    rng = np.random.default_rng(seed)
    before = np.full(K, 0.1 / (K - 1))
    before[home] = 0.9
    after = np.full(K, 0.1 / (K - 1))
    after[new] = 0.9
    likelihoods, days = _events(rng, [(before, 60), (after, 40)])
    alarm, towards = _run(likelihoods, days, threshold=14.0)
    change = int(days[60])
    assert change <= alarm <= change + 30
    assert towards == new


@settings(max_examples=25, deadline=None)
@given(mix=st.lists(st.floats(0.05, 1.0), min_size=K, max_size=K), seed=st.integers(0, 2**32 - 1))
def test_stationary_customers_are_rarely_flagged(mix: list[float], seed: int) -> None:
    """A CUSUM is a random walk with a downward drift when nothing changes. At 14 nats about 0.1% of
    100-event customers cross it, at most 2% for the worst of 40 random mixes (measured; at 10 nats
    1.5% and up to 6%: the one-pass baseline is noisier early on than a full fold-in, which the
    calibrated threshold absorbs). 3 of 20 would be a broken test. A planted change of the test above
    crosses 14 nats within 15 days (median; 21 at the 99th percentile of 300 seeds)."""
    rng = np.random.default_rng(seed)
    weights = np.asarray(mix) / sum(mix)
    flagged = 0
    for _ in range(20):
        likelihoods, days = _events(rng, [(weights, 100)])
        flagged += _run(likelihoods, days, threshold=14.0)[0] >= 0
    assert flagged <= 2


def test_the_calibrated_threshold_flags_about_the_asked_share_of_unchanged_customers() -> None:
    rng = np.random.default_rng(7)
    blocks, day_blocks, lengths = [], [], []
    for _ in range(400):
        mix = rng.dirichlet(np.ones(K))
        likelihoods, days = _events(rng, [(mix, int(rng.integers(20, 80)))])
        blocks.append(likelihoods)
        day_blocks.append(days)
        lengths.append(days.size)
    likelihoods, days = np.hstack(blocks), np.concatenate(day_blocks)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    config = ChangeDetectorConfig(false_alarm_rate=0.1)
    prior = np.full(K, 1.0 / K)
    threshold = calibrate_threshold(likelihoods, np.ones(days.size), days, indptr, prior, config, rng)
    checks = check_changes(likelihoods, np.ones(days.size), days, indptr, prior, config)
    flagged = float((checks.first_alarms(threshold, 400) >= 0).mean())
    assert 0.04 <= flagged <= 0.18


def test_shuffling_keeps_each_customer_on_their_own_positions() -> None:
    indptr = np.array([0, 3, 3, 7], dtype=np.int64)
    order = time_shuffled(indptr, np.random.default_rng(1))
    assert sorted(order[:3]) == [0, 1, 2] and sorted(order[3:]) == [3, 4, 5, 6]


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="shift must be in"):
        ChangeDetectorConfig(shift=1.5)
    with pytest.raises(ValueError, match="keep_baseline must be in"):
        ChangeDetectorConfig(keep_baseline=1.5)
    with pytest.raises(ValueError, match="min_run_days must be a whole number >= 1"):
        ChangeDetectorConfig(min_run_days=0)


def test_one_day_of_evidence_is_not_a_trend_until_a_later_day_keeps_it() -> None:
    """A burst of telling events on one day (a browsing session) builds the CUSUM but cannot flag the
    customer with min_run_days 2; a later day with events that do not undo it does, and a later day
    back to the customer's old shopping dismisses it (walkthrough: four views in one session flagged a
    known customer live, and they were served from that session's mix)."""
    prior = np.array([0.4, 0.3, 0.2, 0.1])
    burst = np.tile(np.array([0.05, 0.05, 1.0, 0.05])[:, None], 4)  # four events of persona 2
    usual = np.array([1.0, 0.1, 0.1, 0.1])[:, None]  # one of persona 0, the baseline's main one

    def after(next_day: np.ndarray | None, min_run_days: int) -> tuple[float, float]:
        config = ChangeDetectorConfig(min_run_days=min_run_days)
        state = DetectorState.empty(K)
        state.counts, state.absorbed = np.array([16.0, 2.0, 1.0, 1.0]), 20.0
        first = advance_day(state, burst, np.ones(4), 19_000, prior, config).statistic
        if next_day is None:
            return first, float("nan")
        second = advance_day(state, next_day, np.ones(next_day.shape[1]), 19_001, prior, config)
        return first, second.statistic

    one_day, _ = after(None, 1)
    assert one_day > 3.0  # strong evidence on its own
    assert after(None, 2)[0] == 0.0
    kept_by = np.array([0.3, 0.3, 0.5, 0.3])[:, None]  # a mildly telling event the next day
    assert after(kept_by, 2)[1] > one_day
    assert after(usual, 2)[1] < one_day - 0.5  # the old main persona again: evidence against


@pytest.mark.parametrize("keep_baseline", [0.0, 0.4, 1.0])
def test_each_event_adds_the_log_ratio_of_the_new_mix_led_by_p_to_the_baseline(keep_baseline: float) -> None:
    """One event against a known baseline: persona p's CUSUM gains
    log(sum_q a_q L_q / sum_q b_q L_q) with a = shift e_p + (1 - shift) (kb b + (1 - kb) m), m the
    population's mean mix; the statistic is the largest over the personas under half of the baseline."""
    prior = np.array([0.4, 0.3, 0.2, 0.1])
    config = ChangeDetectorConfig(keep_baseline=keep_baseline, shift=0.6, prior_strength=2.0, min_run_days=1)
    state = DetectorState.empty(K)
    state.counts, state.absorbed = np.array([7.0, 1.0, 0.5, 0.5]), 9.0
    likelihood = np.array([0.05, 0.3, 1.0, 0.6])
    check = advance_day(state, likelihood[:, None], np.ones(1), 19_000, prior, config)
    baseline = (state.counts + 2.0 * prior) / 11.0
    rest = keep_baseline * baseline + (1.0 - keep_baseline) * prior
    steps = np.log((0.4 * rest + 0.6 * np.eye(K)) @ likelihood / (baseline @ likelihood))
    assert state.cusum == pytest.approx(np.maximum(steps, 0.0), rel=1e-12)
    steps[0] = -np.inf  # persona 0 holds over half of the baseline: more of it is no drift
    assert check.tested and check.towards == int(np.argmax(steps)) == 2
    assert check.statistic == pytest.approx(steps.max(), rel=1e-12)


def test_the_old_main_persona_falling_silent_is_more_evidence_against_a_new_mix() -> None:
    """Events of the personas the baseline holds little of, none of its dominant one: a customer who
    left their main interest. Against the new mix led by p each adds 1.19 nats; against "the old mix
    moved half-way towards p", which keeps half of the dominant share and so still expects its events,
    0.86."""
    prior = np.full(K, 1.0 / K)
    statistics = {}
    for keep_baseline in (0.0, 1.0):
        config = ChangeDetectorConfig(keep_baseline=keep_baseline)
        state = DetectorState.empty(K)
        state.counts, state.absorbed = np.array([17.0, 1.0, 1.0, 1.0]), 20.0
        # each event is ambiguous among personas 1-3 and unlike persona 0
        likelihood = np.array([0.05, 1.0, 1.0, 1.0])
        for day in range(19_000, 19_005):
            check = advance_day(state, likelihood[:, None], np.ones(1), day, prior, config)
        statistics[keep_baseline] = check.statistic
    assert statistics[0.0] == pytest.approx(5 * 1.194, abs=0.01)
    assert statistics[1.0] == pytest.approx(5 * 0.864, abs=0.01)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), per_day=st.integers(1, 4))
def test_day_by_day_state_gives_the_batch_checks_exactly(seed: int, per_day: int) -> None:
    """The live path carries a DetectorState from day to day (through its JSON form); it must test
    exactly as the offline batch does on the same events."""
    rng = np.random.default_rng(seed)
    home, new = rng.choice(K, 2, replace=False)
    before, after = np.full(K, 0.05), np.full(K, 0.05)
    before[home] = 0.85
    after[new] = 0.85
    likelihoods, days = _events(rng, [(before, 50), (after, 30)])
    days = 19_000 + (days - 19_000) // per_day * 2  # several events a day, gaps between days
    weight = rng.choice([1.0, 0.5, 1 / 3], days.size)
    prior = np.full(K, 1.0 / K)
    config = ChangeDetectorConfig(baseline_lag_days=14.0)
    batch = check_changes(likelihoods, weight, days, np.array([0, days.size]), prior, config)
    state = DetectorState.empty(K)
    live = []
    for day in np.unique(days):
        on_day = days == day
        check = advance_day(state, likelihoods[:, on_day], weight[on_day], int(day), prior, config)
        state = DetectorState.from_json(json.loads(json.dumps(state.to_json())), K)
        if check.tested:
            live.append((int(day), check.statistic, check.towards, check.since_day, check.baseline_top))
    assert state.pending_day.size <= MAX_PENDING
    expected = list(
        zip(
            batch.day.tolist(),
            batch.statistic.tolist(),
            batch.towards.tolist(),
            batch.since_day.tolist(),
            batch.baseline_top.tolist(),
            strict=True,
        )
    )
    assert live == expected


def test_a_day_cannot_be_advanced_twice_and_a_state_of_other_personas_is_refused() -> None:
    state = DetectorState.empty(K)
    config = ChangeDetectorConfig()
    advance_day(state, np.ones((K, 1)), np.ones(1), 19_000, np.full(K, 1.0 / K), config)
    with pytest.raises(ValueError, match="not after"):
        advance_day(state, np.ones((K, 1)), np.ones(1), 19_000, np.full(K, 1.0 / K), config)
    with pytest.raises(ValueError, match="does not fit 5 personas"):
        DetectorState.from_json(state.to_json(), K + 1)


def test_the_null_leaves_out_customers_whose_baseline_never_allows_a_test() -> None:
    rng = np.random.default_rng(3)
    mix = np.full(K, 1.0 / K)
    long_a, days_a = _events(rng, [(mix, 60)])  # tested from day 31 (a baseline of 28+ day old events)
    short, days_short = _events(rng, [(mix, 10)])  # ten days: nothing is ever old enough to be a baseline
    long_b, days_b = _events(rng, [(mix, 60)])
    likelihoods = np.hstack([long_a, short, long_b])
    days = np.concatenate([days_a, days_short, days_b])
    indptr = np.array([0, 60, 70, 130], dtype=np.int64)
    config = ChangeDetectorConfig()
    null = shuffled_largest(likelihoods, np.ones(130), days, indptr, np.full(K, 1.0 / K), config, rng)
    assert null.shape == (2,)  # the short history is not a customer the threshold could have flagged
    tested = check_changes(likelihoods, np.ones(130), days, indptr, np.full(K, 1.0 / K), config)
    assert set(np.unique(tested.customer).tolist()) == {0, 2}
    with pytest.raises(ValueError, match="no customer has a baseline"):
        threshold_for(null[:0], 0.05)
