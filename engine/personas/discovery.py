"""Discovery of customer segments the catalog's personas do not explain.

A persona catalog is written by people and is never complete: a shop may have gift shoppers, resellers
or students that no persona describes. Their events still get a mix, but a poor one: the mix-weighted
persona behaviour predicts feature shares their events do not show. Discovery scores that misfit per
customer (customers with too few events are not scored: their shares are mostly noise), keeps the ones who
are misfits relative to everyone else, clusters what their events show beyond the personas (observed
minus predicted feature shares), and reports the clusters that are big and coherent enough to be a
segment worth a new persona: their size, the traits that set them apart, and example customers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.cluster.vq import kmeans2

from engine.personas.inference.errors import PersonaInferenceError
from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.inference.model import PersonaInferenceModel
from engine.personas.traits import EventFeatureSpace, customer_traits, describe_feature, describe_trait

_ASPECT_CAP = 3.0  # an aspect adds at most this many standard deviations (squared) to a misfit
_MIN_SPREAD = 0.01  # floor on a residual's spread, so a value nobody shows cannot blow up a score


@dataclass(frozen=True)
class DiscoveryConfig:
    """Thresholds of discovery.

    min_events:        customers with fewer events are not scored (their misfit is mostly noise).
    outlier_threshold: a customer is poorly explained when their misfit exceeds the population's
                       median by this many robust standard deviations (1.4826 x MAD).
    clusters:          k of the k-means run on the poorly explained customers; clusters that fail
                       the tests below are dropped, so k only needs to exceed the segments expected.
    min_segment_size / min_segment_share: a segment needs at least this many customers and this
                       share of the scored customers.
    min_effect / min_aspects: a segment must show, on average, feature values at least ``min_effect``
                       more often than the personas predict (0.2 = twenty points of share) in at
                       least ``min_aspects`` independent aspects: the item chosen (category, price
                       level, tags together), discount, brand repeat, channel, device. A new kind of
                       shopper differs in several ways at once (gift shoppers: toys, social, tablet);
                       a cluster that differs in one aspect only is usually a narrow taste.
    """

    min_events: int = 8
    outlier_threshold: float = 1.5
    clusters: int = 6
    min_segment_size: int = 20
    min_segment_share: float = 0.005
    min_effect: float = 0.2
    min_aspects: int = 2
    top_traits: int = 6
    top_features: int = 6
    examples: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "min_events": self.min_events >= 1,
            "outlier_threshold": self.outlier_threshold > 0,
            "clusters": self.clusters >= 1,
            "min_aspects": self.min_aspects >= 1,
            "min_segment_size": self.min_segment_size >= 1,
            "min_segment_share": 0 <= self.min_segment_share < 1,
            "min_effect": self.min_effect >= 0,
            "top_traits": self.top_traits >= 1,
            "top_features": self.top_features >= 1,
            "examples": self.examples >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"DiscoveryConfig.{name} is out of range: {getattr(self, name)!r}")


@dataclass(frozen=True)
class TraitDifference:
    """A trait where a segment differs from the population; z is in population standard deviations."""

    trait: str
    description: str
    segment_mean: float
    population_mean: float
    z_score: float


@dataclass(frozen=True)
class UnexplainedFeature:
    """A feature value a segment's events show more (or less) often than their persona mixes predict."""

    feature: str
    description: str
    observed_share: float
    expected_share: float

    @property
    def excess(self) -> float:
        return self.observed_share - self.expected_share


@dataclass(frozen=True)
class DiscoveredSegment:
    segment_id: int
    size: int
    share: float  # of the scored customers
    mean_misfit: float
    unexplained_features: tuple[UnexplainedFeature, ...]
    distinguishing_traits: tuple[TraitDifference, ...]
    example_customer_ids: tuple[str, ...]  # the most poorly explained members
    customer_ids: tuple[str, ...]  # every member, most poorly explained first


@dataclass(frozen=True)
class DiscoveryResult:
    segments: tuple[DiscoveredSegment, ...]
    n_scored: int  # customers with enough events to be scored
    n_poorly_explained: int
    misfit_threshold: float
    misfit: NDArray[np.float64]  # per customer of the mixes (NaN when not scored)


@dataclass(frozen=True)
class _Fit:
    """Per customer: misfit score, observed and predicted feature shares, standardised residuals."""

    misfit: NDArray[np.float64]
    observed: NDArray[np.float64]
    expected: NDArray[np.float64]
    standardised: NDArray[np.float64]
    scored: NDArray[np.bool_]


def feature_aspects(space: EventFeatureSpace) -> NDArray[np.int64]:
    """Per column, its aspect: -1 for every item-level column (category, price level and tags describe
    one choice, the item), otherwise its event-level group (discount, brand repeat, channel, device)."""
    return np.where(space.item_columns, -1, space.column_group).astype(np.int64)


