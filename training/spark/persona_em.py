"""Persona inference as a distributed EM: the E-step per partition of customers, the M-step on the driver.

Customers are independent given the persona behaviour, so the E-step (one variational update of each
customer's mix posterior and the events' persona responsibilities) runs where the customer's events
live: customers are cut into contiguous blocks of about equal events, one Spark partition each, and
every block keeps its customers' posteriors (``gamma``) from step to step. For each E-step the driver
broadcasts the persona parameters (a few hundred signature rows per persona and the mix prior), every
partition runs the engine's own ``em_fit.e_step`` on its customers and returns the sums the M-step
needs (``EStepStatistics``: responsibility mass per event and item signature, the mix prior's
statistics, the log-likelihood), Spark adds them up (``treeReduce``), and the driver runs the
engine's own ``em_fit.m_step`` on the total. The iteration itself is the engine's ``em_fit.run_em``,
extrapolation and stopping rule included: a block holds the posteriors of an extrapolation cycle's
steps next to its current ones (``Posteriors`` slots), builds a jump's posteriors from them just
before stepping, and returns its share of the products that set the jump's length with its sums. So
both engines fit the same model up to the order floating point sums are added in.

The event features and their signatures are built on the driver (``build_event_features``) and the
final fold-in of the mixes runs there too (``PersonaInferenceModel.fit`` does it after this fit);
what is distributed is the iterated part, the EM's cost. The per-customer posteriors come back to the
driver once, in partition order, through ``toLocalIterator`` (one block in memory at a time on the
way).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from engine.personas.catalog import PersonaCatalog
from engine.personas.inference.config import PersonaInferenceConfig
from engine.personas.inference.em_extrapolation import PosteriorJump, count_products
from engine.personas.inference.em_fit import (
    BehaviourFit,
    EmSetup,
    EmState,
    EStepStatistics,
    PriorAlphas,
    e_step,
    fitted_behaviour,
    run_em,
)
from engine.personas.inference.mix_prior import MixPrior
from engine.personas.inference.model import BehaviourFitter
from engine.personas.inference.segments import sum_segments
from engine.personas.traits import EventFeatures

if TYPE_CHECKING:
    from pyspark import RDD, Broadcast
    from pyspark.sql import SparkSession

# Lineage of the iterated blocks is cut this often (each E-step's blocks derive from the last's).
CHECKPOINT_EVERY = 10


@dataclass(frozen=True)
class CustomerBlock:
    """A contiguous range of customers with their events' signature indices, weights and posteriors.

    ``slots`` are the posteriors of ``em_fit.Posteriors``: slot 0 where the EM stands, slots 1 and 2
    (None until written) the steps of an extrapolation cycle.
    """

    start: int  # first customer (row of the features' customer map)
    event_signature: NDArray[np.int64]
    item_signature: NDArray[np.int64]
    weight: NDArray[np.float64]
    indptr: NDArray[np.int64]  # local: events of customer start + i at indptr[i]:indptr[i + 1]
    sizes: NDArray[np.float64]  # event weight per customer
    slots: tuple[NDArray[np.float64] | None, ...]  # each (components x personas x customers of the block)

    @property
    def gamma(self) -> NDArray[np.float64]:
        return self.slot(0)

    def slot(self, slot: int) -> NDArray[np.float64]:
        gamma = self.slots[slot]
        assert gamma is not None, f"slot {slot} was never written"
        return gamma

    def with_slot(self, slot: int, gamma: NDArray[np.float64]) -> CustomerBlock:
        slots = list(self.slots) + [None] * (3 - len(self.slots))
        slots[slot] = gamma
        return replace(self, slots=tuple(slots))


def customer_blocks(
    setup: EmSetup, features: EventFeatures, gamma: NDArray[np.float64], n_blocks: int
) -> list[CustomerBlock]:
    """Customers cut into at most ``n_blocks`` contiguous ranges of about equal numbers of events."""
    indptr = features.customer_indptr
    n_customers = indptr.size - 1
    n_blocks = max(1, min(n_blocks, n_customers))
    targets = np.linspace(0, indptr[-1], n_blocks + 1)[1:-1]
    cuts = np.unique(np.concatenate([[0], np.searchsorted(indptr, targets), [n_customers]]))
    blocks = []
    for start, stop in itertools.pairwise(cuts):
        first, last = int(indptr[start]), int(indptr[stop])
        local = (indptr[start : stop + 1] - first).astype(np.int64)
        weight = features.weight[first:last]
        blocks.append(
            CustomerBlock(
                start=int(start),
                event_signature=setup.event_signatures.index[first:last],
                item_signature=setup.item_signature[first:last],
                weight=weight,
                indptr=local,
                sizes=sum_segments(weight[None, :], local)[0],
                slots=(np.ascontiguousarray(gamma[:, :, start:stop]),),
            )
        )
    return blocks


@dataclass(frozen=True)
class BlockStep:
    """What the driver broadcasts for one E-step: the state's tables and prior, and which slots to use."""

    log_event: NDArray[np.float64]
    log_item: NDArray[np.float64]
    mix_prior: MixPrior
    source: int | PosteriorJump
    target: int
    products: PriorAlphas | None


Sums = tuple[EStepStatistics, NDArray[np.float64] | None]


