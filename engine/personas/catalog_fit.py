"""How well a persona catalog fits a shop: two figures to compare catalogs on the same events.

- ``dominated_share``: the share of customers with events whose mix gives one persona at least
  ``threshold`` (half by default). A catalog that fits the shop describes most customers as mostly
  one of its personas; one that does not spreads them thinly over personas that each explain a bit.
- ``held_out_log_likelihood``: the mean log-likelihood of later events under the mixes and persona
  behaviour fitted on earlier ones, ``log sum_k theta_ck P(event | k)`` per event. The persona model
  scores an item choice as the population's item distribution tilted per persona, so the figure is
  defined up to the log-popularity of the chosen item: the same for every catalog fitted on the same
  events, so differences between catalogs are exact, while the level itself means nothing.

Both are computed with the fitted model alone (no refit), so comparing a given and a proposed
catalog costs two persona fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from engine.personas.event_encoding import build_event_features
from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.inference.model import PersonaInferenceModel

DOMINANCE_THRESHOLD = 0.5


@dataclass(frozen=True)
class CatalogFit:
    personas: int
    dominated_share: float
    held_out_log_likelihood: float  # mean per held-out event (see the module docstring)
    held_out_events: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "personas": self.personas,
            "dominated_share": self.dominated_share,
            "held_out_log_likelihood": self.held_out_log_likelihood,
            "held_out_events": self.held_out_events,
        }


def dominated_share(mixes: InferredMixes, threshold: float = DOMINANCE_THRESHOLD) -> float:
    """Share of customers with events whose largest persona weight is at least ``threshold``."""
    with_events = mixes.n_events > 0
    if not with_events.any():
        return float("nan")
    return float((mixes.overall[with_events].max(axis=1) >= threshold).mean())


def held_out_log_likelihood(
    model: PersonaInferenceModel, mixes: InferredMixes, events: pl.DataFrame, items: pl.DataFrame
) -> tuple[float, int]:
    """Mean per-event log-likelihood of ``events`` (of customers in ``mixes``) and how many were scored.

    Each event is scored under its customer's overall mix from ``mixes``; events of customers the
    mixes do not know are left out (their mix would be the prior, not what the catalog learned).
    """
    known = set(mixes.customer_ids.ids.tolist())
    scored = events.filter(pl.col("customer_id").is_in(list(known)))
    if scored.height == 0:
        return float("nan"), 0
    features = build_event_features(
        scored,
        items,
        customer_ids=mixes.customer_ids,
        space=model.space,
        holidays=model.config.holidays,
    )
    per_persona = model.event_log_likelihoods(features)  # (events, personas)
    theta = mixes.overall[features.customer_index]
    top = per_persona.max(axis=1)
    mixed = top + np.log(np.maximum((theta * np.exp(per_persona - top[:, None])).sum(axis=1), 1e-300))
    return float(mixed.mean()), int(features.n_events)


def catalog_fit(
    model: PersonaInferenceModel,
    mixes: InferredMixes,
    held_out_events: pl.DataFrame,
    items: pl.DataFrame,
    threshold: float = DOMINANCE_THRESHOLD,
) -> CatalogFit:
    """Both figures for one fitted catalog (``mixes`` fitted on the events before ``held_out_events``)."""
    likelihood, n = held_out_log_likelihood(model, mixes, held_out_events, items)
    return CatalogFit(len(mixes.persona_ids), dominated_share(mixes, threshold), likelihood, n)
