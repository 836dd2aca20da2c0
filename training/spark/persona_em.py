"""Persona inference as a distributed EM: the E-step per partition of customers, the M-step on the driver.

Customers are independent given the persona behaviour, so the E-step (one variational update of each
customer's mix posterior and the events' persona responsibilities) runs where the customer's events
live: customers are cut into contiguous blocks of about equal events, one Spark partition each, and
every block keeps its customers' posteriors (``gamma``) from iteration to iteration. Each iteration
the driver broadcasts the persona parameters (a few hundred signature rows per persona and the mix
prior), every partition runs the engine's own ``em_fit.e_step`` on its customers and returns the
sums the M-step needs (``EStepStatistics``: responsibility mass per event and item signature, the
mix prior's statistics, the log-likelihood), Spark adds them up (``treeReduce``), and the driver runs
the engine's own ``em_fit.m_step`` on the total. The stopping rule is the local one (the objective per
event moves by less than ``tolerance``), so both engines fit the same model up to the order floating
point sums are added in.

The event features and their signatures are built on the driver (``build_event_features``) and the
final fold-in of the mixes runs there too (``PersonaInferenceModel.fit`` does it after this fit);
what is distributed is the iterated part, the EM's cost. The per-customer posteriors come back to the
driver once, in partition order, through ``toLocalIterator`` (one block in memory at a time on the
way).
"""

from __future__ import annotations

import itertools
import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from engine.personas.catalog import PersonaCatalog
from engine.personas.inference.config import PersonaInferenceConfig
from engine.personas.inference.em_fit import (
    BehaviourFit,
    EmSetup,
    EStepStatistics,
    e_step,
    fitted_behaviour,
    m_step,
    starting_mix_prior,
)
from engine.personas.inference.mix_prior import MixPrior
from engine.personas.inference.model import BehaviourFitter
from engine.personas.traits import EventFeatures

if TYPE_CHECKING:
    from pyspark import RDD, Broadcast
    from pyspark.sql import SparkSession

# Lineage of the iterated blocks is cut this often (each iteration's blocks derive from the last's).
CHECKPOINT_EVERY = 10


@dataclass(frozen=True)
class CustomerBlock:
    """A contiguous range of customers with their events' signature indices, weights and posteriors."""

    start: int  # first customer (row of the features' customer map)
    event_signature: NDArray[np.int64]
    item_signature: NDArray[np.int64]
    weight: NDArray[np.float64]
    indptr: NDArray[np.int64]  # local: events of customer start + i at indptr[i]:indptr[i + 1]
    gamma: NDArray[np.float64]  # (components x personas x customers of the block)


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
        blocks.append(
            CustomerBlock(
                start=int(start),
                event_signature=setup.event_signatures.index[first:last],
                item_signature=setup.item_signature[first:last],
                weight=features.weight[first:last],
                indptr=(indptr[start : stop + 1] - first).astype(np.int64),
                gamma=np.ascontiguousarray(gamma[:, :, start:stop]),
            )
        )
    return blocks


def step_block(
    shared: Broadcast[tuple[NDArray[np.float64], NDArray[np.float64], MixPrior]], block: CustomerBlock
) -> tuple[CustomerBlock, EStepStatistics]:
    """The E-step of one block (on an executor): its new posteriors and its share of the sums."""
    log_event, log_item, mix_prior = shared.value
    gamma, statistics = e_step(
        log_event,
        log_item,
        block.event_signature,
        block.item_signature,
        block.weight,
        block.indptr,
        block.gamma,
        mix_prior,
    )
    new_block = CustomerBlock(
        block.start, block.event_signature, block.item_signature, block.weight, block.indptr, gamma
    )
    return new_block, statistics


def _step_pair(
    shared: Broadcast[tuple[NDArray[np.float64], NDArray[np.float64], MixPrior]],
    pair: tuple[CustomerBlock, Any],
) -> tuple[CustomerBlock, EStepStatistics]:
    return step_block(shared, pair[0])


def _statistics(pair: tuple[CustomerBlock, EStepStatistics]) -> EStepStatistics:
    return pair[1]


def _gamma(pair: tuple[CustomerBlock, Any]) -> NDArray[np.float64]:
    return pair[0].gamma


def fit_behaviour_on_spark(
    session: SparkSession,
    features: EventFeatures,
    catalog: PersonaCatalog,
    cfg: PersonaInferenceConfig,
    *,
    partitions: int,
) -> BehaviourFit:
    """``em_fit.fit_behaviour`` with the E-step on Spark (see the module docstring); same result type."""
    from functools import partial

    from pyspark import StorageLevel

    context = session.sparkContext
    setup = EmSetup.build(features, catalog, cfg)
    parameters, offsets = setup.starting_parameters()
    mix_prior = starting_mix_prior(len(catalog), cfg)
    gamma = mix_prior.starting_posterior(features.weight, features.customer_indptr)
    blocks = customer_blocks(setup, features, gamma, partitions)
    del gamma
    state: RDD[tuple[CustomerBlock, Any]] = context.parallelize(
        [(block, None) for block in blocks], len(blocks)
    )
    del blocks
    previous, objective, converged, iteration = -np.inf, -np.inf, False, 0
    for iteration in range(1, cfg.max_iterations + 1):
        log_event, log_item = setup.signature_log_likelihoods(parameters, offsets)
        shared = context.broadcast((log_event, log_item, mix_prior))
        stepped = state.map(partial(_step_pair, shared)).persist(StorageLevel.MEMORY_AND_DISK)
        if iteration % CHECKPOINT_EVERY == 0:
            stepped.localCheckpoint()  # marks in place: the next action cuts the lineage
        statistics: EStepStatistics = stepped.map(_statistics).treeReduce(operator.add)
        state.unpersist()
        shared.unpersist()
        state = stepped
        parameters, offsets, mix_prior, objective = m_step(setup, statistics, parameters, mix_prior)
        if abs(objective - previous) < cfg.tolerance:
            converged = True
            break
        previous = objective
    gamma = np.concatenate(list(state.map(_gamma).toLocalIterator()), axis=2)
    state.unpersist()
    behaviour = fitted_behaviour(setup, catalog, parameters, offsets, mix_prior)
    return BehaviourFit(behaviour, gamma, setup.unmatched, iteration, converged, objective)


def spark_behaviour_fit(session: SparkSession, partitions: int) -> BehaviourFitter:
    """The distributed EM as a ``PersonaInferenceModel.fit`` behaviour fitter."""

    def fit(features: EventFeatures, catalog: PersonaCatalog, cfg: PersonaInferenceConfig) -> BehaviourFit:
        return fit_behaviour_on_spark(session, features, catalog, cfg, partitions=partitions)

    return fit