def misfit_scores(model: PersonaInferenceModel, mixes: InferredMixes, min_events: int = 1) -> _Fit:
    """How badly each customer's mix-weighted persona behaviour predicts their feature shares.

    Residual = observed share - share predicted by the mix, per feature value, divided by that
    residual's spread over all scored customers (no persona model is exact; the spread says how
    far off it normally is on each value). Each aspect (the item chosen, discount, brand repeat,
    channel, device) contributes its largest squared standardised residual, capped at 3 standard
    deviations: a kind of shopper the catalog misses is off in several aspects at once (toys, from
    social, on tablets), while a customer with one narrow taste is far off in one aspect only and
    must not outrank them.
    """
    features = mixes.evidence
    if features is None or features.space != model.space:
        raise PersonaInferenceError("discovery needs mixes carrying their event evidence from this model")
    space = features.space
    indptr = features.customer_indptr
    weighted_indicator = sp.csr_matrix(
        (features.weight, np.arange(features.n_events), indptr),
        shape=(features.n_customers, features.n_events),
    )
    counts = np.asarray((weighted_indicator @ features.matrix).toarray())
    totals = features.group_counts(counts)
    totals[:, space.binary_columns] = np.asarray(weighted_indicator.sum(axis=1))
    observed = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    predicted = mixes.overall @ model.feature_probabilities.T  # customers x columns
    residual = np.where(totals > 0, observed - predicted, 0.0)
    scored = np.diff(indptr) >= min_events
    spread = residual[scored].std(axis=0) if scored.any() else np.ones(space.n_columns)
    standardised = residual / np.maximum(spread, _MIN_SPREAD)
    squares = np.minimum(standardised**2, _ASPECT_CAP**2)
    aspect = feature_aspects(space)
    worst = np.stack([squares[:, aspect == a].max(axis=1) for a in np.unique(aspect)], axis=1)
    misfit = np.where(scored, worst.sum(axis=1), np.nan)
    return _Fit(misfit, observed, predicted, standardised, scored)


def discover_segments(
    model: PersonaInferenceModel,
    mixes: InferredMixes,
    traits: pl.DataFrame | None = None,
    config: DiscoveryConfig | None = None,
) -> DiscoveryResult:
    """Segments of customers the fitted personas explain poorly, largest first; deterministic for a config.

    ``traits`` is ``customer_traits`` of the same customers (computed from the mixes' evidence when None).
    """
    config = config or DiscoveryConfig()
    fit = misfit_scores(model, mixes, config.min_events)
    features = mixes.evidence
    assert features is not None  # checked by misfit_scores
    scored = np.flatnonzero(fit.scored)
    empty = DiscoveryResult((), int(scored.size), 0, math.inf, fit.misfit)
    if scored.size == 0:
        return empty
    values = fit.misfit[scored]
    median = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - median)))
    threshold = median + config.outlier_threshold * max(spread, 1e-9)
    poor = scored[values > threshold]
    minimum_size = max(config.min_segment_size, math.ceil(config.min_segment_share * scored.size))
    result = DiscoveryResult((), int(scored.size), int(poor.size), threshold, fit.misfit)
    if poor.size < minimum_size:
        return result

    residuals = fit.observed[poor] - fit.expected[poor]
    labels = _cluster(fit.standardised[poor], config)
    if traits is None:
        traits = customer_traits(features)
    trait_columns = [c for c, dtype in traits.schema.items() if c != "customer_id" and dtype.is_numeric()]
    trait_values = traits.select(trait_columns).to_numpy().astype(np.float64)
    population = trait_values[scored]
    population_mean = np.nanmean(population, axis=0)
    population_std = np.nanstd(population, axis=0)
    names = features.space.column_names
    customer_ids = features.customer_ids.ids
    aspect = feature_aspects(features.space)

    segments: list[DiscoveredSegment] = []
    for label in np.unique(labels):
        members = poor[labels == label]
        if members.size < minimum_size:
            continue
        mean_residual = residuals[labels == label].mean(axis=0)
        if len(set(aspect[mean_residual >= config.min_effect].tolist())) < config.min_aspects:
            continue
        order = np.argsort(-np.abs(mean_residual), kind="stable")[: config.top_features]
        unexplained = tuple(
            UnexplainedFeature(
                feature=names[j],
                description=describe_feature(names[j]),
                observed_share=float(fit.observed[members, j].mean()),
                expected_share=float(fit.expected[members, j].mean()),
            )
            for j in order
        )
        segment_mean = np.nanmean(trait_values[members], axis=0)
        z = np.divide(
            segment_mean - population_mean,
            population_std,
            out=np.zeros_like(segment_mean),
            where=population_std > 0,
        )
        z = np.nan_to_num(z)
        trait_order = np.argsort(-np.abs(z), kind="stable")[: config.top_traits]
        differences = tuple(
            TraitDifference(
                trait=trait_columns[t],
                description=describe_trait(trait_columns[t]),
                segment_mean=float(segment_mean[t]),
                population_mean=float(population_mean[t]),
                z_score=float(z[t]),
            )
            for t in trait_order
        )
        worst_first = members[np.argsort(-fit.misfit[members], kind="stable")]
        segments.append(
            DiscoveredSegment(
                segment_id=0,
                size=int(members.size),
                share=float(members.size / scored.size),
                mean_misfit=float(fit.misfit[members].mean()),
                unexplained_features=unexplained,
                distinguishing_traits=differences,
                example_customer_ids=tuple(str(c) for c in customer_ids[worst_first[: config.examples]]),
                customer_ids=tuple(str(c) for c in customer_ids[worst_first]),
            )
        )
    segments.sort(key=lambda s: (-s.size, s.example_customer_ids))
    numbered = tuple(dataclasses.replace(segment, segment_id=i) for i, segment in enumerate(segments))
    return DiscoveryResult(numbered, result.n_scored, result.n_poorly_explained, threshold, fit.misfit)


def _cluster(points: NDArray[np.float64], config: DiscoveryConfig) -> NDArray[np.int64]:
    """k-means labels (k-means++ start from a seeded generator, so the labelling is reproducible)."""
    k = min(config.clusters, points.shape[0])
    if k <= 1:
        return np.zeros(points.shape[0], dtype=np.int64)
    _, labels = kmeans2(points, k, minit="++", seed=np.random.default_rng(config.seed))
    return np.asarray(labels, dtype=np.int64)
