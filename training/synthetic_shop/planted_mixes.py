"""Each customer's planted persona mix: a dominant persona, context shifts, drift and the hidden segment.

This is the ground truth persona inference is scored against: the weekday mix of a customer, the
weekend/holiday mix derived from it by each persona's weekend gain, and for drifting customers a
second (post-drift) mix from a recorded day on: the old mix moved ``strength`` of the way towards a mix
led by a new dominant persona, abruptly or over ``ramp_days`` days (config ``drift_strength`` and
``drift_ramp_days``; the defaults plant the complete, abrupt drift). Hidden-segment customers are driven
mostly by a persona that no catalog knows, so segment discovery has something to find.

The drift's strength and ramp come from their own random stream (``drift_rng``), so shops generated
before these knobs existed keep every byte when the knobs keep their defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.personas.shopping_context import CONTEXTS, WEEKDAY, WEEKEND_HOLIDAY
from training.synthetic_shop.sampling import BoolArray, FloatArray, IntArray, draw_from_rows
from training.synthetic_shop.shop_model import ShopModel

DOMINANT_WEIGHT_RANGE = (0.55, 0.85)  # weight of a customer's dominant persona in its weekday mix
MINOR_DIRICHLET_ALPHA = 0.5  # how the remaining weight spreads over the other personas
HIDDEN_WEIGHT_RANGE = (0.6, 0.8)  # weight of the hidden persona in a hidden-segment customer's mix
DRIFT_WINDOW = (0.4, 0.8)  # drift dates fall in this part of the time range


@dataclass(frozen=True)
class PlantedMixes:
    """The planted mixes of one chunk of customers, row i being the chunk's i-th customer."""

    hidden: BoolArray  # driven by the hidden (catalog-less) persona
    drifted: BoolArray  # the mix changes at drift_day
    weekday_pre_drift: FloatArray  # (customer, persona): the customer's basic mix
    mixes: FloatArray  # (customer, drift phase, context, persona)
    drift_day: IntArray  # day index of the drift; config.days (never reached) without drift
    drift_strength: FloatArray  # share of the way the mix moves (0 without drift)
    drift_ramp_days: IntArray  # days the move takes (0: abrupt, and without drift)
    profile_persona: IntArray  # dominant persona of the basic mix: drives the customer's demographics


def draw_planted_mixes(
    model: ShopModel, rng: np.random.Generator, n: int, drift_rng: np.random.Generator
) -> PlantedMixes:
    """Catalog mix (dominant + Dirichlet rest), hidden segment, drift towards a new dominant persona."""
    config, personas = model.config, model.personas
    hidden = rng.random(n) < config.hidden_segment_share
    drift_probability = (
        config.drift_share / (1.0 - config.hidden_segment_share) if config.hidden_segment_share < 1 else 0.0
    )
    drifted = ~hidden & (rng.random(n) < drift_probability)
    pre_catalog, dominant = _draw_catalog_mix(rng, personas.dominant_shares, n, None)
    post_catalog, _ = _draw_catalog_mix(rng, personas.dominant_shares, n, dominant)
    hidden_weight = np.where(hidden, rng.uniform(*HIDDEN_WEIGHT_RANGE, n), 0.0)
    weekday_pre = np.column_stack([pre_catalog * (1.0 - hidden_weight)[:, None], hidden_weight])
    strength = np.where(drifted, drift_rng.uniform(*config.drift_strength, n), 0.0)
    low_ramp, high_ramp = config.drift_ramp_days
    ramp_days = np.where(drifted, drift_rng.integers(low_ramp, high_ramp + 1, n), 0).astype(np.int64)
    moved = (1.0 - strength)[:, None] * weekday_pre + strength[:, None] * np.column_stack(
        [post_catalog, np.zeros(n)]
    )
    weekday_post = np.where(drifted[:, None], moved, weekday_pre)
    mixes = np.empty((n, 2, len(CONTEXTS), len(personas.ids)))  # (customer, drift phase, context, persona)
    weekend_c = CONTEXTS.index(WEEKEND_HOLIDAY)
    weekday_c = CONTEXTS.index(WEEKDAY)
    for phase, weekday_mix in enumerate((weekday_pre, weekday_post)):
        mixes[:, phase, weekday_c] = weekday_mix
        mixes[:, phase, weekend_c] = _context_mix(weekday_mix, personas.weekend_gain)
    drift_day = np.where(
        drifted, np.floor(config.days * rng.uniform(*DRIFT_WINDOW, n)).astype(np.int64), config.days
    )
    return PlantedMixes(
        hidden=hidden,
        drifted=drifted,
        weekday_pre_drift=weekday_pre,
        mixes=mixes,
        drift_day=drift_day,
        drift_strength=strength,
        drift_ramp_days=ramp_days,
        profile_persona=np.argmax(weekday_pre, axis=1),
    )


def _draw_catalog_mix(
    rng: np.random.Generator, shares: FloatArray, n: int, exclude: IntArray | None
) -> tuple[FloatArray, IntArray]:
    """Mixes with a dominant persona (drawn by population share, never ``exclude``) and Dirichlet rest."""
    n_personas = len(shares)
    probabilities = np.broadcast_to(shares, (n, n_personas)).copy()
    if exclude is not None:
        probabilities[np.arange(n), exclude] = 0.0
        probabilities /= probabilities.sum(axis=1, keepdims=True)
    dominant = draw_from_rows(np.cumsum(probabilities, axis=1), rng.random(n))
    weight = rng.uniform(*DOMINANT_WEIGHT_RANGE, n)
    rest = rng.dirichlet(np.full(n_personas - 1, MINOR_DIRICHLET_ALPHA), size=n)
    columns = np.arange(n_personas)[None, :]
    rest_index = np.minimum(columns - (columns > dominant[:, None]), n_personas - 2)
    mix = np.where(
        columns == dominant[:, None],
        weight[:, None],
        (1.0 - weight)[:, None] * np.take_along_axis(rest, rest_index, 1),
    )
    return mix, dominant


def _context_mix(mix: FloatArray, gain: FloatArray) -> FloatArray:
    tilted = mix * gain[None, :]
    return tilted / tilted.sum(axis=1, keepdims=True)
