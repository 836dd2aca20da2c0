"""Steering: how strongly a persona mix given in a request overrides a known customer's history.

A request may give a customer a mix ("show Ana what a luxury shopper would see"). The factor models
already put that mix in place of the customer's own persona (``UserBatch.base_mix``); the customer's
own vector (their history) still weighs in their list. The steering setting s in [0, 1] hands that
share of the customer's representation over to the requested mix: 0 is the trade of personas alone
(the behaviour before the setting existed), 1 ranks a known customer as the requested mix alone ranks
(a stranger with that mix), minus what they have seen.

The share a row gets is ``s * d``, where d is the total-variation distance between the requested mix
and the customer's own mix in the request's context (the mix they would have been scored with had the
request given none): a request that restates the customer's own mix changes nothing,
so their own list keeps its quality, and a pure persona far from their mix gets almost all of s.
Steering applies only to mixes given in the request; context and live-session mixes are the
customer's own and are scored as before.

The default (``DEFAULT_STEERING``) comes from the steering table of ``persona-engine train`` /
``evaluate`` on the synthetic demo shop (``training.steering_evaluation``; README "Steering a known
customer's list"): requesting a pure persona for known customers whose leading persona is another,
ALS's top 10 held 72% of that persona's categories and tags at 0, 84% at 0.25, 87% at 0.5 and 84% at
1 (their own lists: 40%); BPR and LightFM held 99-100% at every setting. 0.25 takes most of ALS's
move; larger settings cost more of the customer's own taste (NDCG of the steered lists on their
held-out events 0.095 at 0, 0.066 at 0.25, 0.050 at 0.5, 0.042 at 1) for at most three points more.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

DEFAULT_STEERING = 0.25


def check_steering(value: float, where: str = "steering") -> float:
    """``value`` as a float in [0, 1], or a ValueError naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where} must be a number between 0 and 1, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{where} must be between 0 and 1, got {value}")
    return float(value)


def artifact_steering(manifest: Mapping[str, Any]) -> float:
    """The steering an artifact was trained with (``[personas] steering``), or the default."""
    personas = manifest.get("config", {}).get("personas", {})
    return (
        float(personas.get("steering", DEFAULT_STEERING))
        if isinstance(personas, Mapping)
        else DEFAULT_STEERING
    )


def steering_shares(
    mix: NDArray[np.float64],
    own_mix: NDArray[np.float64],
    requested: NDArray[np.bool_],
    steering: float | NDArray[np.float64],
) -> NDArray[np.float64] | None:
    """Per row, the share of the customer's representation the scored mix takes over.

    ``requested`` marks rows whose mix the request gave; other rows get 0. ``steering`` is the setting,
    one for all rows or one per row (a request's own). None when no row steers (the models then skip
    the work entirely, and lists are exactly those of a batch without steering).
    """
    settings = np.broadcast_to(np.asarray(steering, dtype=np.float64), requested.shape)
    steers = requested & (settings > 0)
    if not steers.any():
        return None
    distance = 0.5 * np.abs(np.asarray(mix) - np.asarray(own_mix)).sum(axis=1)
    shares = np.where(steers, settings * np.clip(distance, 0.0, 1.0), 0.0)
    return shares if (shares > 0).any() else None
