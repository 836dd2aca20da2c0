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
from typing import Protocol, TypeVar

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
from engine.personas.inference.em_extrapolation import (
    STEP_GROWTH,
    PosteriorJump,
    count_products,
    jumped_state,
    products_of,
    state_coordinates,
    step_length,
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

    def log_prior(self, parameters: NDArray[np.float64]) -> float:
        """Log density (up to a constant) of the pull of ``parameters`` towards the catalog seed."""
        item_columns = self.space.item_columns
        value = self.strength * float((self.seed_probabilities * parameters)[~item_columns].sum())
        tilts = parameters[item_columns] - self.seed_tilts[item_columns]
        return value - 0.5 * self.strength * float((tilts**2).sum())


def m_step(
    setup: EmSetup,
    statistics: EStepStatistics,
    parameters: NDArray[np.float64],
    mix_prior: MixPrior,
) -> tuple[NDArray[np.float64], NDArray[np.float64], MixPrior, float]:
    """The mix prior (empirical Bayes), event-level distributions and item-choice tilts from the sums.

    Returns the new parameters, offsets and mix prior, and the objective per event weight of the
    state the E-step ran on: the customers' variational bound (``statistics.log_likelihood``) plus
    the log prior of ``parameters``. Both parts belong to that one state, so plain EM steps never
    lower it, which is what lets the extrapolated fit (``run_em``) refuse any step that does.
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
    # the objective of the parameters the E-step ran with, before they are replaced
    objective = (statistics.log_likelihood + setup.log_prior(parameters)) / setup.total_weight
    # Item-choice rows are tilts, not probabilities (theirs may be 0): log only the others.
    parameters = np.empty_like(probabilities)
    parameters[~item_columns] = np.log(probabilities[~item_columns])
    parameters[item_columns] = tilts
    offsets = -setup.item_choice.log_normalisers(tilts)
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


@dataclass(frozen=True)
class EmState:
    """Where the EM stands, apart from the customers' posteriors, which live with the E-step.

    ``built_on`` is the prior's alphas the posteriors were last updated with (the E-step writes
    alphas plus expected persona counts), which the extrapolation needs to tell the counts apart.
    """

    parameters: NDArray[np.float64]
    offsets: NDArray[np.float64]
    mix_prior: MixPrior
    built_on: NDArray[np.float64]

    @classmethod
    def start(cls, setup: EmSetup, k: int, cfg: PersonaInferenceConfig) -> EmState:
        parameters, offsets = setup.starting_parameters()
        mix_prior = starting_mix_prior(k, cfg)
        return cls(parameters, offsets, mix_prior, mix_prior.alphas)

    def advanced(self, setup: EmSetup, statistics: EStepStatistics) -> tuple[EmState, float]:
        """The M-step from this state's E-step sums, and this state's objective per event."""
        parameters, offsets, mix_prior, objective = m_step(setup, statistics, self.parameters, self.mix_prior)
        return EmState(parameters, offsets, mix_prior, self.mix_prior.alphas), objective


PriorAlphas = tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]


class Posteriors(Protocol):
    """The customers' posteriors (gamma) in three slots, and the E-step over them, wherever they live.

    Slot 0 is where the EM stands, slots 1 and 2 the plain steps of an extrapolation cycle. The local
    fit keeps them in arrays (``LocalPosteriors``); the distributed one in its blocks of customers.
    """

    def e_step(
        self, state: EmState, source: int | PosteriorJump, target: int, products: PriorAlphas | None
    ) -> tuple[EStepStatistics, NDArray[np.float64] | None]:
        """The E-step under ``state`` from slot ``source`` (or the jump from slots 0-2) into ``target``.

        With ``products`` (the prior alphas slot 0, the source and the result were built on), also
        returns ``count_products`` of those three posteriors, summed over customers.
        """
        ...

    def keep(self, slot: int) -> None:
        """Make ``slot`` slot 0 (the others become scratch)."""
        ...


@dataclass(frozen=True)
class EmRun:
    state: EmState
    iterations: int  # E-steps
    converged: bool
    objective_per_event: float  # of the last state an E-step ran on


def run_em(setup: EmSetup, cfg: PersonaInferenceConfig, posteriors: Posteriors, state: EmState) -> EmRun:
    """EM from ``state`` until a plain step gains less than ``cfg.tolerance`` per event, or out of E-steps.

    With ``cfg.accelerate`` in cycles of SQUAREM (see ``em_extrapolation``): two plain steps, a jump
    along them, one plain step from the jump. The jump is kept only if the objective where it landed is
    at least that of the second plain step; otherwise the cycle ends at the second plain step, as plain
    EM would. The jump's bound starts at 1 (the first cycle is plain) and grows while jumps to it are
    kept. Every E-step counts against ``cfg.max_iterations``, so the cost bound is the plain fit's.
    """
    if not cfg.accelerate:
        return _plain_em(setup, cfg, posteriors, state)
    evaluations, bound, objective = 0, 1.0, -np.inf
    while evaluations < cfg.max_iterations:
        statistics, _ = posteriors.e_step(state, 0, 1, None)
        first, before = state.advanced(setup, statistics)
        evaluations += 1
        objective = before
        if evaluations == cfg.max_iterations:
            posteriors.keep(1)
            return EmRun(first, evaluations, False, objective)
        built_on = (state.built_on, first.built_on, first.mix_prior.alphas)
        statistics, counted = posteriors.e_step(first, 1, 2, built_on)
        second, after = first.advanced(setup, statistics)
        evaluations += 1
        objective = after
        if after - before < cfg.tolerance:
            posteriors.keep(2)
            return EmRun(second, evaluations, True, objective)
        assert counted is not None
        coordinates = tuple(state_coordinates(s.parameters, s.mix_prior) for s in (state, first, second))
        products = counted + sum(
            (products_of(*parts) for parts in zip(*coordinates, strict=True)), start=np.zeros(3)
        )
        step = step_length(products, bound)
        if step == 1.0 or evaluations == cfg.max_iterations:
            bound *= STEP_GROWTH if step == bound else 1.0
            posteriors.keep(2)
            state = second
            continue
        parameters, mix_prior = jumped_state(
            setup.space, (coordinates[0], coordinates[1], coordinates[2]), step
        )
        offsets = -setup.item_choice.log_normalisers(parameters[setup.space.item_columns])
        landing = EmState(parameters, offsets, mix_prior, mix_prior.alphas)
        jump = PosteriorJump(step, built_on, mix_prior.alphas)
        statistics, _ = posteriors.e_step(landing, jump, 1, None)
        stepped, reached = landing.advanced(setup, statistics)
        evaluations += 1
        if np.isfinite(reached) and reached >= after:
            posteriors.keep(1)
            state, objective = stepped, reached
            bound *= STEP_GROWTH if step == bound else 1.0
        else:
            posteriors.keep(2)
            state = second
            bound = max(1.0, bound / STEP_GROWTH) if step == bound else bound
    return EmRun(state, evaluations, False, objective)


def _plain_em(setup: EmSetup, cfg: PersonaInferenceConfig, posteriors: Posteriors, state: EmState) -> EmRun:
    previous, objective = -np.inf, -np.inf
    for iteration in range(1, cfg.max_iterations + 1):
        statistics, _ = posteriors.e_step(state, 0, 0, None)
        state, objective = state.advanced(setup, statistics)
        if objective - previous < cfg.tolerance:
            return EmRun(state, iteration, True, objective)
        previous = objective
    return EmRun(state, cfg.max_iterations, False, objective)


class LocalPosteriors:
    """The posteriors in this process, the E-step over them per chunk of customers on threads.

    Each chunk's E-step reads its own customers' posteriors and then writes its own customers' results,
    so writing into the slot being read is safe; statistics are added in chunk order, so the result does
    not depend on the threads' timing.
    """

    def __init__(self, setup: EmSetup, features: EventFeatures, cfg: PersonaInferenceConfig, k: int) -> None:
        self.setup = setup
        self.event_signature, self.item_signature, self.weight, self.indptr = merged_events(
            setup.event_signatures.index, setup.item_signature, features.weight, features.customer_indptr
        )
        self.sizes = sum_segments(self.weight[None, :], self.indptr)[0]
        gamma = starting_mix_prior(k, cfg).starting_posterior(self.weight, self.indptr)
        self.slots: list[NDArray[np.float64] | None] = [gamma, None, None]
        self.chunks = customer_chunks(self.indptr, chunk_size(self.indptr.size - 1, cfg))
        # a ThreadPoolExecutor per fit, not per iteration: 200 iterations of thread start-up add up
        self.pool = ThreadPoolExecutor(cfg.threads) if cfg.threads > 1 and len(self.chunks) > 1 else None

    @property
    def gamma(self) -> NDArray[np.float64]:
        return self._slot(0)

    def _slot(self, slot: int) -> NDArray[np.float64]:
        gamma = self.slots[slot]
        assert gamma is not None, f"slot {slot} was never written"
        return gamma

    def e_step(
        self, state: EmState, source: int | PosteriorJump, target: int, products: PriorAlphas | None
    ) -> tuple[EStepStatistics, NDArray[np.float64] | None]:
        tables = SignatureTables.of(*self.setup.signature_log_likelihoods(state.parameters, state.offsets))
        if self.slots[target] is None:
            self.slots[target] = np.empty_like(self.gamma)
        out = self._slot(target)
        indptr = self.indptr

        def step(chunk: tuple[int, int]) -> tuple[EStepStatistics, NDArray[np.float64] | None]:
            first, last = chunk
            start, stop = int(indptr[first]), int(indptr[last])
            sizes = self.sizes[first:last]
            if isinstance(source, PosteriorJump):
                cycle = (self._slot(0), self._slot(1), self._slot(2))
                gamma = source.posteriors(
                    (cycle[0][:, :, first:last], cycle[1][:, :, first:last], cycle[2][:, :, first:last]),
                    sizes,
                )
            else:
                gamma = self._slot(source)[:, :, first:last]
            updated, statistics = tabled_e_step(
                tables,
                self.event_signature[start:stop],
                self.item_signature[start:stop],
                self.weight[start:stop],
                indptr[first : last + 1] - start,
                gamma,
                state.mix_prior,
            )
            counted = None
            if products is not None:
                counted = count_products((self.gamma[:, :, first:last], gamma, updated), products, sizes)
            out[:, :, first:last] = updated
            return statistics, counted

        results = list(self.pool.map(step, self.chunks) if self.pool is not None else map(step, self.chunks))
        statistics = results[0][0]
        for part, _ in results[1:]:
            statistics = statistics + part
        if products is None:
            return statistics, None
        return statistics, np.sum([counted for _, counted in results if counted is not None], axis=0)

    def keep(self, slot: int) -> None:
        self.slots[0], self.slots[slot] = self.slots[slot], self.slots[0]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def fit_behaviour(
    features: EventFeatures, catalog: PersonaCatalog, cfg: PersonaInferenceConfig
) -> BehaviourFit:
    """EM over all events of ``features`` (at least one) until a plain step barely moves the objective.

    The E-step runs per chunk of ``cfg.chunk_customers`` customers and the chunks' statistics are
    added, as a distributed fit adds its partitions'; the compiled step keeps no (personas x events)
    arrays, so memory beyond the events and the posteriors (three copies with ``cfg.accelerate``)
    stays small. The distributed fit (``training.spark.persona_em``) runs the same ``e_step`` per
    partition of customers and the same ``run_em`` on the summed statistics.
    """
    setup = EmSetup.build(features, catalog, cfg)
    posteriors = LocalPosteriors(setup, features, cfg, len(catalog))
    try:
        run = run_em(setup, cfg, posteriors, EmState.start(setup, len(catalog), cfg))
    finally:
        posteriors.close()
    state = run.state
    behaviour = fitted_behaviour(setup, catalog, state.parameters, state.offsets, state.mix_prior)
    return BehaviourFit(
        behaviour, posteriors.gamma, setup.unmatched, run.iterations, run.converged, run.objective_per_event
    )


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
