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
from engine.personas.inference.mix_prior import MixPrior
from engine.personas.inference.segments import sum_by, sum_segments
from engine.personas.traits import EventFeatures


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


def fit_behaviour(
    features: EventFeatures, catalog: PersonaCatalog, cfg: PersonaInferenceConfig
) -> BehaviourFit:
    """EM over all events of ``features`` (at least one) until the objective per event settles.

    The (personas x events) arrays of the EM live only in this function: on 10 million events each is
    400 MB, and the fold-ins that follow the fit need several of their own.
    """
    space = features.space
    k = len(catalog)
    item_columns = space.item_columns
    marginals = population_marginals(features)
    item_choice = ItemChoice.build(features)
    seed_probabilities, seed_tilts, unmatched = catalog_seed(
        space, marginals, catalog, cfg.seed_tilt, cfg.seed_damping
    )
    strength = cfg.profile_prior_share * float(features.weight.sum()) / k

    parameters = np.where(item_columns[:, None], seed_tilts, np.log(seed_probabilities))
    offsets = -item_choice.log_normalisers(parameters[item_columns])
    seed_probabilities[item_columns] = item_choice.feature_shares(parameters[item_columns])

    weight = features.weight
    total_weight = float(weight.sum())
    event_signatures = EventSignatures.build(features)
    item_signature = item_choice.signature_of[features.item_index]
    indptr = features.customer_indptr
    group_sum = space.group_sum_matrix
    customer_weights = sum_segments(weight[None, :], indptr)[0]
    active = customer_weights > 0
    max_concentration = float(np.median(customer_weights[active]))
    mix_prior = MixPrior.mostly_one(np.full(k, 1.0 / k), cfg.mix_prior_strength, cfg.mix_prior_dominant_share)
    gamma = mix_prior.starting_posterior(weight, indptr)
    previous, objective, converged, iteration = -np.inf, -np.inf, False, 0
    for iteration in range(1, cfg.max_iterations + 1):  # noqa: B007 - the count is reported
        # E-step: log-likelihood = event-level part (per event signature) + item choice (per item
        # signature); a few hundred distinct rows each, gathered out to the events. One variational
        # update of every customer's mix posterior per iteration, warm-started from the last.
        log_event = (event_signatures.features @ parameters).T
        log_item = (item_choice.features @ parameters[item_columns]).T + offsets[:, None]
        joint = np.take(log_event, event_signatures.index, axis=1)
        joint += np.take(log_item, item_signature, axis=1)
        scale = joint.max(axis=0)
        joint -= scale
        np.exp(joint, out=joint)
        posterior = mix_posterior_step(
            joint, weight, indptr, gamma, mix_prior, mix_prior.log_weights(), keep_tilts=True
        )
        # personas x events, weighted by the events' weights
        responsibilities = event_responsibilities(joint, weight, indptr, posterior)
        log_likelihood = float(posterior.log_evidence[active].sum() + weight @ scale)
        gamma = posterior.gamma

        # M-step: the mix prior (empirical Bayes), event-level distributions, item-choice tilts.
        mix_prior = mix_prior.refit(posterior, active, max_concentration)
        signature_counts = sum_by(event_signatures.index, responsibilities, event_signatures.count)
        feature_counts = event_signatures.features.T @ signature_counts.T
        denominators = np.asarray(group_sum @ feature_counts)[space.column_group]
        probabilities = (feature_counts + strength * seed_probabilities) / (denominators + strength)
        tilts = item_choice.fit_tilts(
            sum_by(item_signature, responsibilities, item_choice.n_signatures).T,
            parameters[item_columns],
            seed_tilts[item_columns],
            strength,
        )
        # Item-choice rows are tilts, not probabilities (theirs may be 0): log only the others.
        parameters = np.empty_like(probabilities)
        parameters[~item_columns] = np.log(probabilities[~item_columns])
        parameters[item_columns] = tilts
        offsets = -item_choice.log_normalisers(tilts)

        log_prior = strength * float((seed_probabilities * parameters)[~item_columns].sum())
        log_prior -= 0.5 * strength * float(((tilts - seed_tilts[item_columns]) ** 2).sum())
        objective = (log_likelihood + log_prior) / total_weight
        if abs(objective - previous) < cfg.tolerance:
            converged = True
            break
        previous = objective

    probabilities = np.exp(parameters)
    probabilities[item_columns] = item_choice.feature_shares(parameters[item_columns])
    behaviour = PersonaBehaviour(
        persona_ids=catalog.ids,
        persona_names=catalog.names,
        space=space,
        parameters=parameters,
        offsets=offsets,
        probabilities=probabilities,
        seed_probabilities=seed_probabilities,
        marginals=marginals,
        population_mix=mix_prior.mean,
        mix_prior=mix_prior,
    )
    return BehaviourFit(behaviour, gamma, unmatched, iteration, converged, objective)


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
