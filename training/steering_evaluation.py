"""Does a requested mix move a known customer's list? Steering share and NDCG per steering setting.

For warm customers (those the evaluation scores), each persona with category or tag signals is
requested as a pure mix, and the share of the top k that carries that persona's categories or tags
is compared with the same share in the customer's own list. Only pairs where the requested persona
is not the customer's leading one count: asking a luxury shopper for luxury shows little movement
whatever the setting. On the synthetic shop the catalog's category and tag signals are exactly the
planted ones (``tests/training/synthetic_shop/test_planted_personas.py`` asserts it), so the share
is measured against the planted truth; on other shops it measures agreement with the catalog.

Per setting it also reports NDCG@k on the held-out events of

- the steered lists (how much of the customer's own taste survives a request for another persona),
- the customer's own mix given in the request (steering scales with the distance between the given
  and the own mix, so this equals their own list: the setting costs their own list nothing).

Lists are built from the same ``UserBatch`` serving builds (``steering_shares`` with the mix marked
as requested), so the figures are those of served requests, minus filters and promotions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from engine.evaluation.ranking_metrics import ranking_metrics
from engine.models.base import Recommender, UserBatch
from engine.personas.catalog import PersonaCatalog
from engine.personas.steering import DEFAULT_STEERING, steering_shares
from training.evaluation import recommend_in_chunks
from training.prepared_data import EvaluationSegment, PreparedData, evaluation_segments

STEERING_SETTINGS: tuple[float, ...] = tuple(sorted({0.0, 0.25, 0.5, 1.0, DEFAULT_STEERING}))
STEERING_EVALUATION = "steering_evaluation"  # the manifest's key
MAX_CUSTOMERS = 1000  # customers sampled for the measure (seeded); enough for two-decimal shares


@dataclass(frozen=True)
class SteeringResult:
    """One model at one steering setting (see the module docstring for each figure)."""

    model: str
    steering: float
    customers: int
    pairs: int  # (customer, requested persona) pairs where the persona is not the customer's leading one
    steered_share: float  # of the top k matching the requested persona, in the steered lists
    own_share: float  # of the top k matching the same persona, in the customer's own list
    ndcg_own: float  # the customer's own list (steering never applies to it)
    ndcg_own_mix_requested: float  # the customer's own mix given in the request
    ndcg_steered: float  # the steered lists, on the customer's held-out events
    steered_share_by_persona: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "steering": self.steering,
            "customers": self.customers,
            "pairs": self.pairs,
            "steered_share": self.steered_share,
            "own_share": self.own_share,
            "ndcg_own": self.ndcg_own,
            "ndcg_own_mix_requested": self.ndcg_own_mix_requested,
            "ndcg_steered": self.ndcg_steered,
            "steered_share_by_persona": self.steered_share_by_persona,
        }


def persona_item_matches(catalog: PersonaCatalog, items: pl.DataFrame) -> NDArray[np.bool_]:
    """(personas, items): whether an item is in one of the persona's signalled categories or carries
    one of its signalled tags. A persona without such signals matches nothing (and is not measured)."""
    categories = items["category"].to_list()
    tags = items["tags"].to_list() if "tags" in items.columns else [[] for _ in categories]
    out = np.zeros((len(catalog), items.height), dtype=bool)
    for p, persona in enumerate(catalog.personas):
        wanted_categories, wanted_tags = set(persona.signals.categories), set(persona.signals.tags)
        out[p] = [
            category in wanted_categories or bool(wanted_tags.intersection(item_tags or ()))
            for category, item_tags in zip(categories, tags, strict=True)
        ]
    return out


def _sample(segment: EvaluationSegment, max_customers: int, seed: int) -> EvaluationSegment:
    n = len(segment.customer_ids)
    if n <= max_customers:
        return segment
    rows = np.sort(np.random.default_rng(seed).choice(n, size=max_customers, replace=False))
    return EvaluationSegment(
        name=segment.name,
        customer_ids=segment.customer_ids[rows],
        users=segment.users.rows(rows.astype(np.int64)),
        exclude=segment.exclude[rows],
        relevant=segment.relevant[rows],
    )


def _with_mix(segment: EvaluationSegment, mix: NDArray[np.float64], setting: float) -> EvaluationSegment:
    """The segment's customers with ``mix`` given in a request, steered by ``setting``."""
    users = segment.users
    own = users.mix
    requested = users.user_index >= 0
    batch = UserBatch(
        user_index=users.user_index,
        mix=mix,
        demographics=users.demographics,
        base_mix=own,
        steering=steering_shares(mix, own, requested, setting),
    )
    return EvaluationSegment(segment.name, segment.customer_ids, batch, segment.exclude, segment.relevant)


