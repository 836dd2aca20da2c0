"""The label-told CUSUM that bounds drift detection: known answers, and its false-alarm rule."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.personas.detection_bound import detection_bound
from engine.personas.shopping_context import CONTEXTS

PERSONAS = ("saver", "spender")
START = dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC)  # a Monday outside the default holidays


def _truth(
    customers: list[str], before: np.ndarray, after: np.ndarray, drift_day: list[int | None]
) -> pl.DataFrame:
    """Mix truth with the same mix in both contexts; ``drift_day`` counts days from START."""
    columns: dict[str, object] = {
        "customer_id": customers,
        "drift_date": [None if d is None else (START + dt.timedelta(days=d)).date() for d in drift_day],
    }
    for prefix, mixes in (("", before), ("post_drift_", after)):
        for context in CONTEXTS:
            for k, persona in enumerate(PERSONAS):
                columns[f"{prefix}{context}__{persona}"] = mixes[:, k]
    return pl.DataFrame(columns, schema_overrides={"drift_date": pl.Date})


def _events(labels: dict[str, list[int]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One view a day per customer, made by the persona the list gives for that day."""
    rows = [
        (f"{customer}-{day}", customer, START + dt.timedelta(days=day), PERSONAS[persona])
        for customer, personas in labels.items()
        for day, persona in enumerate(personas)
    ]
    events = pl.DataFrame(
        {
            "event_id": [r[0] for r in rows],
            "customer_id": [r[1] for r in rows],
            "event_type": ["view"] * len(rows),
            "timestamp": [r[2] for r in rows],
        }
    )
    return events, pl.DataFrame({"event_id": [r[0] for r in rows], "persona_id": [r[3] for r in rows]})


def test_a_known_answer_threshold_false_alarms_and_delay() -> None:
    """Mixes 0.9/0.1 before and 0.1/0.9 after: each spender view adds log 9 nats, each saver view takes
    log 9 away. Non-drifter i makes i spender views in a row, so the 10% target (2 of 20 customers
    allowed) puts the threshold just above 17 log 9, and a drifter needs 18 spender days to be found."""
    unchanged = {f"u{i:02d}": [0] * 5 + [1] * i + [0] * 5 for i in range(20)}
    drifters = {f"d{i}": [0] * 10 + [1] * 40 for i in range(4)}
    customers = [*unchanged, *drifters]
    before = np.tile([0.9, 0.1], (len(customers), 1))
    after = np.tile([0.1, 0.9], (len(customers), 1))
    truth = _truth(customers, before, after, [None] * len(unchanged) + [10] * len(drifters))
    events, personas = _events({**unchanged, **drifters})
    bound = detection_bound(truth, events, personas, (0.1,))
    assert bound is not None
    point = bound.at(0.1)
    assert point.threshold == pytest.approx(17 * np.log(9), rel=1e-5)
    assert point.false_alarm_rate == pytest.approx(2 / 20)
    assert point.recall == 1.0 and point.precision == pytest.approx(4 / 6)
    assert point.median_delay_days == 17.0
    assert point.recall_within_early_days == 0.0  # 17 days > 14
    assert (
        bound.n_planted == 4
        and bound.n_unchanged == 20
        and bound.interactions == sum(len(v) for v in {**unchanged, **drifters}.values())
    )


def test_carts_and_purchases_add_no_evidence_and_a_shop_without_drift_has_no_bound() -> None:
    labels = {"u": [0, 0], "d": [0, 1, 1]}
    truth = _truth(["u", "d"], np.tile([0.9, 0.1], (2, 1)), np.tile([0.1, 0.9], (2, 1)), [None, 1])
    events, personas = _events(labels)
    carts = events.with_columns(pl.col("event_id") + "-cart", pl.lit("cart").alias("event_type"))
    more = pl.concat([personas, personas.with_columns(pl.col("event_id") + "-cart")])
    with_carts = detection_bound(truth, pl.concat([events, carts]), more, (0.5,))
    views_only = detection_bound(truth, events, personas, (0.5,))
    assert with_carts is not None and views_only is not None
    assert with_carts.points == views_only.points and with_carts.interactions == 5
    no_drift = truth.with_columns(pl.lit(None, pl.Date).alias("drift_date"))
    assert detection_bound(no_drift, events, personas) is None
    with pytest.raises(ValueError, match="lacks column"):
        detection_bound(truth.drop("post_drift_weekday__saver"), events, personas)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n_customers=st.integers(20, 80),
    target=st.sampled_from([0.02, 0.05, 0.1, 0.3]),
)
def test_the_threshold_never_flags_more_than_its_target_of_unchanged_customers(
    seed: int, n_customers: int, target: float
) -> None:
    """Random mixes, random drift days, labels drawn from the mix in force: whatever the data, the
    measured false-alarm rate stays at or under the target and every share is a share."""
    rng = np.random.default_rng(seed)
    customers = [f"c{i}" for i in range(n_customers)]
    before = rng.dirichlet(np.ones(len(PERSONAS)), n_customers)
    after = rng.dirichlet(np.ones(len(PERSONAS)), n_customers)
    drifts = [int(d) if rng.random() < 0.3 else None for d in rng.integers(5, 30, n_customers)]
    drifts[0] = 10  # at least one drifter
    labels = {}
    for i, customer in enumerate(customers):
        days = int(rng.integers(1, 40))
        labels[customer] = [
            int(rng.random() < (after if drifts[i] is not None and day >= drifts[i] else before)[i, 1])
            for day in range(days)
        ]
    events, personas = _events(labels)
    bound = detection_bound(_truth(customers, before, after, drifts), events, personas, (target,))
    assert bound is not None
    point = bound.at(target)
    assert point.false_alarm_rate <= target + 1e-12
    assert 0.0 <= point.precision <= 1.0 and 0.0 <= point.recall <= 1.0
    assert point.recall_within_early_days <= point.recall
