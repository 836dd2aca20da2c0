"""The EM fit of persona behaviour: MAP estimates of what each persona does, variational Bayes for mixes.

Each event is explained by one persona drawn from the customer's mix. Given the persona, each fact of
the event (discounted, brand repeat, channel, device) is drawn from that persona's own distribution,
and the item is chosen by tilting the population's item choice towards the persona's tastes (see
``item_choice``). Fitting is EM over all events at once, seeded by the catalog (see ``catalog_seed``),
with the mix prior refitted by empirical Bayes in every M-step (see ``mix_prior``).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.personas.catalog import PersonaCatalog
from engine.personas.inference.behaviour import PersonaBehaviour
from engine.personas.inference.catalog_seed import catalog_seed, population_marginals
from engine.personas.inference.config import PersonaInferenceConfig
from engine.personas.inference.e_step import (
    EStepStatistics,
    SignatureTables,
    merged_events,
    tabled_e_step,
)
from engine.personas.inference.e_step import (
    e_step as e_step,  # the distributed fit runs it per partition (training.spark.persona_em)
)
from engine.personas.inference.item_choice import ItemChoice
from engine.personas.inference.mix_prior import MixPrior
from engine.personas.inference.segments import sum_segments
from engine.personas.traits import EventFeatures, EventFeatureSpace

T = TypeVar("T")


@dataclass(frozen=True)
class FitSummary:
    iterations: int
    converged: bool
    objective_per_event: float
    n_events: int
    n_customers: int
    seconds: float | None = None  # wall-clock time of the whole fit (None in models saved before it)
    em_customers: int | None = None  # customers of the EM's sample; None: the EM fitted on all of them


@dataclass(frozen=True)
class BehaviourFit:
    """What the EM leaves behind: the fitted behaviour and where the customers' mix posteriors ended.

    ``gamma`` (components x personas x customers) warm-starts the final fold-in of the mixes, so that
    the fit's mixes are the converged fold-in under the final model.
    """

    behaviour: PersonaBehaviour
    gamma: NDArray[np.float64]
    unmatched_signals: dict[str, tuple[str, ...]]
    iterations: int
    converged: bool
    objective_per_event: float


@dataclass(frozen=True)
class EmSetup:
    """What stays fixed through the EM: the catalog seed, the signatures and the prior's strength.

    Everything here is small (columns x personas, a few hundred signatures) except the per-event
    signature indices, which a distributed E-step ships with each partition's events.
    """

    space: EventFeatureSpace
    item_choice: ItemChoice
    event_signatures: EventSignatures
    item_signature: NDArray[np.int64]  # per event
    marginals: NDArray[np.float64]
    seed_probabilities: NDArray[np.float64]
    seed_tilts: NDArray[np.float64]
    unmatched: dict[str, tuple[str, ...]]
    strength: float
    total_weight: float
    max_concentration: float

    @classmethod
    def build(cls, features: EventFeatures, catalog: PersonaCatalog, cfg: PersonaInferenceConfig) -> EmSetup:
        space = features.space
        k = len(catalog)
        item_columns = space.item_columns
        marginals = population_marginals(features)
        item_choice = ItemChoice.build(features)
        seed_probabilities, seed_tilts, unmatched = catalog_seed(
            space, marginals, catalog, cfg.seed_tilt, cfg.seed_damping
        )
        parameters = np.where(item_columns[:, None], seed_tilts, np.log(seed_probabilities))
        seed_probabilities[item_columns] = item_choice.feature_shares(parameters[item_columns])
        customer_weights = sum_segments(features.weight[None, :], features.customer_indptr)[0]
        active = customer_weights > 0
        return cls(
            space=space,
            item_choice=item_choice,
            event_signatures=EventSignatures.build(features),
            item_signature=item_choice.signature_of[features.item_index],
            marginals=marginals,
            seed_probabilities=seed_probabilities,
            seed_tilts=seed_tilts,
            unmatched=unmatched,
            strength=cfg.profile_prior_share * float(features.weight.sum()) / k,
            total_weight=float(features.weight.sum()),
            max_concentration=float(np.median(customer_weights[active])),
        )

    def starting_parameters(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The catalog seed as (columns x personas) parameters and the item choice's offsets."""
        item_columns = self.space.item_columns
        parameters = self.seed_tilts.copy()  # item-level rows; the others are log seed probabilities
        parameters[~item_columns] = np.log(self.seed_probabilities[~item_columns])
        return parameters, -self.item_choice.log_normalisers(parameters[item_columns])

    def signature_log_likelihoods(
        self, parameters: NDArray[np.float64], offsets: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(personas x event signatures) and (personas x item signatures) log-likelihood parts."""
        item_columns = self.space.item_columns
        log_event = (self.event_signatures.features @ parameters).T
        log_item = (self.item_choice.features @ parameters[item_columns]).T + offsets[:, None]
        return log_event, log_item


def m_step(
    setup: EmSetup,
    statistics: EStepStatistics,
    parameters: NDArray[np.float64],
    mix_prior: MixPrior,
) -> tuple[NDArray[np.float64], NDArray[np.float64], MixPrior, float]:
    """The mix prior (empirical Bayes), event-level distributions and item-choice tilts from the sums.

    Returns the new parameters, offsets, mix prior and the objective per event weight.
    """
    space = setup.space
    item_columns = space.item_columns
    strength = setup.strength
    mix_prior = mix_prior.refit_from(statistics.prior, setup.max_concentration)
    feature_counts = setup.event_signatures.features.T @ statistics.event_signature_counts.T
    starts = np.array([group.start for group in space.groups], dtype=np.int64)
    denominators = np.add.reduceat(feature_counts, starts, axis=0)[space.column_group]
    probabilities = (feature_counts + strength * setup.seed_probabilities) / (denominators + strength)
    tilts = setup.item_choice.fit_tilts(
        statistics.item_signature_counts.T,
        parameters[item_columns],
        setup.seed_tilts[item_columns],
        strength,
    )
    # Item-choice rows are tilts, not probabilities (theirs may be 0): log only the others.
    parameters = np.empty_like(probabilities)
    parameters[~item_columns] = np.log(probabilities[~item_columns])
    parameters[item_columns] = tilts
    offsets = -setup.item_choice.log_normalisers(tilts)

    log_prior = strength * float((setup.seed_probabilities * parameters)[~item_columns].sum())
    log_prior -= 0.5 * strength * float(((tilts - setup.seed_tilts[item_columns]) ** 2).sum())
    objective = (statistics.log_likelihood + log_prior) / setup.total_weight
    return parameters, offsets, mix_prior, objective


def starting_mix_prior(k: int, cfg: PersonaInferenceConfig) -> MixPrior:
    return MixPrior.mostly_one(np.full(k, 1.0 / k), cfg.mix_prior_strength, cfg.mix_prior_dominant_share)


def fitted_behaviour(
    setup: EmSetup,
    catalog: PersonaCatalog,
    parameters: NDArray[np.float64],
    offsets: NDArray[np.float64],
    mix_prior: MixPrior,
) -> PersonaBehaviour:
    """The behaviour the EM ended with, its item-level probabilities recovered from the tilts."""
    item_columns = setup.space.item_columns
    probabilities = np.exp(parameters)
    probabilities[item_columns] = setup.item_choice.feature_shares(parameters[item_columns])
    return PersonaBehaviour(
        persona_ids=catalog.ids,
        persona_names=catalog.names,
        space=setup.space,
        parameters=parameters,
        offsets=offsets,
        probabilities=probabilities,
        seed_probabilities=setup.seed_probabilities,
        marginals=setup.marginals,
        population_mix=mix_prior.mean,
        mix_prior=mix_prior,
    )


def fit_behaviour(
    features: EventFeatures, catalog: PersonaCatalog, cfg: PersonaInferenceConfig
) -> BehaviourFit:
    """EM over all events of ``features`` (at least one) until the objective per event settles.

    The E-step runs per chunk of ``cfg.chunk_customers`` customers and the chunks' statistics are
    added, as a distributed fit adds its partitions'; the compiled step keeps no (personas x events)
    arrays, so memory beyond the events and the posteriors stays small. The distributed fit
    (``training.spark.persona_em``) runs the same ``e_step`` per partition of customers and the same
    ``m_step`` on the summed statistics, with the same convergence rule.
    """
    setup = EmSetup.build(features, catalog, cfg)
    parameters, offsets = setup.starting_parameters()
    event_signature, item_signature, weight, indptr = merged_events(
        setup.event_signatures.index, setup.item_signature, features.weight, features.customer_indptr
    )
    mix_prior = starting_mix_prior(len(catalog), cfg)
    gamma = mix_prior.starting_posterior(weight, indptr)
    chunks = customer_chunks(indptr, chunk_size(indptr.size - 1, cfg))
    pool = ThreadPoolExecutor(cfg.threads) if cfg.threads > 1 and len(chunks) > 1 else None
    # a ThreadPoolExecutor per fit, not per iteration: 200 iterations of thread start-up add up
    previous, objective, converged, iteration = -np.inf, -np.inf, False, 0
    for iteration in range(1, cfg.max_iterations + 1):  # noqa: B007 - the count is reported
        tables = SignatureTables.of(*setup.signature_log_likelihoods(parameters, offsets))

        def step(
            chunk: tuple[int, int], tables: SignatureTables = tables, prior: MixPrior = mix_prior
        ) -> tuple[NDArray[np.float64], EStepStatistics]:
            first, last = chunk
            start, stop = int(indptr[first]), int(indptr[last])
            return tabled_e_step(
                tables,
                event_signature[start:stop],
                item_signature[start:stop],
                weight[start:stop],
                indptr[first : last + 1] - start,
                gamma[:, :, first:last],
                prior,
            )

        results = list(pool.map(step, chunks) if pool is not None else map(step, chunks))
        # gamma is replaced only after every chunk read it; sums are added in chunk order, so the
        # result does not depend on the threads' timing
        for (first, last), (chunk_gamma, _) in zip(chunks, results, strict=True):
            gamma[:, :, first:last] = chunk_gamma
        statistics = results[0][1]
        for _, part in results[1:]:
            statistics = statistics + part
        parameters, offsets, mix_prior, objective = m_step(setup, statistics, parameters, mix_prior)
        if abs(objective - previous) < cfg.tolerance:
            converged = True
            break
        previous = objective
    if pool is not None:
        pool.shutdown()
    behaviour = fitted_behaviour(setup, catalog, parameters, offsets, mix_prior)
    return BehaviourFit(behaviour, gamma, setup.unmatched, iteration, converged, objective)


def chunk_size(n_customers: int, cfg: PersonaInferenceConfig) -> int:
    """Customers per chunk: ``cfg.chunk_customers``, smaller when that leaves a thread without a chunk."""
    return max(1, min(cfg.chunk_customers, -(-n_customers // cfg.threads)))


def map_chunks(work: Callable[[tuple[int, int]], T], chunks: list[tuple[int, int]], threads: int) -> list[T]:
    """``work`` on every chunk, on up to ``threads`` threads (the compiled steps release the GIL)."""
    if threads <= 1 or len(chunks) <= 1:
        return [work(chunk) for chunk in chunks]
    with ThreadPoolExecutor(min(threads, len(chunks))) as pool:
        return list(pool.map(work, chunks))


def customer_chunks(indptr: NDArray[np.int64], chunk_customers: int) -> list[tuple[int, int]]:
    """(first, last) customer ranges of at most ``chunk_customers`` customers covering every customer."""
    n = int(indptr.size - 1)
    return [(first, min(n, first + chunk_customers)) for first in range(0, max(n, 1), chunk_customers)]


@dataclass(frozen=True)
class EventSignatures:
    """Distinct rows of the event-level columns (discount, brand repeat, channel, device), per event.

    There are at most a few hundred such combinations, so the event-level log-likelihood is computed
    once per combination and gathered, instead of one sparse product over all events per iteration.
    """

    features: NDArray[np.float64]  # (signatures x all columns), zero in item-level columns
    index: NDArray[np.int64]  # per event

    @classmethod
    def build(cls, events: EventFeatures) -> EventSignatures:
        space = events.space
        event_level = np.flatnonzero(~space.item_columns)
        part = sp.csr_matrix(events.matrix[:, event_level])
        group_of = space.column_group[event_level]
        local = event_level - np.array([space.groups[g].start for g in group_of]) + 1
        sizes = np.array([len(g.values) + 1 for g in space.groups])
        strides = np.cumprod(np.concatenate([[1], sizes[:-1]]))
        rows = np.repeat(np.arange(part.shape[0]), np.diff(part.indptr))
        code = np.bincount(
            rows,
            weights=(local[part.indices] * strides[group_of[part.indices]]).astype(np.float64),
            minlength=part.shape[0],
        ).astype(np.int64)
        _, first, index = np.unique(code, return_index=True, return_inverse=True)
        features = np.zeros((first.size, space.n_columns))
        features[:, event_level] = part[first].toarray()
        return cls(features, index.ravel().astype(np.int64))

    @property
    def count(self) -> int:
        return int(self.features.shape[0])
