"""How well a persona catalog fits a shop: three figures to compare catalogs on the same events.

- ``dominated_share``: the share of customers with events whose mix gives one persona at least
  ``threshold`` (half by default). A catalog that fits the shop describes most customers as mostly
  one of its personas; one that does not spreads them thinly over personas that each explain a bit.
- ``held_out_log_likelihood``: the mean log-likelihood of later events under the mixes and persona
  behaviour fitted on earlier ones, ``log sum_k theta_ck P(event | k)`` per event. The persona model
  scores an item choice as the population's item distribution tilted per persona, so the figure is
  defined up to the log-popularity of the chosen item: the same for every catalog fitted on the same
  events, so differences between catalogs are exact, while the level itself means nothing.

- ``held_out_ndcg_at_10``: how well the personas predict what each customer picks next. Every
  customer's later items (those not among their earlier ones) are ranked by the persona popularity of
  their earlier mix (``engine.models.persona_attribution``, at the persona popularity model's
  defaults, fitted on the earlier events); the figure is the mean NDCG@10 over customers with such
  items. It is the question cold start and backfill put to a catalog (a customer known by their mix
  alone), on a scale where more personas are not better by construction: each is estimated from
  fewer customers.

All three are computed with the fitted model and the earlier events alone (no refit), so comparing a
given and a proposed catalog costs two persona fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from engine.data.id_map import IdMap
from engine.data.interactions import relevant_matrix
from engine.evaluation.ranking_metrics import ranking_metrics
from engine.models.persona_attribution import ATTRIBUTION_ITERATIONS, persona_item_distributions
from engine.models.persona_prior import PRIOR_STRENGTH
from engine.personas.event_encoding import build_event_features
from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.inference.model import PersonaInferenceModel
from engine.ranking.top_k import top_k

DOMINANCE_THRESHOLD = 0.5
RANKING_DEPTH = 10
# Customers ranked at a time: a chunk's (customers x items) scores stay tens of MB on a large catalogue.
_CUSTOMERS_PER_CHUNK = 2_048


@dataclass(frozen=True)
class CatalogFit:
    personas: int
    dominated_share: float
    held_out_log_likelihood: float  # mean per held-out event (see the module docstring)
    held_out_events: int
    held_out_ndcg_at_10: float
    held_out_customers: int  # customers with later items not among their earlier ones

    def to_dict(self) -> dict[str, float | int]:
        return {
            "personas": self.personas,
            "dominated_share": self.dominated_share,
            "held_out_log_likelihood": self.held_out_log_likelihood,
            "held_out_events": self.held_out_events,
            "held_out_ndcg_at_10": self.held_out_ndcg_at_10,
            "held_out_customers": self.held_out_customers,
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


def held_out_ranking(
    mixes: InferredMixes,
    earlier_events: pl.DataFrame,
    held_out_events: pl.DataFrame,
    items: pl.DataFrame,
    k: int = RANKING_DEPTH,
) -> tuple[float, int]:
    """Mean NDCG@k of the persona popularity ranking on each customer's new later items, and how many
    customers had some (see the module docstring); ``mixes`` fitted on ``earlier_events``."""
    item_ids = IdMap(items["item_id"].cast(pl.Utf8).to_list(), kind="item")
    customers = mixes.customer_ids
    seen = relevant_matrix(earlier_events, customers, item_ids).astype(np.float64)
    relevant = relevant_matrix(held_out_events, customers, item_ids, exclude=seen)
    scored = np.flatnonzero(np.diff(relevant.indptr) > 0)
    if scored.size == 0:
        return float("nan"), 0
    popularity = persona_item_distributions(seen, mixes.overall, PRIOR_STRENGTH, ATTRIBUTION_ITERATIONS)
    gains: list[np.ndarray] = []
    for start in range(0, scored.size, _CUSTOMERS_PER_CHUNK):
        rows = scored[start : start + _CUSTOMERS_PER_CHUNK]
        recommended, _ = top_k(mixes.overall[rows] @ popularity, k, exclude=seen[rows])
        gains.append(ranking_metrics(recommended, relevant[rows]).ndcg)
    return float(np.concatenate(gains).mean()), int(scored.size)


def catalog_fit(
    model: PersonaInferenceModel,
    mixes: InferredMixes,
    earlier_events: pl.DataFrame,
    held_out_events: pl.DataFrame,
    items: pl.DataFrame,
    threshold: float = DOMINANCE_THRESHOLD,
) -> CatalogFit:
    """The three figures for one catalog, fitted (``model``, ``mixes``) on ``earlier_events``."""
    likelihood, n = held_out_log_likelihood(model, mixes, held_out_events, items)
    ndcg, ranked = held_out_ranking(mixes, earlier_events, held_out_events, items)
    return CatalogFit(len(mixes.persona_ids), dominated_share(mixes, threshold), likelihood, n, ndcg, ranked)