def step_block(shared: Broadcast[BlockStep], block: CustomerBlock) -> tuple[CustomerBlock, Sums]:
    """The E-step of one block (on an executor): its new posteriors and its share of the sums."""
    step = shared.value
    if isinstance(step.source, PosteriorJump):
        gamma = step.source.posteriors((block.slot(0), block.slot(1), block.slot(2)), block.sizes)
    else:
        gamma = block.slot(step.source)
    updated, statistics = e_step(
        step.log_event,
        step.log_item,
        block.event_signature,
        block.item_signature,
        block.weight,
        block.indptr,
        gamma,
        step.mix_prior,
    )
    counted = None
    if step.products is not None:
        counted = count_products((block.slot(0), gamma, updated), step.products, block.sizes)
    return block.with_slot(step.target, updated), (statistics, counted)


def _step_pair(shared: Broadcast[BlockStep], pair: tuple[CustomerBlock, Any]) -> tuple[CustomerBlock, Sums]:
    return step_block(shared, pair[0])


def _keep_pair(slot: int, pair: tuple[CustomerBlock, Any]) -> tuple[CustomerBlock, Any]:
    block = pair[0]
    slots = list(block.slots)
    slots[0], slots[slot] = slots[slot], slots[0]
    return replace(block, slots=tuple(slots)), None


def _sums(pair: tuple[CustomerBlock, Sums]) -> Sums:
    return pair[1]


def _add_sums(a: Sums, b: Sums) -> Sums:
    counted = None if a[1] is None or b[1] is None else a[1] + b[1]
    return a[0] + b[0], counted


def _gamma(pair: tuple[CustomerBlock, Any]) -> NDArray[np.float64]:
    return pair[0].gamma


class SparkPosteriors:
    """``em_fit.Posteriors`` on Spark: the blocks of customers as an RDD, one Spark job per E-step.

    Each E-step's blocks derive from the last's, so they are persisted until the next E-step has run
    and their lineage is cut every ``CHECKPOINT_EVERY`` E-steps; a ``keep`` is a lazy map that the next
    E-step's job runs.
    """

    def __init__(self, session: SparkSession, setup: EmSetup, blocks: list[CustomerBlock]) -> None:
        self.context = session.sparkContext
        self.setup = setup
        self.state: RDD[tuple[CustomerBlock, Any]] = self.context.parallelize(
            [(block, None) for block in blocks], len(blocks)
        )
        self.persisted: RDD[tuple[CustomerBlock, Any]] | None = None
        self.steps = 0

    def e_step(
        self, state: EmState, source: int | PosteriorJump, target: int, products: PriorAlphas | None
    ) -> Sums:
        from pyspark import StorageLevel

        log_event, log_item = self.setup.signature_log_likelihoods(state.parameters, state.offsets)
        shared = self.context.broadcast(
            BlockStep(log_event, log_item, state.mix_prior, source, target, products)
        )
        stepped = self.state.map(partial(_step_pair, shared)).persist(StorageLevel.MEMORY_AND_DISK)
        self.steps += 1
        if self.steps % CHECKPOINT_EVERY == 0:
            stepped.localCheckpoint()  # marks in place: the next action cuts the lineage
        sums: Sums = stepped.map(_sums).treeReduce(_add_sums)
        if self.persisted is not None:
            self.persisted.unpersist()
        shared.unpersist()
        self.state = self.persisted = stepped
        return sums

    def keep(self, slot: int) -> None:
        self.state = self.state.map(partial(_keep_pair, slot))

    def gamma(self) -> NDArray[np.float64]:
        """Every customer's current posteriors, collected in partition order; the blocks are released."""
        gamma = np.concatenate(list(self.state.map(_gamma).toLocalIterator()), axis=2)
        if self.persisted is not None:
            self.persisted.unpersist()
        return gamma


def fit_behaviour_on_spark(
    session: SparkSession,
    features: EventFeatures,
    catalog: PersonaCatalog,
    cfg: PersonaInferenceConfig,
    *,
    partitions: int,
) -> BehaviourFit:
    """``em_fit.fit_behaviour`` with the E-step on Spark (see the module docstring); same result type."""
    setup = EmSetup.build(features, catalog, cfg)
    start = EmState.start(setup, len(catalog), cfg)
    gamma = start.mix_prior.starting_posterior(features.weight, features.customer_indptr)
    posteriors = SparkPosteriors(session, setup, customer_blocks(setup, features, gamma, partitions))
    del gamma
    run = run_em(setup, cfg, posteriors, start)
    state = run.state
    behaviour = fitted_behaviour(setup, catalog, state.parameters, state.offsets, state.mix_prior)
    return BehaviourFit(
        behaviour, posteriors.gamma(), setup.unmatched, run.iterations, run.converged, run.objective_per_event
    )


def spark_behaviour_fit(session: SparkSession, partitions: int) -> BehaviourFitter:
    """The distributed EM as a ``PersonaInferenceModel.fit`` behaviour fitter."""

    def fit(features: EventFeatures, catalog: PersonaCatalog, cfg: PersonaInferenceConfig) -> BehaviourFit:
        return fit_behaviour_on_spark(session, features, catalog, cfg, partitions=partitions)

    return fit
