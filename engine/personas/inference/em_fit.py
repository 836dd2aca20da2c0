"""The EM fit of persona behaviour: MAP estimates of what each persona does, variational Bayes for mixes.

Each event is explained by one persona drawn from the customer's mix. Given the persona, each fact of
the event (discounted, brand repeat, channel, device) is drawn from that persona's own distribution,
and the item is chosen by tilting the population's item choice towards the persona's tastes (see
``item_choice``). Fitting is EM over all events at once, seeded by the catalog (see ``catalog_seed``),
with the mix prior refitted by empirical Bayes in every M-step (see ``mix_prior``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.personas.catalog import PersonaCatalog
from engine.personas.inference.behaviour import PersonaBehaviour
from engine.personas.inference.catalog_seed import catalog_seed, population_marginals
from engine.personas.inference.config import PersonaInferenceConfig
from engine.personas.inference.item_choice import ItemChoice
from engine.personas.inference.mix_posterior import event_responsibilities, mix_posterior_step
from engine.personas.inference.mix_prior import MixPrior, MixPriorStatistics
from engine.personas.inference.segments import sum_by, sum_segments
from engine.personas.traits import EventFeatures, EventFeatureSpace


@dataclass(frozen=True)
class FitSummary:
    iterations: int
    converged: bool
    objective_per_event: float
    n_events: int
    n_customers: int
    seconds: float | None = None  # wall-clock time of the whole fit (None in models saved before it)


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


@dataclass(frozen=True)
class EStepStatistics:
    """What one E-step over a set of customers hands the M-step: sums that add up across customers.

    The local fit computes them over every customer at once; a distributed fit per partition of
    customers, then adds them (``+``), so both run the same M-step on the same sums.
    """

    log_likelihood: float
    event_signature_counts: NDArray[np.float64]  # (personas x event signatures)
    item_signature_counts: NDArray[np.float64]  # (personas x item signatures)
    prior: MixPriorStatistics

    def __add__(self, other: EStepStatistics) -> EStepStatistics:
        return EStepStatistics(
            self.log_likelihood + other.log_likelihood,
            self.event_signature_counts + other.event_signature_counts,
            self.item_signature_counts + other.item_signature_counts,
            self.prior + other.prior,
        )


def e_step(
    log_event: NDArray[np.float64],
    log_item: NDArray[np.float64],
    event_signature: NDArray[np.int64],
    item_signature: NDArray[np.int64],
    weight: NDArray[np.float64],
    indptr: NDArray[np.int64],
    gamma: NDArray[np.float64],
    mix_prior: MixPrior,
) -> tuple[NDArray[np.float64], EStepStatistics]:
    """One E-step over a set of whole customers (events contiguous per customer, ``indptr``).

    Log-likelihood = event-level part (per event signature) + item choice (per item signature); a
    few hundred distinct rows each, gathered out to the events. One variational update of every
    customer's mix posterior, warm-started from ``gamma``. Returns the new gamma and the sums.
    """
    joint = np.take(log_event, event_signature, axis=1)
    joint += np.take(log_item, item_signature, axis=1)
    scale = joint.max(axis=0) if joint.shape[1] else np.zeros(0)
    joint -= scale
    np.exp(joint, out=joint)
    posterior = mix_posterior_step(
        joint, weight, indptr, gamma, mix_prior, mix_prior.log_weights(), keep_tilts=True
    )
    # personas x events, weighted by the events' weights
    responsibilities = event_responsibilities(joint, weight, indptr, posterior)
    active = sum_segments(weight[None, :], indptr)[0] > 0
    statistics = EStepStatistics(
        log_likelihood=float(posterior.log_evidence[active].sum() + weight @ scale),
        event_signature_counts=sum_by(event_signature, responsibilities, log_event.shape[1]),
        item_signature_counts=sum_by(item_signature, responsibilities, log_item.shape[1]),
        prior=MixPriorStatistics.of(posterior, active),
    )
    return posterior.gamma, statistics


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
    denominators = np.asarray(space.group_sum_matrix @ feature_counts)[space.column_group]
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

    The (personas x events) arrays of the EM live only in this function: on 10 million events each is
    400 MB, and the fold-ins that follow the fit need several of their own. The distributed fit
    (``training.spark.persona_em``) runs the same ``e_step`` per partition of customers and the same
    ``m_step`` on the summed statistics, with the same convergence rule.
    """
    setup = EmSetup.build(features, catalog, cfg)
    parameters, offsets = setup.starting_parameters()
    weight = features.weight
    indptr = features.customer_indptr
    mix_prior = starting_mix_prior(len(catalog), cfg)
    gamma = mix_prior.starting_posterior(weight, indptr)
    previous, objective, converged, iteration = -np.inf, -np.inf, False, 0
    for iteration in range(1, cfg.max_iterations + 1):  # noqa: B007 - the count is reported
        log_event, log_item = setup.signature_log_likelihoods(parameters, offsets)
        gamma, statistics = e_step(
            log_event,
            log_item,
            setup.event_signatures.index,
            setup.item_signature,
            weight,
            indptr,
            gamma,
            mix_prior,
        )
        parameters, offsets, mix_prior, objective = m_step(setup, statistics, parameters, mix_prior)
        if abs(objective - previous) < cfg.tolerance:
            converged = True
            break
        previous = objective
    behaviour = fitted_behaviour(setup, catalog, parameters, offsets, mix_prior)
    return BehaviourFit(behaviour, gamma, setup.unmatched, iteration, converged, objective)


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
