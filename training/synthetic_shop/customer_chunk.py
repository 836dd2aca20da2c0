"""One chunk of customers simulated end to end: mixes, favourites, sessions, events, customers, decisions.

Each chunk has its own random stream derived from (seed, 1, chunk index) and draws from it in a fixed
order (the order of the calls below), plus one for the shape of drift (seed, 2, chunk index), so a
config always produces byte-identical files and memory is bounded by the chunk size, not by the
number of events.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from training.synthetic_shop.customers import simulate_customers
from training.synthetic_shop.decisions import simulate_decisions
from training.synthetic_shop.events import simulate_events
from training.synthetic_shop.favourites import draw_favourites
from training.synthetic_shop.planted_mixes import draw_planted_mixes
from training.synthetic_shop.sessions import draw_interactions
from training.synthetic_shop.shop_model import ShopModel
from training.synthetic_shop.table_files import prefixed_ids
from training.synthetic_shop.truth import customer_mixes_table, event_personas_table


@dataclass(frozen=True)
class ChunkTables:
    """The rows one chunk adds to each per-customer output file."""

    customers: pa.Table
    events: pa.Table
    decisions: pa.Table
    truth: pa.Table
    event_personas: pa.Table  # the persona behind each of the chunk's event rows (truth/)


def simulate_chunk(
    model: ShopModel, chunk_index: int, first_customer: int, n: int, first_event: int, first_decision: int
) -> ChunkTables:
    """Customers ``first_customer + 1 .. first_customer + n``; ids of events/decisions continue the counts."""
    config = model.config
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1, chunk_index]))
    drift_rng = np.random.default_rng(np.random.SeedSequence([config.seed, 2, chunk_index]))
    planted = draw_planted_mixes(model, rng, n, drift_rng)
    favourites = draw_favourites(model, rng, planted.weekday_pre_drift)
    interactions = draw_interactions(model, rng, planted, drift_rng)
    customer_numbers = np.arange(first_customer + 1, first_customer + n + 1)
    customer_ids = prefixed_ids("c", customer_numbers, len(str(config.customers)))
    events = simulate_events(model, rng, planted.mixes, favourites, interactions, customer_ids, first_event)
    customers, income = simulate_customers(model, rng, planted.profile_persona, interactions, customer_ids)
    decisions = simulate_decisions(
        model, rng, customer_ids, interactions, planted.mixes, income, first_decision
    )
    truth = customer_mixes_table(model, planted, events, customer_ids)
    return ChunkTables(
        customers=customers,
        events=events.table,
        decisions=decisions,
        truth=truth,
        event_personas=event_personas_table(model, events),
    )