def _share(recommended: NDArray[np.int64], matches: NDArray[np.bool_], k: int) -> NDArray[np.float64]:
    """Per list, the share of its k slots holding a matching item (empty slots count as not matching)."""
    filled = recommended >= 0
    hit = np.where(filled, matches[np.where(filled, recommended, 0)], False)
    return np.asarray(hit.sum(axis=1) / k, dtype=np.float64)


def evaluate_steering(
    models: Mapping[str, Recommender],
    segment: EvaluationSegment,
    catalog: PersonaCatalog,
    items: pl.DataFrame,
    k: int,
    *,
    settings: Sequence[float] = STEERING_SETTINGS,
    max_customers: int = MAX_CUSTOMERS,
    seed: int = 0,
) -> list[SteeringResult]:
    """Steering share and NDCG of every model that knows customers, per setting (module docstring).

    ``segment`` is the evaluation's warm customers ("all"), with ``items`` in the models' item order.
    Models whose lists do not depend on who the customer is (popularity, persona popularity) have
    no history to override and are skipped.
    """
    matches = persona_item_matches(catalog, items)
    measured = np.flatnonzero(matches.any(axis=1))
    sample = _sample(segment, max_customers, seed)
    if len(sample.customer_ids) == 0 or measured.size == 0:
        return []
    known = sample.users.user_index >= 0
    leading = np.argmax(sample.users.mix, axis=1)
    results: list[SteeringResult] = []
    for name, model in models.items():
        own_lists = recommend_in_chunks(model, sample, k)
        stranger = EvaluationSegment(
            sample.name,
            sample.customer_ids,
            UserBatch(np.full(len(known), -1, dtype=np.int64), sample.users.mix, sample.users.demographics),
            sample.exclude,
            sample.relevant,
        )
        if np.array_equal(own_lists, recommend_in_chunks(model, stranger, k)):
            continue  # scores depend on the mix alone: nothing to steer
        ndcg_own = float(ranking_metrics(own_lists, sample.relevant).ndcg.mean())
        for setting in settings:
            repeated = recommend_in_chunks(model, _with_mix(sample, sample.users.mix, setting), k)
            steered_shares, own_shares, steered_ndcg, by_persona = [], [], [], {}
            for p in measured.tolist():
                pure = np.zeros_like(sample.users.mix)
                pure[:, p] = 1.0
                steered = recommend_in_chunks(model, _with_mix(sample, pure, setting), k)
                other = known & (leading != p)
                share = _share(steered, matches[p], k)[other]
                steered_shares.append(share)
                own_shares.append(_share(own_lists, matches[p], k)[other])
                steered_ndcg.append(ranking_metrics(steered[other], sample.relevant[other]).ndcg)
                if share.size:  # a persona leading every sampled customer has no one to steer towards it
                    by_persona[catalog.personas[p].id] = float(share.mean())
            pairs = int(sum(len(s) for s in steered_shares))
            if not pairs:
                continue  # nothing measured at this setting: no figure, rather than a NaN
            results.append(
                SteeringResult(
                    model=name,
                    steering=float(setting),
                    customers=len(sample.customer_ids),
                    pairs=pairs,
                    steered_share=float(np.concatenate(steered_shares).mean()) if pairs else float("nan"),
                    own_share=float(np.concatenate(own_shares).mean()) if pairs else float("nan"),
                    ndcg_own=ndcg_own,
                    ndcg_own_mix_requested=float(ranking_metrics(repeated, sample.relevant).ndcg.mean()),
                    ndcg_steered=float(np.concatenate(steered_ndcg).mean()) if pairs else float("nan"),
                    steered_share_by_persona=by_persona,
                )
            )
    return results


def steering_results(
    prepared: PreparedData,
    models: Mapping[str, Recommender],
    k: int,
    *,
    segments: Sequence[EvaluationSegment] | None = None,
) -> list[SteeringResult]:
    """``evaluate_steering`` on the evaluation's warm customers of a prepared split (none: no results);
    ``segments`` are ``evaluation_segments(prepared)`` when the caller has them already."""
    if segments is None:
        segments = evaluation_segments(prepared)
    warm = [s for s in segments if s.name == "all"]
    if not warm:
        return []
    return evaluate_steering(models, warm[0], prepared.catalog, prepared.item_frame, k)


def steering_table(results: list[SteeringResult], k: int) -> tuple[list[str], list[list[Any]]]:
    """One row per (model, setting): steering share against the own list's, and the NDCG figures."""
    columns = [
        "model",
        "steering",
        f"requested persona share of top {k}",
        "in own list",
        f"NDCG@{k} own list",
        "own mix requested",
        "steered lists",
    ]
    rows = [
        [
            r.model,
            r.steering,
            r.steered_share,
            r.own_share,
            r.ndcg_own,
            r.ndcg_own_mix_requested,
            r.ndcg_steered,
        ]
        for r in results
    ]
    return columns, rows
