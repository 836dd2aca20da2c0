"""Persona inference: a latent-class model that turns each customer's events into a soft persona mix.

Each event is explained by one persona drawn from the customer's mix. Given the persona, each fact of
the event (discounted, brand repeat, channel, device) is drawn from that persona's own distribution,
and the item is chosen by tilting the population's item choice towards the persona's tastes (one
tilt per category, price level and tag). The item facts are modelled jointly rather than as
independent features because they are correlated through the catalog (premium items are the
expensive ones): counted independently they were double evidence, and on the synthetic shop the
latent classes drifted into price-level clusters (mean TV to the planted mixes 0.36 instead of 0.21).

Fitting is EM over all events at once: MAP estimates of the persona behaviour, variational Bayes
for the mixes (below). The catalog seeds each persona (population marginals,
or no tilt, shifted towards its signals) and a prior keeps pulling towards that seed, so
"bargain_hunter" still means what the catalog says after the data has reshaped it, and the mix
columns keep the catalog's order.

A customer's mix has a prior that says what personas are: most customers are mostly one persona with
a little of the others. It is a mixture of Dirichlets with one component per persona ("mostly k"),
whose weights (how common each dominant persona is), dominant share and concentration are fitted by
empirical Bayes on the shop's own customers, so a shop whose customers really are even mixes gets a
flat prior instead. Mixes are posterior means under that prior (variational Bayes per component),
which shrinks customers with three events towards the personas' typical shapes rather than towards
one average shopper. Against the planted mixes of the default synthetic shop (eight seeds) a single
population-centred Dirichlet gave mean TV 0.144 (worst seed 0.147), this prior 0.139 (0.142); on the
shop before its recalibration, 0.191 and 0.181. Context mixes are shrunk towards the customer's
overall mix (few weekend events say little). The fitted model folds in new events without refitting,
with the same prior, which is what serving and cold start need.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.special import digamma, gammaln, polygamma

from engine.data.id_map import IdMap
from engine.data.shop_data import ShopData
from engine.errors import PersonaEngineError
from engine.personas.catalog import PersonaCatalog, PersonaSignals
from engine.personas.mix import PersonaMix
from engine.personas.shopping_context import CONTEXTS, DEFAULT_HOLIDAYS
from engine.personas.traits import (
    BRAND_REPEAT,
    BULK,
    CATEGORY,
    CHANNEL,
    DEVICE,
    DISCOUNTED,
    PRICE_LEVEL,
    TAG_PREFIX,
    YES,
    EventFeatures,
    EventFeatureSpace,
    build_event_features,
    describe_feature,
)

FORMAT_VERSION = 2
MODEL_KIND = "persona_inference"
MANIFEST_FILE = "persona_inference.json"
_FOLD_IN_TOLERANCE = 1e-6
# Mixture fold-in stops when no mix moves by more than this: each step costs one pass per persona over
# all events, and the last digits of a posterior mean change nothing downstream (1e-6 took 30 steps
# on the default shop, this 20, for mixes within 2e-5 of each other).
_MIX_FOLD_IN_TOLERANCE = 1e-5
# Explaining every customer works on chunks of customers of about this many customer x column x
# persona cells (a few arrays of 8 bytes per cell: tens of MB).
_EXPLAIN_CELLS_PER_CHUNK = 1 << 22


class PersonaInferenceError(PersonaEngineError, RuntimeError):
    """The model cannot do what was asked: not fitted yet, or mixes that do not fit this model."""


class PersonaModelFormatError(PersonaEngineError, ValueError):
    """A saved persona inference model that cannot be loaded; the message names the file and the problem."""


@dataclass(frozen=True)
class PersonaInferenceConfig:
    """Knobs of the fit. Prior strengths are in pseudo-events, so they compare directly with event counts.

    mix_prior_strength:     starting concentration (pseudo-events) of each "mostly one persona" component
                            of the mix prior; the fit replaces it by the empirical-Bayes estimate.
    mix_prior_dominant_share: starting share of the dominant persona in those components (also fitted).
    context_prior_strength: pseudo-events pulling a context mix towards the customer's overall mix.
    profile_prior_share:    strength of the pull of each persona's behaviour towards the catalog seed,
                            as a share of the average number of events per persona.
    seed_tilt:              factor on the odds of a value a persona's signals name (e.g. its categories).
    seed_damping:           factor on the odds of "yes" for a "low" discount, brand or bulk signal.
    """

    max_iterations: int = 200
    tolerance: float = 1e-5  # stop when the objective per event improves by less than this
    mix_prior_strength: float = 4.0
    mix_prior_dominant_share: float = 0.6
    context_prior_strength: float = 6.0
    profile_prior_share: float = 0.05
    seed_tilt: float = 3.5
    seed_damping: float = 0.4
    fold_in_iterations: int = 100
    holidays: tuple[tuple[int, int], ...] = DEFAULT_HOLIDAYS

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("max_iterations", self.max_iterations >= 1, "an integer >= 1"),
            ("tolerance", self.tolerance >= 0, ">= 0"),
            ("mix_prior_strength", self.mix_prior_strength > 0, "> 0"),
            ("mix_prior_dominant_share", 0 < self.mix_prior_dominant_share < 1, "in (0, 1)"),
            ("context_prior_strength", self.context_prior_strength > 0, "> 0"),
            ("profile_prior_share", self.profile_prior_share > 0, "> 0"),
            ("seed_tilt", self.seed_tilt >= 1, ">= 1"),
            ("seed_damping", 0 < self.seed_damping <= 1, "in (0, 1]"),
            ("fold_in_iterations", self.fold_in_iterations >= 1, "an integer >= 1"),
        ]
        integers = {"max_iterations", "fold_in_iterations"}
        for name, ok, requirement in checks:
            value = getattr(self, name)
            allowed = int if name in integers else int | float
            if (
                isinstance(value, bool)
                or not isinstance(value, allowed)
                or not math.isfinite(value)
                or not ok
            ):
                raise ValueError(f"PersonaInferenceConfig.{name} must be {requirement}, got {value!r}")
        try:
            holidays = tuple((int(month), int(day)) for month, day in self.holidays)
        except (TypeError, ValueError):
            raise ValueError(
                f"PersonaInferenceConfig.holidays must be (month, day) pairs, got {self.holidays!r}"
            ) from None
        object.__setattr__(self, "holidays", holidays)

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["holidays"] = [list(pair) for pair in self.holidays]
        return document

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> PersonaInferenceConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(document) - known)
        if unknown:
            raise ValueError(
                f"unknown persona inference setting(s) {unknown}; known: {', '.join(sorted(known))}"
            )
        return cls(**dict(document))


@dataclass(frozen=True)
class SignalContribution:
    """How much one feature value pulled a customer's events towards a persona.

    ``contribution`` is the responsibility-weighted log-likelihood ratio (nats) of that feature under
    the persona versus the population: positive means the customer's events look like the persona's
    there. ``customer_value``/``population_value``/``persona_value`` are shares of events with the value.
    """

    feature: str
    description: str
    customer_value: float
    population_value: float
    persona_value: float
    contribution: float


SIGNAL_VALUES: tuple[str, ...] = ("customer_value", "population_value", "persona_value", "contribution")


@dataclass(frozen=True)
class StrongestSignals:
    """``explain`` for many customers as arrays: per customer and persona the ``top`` strongest columns.

    column:  (customers, personas, top) int32 feature-space column of each signal, strongest first,
             -1 after the last positive contribution.
    values:  per name in ``SIGNAL_VALUES``, (customers, personas, top) float32 (0 where column is -1),
             the fields of ``SignalContribution``.
    names, descriptions: per feature-space column.
    """

    names: tuple[str, ...]
    descriptions: tuple[str, ...]
    column: NDArray[np.int32]
    values: dict[str, NDArray[np.float32]]


@dataclass(frozen=True)
class InferredMixes:
    """Persona mixes of a set of customers: overall, per shopping context, and the evidence behind them.

    overall:    (customers, personas), each row on the simplex.
    by_context: (customers, len(CONTEXTS), personas); a context with no events equals the overall mix.
    evidence:   the encoded events the mixes came from (needed by ``explain`` and discovery); not saved.
    """

    customer_ids: IdMap
    persona_ids: tuple[str, ...]
    overall: NDArray[np.float64]
    by_context: NDArray[np.float64]
    n_events: NDArray[np.int64]
    n_events_by_context: NDArray[np.int64]
    evidence: EventFeatures | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        n, k = len(self.customer_ids), len(self.persona_ids)
        expected = {
            "overall": (self.overall.shape, (n, k)),
            "by_context": (self.by_context.shape, (n, len(CONTEXTS), k)),
            "n_events": (self.n_events.shape, (n,)),
            "n_events_by_context": (self.n_events_by_context.shape, (n, len(CONTEXTS))),
        }
        for name, (shape, wanted) in expected.items():
            if shape != wanted:
                raise ValueError(f"InferredMixes.{name} has shape {shape}, expected {wanted}")

    def mix(self, customer_id: str, context: str | None = None) -> PersonaMix:
        """One customer's mix, overall or in a context, as a validated PersonaMix."""
        row = self.customer_ids.index(customer_id)
        if context is None:
            return PersonaMix(self.persona_ids, self.overall[row].copy())
        if context not in CONTEXTS:
            raise ValueError(f"unknown context {context!r}; expected one of {', '.join(CONTEXTS)}")
        return PersonaMix(self.persona_ids, self.by_context[row, CONTEXTS.index(context)].copy())

    def to_frame(self) -> pl.DataFrame:
        """One row per customer: event counts, overall and per-context weights as ``<context>__<persona>``."""
        data: dict[str, Any] = {"customer_id": self.customer_ids.ids.tolist(), "n_events": self.n_events}
        for k, persona in enumerate(self.persona_ids):
            data[f"overall__{persona}"] = self.overall[:, k]
        for c, context in enumerate(CONTEXTS):
            data[f"n_events__{context}"] = self.n_events_by_context[:, c]
            for k, persona in enumerate(self.persona_ids):
                data[f"{context}__{persona}"] = self.by_context[:, c, k]
        return pl.DataFrame(data)


