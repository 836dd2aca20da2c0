"""The decisions log: offers and layouts shown by the logging policy, with propensities and outcomes.

Each decision is made a few seconds before one of the customer's views and answered according to the
planted per-persona response rates, so off-policy evaluation on this log has a known true answer
(truth/response_rates.json).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.personas.shopping_context import CONTEXTS
from training.synthetic_shop.offers_and_layouts import LAYOUT_SPECS, OFFER_SPECS
from training.synthetic_shop.sampling import FloatArray, IntArray, draw_from_rows
from training.synthetic_shop.sessions import Interactions
from training.synthetic_shop.shop_model import ShopModel
from training.synthetic_shop.table_files import arrow_schema

DECISIONS_PER_TYPE = 2  # offer and layout decisions per customer, on average


def simulate_decisions(
    model: ShopModel,
    rng: np.random.Generator,
    customer_ids: pa.Array,
    interactions: Interactions,
    mixes: FloatArray,
    income: IntArray,
    first_decision: int,
) -> pa.Table:
    """Logged offer/layout decisions, each made a few seconds before one of the customer's views.

    Outcomes are Bernoulli with rate sum_k mix_k * rho[k, arm], the mix being the one in force at the
    decision's context and drift phase, so per-persona response rates are identifiable from the log.
    """
    n_interactions, view_seconds = interactions.per_customer, interactions.view_seconds
    day, context, phase = interactions.day, interactions.context, interactions.phase
    n = len(n_interactions)
    interaction_offset = np.concatenate([[0], np.cumsum(n_interactions)[:-1]])
    per_type = [1 + rng.binomial(2 * (DECISIONS_PER_TYPE - 1), 0.5, n) for _ in range(2)]
    decision_type = np.concatenate(
        [np.zeros(int(per_type[0].sum())), np.ones(int(per_type[1].sum()))]
    ).astype(np.int64)
    decision_customer = np.concatenate(
        [np.repeat(np.arange(n), per_type[0]), np.repeat(np.arange(n), per_type[1])]
    )
    d = len(decision_customer)
    anchor = interaction_offset[decision_customer] + (
        rng.random(d) * n_interactions[decision_customer]
    ).astype(np.int64)
    anchor_day_start = model.calendar.day_start_seconds[day[anchor]]
    seconds = np.maximum(view_seconds[anchor] - rng.integers(1, 31, d), anchor_day_start)
    decision_context = context[anchor]
    mix = mixes[decision_customer, phase[anchor], decision_context]

    arm = np.empty(d, dtype=np.int64)
    propensity = np.empty(d)
    rate = np.empty(d)
    is_offer = decision_type == 0
    offer_rows = np.flatnonzero(is_offer)
    probabilities = model.offer_propensity[
        decision_context[offer_rows], income[decision_customer[offer_rows]]
    ]
    arm[offer_rows] = draw_from_rows(np.cumsum(probabilities, axis=1), rng.random(len(offer_rows)))
    propensity[offer_rows] = probabilities[np.arange(len(offer_rows)), arm[offer_rows]]
    rate[offer_rows] = (mix[offer_rows] * model.offer_rates[:, arm[offer_rows]].T).sum(axis=1)
    layout_rows = np.flatnonzero(~is_offer)
    probabilities = model.layout_propensity[decision_context[layout_rows]]
    arm[layout_rows] = draw_from_rows(np.cumsum(probabilities, axis=1), rng.random(len(layout_rows)))
    propensity[layout_rows] = probabilities[np.arange(len(layout_rows)), arm[layout_rows]]
    rate[layout_rows] = (mix[layout_rows] * model.layout_rates[:, arm[layout_rows]].T).sum(axis=1)
    outcome = (rng.random(d) < rate).astype(np.float64)

    order = np.lexsort((decision_type, seconds, decision_customer))
    offer_ids = np.array([s.offer_id for s in OFFER_SPECS], dtype=object)
    variant_ids = np.array([s.variant_id for s in LAYOUT_SPECS], dtype=object)
    arm_ids = np.where(
        is_offer,
        offer_ids[np.minimum(arm, len(offer_ids) - 1)],
        variant_ids[np.minimum(arm, len(variant_ids) - 1)],
    )
    return pa.table(
        {
            "decision_id": pc.binary_join_element_wise(
                "d", pc.cast(pa.array(np.arange(first_decision + 1, first_decision + d + 1)), pa.string()), ""
            ),
            "customer_id": customer_ids.take(pa.array(decision_customer[order])),
            "timestamp": pa.array(seconds[order] * 1_000_000, pa.timestamp("us", tz="UTC")),
            "context": pa.array(CONTEXTS).take(pa.array(decision_context[order])),
            "decision_type": pa.array(["offer", "layout"]).take(pa.array(decision_type[order])),
            "arm_id": pa.array(arm_ids[order], pa.string()),
            "propensity": pa.array(propensity[order], pa.float64()),
            "outcome": pa.array(outcome[order], pa.float64()),
        },
        schema=arrow_schema("decisions"),
    )
