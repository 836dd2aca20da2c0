"""Where each persona's behaviour starts, and what the fit keeps pulling it back towards: the catalog.

The catalog seeds each persona (population marginals, or no tilt, shifted towards its signals) and a
prior keeps pulling towards that seed, so "bargain_hunter" still means what the catalog says after the
data has reshaped it, and the mix columns keep the catalog's order.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from engine.personas.catalog import PersonaCatalog, PersonaSignals
from engine.personas.traits import (
    BRAND_REPEAT,
    BULK,
    CATEGORY,
    CHANNEL,
    DEVICE,
    DISCOUNTED,
    PRICE_LEVEL,
    TAG_PREFIX,
    YES,
    EventFeatures,
    EventFeatureSpace,
)


def population_marginals(features: EventFeatures) -> NDArray[np.float64]:
    """Weighted share of each feature value over events where its group is known (kept away from 0 and 1)."""
    space = features.space
    counts = np.asarray(features.matrix.T @ features.weight, dtype=np.float64).ravel() + 0.5
    totals = features.group_counts(counts[None, :])[0]
    totals[space.binary_columns] = float(features.weight.sum()) + 1.0
    return np.asarray(counts / totals, dtype=np.float64)


def catalog_seed(
    space: EventFeatureSpace,
    marginals: NDArray[np.float64],
    catalog: PersonaCatalog,
    tilt: float,
    damping: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64], dict[str, tuple[str, ...]]]:
    """Each persona's starting point: the average shopper, leaning its catalog's way.

    Returns event-level seed probabilities (population marginals with each signalled value's share
    multiplied by its factor, renormalised per group), item-level seed tilts (log of the factors),
    and per persona the signals whose values never occur in the data.
    """
    columns = len(marginals)
    factors = np.ones((columns, len(catalog)))
    unmatched: dict[str, tuple[str, ...]] = {}
    for k, persona in enumerate(catalog.personas):
        missing: list[str] = []
        for group_name, value, factor in _signal_tilts(persona.signals, tilt, damping):
            column = space.column(group_name, value)
            if column is None:
                missing.append(group_name if group_name.startswith(TAG_PREFIX) else f"{group_name}={value}")
            else:
                factors[column, k] *= factor
        if missing:
            unmatched[persona.id] = tuple(missing)
    tilted = marginals[:, None] * factors
    group_totals = np.asarray(space.group_sum_matrix @ tilted)[space.column_group]
    item_columns = space.item_columns[:, None]
    probabilities = np.where(item_columns, marginals[:, None], tilted / group_totals)
    return probabilities, np.where(item_columns, np.log(factors), 0.0), unmatched


def _signal_tilts(signals: PersonaSignals, tilt: float, damping: float) -> list[tuple[str, str, float]]:
    """(feature group, value, factor) for every signal of a persona."""
    tilts: list[tuple[str, str, float]] = []
    level_groups = {"discount_share": DISCOUNTED, "brand_concentration": BRAND_REPEAT, "bulk_share": BULK}
    for signal, group in level_groups.items():
        level = getattr(signals, signal)
        if level == "high":
            tilts.append((group, YES, tilt))
        elif level == "low":
            tilts.append((group, YES, damping))
    if signals.price_level is not None:
        tilts.append((PRICE_LEVEL, signals.price_level, tilt))
    tilts += [(f"{TAG_PREFIX}{tag}", YES, tilt) for tag in signals.tags]
    tilts += [(CATEGORY, category, tilt) for category in signals.categories]
    tilts += [(CHANNEL, channel, tilt) for channel in signals.channels]
    tilts += [(DEVICE, device, tilt) for device in signals.devices]
    return tilts
