"""Detector scoring on a hand-built trace: hits, early and late alarms, delays, groups and the curve."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from engine.data.id_map import IdMap
from engine.personas.change_detection import ChangeChecks
from engine.personas.drift import ChangeTrace
from engine.personas.drift_accuracy import PlantedDrift, score_detection

D = 20_000  # a day number; planted drift of c0, c1 and c2 starts here


def _trace() -> ChangeTrace:
    """Four customers, each with one check a day on days D-2 .. D+29 and one event a day.

    c0 (planted, strength .9): statistic jumps to 10 on D+3; c1 (planted, .3): to 6 on D+20;
    c2 (planted, .9): alarms at 10 on D-1, before its drift; c3 (unplanted): 6 on D+5.
    """
    days = np.arange(D - 2, D + 30)
    jumps = {0: (D + 3, 10.0), 1: (D + 20, 6.0), 2: (D - 1, 10.0), 3: (D + 5, 6.0)}
    customer, day, statistic = [], [], []
    for c, (when, height) in jumps.items():
        customer += [c] * days.size
        day += days.tolist()
        statistic += np.where(days >= when, height, 1.0).tolist()
    n = len(day)
    checks = ChangeChecks(
        np.array(customer),
        np.array(day),
        np.array(statistic),
        np.zeros(n, np.int64),
        np.full(n, D, np.int64),
        np.zeros(n, np.int64),
    )
    return ChangeTrace(
        IdMap(["c0", "c1", "c2", "c3"], kind="customer"),
        ("a", "b"),
        np.ones((2, n)),
        np.ones(n),
        np.array(day),
        np.arange(0, n + 1, days.size, dtype=np.int64),
        np.array([0.5, 0.5]),
        checks,
    )


def _planted() -> PlantedDrift:
    start = dt.date(1970, 1, 1) + dt.timedelta(days=D)
    truth = pl.DataFrame(
        {
            "customer_id": ["c0", "c1", "c2", "c3"],
            "drift_date": [start, start, start, None],
            "drift_strength": [0.9, 0.3, 0.9, None],
            "drift_ramp_days": [0, 10, 0, None],
        }
    )
    return PlantedDrift.from_truth(truth, IdMap(["c0", "c1", "c2", "c3"], kind="customer"))


def test_hits_false_alarms_delays_and_groups() -> None:
    accuracy = score_detection(_trace(), _planted(), 5.0)
    assert (accuracy.n_planted, accuracy.n_unchanged, accuracy.n_flagged, accuracy.true_positives) == (
        3,
        1,
        4,
        2,
    )
    assert accuracy.precision == 0.5 and accuracy.recall == 2 / 3 and accuracy.false_alarm_rate == 1.0
    assert accuracy.delay_days["p50"] == 11.5  # delays 3 and 20 days
    assert accuracy.delay_events["p50"] == 12.5  # 4 and 21 events, the planted day's included
    by_strength = {row.group: (row.drifters, row.found) for row in accuracy.recall_by_strength}
    assert by_strength == {"0.25-0.50": (1, 1), "0.75-1.00": (2, 1)}
    assert {row.group: row.drifters for row in accuracy.recall_by_ramp} == {"0": 2, "8-14": 1}
    assert [(row.group, row.drifters) for row in accuracy.recall_by_events_after] == [("21+", 3)]
    assert accuracy.share_without_events_early == 0.0


def test_the_curve_counts_only_alarms_within_each_budget() -> None:
    accuracy = score_detection(_trace(), _planted(), 5.0, {5.0: 0.05, 8.0: None})
    loose, strict = accuracy.curve
    assert (loose.threshold, loose.target_false_alarm, strict.threshold) == (5.0, 0.05, 8.0)
    assert loose.recall_within[7] == 1 / 3 and loose.recall_within[21] == 2 / 3
    assert loose.precision_within[7] == 1 / 4
    assert (strict.n_flagged, strict.recall, strict.false_alarm_rate) == (2, 1 / 3, 0.0)
