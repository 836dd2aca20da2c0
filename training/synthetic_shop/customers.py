"""The customers table: demographics that follow each customer's dominant persona, and signup dates.

Demographics are drawn from the dominant persona's bands (blurred, see DEMOGRAPHIC_FIDELITY) so that
cold-start customers, known only by their profile, still carry a signal about their mix.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from training.synthetic_shop.planted_personas import AGE_BANDS, INCOME_BANDS, REGIONS
from training.synthetic_shop.sampling import IntArray, draw_from_rows
from training.synthetic_shop.sessions import Interactions
from training.synthetic_shop.shop_model import ShopModel
from training.synthetic_shop.table_files import arrow_schema


def simulate_customers(
    model: ShopModel,
    rng: np.random.Generator,
    profile_persona: IntArray,
    interactions: Interactions,
    customer_ids: pa.Array,
) -> tuple[pa.Table, IntArray]:
    """The chunk's customers rows and each customer's income band (the offer logging policy uses it).

    Signup precedes the customer's first event.
    """
    config, personas = model.config, model.personas
    customer, day = interactions.customer, interactions.day
    n = len(profile_persona)
    first_day = np.full(n, config.days, dtype=np.int64)
    np.minimum.at(first_day, customer, day)
    signup_lag = 1 + np.floor(rng.exponential(300.0, n)).astype(np.int64)
    epoch_start = (config.start - dt.date(1970, 1, 1)).days
    income = draw_from_rows(personas.income_cdf[profile_persona], rng.random(n))
    customers = pa.table(
        {
            "customer_id": customer_ids,
            "age_band": pa.array(AGE_BANDS).take(
                pa.array(draw_from_rows(personas.age_cdf[profile_persona], rng.random(n)))
            ),
            "region": pa.array(REGIONS).take(
                pa.array(draw_from_rows(personas.region_cdf[profile_persona], rng.random(n)))
            ),
            "income_band": pa.array(INCOME_BANDS).take(pa.array(income)),
            "signup_date": pa.array((epoch_start + first_day - signup_lag).astype(np.int32), pa.date32()),
            # Not simulated: the planted personas do not depend on them (MovieLens has them).
            "gender": pa.nulls(n, pa.string()),
            "occupation": pa.nulls(n, pa.string()),
        },
        schema=arrow_schema("customers"),
    )
    return customers, income
