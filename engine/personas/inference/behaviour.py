"""The fitted persona behaviour: everything inference needs to score events and fold in mixes.

One value rather than a dozen attributes on the model, so that the EM fit returns it whole, the
model files save and load it whole, and a model is fitted exactly when it has one.

Per persona k it holds, for every event-level column j (discount, brand repeat, channel, device),
log P(value | k), and for every item-level column (category, price level, tag) a tilt w_kj: persona
k picks item i with probability q(i) exp(w_k . f(i)) / Z_k, where q is the population's item
distribution (see ``item_choice``). Either way the log-likelihood of every event under every persona
is one sparse product: ``features @ parameters + offsets``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from engine.personas.inference.mix_prior import MixPrior
from engine.personas.traits import EventFeatureSpace


@dataclass(frozen=True)
class PersonaBehaviour:
    """What the data says each persona does, over the feature space the model was fitted on.

    parameters:         (columns, personas) log-probabilities (event-level columns), tilts (item-level).
    offsets:            (personas,) minus the log normaliser of each persona's item choice.
    probabilities:      (columns, personas) share of each persona's events with each feature value.
    seed_probabilities: (columns, personas) the same shares for the catalog seed the fit started from.
    marginals:          (columns,) share of all events with each value (over events where it is known).
    population_mix:     (personas,) the mix of a customer nothing is known about (the mix prior's mean).
    """

    persona_ids: tuple[str, ...]
    persona_names: tuple[str, ...]
    space: EventFeatureSpace
    parameters: NDArray[np.float64]
    offsets: NDArray[np.float64]
    probabilities: NDArray[np.float64]
    seed_probabilities: NDArray[np.float64]
    marginals: NDArray[np.float64]
    population_mix: NDArray[np.float64]
    mix_prior: MixPrior
