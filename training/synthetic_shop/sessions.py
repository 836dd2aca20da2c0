"""When customers shop: activity per customer, sessions, their days and times, and each view's moment.

Every interaction (one product view) gets a timestamp inside one session, and a session never crosses
midnight, so all events of a session share one shopping context and one drift phase: the mix in force
for an event is then well defined, which the planted truth relies on.

A drifting customer's sessions after the drift day come ``post_drift_activity`` times as often per day
as before (their number stays the same: the drift moves activity in time). During a gradual drift
(``ramp_days``) a session is post-drift with a probability rising linearly from the drift day on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.synthetic_shop.activity import (
    ACTIVITY_SIGMA,
    MAX_FOLLOW_UP_SECONDS,
    MIN_INTERACTIONS,
)
from training.synthetic_shop.planted_mixes import PlantedMixes
from training.synthetic_shop.sampling import IntArray
from training.synthetic_shop.shop_model import ShopModel

MEAN_SESSION_LENGTH = 3.0  # interactions per session, on average
HOURLY_SESSION_WEIGHTS = np.array(
    [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 3.5, 3.5, 4, 4.5, 4, 3.5, 3.5, 4, 4.5, 5, 6, 6.5, 6, 4, 2.5]
)


@dataclass(frozen=True)
class Interactions:
    """The interactions of one chunk of customers as parallel arrays, sorted by session."""

    per_customer: IntArray  # number of interactions of each customer of the chunk
    customer: IntArray  # customer (row in the chunk) of each interaction
    day: IntArray  # day index in the simulated period
    view_seconds: IntArray  # Unix seconds of the view
    context: IntArray  # index into CONTEXTS
    phase: IntArray  # 0 before the customer's drift day, 1 from it on

    def __len__(self) -> int:
        return len(self.customer)


def draw_interactions(
    model: ShopModel, rng: np.random.Generator, planted: PlantedMixes, drift_rng: np.random.Generator
) -> Interactions:
    """Activity, sessions and their days/times; hidden-segment customers shop around holidays."""
    config, calendar = model.config, model.calendar
    hidden, drift_day = planted.hidden, planted.drift_day
    n = len(hidden)
    activity = rng.lognormal(-(ACTIVITY_SIGMA**2) / 2, ACTIVITY_SIGMA, n)
    n_interactions = np.maximum(MIN_INTERACTIONS, np.rint(model.interaction_scale * activity)).astype(
        np.int64
    )
    n_sessions = 1 + rng.binomial(n_interactions - 1, 1.0 / MEAN_SESSION_LENGTH)
    session_offset = np.concatenate([[0], np.cumsum(n_sessions)])
    total_sessions = int(session_offset[-1])
    session_customer = np.repeat(np.arange(n), n_sessions)
    session_u = rng.random(total_sessions)
    if config.post_drift_activity != 1.0:
        session_u = _tilted_after_drift(
            session_u, calendar.session_cdf, drift_day[session_customer], config.post_drift_activity
        )
    session_day = np.where(
        hidden[session_customer],
        np.searchsorted(calendar.holiday_session_cdf, session_u, side="right"),
        np.searchsorted(calendar.session_cdf, session_u, side="right"),
    )
    session_day = np.minimum(session_day, config.days - 1).astype(np.int64)

    customer = np.repeat(np.arange(n), n_interactions)
    m = len(customer)
    session = session_offset[customer] + (rng.random(m) * n_sessions[customer]).astype(np.int64)
    order = np.argsort(session, kind="stable")
    customer, session = customer[order], session[order]
    gaps = 5.0 + rng.exponential(60.0, m)
    cumulative = np.cumsum(gaps)
    group_start = np.searchsorted(session, session, side="left")
    offset_in_session = np.rint(cumulative - cumulative[group_start]).astype(np.int64)
    span = np.zeros(total_sessions, dtype=np.int64)
    np.maximum.at(span, session, offset_in_session)
    hour_cdf = np.cumsum(HOURLY_SESSION_WEIGHTS) / HOURLY_SESSION_WEIGHTS.sum()
    hours = np.minimum(np.searchsorted(hour_cdf, rng.random(total_sessions), side="right"), 23)
    # Sessions start early enough that all their views, carts and purchases fall on the same day, so
    # every event of a session shares one context and drift phase.
    latest_start = np.maximum(0, 86_399 - span - MAX_FOLLOW_UP_SECONDS)
    session_start = np.minimum(hours * 3600 + rng.integers(0, 3600, total_sessions), latest_start)
    day = session_day[session]
    view_seconds = calendar.day_start_seconds[day] + session_start[session] + offset_in_session
    context = calendar.context[day]
    # Each session's share of the way into its customer's drift: 0 before the drift day, rising by
    # 1 / (ramp + 1) a day to 1 (so an abrupt drift, ramp 0, is complete on its first day).
    progress = (day - drift_day[customer] + 1) / (planted.drift_ramp_days[customer] + 1.0)
    session_draw = drift_rng.random(total_sessions)
    phase = (session_draw[session] < np.clip(progress, 0.0, 1.0)).astype(np.int64)
    return Interactions(
        per_customer=n_interactions,
        customer=customer,
        day=day,
        view_seconds=view_seconds,
        context=context,
        phase=phase,
    )


def _tilted_after_drift(u: np.ndarray, cdf: np.ndarray, drift_day: IntArray, rate: float) -> np.ndarray:
    """Uniform draws mapped so that inverting ``cdf`` weighs days from ``drift_day`` on by ``rate``.

    With ``before`` the mass of the days before the drift, the tilted mass before it is
    ``before / (before + rate * (1 - before))``; each side keeps its own shape. Customers without a
    drift in the period (``drift_day`` past its end) keep their draws.
    """
    before = np.where(drift_day > 0, cdf[np.clip(drift_day - 1, 0, cdf.size - 1)], 0.0)
    before = np.where(drift_day >= cdf.size, 1.0, before)
    tilted = before / (before + rate * (1.0 - before))
    early = u < tilted
    with np.errstate(divide="ignore", invalid="ignore"):
        mapped = np.where(
            early,
            u * before / np.where(tilted > 0, tilted, 1.0),
            before + (u - tilted) * (1.0 - before) / np.where(tilted < 1, 1.0 - tilted, 1.0),
        )
    return np.where(drift_day >= cdf.size, u, mapped)