@dataclass(frozen=True)
class FitSummary:
    iterations: int
    converged: bool
    objective_per_event: float
    n_events: int
    n_customers: int
    seconds: float | None = None  # wall-clock time of the whole fit (None in models saved before it)


class PersonaInferenceModel:
    """Fits persona behaviour on a shop's events and infers mixes with it.

    Per persona k the model holds, for every event-level column j (discount, brand repeat, channel,
    device), log P(value | k), and for every item-level column (category, price level, tag) a tilt
    w_kj: persona k picks item i with probability q(i) exp(w_k . f(i)) / Z_k, where q is the
    population's item distribution. Tilting the population's own item choice, instead of treating
    category, price level and tags as independent, is what keeps correlated item facts (premium items
    are expensive) from being counted as separate evidence. Either way the log-likelihood of every
    event under every persona is one sparse product: ``features @ parameters + offsets``.
    """

    def __init__(self, config: PersonaInferenceConfig | None = None) -> None:
        self.config = config or PersonaInferenceConfig()
        self._persona_ids: tuple[str, ...] = ()
        self._persona_names: tuple[str, ...] = ()
        self._space: EventFeatureSpace | None = None
        self._parameters = np.zeros((0, 0))
        self._offsets = np.zeros(0)
        self._probabilities = np.zeros((0, 0))
        self._seed_probabilities = np.zeros((0, 0))
        self._marginals = np.zeros(0)
        self._population_mix = np.zeros(0)
        self._mix_prior: MixPrior | None = None
        self._columns: _ColumnFacts | None = None
        self.unmatched_signals: dict[str, tuple[str, ...]] = {}
        self.fit_summary: FitSummary | None = None

    # ------------------------------------------------------------------ state
    @property
    def is_fitted(self) -> bool:
        return self._space is not None

    @property
    def persona_ids(self) -> tuple[str, ...]:
        return self._persona_ids

    @property
    def persona_names(self) -> tuple[str, ...]:
        return self._persona_names

    @property
    def space(self) -> EventFeatureSpace:
        if self._space is None:
            raise PersonaInferenceError(
                "the persona inference model is not fitted; call fit() or load() first"
            )
        return self._space

    @property
    def feature_probabilities(self) -> NDArray[np.float64]:
        """(columns, personas): share of each persona's events with each feature value."""
        self.space  # noqa: B018 - raises when not fitted
        return self._probabilities

    @property
    def population_marginals(self) -> NDArray[np.float64]:
        """(columns,): share of all events with each feature value (over events where it is known)."""
        self.space  # noqa: B018 - raises when not fitted
        return self._marginals

    @property
    def population_mix(self) -> NDArray[np.float64]:
        """The mix of a customer the model knows nothing about: the mean of the mix prior."""
        self.space  # noqa: B018 - raises when not fitted
        return self._population_mix

    @property
    def mix_prior(self) -> MixPrior:
        """The fitted prior over customer mixes (how concentrated on one persona customers are)."""
        if self._mix_prior is None:
            raise PersonaInferenceError(
                "the persona inference model is not fitted; call fit() or load() first"
            )
        return self._mix_prior

    # ------------------------------------------------------------------ fitting
    def fit(
        self, shop: ShopData, catalog: PersonaCatalog, customer_ids: IdMap | None = None
    ) -> InferredMixes:
        """Fit persona behaviour and mixes on all of ``shop.events``; rows follow ``customer_ids``.

        Customers in ``customer_ids`` without events get the population mix.
        """
        started = time.perf_counter()
        cfg = self.config
        features = build_event_features(
            shop.events, shop.items, customer_ids=customer_ids, holidays=cfg.holidays
        )
        if features.n_events == 0:
            raise PersonaInferenceError("cannot fit persona inference: the shop has no events")
        space = features.space
        k = len(catalog)
        item_columns = space.item_columns
        marginals = _population_marginals(features)
        item_choice = _ItemChoice.build(features)
        seed_probabilities, seed_tilts, unmatched = _seed(
            space, marginals, catalog, cfg.seed_tilt, cfg.seed_damping
        )
        strength = cfg.profile_prior_share * float(features.weight.sum()) / k

        parameters = np.where(item_columns[:, None], seed_tilts, np.log(seed_probabilities))
        offsets = -item_choice.log_normalisers(parameters[item_columns])
        seed_probabilities[item_columns] = item_choice.feature_shares(parameters[item_columns])

        weight = features.weight
        total_weight = float(weight.sum())
        event_signatures = _EventSignatures.build(features)
        item_signature = item_choice.signature_of[features.item_index]
        indptr = features.customer_indptr
        group_sum = space.group_sum_matrix
        customer_weights = _sum_segments(weight[None, :], indptr)[0]
        active = customer_weights > 0
        max_concentration = float(np.median(customer_weights[active]))
        mix_prior = MixPrior.mostly_one(
            np.full(k, 1.0 / k), cfg.mix_prior_strength, cfg.mix_prior_dominant_share
        )
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
            posterior = _mix_posterior_step(
                joint, weight, indptr, gamma, mix_prior, mix_prior.log_weights(), keep_tilts=True
            )
            # personas x events, weighted by the events' weights
            responsibilities = _event_responsibilities(joint, weight, indptr, posterior)
            log_likelihood = float(posterior.log_evidence[active].sum() + weight @ scale)
            gamma = posterior.gamma

            # M-step: the mix prior (empirical Bayes), event-level distributions, item-choice tilts.
            mix_prior = mix_prior.refit(posterior, active, max_concentration)
            signature_counts = _sum_by(event_signatures.index, responsibilities, event_signatures.count)
            feature_counts = event_signatures.features.T @ signature_counts.T
            denominators = np.asarray(group_sum @ feature_counts)[space.column_group]
            probabilities = (feature_counts + strength * seed_probabilities) / (denominators + strength)
            tilts = item_choice.fit_tilts(
                _sum_by(item_signature, responsibilities, item_choice.n_signatures).T,
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
        self._persona_ids = catalog.ids
        self._persona_names = catalog.names
        self._space = space
        self._parameters = parameters
        self._offsets = offsets
        self._probabilities = probabilities
        self._seed_probabilities = seed_probabilities
        self._marginals = marginals
        self._mix_prior = mix_prior
        self._population_mix = mix_prior.mean
        self.unmatched_signals = unmatched
        self.fit_summary = FitSummary(
            iteration, converged, objective, features.n_events, features.n_customers
        )
        # The mixes are the converged fold-in under the final model, so ``infer`` on the same events
        # gives the same mixes. The EM's (personas x events) arrays go first: on 10 million events
        # each is 400 MB, and the fold-ins below need several of their own.
        del joint, responsibilities, posterior
        likelihoods, _ = _scaled_likelihoods(features.matrix, parameters, offsets)
        final = _fold_in_mixture(
            likelihoods, weight, indptr, mix_prior, mix_prior.log_weights(), cfg.fold_in_iterations, gamma
        )
        mixes = self._mixes_from(features, final.mean, likelihoods)
        self.fit_summary = replace(self.fit_summary, seconds=time.perf_counter() - started)
        return mixes

    def infer(
        self,
        events: pl.DataFrame,
        items: pl.DataFrame,
        customer_ids: IdMap | None = None,
        prior: NDArray[np.float64] | None = None,
    ) -> InferredMixes:
        """Fold new events into mixes with the fitted persona behaviour, without refitting.

        ``prior`` (customers x personas) centres each customer's mix, e.g. their demographic mix at
        cold start: it sets how likely each persona is to be the customer's dominant one (see
        ``MixPrior.weights_for``); by default the fitted population. Customers without events get
        their prior. Item categories or tags the model never saw carry no evidence.
        """
        space = self.space
        mix_prior = self.mix_prior
        features = build_event_features(
            events, items, customer_ids=customer_ids, space=space, holidays=self.config.holidays
        )
        n, k = features.n_customers, len(self._persona_ids)
        centre: NDArray[np.float64] | None = None
        log_weights = mix_prior.log_weights()
        if prior is not None:
            centre = np.asarray(prior, dtype=np.float64)
            if centre.shape != (n, k):
                raise ValueError(
                    f"prior has shape {centre.shape}, expected ({n}, {k}) (customers x personas)"
                )
            if (centre < 0).any() or not np.allclose(centre.sum(axis=1), 1.0, atol=1e-6):
                raise ValueError("prior rows must be persona mixes: non-negative and summing to 1")
            log_weights = mix_prior.log_weights(centre)
        likelihoods, _ = _scaled_likelihoods(features.matrix, self._parameters, self._offsets)
        posterior = _fold_in_mixture(
            likelihoods,
            features.weight,
            features.customer_indptr,
            mix_prior,
            log_weights,
            self.config.fold_in_iterations,
        )
        theta = posterior.mean
        if centre is not None:
            silent = features.events_per_customer == 0
            theta[silent] = centre[silent]
        return self._mixes_from(features, theta, likelihoods)

    def _mixes_from(
        self,
        features: EventFeatures,
        theta: NDArray[np.float64],
        likelihoods: NDArray[np.float64] | None = None,
    ) -> InferredMixes:
        """Context mixes by fold-in of each context's events, centred on the customer's overall mix."""
        n, k, n_contexts = features.n_customers, len(self._persona_ids), len(CONTEXTS)
        if likelihoods is None:
            likelihoods, _ = _scaled_likelihoods(features.matrix, self._parameters, self._offsets)
        cell = features.customer_index * n_contexts + features.context_index
        by_context = _fold_in(
            likelihoods,
            features.weight,
            cell,
            np.repeat(theta, n_contexts, axis=0),
            self.config.context_prior_strength,
            self.config.fold_in_iterations,
        )
        cell_counts = np.bincount(cell, minlength=n * n_contexts)
        return InferredMixes(
            customer_ids=features.customer_ids,
            persona_ids=self._persona_ids,
            overall=theta,
            by_context=by_context.reshape(n, n_contexts, k),
            n_events=features.events_per_customer.astype(np.int64),
            n_events_by_context=cell_counts.reshape(n, n_contexts).astype(np.int64),
            evidence=features,
        )

    def event_log_likelihoods(self, features: EventFeatures) -> NDArray[np.float64]:
        """(events, personas) log-likelihood of each event under each persona, up to a per-event constant."""
        return np.asarray(features.matrix @ self._parameters) + self._offsets[None, :]

    def column_log_likelihoods(self, column: int) -> NDArray[np.float64]:
        """(personas,) what one event-level feature value (a column of ``space``) adds to an event's score.

        Live scoring adds these to a precomputed per-item score instead of encoding events through
        polars: an event's log-likelihood is its item's row plus one of these per known event fact.
        """
        if self.space.item_columns[column]:
            raise ValueError(f"column {column} is item-level; its part is in the item scores")
        return np.asarray(self._parameters[column], dtype=np.float64).copy()

    def mixes_of_scored_events(
        self,
        log_likelihoods: NDArray[np.float64],
        weight: NDArray[np.float64],
        indptr: NDArray[np.int64],
        centre: NDArray[np.float64],
        strength: float,
        tolerance: float = 1e-4,
    ) -> NDArray[np.float64]:
        """(groups, personas) MAP mixes of groups of already scored events, each with its own prior centre.

        ``log_likelihoods`` is (events, personas) from ``event_log_likelihoods`` or live scoring, the
        events of group g at rows ``indptr[g]:indptr[g + 1]``; ``weight`` scales each event's evidence
        (time decay, repeats). Group g's mix has a Dirichlet prior centred on ``centre[g]`` worth
        ``strength`` events, as context mixes are folded in around the overall mix: with the customer's
        long-term mix as centre this is "what their recent events say, given who they have been", and
        windows of recent events can be folded in by the ten thousand (drift detection). Iterations stop
        when no share moves by more than ``tolerance``: 1e-4 is far below any drift threshold, and took
        a quarter of the steps of training's 1e-6 on the synthetic shop.
        """
        self.space  # noqa: B018 - raises when not fitted
        scores = np.asarray(log_likelihoods, dtype=np.float64)
        k = len(self._persona_ids)
        groups = np.asarray(indptr, dtype=np.int64)
        if scores.ndim != 2 or scores.shape != (weight.size, k) or groups[-1] != weight.size:
            raise ValueError(f"log_likelihoods has shape {scores.shape}, expected ({weight.size}, {k})")
        centres = np.asarray(centre, dtype=np.float64)
        if centres.shape != (groups.size - 1, k):
            raise ValueError(f"centre has shape {centres.shape}, expected ({groups.size - 1}, {k})")
        likelihoods = np.ascontiguousarray((scores - scores.max(axis=1, keepdims=True)).T)
        np.exp(likelihoods, out=likelihoods)
        group_of_event = np.repeat(np.arange(groups.size - 1), np.diff(groups))
        return _fold_in(
            likelihoods,
            np.asarray(weight, dtype=np.float64),
            group_of_event,
            centres,
            strength,
            self.config.fold_in_iterations,
            tolerance,
        )

    # ------------------------------------------------------------------ reading the model
    def explain(
        self, mixes: InferredMixes, customer_index: int, top: int = 3
    ) -> dict[str, list[SignalContribution]]:
        """The feature values that drove each persona's weight for one customer (strongest first).

        For event-level values the contribution is the responsibility-weighted log-likelihood ratio of
        the value under the persona versus the population; for item-level values it is the persona's
        tilt times how much more often than the population the customer's events show the value.
        Only values that pulled towards the persona are listed.
        """
        features = self._evidence_of(mixes)
        if not 0 <= customer_index < features.n_customers:
            raise IndexError(f"customer index {customer_index} out of range 0..{features.n_customers - 1}")
        columns = self._column_facts(self.space)
        column, values = self._strongest_signals_of(
            features, mixes.overall, customer_index, customer_index + 1, top
        )
        explanations: dict[str, list[SignalContribution]] = {}
        for k, persona in enumerate(self._persona_ids):
            chosen = column[0, k][column[0, k] >= 0]
            explanations[persona] = [
                SignalContribution(
                    feature=columns.names[j],
                    description=columns.descriptions[j],
                    **{name: float(values[name][0, k, slot]) for name in SIGNAL_VALUES},
                )
                for slot, j in enumerate(chosen)
            ]
        return explanations

    def strongest_signals(
        self, mixes: InferredMixes, top: int = 3, *, cells_per_chunk: int = _EXPLAIN_CELLS_PER_CHUNK
    ) -> StrongestSignals:
        """``explain`` for every customer of ``mixes`` at once, as arrays (rows in ``mixes`` order).

        Customers are processed in chunks of contiguous events, vectorised within a chunk, so that
        memory stays bounded (about ``cells_per_chunk`` customer x column x persona cells per array)
        and a million customers take seconds rather than the quarter of an hour a loop over
        ``explain`` took.
        """
        if top < 1:
            raise ValueError(f"top must be >= 1, got {top}")
        features = self._evidence_of(mixes)
        n, k = features.n_customers, len(self._persona_ids)
        column = np.full((n, k, top), -1, dtype=np.int32)
        values = {name: np.zeros((n, k, top), dtype=np.float32) for name in SIGNAL_VALUES}
        step = max(1, cells_per_chunk // max(1, self.space.n_columns * k))
        for first in range(0, n, step):
            last = min(n, first + step)
            chunk_column, chunk_values = self._strongest_signals_of(features, mixes.overall, first, last, top)
            column[first:last] = chunk_column
            for name in SIGNAL_VALUES:
                values[name][first:last] = chunk_values[name]
        columns = self._column_facts(self.space)
        return StrongestSignals(columns.names, columns.descriptions, column, values)

    def _strongest_signals_of(
        self, features: EventFeatures, overall: NDArray[np.float64], first: int, last: int, top: int
    ) -> tuple[NDArray[np.int32], dict[str, NDArray[np.float64]]]:
        """(customers, personas, top) strongest columns of customers ``first:last`` and their values.

        Per customer c, event e and persona k: responsibility r[e, k] of the persona for the event
        under the customer's mix; per column j the responsibility-weighted count
        W[c, j, k] = sum over c's events of x[e, j] r[e, k], one sparse (customer*column x events)
        product with r for the whole chunk. Contributions follow from W as documented in ``explain``;
        columns are ranked per customer and persona (stable, so ties keep column order) and only
        positive contributions kept (-1 pads the rest).
        """
        columns = self._column_facts(self.space)
        n_columns, k = self.space.n_columns, len(self._persona_ids)
        indptr = features.customer_indptr
        start, stop = int(indptr[first]), int(indptr[last])
        n = last - first
        lengths = np.diff(indptr[first : last + 1])
        owner = np.repeat(np.arange(n), lengths)
        rows = features.matrix[start:stop]
        scores = np.asarray(rows @ self._parameters) + self._offsets[None, :]
        joint = np.exp(scores - scores.max(axis=1, keepdims=True)) * overall[first:last][owner]
        responsibilities = joint * (features.weight[start:stop] / joint.sum(axis=1))[:, None]
        event_of_entry = np.repeat(np.arange(stop - start), np.diff(rows.indptr))
        cell = owner[event_of_entry] * n_columns + rows.indices
        by_cell = sp.csr_matrix((rows.data, (cell, event_of_entry)), shape=(n * n_columns, stop - start))
        weighted = np.asarray(by_cell @ responsibilities).reshape(n, n_columns, k)
        marginals = self._marginals[None, :, None]
        contribution = weighted * (self._parameters - np.log(self._marginals)[:, None])[None]
        centred = (
            weighted
            - _sum_segments(responsibilities.T, indptr[first : last + 1] - start).T[:, None, :] * marginals
        )
        item = columns.item_columns
        contribution[:, item, :] = self._parameters[None, item, :] * centred[:, item, :]
        counts = np.bincount(cell, weights=rows.data, minlength=n * n_columns).astype(np.float64)
        counts = counts.reshape(n, n_columns)
        known = np.bincount(
            np.repeat(np.arange(n), n_columns) * len(self.space.groups) + np.tile(columns.group, n),
            weights=counts.ravel(),
            minlength=n * len(self.space.groups),
        ).reshape(n, len(self.space.groups))[:, columns.group]
        known[:, columns.binary_columns] = lengths[:, None]
        shares = np.divide(counts, known, out=np.zeros_like(counts), where=known > 0)

        ranked = np.argsort(-contribution, axis=1, kind="stable")[:, :top, :].transpose(0, 2, 1)
        strength = np.take_along_axis(contribution.transpose(0, 2, 1), ranked, axis=2)
        kept = np.logical_and.accumulate(~(strength <= 0), axis=2)
        column = np.where(kept, ranked, -1).astype(np.int32)
        persona = np.broadcast_to(np.arange(k)[None, :, None], ranked.shape)
        values = {
            "customer_value": np.take_along_axis(shares[:, None, :], ranked, axis=2),
            "population_value": self._marginals[ranked],
            "persona_value": self._probabilities[ranked, persona],
            "contribution": strength,
        }
        return column, {name: np.where(kept, value, 0.0) for name, value in values.items()}

    def persona_profiles(self) -> pl.DataFrame:
        """What the data says each persona does: per feature value its share of the persona's events,
        the share the catalog seed started from, the population's share and the lift over it."""
        space = self.space
        names = space.column_names
        records: list[dict[str, Any]] = []
        for k, persona in enumerate(self._persona_ids):
            for group in space.groups:
                for offset, value in enumerate(group.values):
                    j = group.start + offset
                    records.append(
                        {
                            "persona_id": persona,
                            "persona_name": self._persona_names[k],
                            "group": group.name,
                            "value": value,
                            "feature": names[j],
                            "description": describe_feature(names[j]),
                            "probability": float(self._probabilities[j, k]),
                            "seed": float(self._seed_probabilities[j, k]),
                            "population": float(self._marginals[j]),
                            "lift": float(self._probabilities[j, k] / self._marginals[j]),
                        }
                    )
        return pl.DataFrame(records)

    def _column_facts(self, space: EventFeatureSpace) -> _ColumnFacts:
        """Per-column facts of the fitted space, derived once rather than on every explanation."""
        if self._columns is None or self._columns.space is not space:
            self._columns = _ColumnFacts.of(space)
        return self._columns

    def _evidence_of(self, mixes: InferredMixes) -> EventFeatures:
        if mixes.persona_ids != self._persona_ids:
            raise PersonaInferenceError(
                f"mixes are over personas {mixes.persona_ids}, the model over {self._persona_ids}"
            )
        if mixes.evidence is None or mixes.evidence.space != self.space:
            raise PersonaInferenceError(
                "these mixes carry no event evidence from this model; use mixes from fit() or infer()"
            )
        return mixes.evidence

    # ------------------------------------------------------------------ persistence
    def _arrays(self) -> dict[str, NDArray[np.float64]]:
        return {
            "parameters": self._parameters,
            "offsets": self._offsets,
            "feature_probabilities": self._probabilities,
            "seed_probabilities": self._seed_probabilities,
            "population_marginals": self._marginals,
            "population_mix": self._population_mix,
            "mix_prior_weights": self.mix_prior.weights,
            "mix_prior_alphas": self.mix_prior.alphas,
        }

    def save(self, directory: Path) -> list[Path]:
        """Write the model as ``.npy`` arrays plus a JSON manifest (no pickle); returns the files written."""
        space = self.space
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        for name, array in self._arrays().items():
            path = directory / f"{name}.npy"
            np.save(path, np.ascontiguousarray(array, dtype=np.float64), allow_pickle=False)
            written.append(path)
        manifest = {
            "kind": MODEL_KIND,
            "format_version": FORMAT_VERSION,
            "config": self.config.to_json(),
            "persona_ids": list(self._persona_ids),
            "persona_names": list(self._persona_names),
            "feature_space": space.to_json(),
            "unmatched_signals": {p: list(v) for p, v in self.unmatched_signals.items()},
            "fit_summary": asdict(self.fit_summary) if self.fit_summary else None,
        }
        manifest_path = directory / MANIFEST_FILE
        manifest_path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        written.append(manifest_path)
        return written

    @classmethod
    def load(cls, directory: Path) -> PersonaInferenceModel:
        directory = Path(directory)
        manifest_path = directory / MANIFEST_FILE
        if not manifest_path.is_file():
            raise PersonaModelFormatError(f"{manifest_path}: persona inference manifest not found")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise PersonaModelFormatError(f"{manifest_path}: not valid JSON: {error}") from None
        if not isinstance(manifest, dict) or manifest.get("kind") != MODEL_KIND:
            raise PersonaModelFormatError(f"{manifest_path}: not a {MODEL_KIND!r} manifest")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise PersonaModelFormatError(
                f"{manifest_path}: format_version {manifest.get('format_version')!r} is not {FORMAT_VERSION}"
            )
        try:
            model = cls(PersonaInferenceConfig.from_json(manifest["config"]))
            space = EventFeatureSpace.from_json(manifest["feature_space"])
            persona_ids = tuple(str(p) for p in manifest["persona_ids"])
            persona_names = tuple(str(p) for p in manifest["persona_names"])
            unmatched = {str(p): tuple(str(s) for s in v) for p, v in manifest["unmatched_signals"].items()}
            summary = FitSummary(**manifest["fit_summary"]) if manifest.get("fit_summary") else None
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise PersonaModelFormatError(f"{manifest_path}: malformed manifest: {error}") from None
        k, j = len(persona_ids), space.n_columns
        shapes = {
            "parameters": (j, k),
            "offsets": (k,),
            "feature_probabilities": (j, k),
            "seed_probabilities": (j, k),
            "population_marginals": (j,),
            "population_mix": (k,),
            "mix_prior_weights": (k,),
            "mix_prior_alphas": (k, k),
        }
        arrays: dict[str, NDArray[np.float64]] = {}
        for name, shape in shapes.items():
            path = directory / f"{name}.npy"
            if not path.is_file():
                raise PersonaModelFormatError(f"{path}: array file missing")
            try:
                array = np.load(path, allow_pickle=False)
            except ValueError as error:
                raise PersonaModelFormatError(f"{path}: not a plain numeric array: {error}") from None
            if array.shape != shape or not np.all(np.isfinite(array)):
                raise PersonaModelFormatError(
                    f"{path}: shape {array.shape} (expected {shape}) or non-finite values"
                )
            arrays[name] = array.astype(np.float64)
        model._persona_ids, model._persona_names, model._space = persona_ids, persona_names, space
        model._parameters = arrays["parameters"]
        model._offsets = arrays["offsets"]
        model._probabilities = arrays["feature_probabilities"]
        model._seed_probabilities = arrays["seed_probabilities"]
        model._marginals = arrays["population_marginals"]
        model._population_mix = arrays["population_mix"]
        try:
            model._mix_prior = MixPrior(arrays["mix_prior_weights"], arrays["mix_prior_alphas"])
        except ValueError as error:
            raise PersonaModelFormatError(f"{directory}: mix prior arrays are invalid: {error}") from None
        model.unmatched_signals = unmatched
        model.fit_summary = summary
        return model


# ---------------------------------------------------------------------- the numerical core
_NEWTON_STEPS = 2  # per EM iteration; warm-started, so a few suffice for the smooth item-choice fit


@dataclass(frozen=True)
class _ItemChoice:
    """The item-choice part of the model over item signatures (distinct item-level feature rows).

    Items with identical category, price level and tags are indistinguishable to the model, so they
    are pooled: ``features`` is (signatures x item-level columns), ``base`` the population's share of
    events per signature, and personas choose a signature with probability proportional to
    base(s) exp(tilt . features(s)). Pooling keeps the fit's cost independent of the catalog size.
    """

    features: NDArray[np.float64]
    base: NDArray[np.float64]
    signature_of: NDArray[np.int64]  # per item of the event features' item map

    @classmethod
    def build(cls, events: EventFeatures) -> _ItemChoice:
        item_columns = events.space.item_columns
        dense = np.asarray(events.item_matrix[:, item_columns].toarray() > 0)
        packed = np.packbits(dense, axis=1)
        _, first, signature_of = np.unique(packed, axis=0, return_index=True, return_inverse=True)
        counts = np.bincount(events.item_index, weights=events.weight, minlength=len(events.item_ids))
        base = np.bincount(signature_of.ravel(), weights=counts + 0.1, minlength=first.size)
        features = dense[first].astype(np.float64)
        return cls(features, base / base.sum(), signature_of.ravel().astype(np.int64))

    @property
    def n_signatures(self) -> int:
        return int(self.features.shape[0])

    def _choice_probabilities(
        self, tilts: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Per persona, P(signature) (signatures x personas) and log Z (personas,)."""
        scores = self.features @ tilts
        top = scores.max(axis=0)
        unnormalised = self.base[:, None] * np.exp(scores - top)
        totals = unnormalised.sum(axis=0)
        return unnormalised / totals, np.log(totals) + top

    def log_normalisers(self, tilts: NDArray[np.float64]) -> NDArray[np.float64]:
        return self._choice_probabilities(tilts)[1]

    def feature_shares(self, tilts: NDArray[np.float64]) -> NDArray[np.float64]:
        """Share of each persona's item choices showing each item-level value."""
        return np.asarray(self.features.T @ self._choice_probabilities(tilts)[0])

    def fit_tilts(
        self,
        signature_counts: NDArray[np.float64],
        tilts: NDArray[np.float64],
        seed_tilts: NDArray[np.float64],
        strength: float,
    ) -> NDArray[np.float64]:
        """MAP tilts for responsibility-weighted (signatures x personas) counts, Gaussian prior at the seed.

        Newton steps on a concave objective (log-linear choice likelihood minus a quadratic penalty);
        the penalty also pins the directions a categorical group leaves free (adding a constant to
        every category's tilt changes nothing).
        """
        observed = self.features.T @ signature_counts
        totals = signature_counts.sum(axis=0)
        tilts = tilts.copy()
        identity = np.eye(tilts.shape[0])
        for _ in range(_NEWTON_STEPS):
            choice, _ = self._choice_probabilities(tilts)
            expected = self.features.T @ choice
            for k in range(tilts.shape[1]):
                second = (self.features * choice[:, k : k + 1]).T @ self.features
                covariance = second - np.outer(expected[:, k], expected[:, k])
                gradient = (
                    observed[:, k] - totals[k] * expected[:, k] - strength * (tilts[:, k] - seed_tilts[:, k])
                )
                tilts[:, k] += np.linalg.solve(totals[k] * covariance + strength * identity, gradient)
        return tilts


@dataclass(frozen=True)
class _ColumnFacts:
    """Names, descriptions and group layout of a feature space's columns, for explanations."""

    space: EventFeatureSpace
    names: tuple[str, ...]
    descriptions: tuple[str, ...]
    group: NDArray[np.int64]
    item_columns: NDArray[np.bool_]
    binary_columns: NDArray[np.bool_]

    @classmethod
    def of(cls, space: EventFeatureSpace) -> _ColumnFacts:
        names = space.column_names
        return cls(
            space,
            names,
            tuple(describe_feature(name) for name in names),
            space.column_group,
            space.item_columns,
            space.binary_columns,
        )


def _scaled_likelihoods(
    matrix: sp.csr_matrix, parameters: NDArray[np.float64], offsets: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(personas x events) likelihoods, each event's divided by its maximum, and the log of that maximum.

    Personas-by-events layout keeps the per-event reductions over a handful of personas vectorised.
    """
    scaled = np.ascontiguousarray(np.asarray(matrix @ parameters).T)
    scaled += offsets[:, None]
    scale = scaled.max(axis=0)
    scaled -= scale
    np.exp(scaled, out=scaled)
    return scaled, scale


@dataclass(frozen=True)
class _EventSignatures:
    """Distinct rows of the event-level columns (discount, brand repeat, channel, device), per event.

    There are at most a few hundred such combinations, so the event-level log-likelihood is computed
    once per combination and gathered, instead of one sparse product over all events per iteration.
    """

    features: NDArray[np.float64]  # (signatures x all columns), zero in item-level columns
    index: NDArray[np.int64]  # per event

    @classmethod
    def build(cls, events: EventFeatures) -> _EventSignatures:
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


def _sum_segments(values: NDArray[np.float64], indptr: NDArray[np.int64]) -> NDArray[np.float64]:
    """(rows x segments) sums of each row of ``values`` over contiguous event segments (customers)."""
    lengths = np.diff(indptr)
    out = np.zeros((values.shape[0], lengths.size))
    filled = lengths > 0
    if filled.any():
        out[:, filled] = np.add.reduceat(values, indptr[:-1][filled], axis=1)
    return out


def _sum_by(group: NDArray[np.int64], values: NDArray[np.float64], n_groups: int) -> NDArray[np.float64]:
    """(rows x groups) sums of each row of ``values`` (rows x events) over the events of each group."""
    return np.vstack([np.bincount(group, weights=row, minlength=n_groups) for row in values])


def _fold_in(
    likelihoods: NDArray[np.float64],
    weight: NDArray[np.float64],
    group_of_event: NDArray[np.int64],
    centre: NDArray[np.float64],
    strength: float,
    iterations: int,
    tolerance: float = _FOLD_IN_TOLERANCE,
) -> NDArray[np.float64]:
    """MAP (groups x personas) mixes of groups of events with the persona behaviour held fixed.

    ``likelihoods`` is (personas x events). Each group's mix has a Dirichlet prior centred on its row
    of ``centre`` worth ``strength`` pseudo-events, so a group without events keeps its centre and a
    group with few moves only a little.
    """
    n_groups = centre.shape[0]
    order = np.argsort(group_of_event, kind="stable")  # groups contiguous: gathers and sums become segments
    likelihoods, weight = likelihoods[:, order], weight[order]
    lengths = np.bincount(group_of_event, minlength=n_groups)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    sizes = _sum_segments(weight[None, :], indptr)[0]
    prior = strength * np.ascontiguousarray(centre.T)
    theta_all = np.array(centre.T, dtype=np.float64, order="C")  # a copy: filled in place below
    # Groups without events keep their centre; the others iterate until their own mix settles (each
    # group's update depends only on its own events, so settled groups drop out of later passes).
    moving = np.flatnonzero(lengths > 0)
    indptr = np.concatenate([[0], np.cumsum(lengths[moving])]).astype(np.int64)  # every event stays
    prior, sizes, theta = prior[:, moving], sizes[moving], theta_all[:, moving]
    for _ in range(iterations):
        if moving.size == 0:
            break
        joint = np.take(theta, _owners(indptr), axis=1)
        joint *= likelihoods
        joint *= weight / joint.sum(axis=0)
        updated = (_sum_segments(joint, indptr) + prior) / (sizes + strength)
        still = np.abs(updated - theta).max(axis=0) >= tolerance
        theta_all[:, moving] = updated
        theta = updated
        if not still.all():
            moving = moving[still]
            likelihoods, weight, indptr = _select_groups(likelihoods, weight, indptr, still)
            prior, sizes, theta = prior[:, still], sizes[still], theta[:, still]
    return np.ascontiguousarray(theta_all.T, dtype=np.float64)


_MIN_COMPONENT_WEIGHT = 1e-4  # keeps every persona possible as someone's dominant one
_CONCENTRATION_BOUNDS = (1e-3, 1e4)  # Dirichlet parameters of the mix prior stay in this range
_PRIOR_NEWTON_STEPS = 20


@dataclass(frozen=True)
class MixPrior:
    """Prior over customer mixes: a mixture of Dirichlets, component c being "mostly persona c".

    Component c is Dir(alphas[c]) with ``dominant`` on persona c and ``minor`` on each other persona;
    ``weights[c]`` is how common customers dominated by c are. Tying the shape across components
    (one dominant share, one concentration) keeps empirical Bayes stable: free per-component
    parameters collapsed, since the variational posterior understates the uncertainty of small
    weights and the Dirichlet fit then drives them to zero. With ``dominant == minor`` every
    component is the same symmetric Dirichlet, so the family also covers shops of even mixes.
    """

    weights: NDArray[np.float64]  # (components,)
    alphas: NDArray[np.float64]  # (components, personas)

    def __post_init__(self) -> None:
        weights, alphas = np.asarray(self.weights), np.asarray(self.alphas)
        if weights.ndim != 1 or alphas.shape != (weights.size, weights.size):
            raise ValueError(
                f"mix prior needs one weight and one Dirichlet per persona, got weights {weights.shape} "
                f"and alphas {alphas.shape}"
            )
        if (weights < 0).any() or not np.isclose(weights.sum(), 1.0) or (alphas <= 0).any():
            raise ValueError("mix prior weights must be shares summing to 1 and alphas must be positive")
        if not (np.isfinite(weights).all() and np.isfinite(alphas).all()):
            raise ValueError("mix prior weights and alphas must be finite")

    @classmethod
    def mostly_one(
        cls, weights: NDArray[np.float64], concentration: float, dominant_share: float
    ) -> MixPrior:
        """Components of total ``concentration`` putting ``dominant_share`` of it on their persona."""
        k = len(weights)
        if k == 1:
            return cls(np.ones(1), np.full((1, 1), concentration))
        return cls._tied(
            np.asarray(weights, dtype=np.float64),
            concentration * dominant_share,
            concentration * (1.0 - dominant_share) / (k - 1),
        )

    @classmethod
    def _tied(cls, weights: NDArray[np.float64], dominant: float, minor: float) -> MixPrior:
        k = len(weights)
        return cls(weights, np.full((k, k), minor) + np.eye(k) * (dominant - minor))

    @property
    def mean(self) -> NDArray[np.float64]:
        """The prior's mean mix: the population mix of customers nothing is known about."""
        return np.asarray(self.weights @ (self.alphas / self.alphas.sum(axis=1, keepdims=True)))

    @property
    def dominant_share(self) -> float:
        """Expected share of a customer's dominant persona under the prior (1/k for even mixes)."""
        return float(self.alphas[0, 0] / self.alphas[0].sum())

    @property
    def concentration(self) -> float:
        """Total pseudo-events of each component: how far a customer's events must go to move it."""
        return float(self.alphas[0].sum())

    def weights_for(self, centre: NDArray[np.float64]) -> NDArray[np.float64]:
        """(customers x components) weights whose prior mean is each row of ``centre`` where possible.

        The prior mean is linear in the weights, so the weights solve ``weights @ means = centre``; a
        centre giving a persona less than a minor share cannot be matched and is clipped to the
        nearest valid weights (that persona is then never the customer's dominant one).
        """
        means = self.alphas / self.alphas.sum(axis=1, keepdims=True)
        solved = np.linalg.lstsq(means.T, np.asarray(centre, dtype=np.float64).T, rcond=None)[0].T
        solved = np.clip(solved, 0.0, None)
        totals = solved.sum(axis=1, keepdims=True)
        return np.where(totals > 0, solved / np.where(totals > 0, totals, 1.0), self.weights[None, :])

    def log_weights(self, centre: NDArray[np.float64] | None = None) -> NDArray[np.float64]:
        """(components x customers) log weights, or (components x 1) for the population's own."""
        weights = self.weights[:, None] if centre is None else self.weights_for(centre).T
        return np.log(np.maximum(weights, 1e-300))

    def starting_posterior(
        self, weight: NDArray[np.float64], indptr: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        """(components x personas x customers) variational Dirichlets: the prior plus even event shares."""
        sizes = _sum_segments(weight[None, :], indptr)[0]
        k = self.alphas.shape[1]
        return np.asarray(self.alphas[:, :, None] + (sizes / k)[None, None, :])

    def refit(
        self, posterior: _MixPosterior, active: NDArray[np.bool_], max_concentration: float
    ) -> MixPrior:
        """Empirical Bayes: component weights and the tied Dirichlet shape that best explain the posteriors.

        The weights are the mean posterior component probabilities of customers with events; the
        shape maximises the expected Dirichlet log-density of their variational posteriors (the
        M-step of variational EM), a concave problem in (dominant, minor) solved by Newton.

        The concentration is capped at ``max_concentration`` (the fit passes the median customer's
        event weight): a prior worth more than a typical customer's own events would let the prior's
        shape, not the customer, decide most mixes. Without the cap the estimate can run away: the
        variational bound favours concentrated priors, and persona behaviour refitted to pinned mixes
        then reinforces them (on a shop whose customers' events looked alike it grew past 100 and
        mean TV to the planted mixes rose from 0.18 to 0.20).
        """
        share = posterior.component[:, active]
        if share.shape[1] == 0:
            return self
        weights = np.maximum(share.mean(axis=1), _MIN_COMPONENT_WEIGHT)
        weights /= weights.sum()
        k = self.alphas.shape[1]
        if k == 1:
            return MixPrior(weights, self.alphas)
        gamma = posterior.gamma[:, :, active]
        expected_log = digamma(gamma) - digamma(gamma.sum(axis=1, keepdims=True))
        components = np.arange(k)
        on_dominant = expected_log[components, components, :]
        on_minors = expected_log.sum(axis=1) - on_dominant
        mass = float(share.sum())
        dominant, minor = _tied_dirichlet_mle(
            float(self.alphas[0, 0]),
            float(self.alphas[0, 1]),
            float((share * on_dominant).sum()) / mass,
            float((share * on_minors).sum()) / mass,
            k - 1,
            max_concentration,
        )
        return MixPrior._tied(weights, dominant, minor)


def _tied_dirichlet_mle(
    dominant: float,
    minor: float,
    mean_log_dominant: float,
    mean_log_minors: float,
    n_minor: int,
    max_total: float,
) -> tuple[float, float]:
    """Maximise lnG(a + m b) - lnG(a) - m lnG(b) + a E[ln x_dom] + b E[sum ln x_minor] over a, b > 0.

    That is the Dirichlet log-density averaged over posteriors, with a on the dominant persona and b
    on each of the m others, subject to a + m b <= ``max_total``. Newton steps are halved until they
    stay in bounds and do not go downhill; an optimum beyond the cap is replaced by the best shape of
    total ``max_total`` (a one-dimensional concave problem in the dominant share, solved by bisection).
    """
    low, high = _CONCENTRATION_BOUNDS
    m = n_minor

    def value(a: float, b: float) -> float:
        return float(
            gammaln(a + m * b) - gammaln(a) - m * gammaln(b) + a * mean_log_dominant + b * mean_log_minors
        )

    a, b = dominant, minor
    current = value(a, b)
    for _ in range(_PRIOR_NEWTON_STEPS):
        total = a + m * b
        gradient = np.array(
            [
                digamma(total) - digamma(a) + mean_log_dominant,
                m * (digamma(total) - digamma(b)) + mean_log_minors,
            ]
        )
        shared = float(polygamma(1, total))
        hessian = np.array(
            [
                [shared - float(polygamma(1, a)), m * shared],
                [m * shared, m * m * shared - m * float(polygamma(1, b))],
            ]
        )
        step = -np.linalg.solve(hessian, gradient)
        length = 1.0
        while length > 1e-6:
            a_new, b_new = a + length * step[0], b + length * step[1]
            if low <= a_new <= high and low <= b_new <= high:
                candidate = value(a_new, b_new)
                if candidate >= current:
                    break
            length /= 2.0
        else:
            break
        moved = max(abs(a_new - a), abs(b_new - b))
        a, b, current = a_new, b_new, candidate
        if moved < 1e-8:
            break
    total = a + m * b
    if total <= max_total:
        return a, b
    # On the cap the objective's derivative in the dominant share d decreases in d: bisect its root.
    lo, hi = 1e-9, 1.0 - 1e-9
    for _ in range(80):
        share = (lo + hi) / 2.0
        slope = (
            -digamma(max_total * share)
            + digamma(max_total * (1.0 - share) / m)
            + mean_log_dominant
            - mean_log_minors / m
        )
        lo, hi = (share, hi) if slope > 0 else (lo, share)
    share = (lo + hi) / 2.0
    return max_total * share, max_total * (1.0 - share) / m


@dataclass(frozen=True)
class _MixPosterior:
    """Variational posterior of groups' mixes (customers) under a MixPrior, one Dirichlet per component.

    gamma:        (components x personas x groups) variational Dirichlet parameters.
    component:    (components x groups) posterior probability of each component.
    log_evidence: (groups,) the variational bound on log p(events | prior), events' scales excluded.
    """

    gamma: NDArray[np.float64]
    component: NDArray[np.float64]
    log_evidence: NDArray[np.float64]
    # (components x personas x groups) exp(E[log theta] - its max) under the gamma the step started
    # from, kept on request for ``_event_responsibilities`` (saves recomputing the digammas).
    tilts: NDArray[np.float64] | None = field(default=None, repr=False)

    @property
    def mean(self) -> NDArray[np.float64]:
        """(groups x personas) posterior mean mixes."""
        means = self.gamma / self.gamma.sum(axis=1, keepdims=True)
        return np.ascontiguousarray(np.einsum("cn,ckn->nk", self.component, means), dtype=np.float64)


def _mix_posterior_step(
    likelihoods: NDArray[np.float64],
    weight: NDArray[np.float64],
    indptr: NDArray[np.int64],
    gamma: NDArray[np.float64],
    prior: MixPrior,
    log_weights: NDArray[np.float64],
    *,
    keep_tilts: bool = False,
) -> _MixPosterior:
    """One coordinate-ascent update of every group's posterior, per prior component.

    ``likelihoods`` is (personas x events), each event's scaled by a constant, events of a group
    contiguous (``indptr``). Per component the events' persona posteriors follow from the current
    ``gamma`` (LDA-style variational Bayes with the per-event weights as counts), the bound is
    evaluated there, and gamma becomes prior plus expected persona counts. Component probabilities
    are ``log_weights`` (components x groups, or x 1) plus each component's bound, normalised.
    """
    lengths = np.diff(indptr)
    owner = _owners(indptr)
    sizes = _sum_segments(weight[None, :], indptr)[0]
    n_components = gamma.shape[0]
    bounds = np.empty((n_components, lengths.size))
    updated = np.empty_like(gamma)
    tilts = np.empty_like(gamma) if keep_tilts else None
    for c in range(n_components):
        alpha = prior.alphas[c][:, None]
        expected_log, top, tilt = _expected_log_mix(gamma[c])
        if tilts is not None:
            tilts[c] = tilt
        joint = np.take(tilt, owner, axis=1)
        joint *= likelihoods
        total = joint.sum(axis=0)
        joint *= weight / total
        updated[c] = alpha + _sum_segments(joint, indptr)
        fit = _sum_segments((weight * np.log(total))[None, :], indptr)[0] + top * sizes
        bounds[c] = (
            gammaln(alpha.sum())
            - gammaln(alpha).sum()
            - gammaln(gamma[c].sum(axis=0))
            + gammaln(gamma[c]).sum(axis=0)
            + ((alpha - gamma[c]) * expected_log).sum(axis=0)
            + fit
        )
    scores = log_weights + bounds
    best = scores.max(axis=0)
    component = np.exp(scores - best)
    normaliser = component.sum(axis=0)
    component /= normaliser
    return _MixPosterior(updated, component, np.log(normaliser) + best, tilts)


def _expected_log_mix(
    gamma: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """E[log theta] under Dir(gamma) (personas x groups), its per-group maximum, and exp of the difference."""
    expected_log = digamma(gamma) - digamma(gamma.sum(axis=0))
    top = expected_log.max(axis=0)
    return expected_log, top, np.exp(expected_log - top)


def _event_responsibilities(
    likelihoods: NDArray[np.float64],
    weight: NDArray[np.float64],
    indptr: NDArray[np.int64],
    posterior: _MixPosterior,
) -> NDArray[np.float64]:
    """(personas x events) each event's persona posterior, averaged over components, times its weight.

    The per-component event posteriors are those the ``_mix_posterior_step`` that made ``posterior``
    used (its kept tilts); they are recomputed one component at a time rather than kept, so memory
    stays a few (personas x events) arrays whatever the number of components.
    """
    if posterior.tilts is None:
        raise ValueError("responsibilities need a posterior step run with keep_tilts=True")
    owner = _owners(indptr)
    component = posterior.component
    responsibilities = np.zeros_like(likelihoods)
    for c in range(posterior.tilts.shape[0]):
        joint = np.take(posterior.tilts[c], owner, axis=1)
        joint *= likelihoods
        joint *= component[c][owner] * weight / joint.sum(axis=0)
        responsibilities += joint
    return responsibilities


def _fold_in_mixture(
    likelihoods: NDArray[np.float64],
    weight: NDArray[np.float64],
    indptr: NDArray[np.int64],
    prior: MixPrior,
    log_weights: NDArray[np.float64],
    iterations: int,
    gamma: NDArray[np.float64] | None = None,
) -> _MixPosterior:
    """Posterior mixes of groups of contiguous events with the persona behaviour held fixed.

    Iterates ``_mix_posterior_step`` per group until its mix moves by less than
    ``_MIX_FOLD_IN_TOLERANCE`` (or ``iterations`` steps); a group without events keeps the prior
    mean of its component weights. Groups are independent given the persona behaviour, so each stops
    on its own and later steps cover only the groups still moving: a single slow customer used to keep
    all the others iterating (on 200,000 customers, 95 steps over every customer where most converge
    in a few). It also makes a customer's mix independent of who else is in the batch.
    """
    state = prior.starting_posterior(weight, indptr) if gamma is None else gamma
    posterior = _mix_posterior_step(likelihoods, weight, indptr, state, prior, log_weights)
    gamma_all, component, evidence = posterior.gamma, posterior.component, posterior.log_evidence
    mean = posterior.mean
    moving = np.arange(mean.shape[0])
    for _ in range(iterations - 1):
        if moving.size == 0:
            break
        step = _mix_posterior_step(likelihoods, weight, indptr, gamma_all[:, :, moving], prior, log_weights)
        step_mean = step.mean
        moved = np.abs(step_mean - mean[moving]).max(axis=1)
        gamma_all[:, :, moving] = step.gamma
        component[:, moving] = step.component
        evidence[moving] = step.log_evidence
        mean[moving] = step_mean
        still = moved >= _MIX_FOLD_IN_TOLERANCE
        if not still.all():
            moving = moving[still]
            likelihoods, weight, indptr = _select_groups(likelihoods, weight, indptr, still)
            if log_weights.shape[1] > 1:
                log_weights = log_weights[:, still]
    return _MixPosterior(gamma_all, component, evidence)


def _owners(indptr: NDArray[np.int64]) -> NDArray[np.int64]:
    """The group of each event of contiguous groups (``indptr`` as in CSR)."""
    return np.repeat(np.arange(indptr.size - 1), np.diff(indptr))


def _select_groups(
    likelihoods: NDArray[np.float64],
    weight: NDArray[np.float64],
    indptr: NDArray[np.int64],
    keep: NDArray[np.bool_],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """The events of the groups where ``keep`` holds, still contiguous per group, and their indptr."""
    lengths = np.diff(indptr)
    events = np.repeat(keep, lengths)
    kept = lengths[keep]
    return (
        np.ascontiguousarray(likelihoods[:, events]),
        weight[events],
        np.concatenate([[0], np.cumsum(kept)]).astype(np.int64),
    )


def _population_marginals(features: EventFeatures) -> NDArray[np.float64]:
    """Weighted share of each feature value over events where its group is known (kept away from 0 and 1)."""
    space = features.space
    counts = np.asarray(features.matrix.T @ features.weight, dtype=np.float64).ravel() + 0.5
    totals = features.group_counts(counts[None, :])[0]
    totals[space.binary_columns] = float(features.weight.sum()) + 1.0
    return np.asarray(counts / totals, dtype=np.float64)


def _seed(
    space: EventFeatureSpace,
    marginals: NDArray[np.float64],
    catalog: PersonaCatalog,
    tilt: float,
    damping: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64], dict[str, tuple[str, ...]]]:
    """Each persona's starting point: the average shopper, leaning its catalog's way.

    Returns event-level seed probabilities (population marginals with each signalled value's share
    multiplied by its factor, renormalised per group), item-level seed tilts (log of the factors),
    and per persona the signals whose values never occur in the data.
    """
    columns = len(marginals)
    factors = np.ones((columns, len(catalog)))
    unmatched: dict[str, tuple[str, ...]] = {}
    for k, persona in enumerate(catalog.personas):
        missing: list[str] = []
        for group_name, value, factor in _signal_tilts(persona.signals, tilt, damping):
            column = space.column(group_name, value)
            if column is None:
                missing.append(group_name if group_name.startswith(TAG_PREFIX) else f"{group_name}={value}")
            else:
                factors[column, k] *= factor
        if missing:
            unmatched[persona.id] = tuple(missing)
    tilted = marginals[:, None] * factors
    group_totals = np.asarray(space.group_sum_matrix @ tilted)[space.column_group]
    item_columns = space.item_columns[:, None]
    probabilities = np.where(item_columns, marginals[:, None], tilted / group_totals)
    return probabilities, np.where(item_columns, np.log(factors), 0.0), unmatched


def _signal_tilts(signals: PersonaSignals, tilt: float, damping: float) -> list[tuple[str, str, float]]:
    """(feature group, value, factor) for every signal of a persona."""
    tilts: list[tuple[str, str, float]] = []
    level_groups = {"discount_share": DISCOUNTED, "brand_concentration": BRAND_REPEAT, "bulk_share": BULK}
    for signal, group in level_groups.items():
        level = getattr(signals, signal)
        if level == "high":
            tilts.append((group, YES, tilt))
        elif level == "low":
            tilts.append((group, YES, damping))
    if signals.price_level is not None:
        tilts.append((PRICE_LEVEL, signals.price_level, tilt))
    tilts += [(f"{TAG_PREFIX}{tag}", YES, tilt) for tag in signals.tags]
    tilts += [(CATEGORY, category, tilt) for category in signals.categories]
    tilts += [(CHANNEL, channel, tilt) for channel in signals.channels]
    tilts += [(DEVICE, device, tilt) for device in signals.devices]
    return tilts


# ---------------------------------------------------------------------- demographic prior
DEMOGRAPHIC_ATTRIBUTES: tuple[str, ...] = ("age_band", "region", "income_band", "gender", "occupation")


@dataclass(frozen=True)
class DemographicMixPrior:
    """The expected persona mix of a customer known only by demographics (cold start).

    Per attribute value, the mean inferred mix of customers with that value, smoothed towards the
    population mix by ``smoothing`` pseudo-customers; attributes combine naive-Bayes style
    (population mix times each attribute's lift), so unseen or missing values simply add no lift.
    """

    persona_ids: tuple[str, ...]
    population_mix: NDArray[np.float64]
    attribute_mixes: dict[str, dict[str, NDArray[np.float64]]]
    smoothing: float = 20.0

    @classmethod
    def fit(
        cls,
        mixes: InferredMixes,
        customers: pl.DataFrame,
        *,
        attributes: Sequence[str] = DEMOGRAPHIC_ATTRIBUTES,
        smoothing: float = 20.0,
    ) -> DemographicMixPrior:
        """Learn from customers with at least one event; ``customers`` needs customer_id and the attributes.

        Attributes absent from ``customers`` are skipped; rows for customers unknown to ``mixes`` are ignored.
        """
        if smoothing <= 0:
            raise ValueError(f"DemographicMixPrior smoothing must be > 0, got {smoothing}")
        if "customer_id" not in customers.columns:
            raise ValueError("customers table for the demographic prior lacks column customer_id")
        k = len(mixes.persona_ids)
        rows = mixes.customer_ids.to_internal(customers["customer_id"].cast(pl.Utf8).to_list(), strict=False)
        usable = rows >= 0
        usable[usable] = mixes.n_events[rows[usable]] > 0
        warm = mixes.n_events > 0
        population = mixes.overall[warm].mean(axis=0) if warm.any() else np.full(k, 1.0 / k)
        table: dict[str, dict[str, NDArray[np.float64]]] = {}
        for attribute in attributes:
            if attribute not in customers.columns:
                continue
            column = customers[attribute].cast(pl.Utf8)
            present = usable & column.is_not_null().to_numpy()
            values = sorted(column.filter(pl.Series(present)).unique().to_list())
            codes = column.replace_strict(values, list(range(len(values))), default=-1, return_dtype=pl.Int64)
            code_of = codes.to_numpy()[present]
            totals = np.zeros((len(values), k))
            np.add.at(totals, code_of, mixes.overall[rows[present]])
            members = np.bincount(code_of, minlength=len(values)).astype(np.float64)
            smoothed = (totals + smoothing * population) / (members[:, None] + smoothing)
            table[attribute] = {value: smoothed[i] for i, value in enumerate(values)}
        return cls(tuple(mixes.persona_ids), population, table, smoothing)

    def mix_for(
        self, age_band: str | None = None, region: str | None = None, income_band: str | None = None
    ) -> NDArray[np.float64]:
        """The cold-start mix for one customer's demographics (None or unseen values add nothing)."""
        given = {"age_band": age_band, "region": region, "income_band": income_band}
        frame = pl.DataFrame(
            {name: [value] for name, value in given.items()}, schema=dict.fromkeys(given, pl.Utf8)
        )
        return self.mix_for_frame(frame)[0]

    def mix_for_frame(self, frame: pl.DataFrame) -> NDArray[np.float64]:
        """Cold-start mixes for every row of a frame with (some of) the demographic columns."""
        log_mix = np.tile(np.log(self.population_mix), (frame.height, 1))
        for attribute, per_value in self.attribute_mixes.items():
            if attribute not in frame.columns or not per_value:
                continue
            values = list(per_value)
            lifts = np.vstack(
                [np.log(per_value[v]) - np.log(self.population_mix) for v in values]
                + [np.zeros(len(self.persona_ids))]
            )
            index = {v: i for i, v in enumerate(values)}
            codes = np.fromiter(
                (
                    index.get(v, len(values)) if v is not None else len(values)
                    for v in frame[attribute].cast(pl.Utf8).to_list()
                ),
                dtype=np.int64,
                count=frame.height,
            )
            log_mix += lifts[codes]
        log_mix -= log_mix.max(axis=1, keepdims=True)
        mix = np.exp(log_mix)
        return np.asarray(mix / mix.sum(axis=1, keepdims=True), dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        return {
            "persona_ids": list(self.persona_ids),
            "population_mix": self.population_mix.tolist(),
            "smoothing": self.smoothing,
            "attribute_mixes": {
                a: {v: m.tolist() for v, m in values.items()} for a, values in self.attribute_mixes.items()
            },
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> DemographicMixPrior:
        try:
            persona_ids = tuple(str(p) for p in document["persona_ids"])
            k = len(persona_ids)

            def vector(raw: Any, where: str) -> NDArray[np.float64]:
                array = np.asarray(raw, dtype=np.float64)
                if array.shape != (k,) or (array <= 0).any() or not np.isclose(array.sum(), 1.0):
                    raise ValueError(f"{where} must be {k} positive weights summing to 1")
                return array

            return cls(
                persona_ids=persona_ids,
                population_mix=vector(document["population_mix"], "population_mix"),
                attribute_mixes={
                    str(a): {str(v): vector(m, f"attribute_mixes.{a}.{v}") for v, m in values.items()}
                    for a, values in document["attribute_mixes"].items()
                },
                smoothing=float(document["smoothing"]),
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"malformed demographic mix prior: {error}") from None

    def save(self, path: Path) -> Path:
        Path(path).write_text(json.dumps(self.to_json(), indent=2), encoding="utf-8")
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> DemographicMixPrior:
        path = Path(path)
        if not path.is_file():
            raise PersonaModelFormatError(f"{path}: demographic mix prior file not found")
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, ValueError) as error:
            raise PersonaModelFormatError(f"{path}: {error}") from None
