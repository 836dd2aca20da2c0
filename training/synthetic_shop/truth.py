"""The planted ground truth written beside the tables in ``truth/``, and how to read its mix columns.

Real shops never say which persona drove a click; these files do, so evaluation can score what the
engine learned (mixes, drift, hidden segments, offer/layout effects) against what was planted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from engine.personas.shopping_context import CONTEXTS, DEFAULT_HOLIDAYS, WEEKDAY, WEEKEND_HOLIDAY
from training.synthetic_shop.events import ChunkEvents
from training.synthetic_shop.offers_and_layouts import LAYOUT_SPECS, OFFER_SPECS
from training.synthetic_shop.planted_mixes import PlantedMixes
from training.synthetic_shop.planted_personas import HIDDEN_PERSONA_ID
from training.synthetic_shop.shop_model import ShopModel

TRUTH_DIR = "truth"
# truth/event_personas.parquet: the persona that generated each event row (one row per row of events,
# in the same order). It is what a perfect persona inference would recover, and what the drift job's
# detection bound (engine/personas/detection_bound.py) is computed from.
EVENT_PERSONAS_FILE = "event_personas.parquet"
# Column blocks of truth/customer_mixes.parquet: one float column ``<block>__<persona_id>`` per persona.
# The four mix blocks are the planted mixes per (drift phase, context); without drift the post_drift_
# blocks equal the pre-drift ones. ``realized`` is the share of the customer's event rows each persona
# actually generated.
TRUTH_MIX_PREFIXES: tuple[str, ...] = (
    "weekday",
    "weekend_holiday",
    "post_drift_weekday",
    "post_drift_weekend_holiday",
    "realized",
)


def mix_columns(prefix: str, persona_ids: Sequence[str]) -> list[str]:
    """Column names of one mix block in truth/customer_mixes.parquet (e.g. ``weekday__bargain_hunter``)."""
    if prefix not in TRUTH_MIX_PREFIXES:
        raise KeyError(f"unknown truth mix block {prefix!r}; known: {', '.join(TRUTH_MIX_PREFIXES)}")
    return [f"{prefix}__{p}" for p in persona_ids]


def truth_schema(persona_ids: Sequence[str]) -> pa.Schema:
    """Schema of truth/customer_mixes.parquet: the customer, its segment and drift date, the mix blocks."""
    fields = [
        pa.field("customer_id", pa.string(), nullable=False),
        pa.field("hidden_segment", pa.bool_(), nullable=False),
        pa.field("drift_date", pa.date32(), nullable=True),
        # How the drift was planted (null without drift): the share of the way the mix moved, and the
        # days the move took from drift_date on (0: abrupt). See planted_mixes.
        pa.field("drift_strength", pa.float64(), nullable=True),
        pa.field("drift_ramp_days", pa.int32(), nullable=True),
    ]
    for prefix in TRUTH_MIX_PREFIXES:
        fields += [pa.field(f"{prefix}__{p}", pa.float64(), nullable=False) for p in persona_ids]
    return pa.schema(fields)


def event_personas_schema() -> pa.Schema:
    """Schema of truth/event_personas.parquet: an event id and the persona (catalog id) behind it."""
    return pa.schema(
        [
            pa.field("event_id", pa.string(), nullable=False),
            pa.field("persona_id", pa.string(), nullable=False),
        ]
    )


def event_personas_table(model: ShopModel, events: ChunkEvents) -> pa.Table:
    """One chunk's rows of truth/event_personas.parquet, aligned with its rows of the events table."""
    personas = pa.array(model.personas.ids, pa.string()).take(pa.array(events.row_persona))
    return pa.table(
        {"event_id": events.table.column("event_id"), "persona_id": personas}, schema=event_personas_schema()
    )


def customer_mixes_table(
    model: ShopModel, planted: PlantedMixes, events: ChunkEvents, customer_ids: pa.Array
) -> pa.Table:
    """One chunk's rows of truth/customer_mixes.parquet: planted mixes and the realised persona shares.

    The post_drift_ blocks are the mixes the drift ends in (after any ramp).
    """
    personas = model.personas
    hidden, drifted, drift_day, mixes = planted.hidden, planted.drifted, planted.drift_day, planted.mixes
    row_customer = events.row_customer
    n, n_personas = len(hidden), len(personas.ids)
    epoch_start = (model.config.start - dt.date(1970, 1, 1)).days
    weekend_c = CONTEXTS.index(WEEKEND_HOLIDAY)
    weekday_c = CONTEXTS.index(WEEKDAY)
    realized_counts = np.bincount(row_customer * n_personas + events.row_persona, minlength=n * n_personas)
    realized = realized_counts.reshape(n, n_personas) / np.bincount(row_customer, minlength=n)[:, None]
    truth_columns: dict[str, Any] = {
        "customer_id": customer_ids,
        "hidden_segment": pa.array(hidden, pa.bool_()),
        "drift_date": pa.array(
            np.where(drifted, epoch_start + drift_day, 0).astype(np.int32), pa.date32(), mask=~drifted
        ),
        "drift_strength": pa.array(planted.drift_strength, pa.float64(), mask=~drifted),
        "drift_ramp_days": pa.array(planted.drift_ramp_days.astype(np.int32), pa.int32(), mask=~drifted),
    }
    blocks = (
        mixes[:, 0, weekday_c],
        mixes[:, 0, weekend_c],
        mixes[:, 1, weekday_c],
        mixes[:, 1, weekend_c],
        realized,
    )
    for prefix, block in zip(TRUTH_MIX_PREFIXES, blocks, strict=True):
        for k, persona_id in enumerate(personas.ids):
            truth_columns[f"{prefix}__{persona_id}"] = pa.array(block[:, k], pa.float64())
    return pa.table(truth_columns, schema=truth_schema(personas.ids))


def response_rates_json(model: ShopModel) -> dict[str, dict[str, dict[str, float]]]:
    """truth/response_rates.json: each persona's planted response rate to every offer and layout."""
    ids = model.personas.ids
    return {
        "offer": {
            p: {s.offer_id: round(float(model.offer_rates[k, j]), 6) for j, s in enumerate(OFFER_SPECS)}
            for k, p in enumerate(ids)
        },
        "layout": {
            p: {s.variant_id: round(float(model.layout_rates[k, j]), 6) for j, s in enumerate(LAYOUT_SPECS)}
            for k, p in enumerate(ids)
        },
    }


def generator_json(model: ShopModel) -> dict[str, Any]:
    """truth/generator.json: the config and the persona, context and column vocabulary of the truth."""
    personas = model.personas
    return {
        "config": model.config.as_json(),
        "persona_ids": list(personas.ids),
        "catalog_persona_ids": list(personas.ids[:-1]),
        "hidden_persona_ids": [HIDDEN_PERSONA_ID],
        "contexts": list(CONTEXTS),
        "holidays": [list(h) for h in DEFAULT_HOLIDAYS],
        "weekend_gain": {p: float(g) for p, g in zip(personas.ids, personas.weekend_gain, strict=True)},
        "truth_mix_columns": {
            prefix: [f"{prefix}__{p}" for p in personas.ids] for prefix in TRUTH_MIX_PREFIXES
        },
    }
