"""The persona inference model: fit persona behaviour on a shop's events, then infer mixes with it.

The model ties the parts of this package together: the EM fit (``em_fit``), fold-in of new events
(``fold_in``), context mixes, the evidence behind each weight (``signals``) and the model files
(``model_files``). It is what training fits and saves, and what serving, drift and discovery load.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl
from numpy.typing import NDArray

from engine.data.id_map import IdMap
from engine.data.shop_data import ShopData
from engine.personas.catalog import PersonaCatalog
from engine.personas.event_encoding import build_event_features
from engine.personas.inference.behaviour import PersonaBehaviour
from engine.personas.inference.config import PersonaInferenceConfig
from engine.personas.inference.em_fit import (
    BehaviourFit,
    FitSummary,
    chunk_size,
    customer_chunks,
    fit_behaviour,
    map_chunks,
)
from engine.personas.inference.errors import PersonaInferenceError
from engine.personas.inference.fold_in import (
    fold_in,
    fold_in_by_context,
    fold_in_mixture,
    scaled_likelihoods,
)
from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.inference.mix_prior import MixPrior
from engine.personas.inference.model_files import SavedModel, load_model, save_model
from engine.personas.inference.signals import (
    CUSTOMER_SIGNAL_VALUES,
    SIGNAL_VALUES,
    ColumnFacts,
    SignalContribution,
    StrongestSignals,
    explain_into,
    signal_index_dtype,
    strongest_signals_of,
)
from engine.personas.shopping_context import CONTEXTS
from engine.personas.traits import EventFeatures, EventFeatureSpace, describe_feature

BehaviourFitter = Callable[[EventFeatures, PersonaCatalog, PersonaInferenceConfig], BehaviourFit]
"""Fits persona behaviour on event features: ``em_fit.fit_behaviour`` or a distributed equivalent."""

# Explaining every customer works on chunks of customers of about this many customer x column x
# persona cells (a few arrays of 8 bytes per cell: tens of MB).
_EXPLAIN_CELLS_PER_CHUNK = 1 << 22


class PersonaInferenceModel:
    """Fits persona behaviour on a shop's events and infers mixes with it.

    The fitted behaviour (``PersonaBehaviour``) holds per persona a distribution over each event-level
    fact and a tilt of the population's item choice; mixes are posterior means under a fitted
    "mostly one persona" prior (``MixPrior``), and context mixes are shrunk towards the customer's
    overall mix. The fitted model folds in new events without refitting, with the same prior, which
    is what serving and cold start need.
    """

    def __init__(self, config: PersonaInferenceConfig | None = None) -> None:
        self.config = config or PersonaInferenceConfig()
        self._behaviour: PersonaBehaviour | None = None
        self._columns: ColumnFacts | None = None
        self.unmatched_signals: dict[str, tuple[str, ...]] = {}
        self.fit_summary: FitSummary | None = None

    # ------------------------------------------------------------------ state
    @property
    def is_fitted(self) -> bool:
        return self._behaviour is not None

    @property
    def behaviour(self) -> PersonaBehaviour:
        """The fitted persona behaviour (parameters, shares, mix prior)."""
        if self._behaviour is None:
            raise PersonaInferenceError(
                "the persona inference model is not fitted; call fit() or load() first"
            )
        return self._behaviour

    @property
    def persona_ids(self) -> tuple[str, ...]:
        return self._behaviour.persona_ids if self._behaviour is not None else ()

    @property
    def persona_names(self) -> tuple[str, ...]:
        return self._behaviour.persona_names if self._behaviour is not None else ()

    @property
    def space(self) -> EventFeatureSpace:
        return self.behaviour.space

    @property
    def feature_probabilities(self) -> NDArray[np.float64]:
        """(columns, personas): share of each persona's events with each feature value."""
        return self.behaviour.probabilities

    @property
    def population_marginals(self) -> NDArray[np.float64]:
        """(columns,): share of all events with each feature value (over events where it is known)."""
        return self.behaviour.marginals

    @property
    def population_mix(self) -> NDArray[np.float64]:
        """The mix of a customer the model knows nothing about: the mean of the mix prior."""
        return self.behaviour.population_mix

    @property
    def mix_prior(self) -> MixPrior:
        """The fitted prior over customer mixes (how concentrated on one persona customers are)."""
        return self.behaviour.mix_prior

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        shop: ShopData,
        catalog: PersonaCatalog,
        customer_ids: IdMap | None = None,
        *,
        behaviour_fit: BehaviourFitter = fit_behaviour,
        event_indices: tuple[NDArray[np.int64], NDArray[np.int64]] | None = None,
    ) -> InferredMixes:
        """Fit persona behaviour and mixes on all of ``shop.events``; rows follow ``customer_ids``.

        Customers in ``customer_ids`` without events get the population mix. ``behaviour_fit`` runs
        the EM: the local one by default, or one with the same result type that spreads the E-step
        over a cluster (``training.spark.persona_em``). ``event_indices``: the events' rows in
        ``customer_ids`` and in ``shop.items`` when the caller has them (see ``build_event_features``).
        """
        started = time.perf_counter()
        cfg = self.config
        features = build_event_features(
            shop.events,
            shop.items,
            customer_ids=customer_ids,
            holidays=cfg.holidays,
            indices=event_indices,
        )
        if features.n_events == 0:
            raise PersonaInferenceError("cannot fit persona inference: the shop has no events")
        sample = em_sample(features.n_customers, cfg.em_customers)
        fitted = behaviour_fit(features if sample is None else features.of_customers(sample), catalog, cfg)
        behaviour = fitted.behaviour
        self._behaviour = behaviour
        self.unmatched_signals = fitted.unmatched_signals
        self.fit_summary = FitSummary(
            fitted.iterations,
            fitted.converged,
            fitted.objective_per_event,
            features.n_events,
            features.n_customers,
            em_customers=None if sample is None else int(sample.size),
        )
        # The mixes are the converged fold-in under the final model, so ``infer`` on the same events
        # gives the same mixes. A fit on a sample warm-starts nobody: most customers were not in it.
        mixes = self._fold_in_chunks(
            features, behaviour.mix_prior.log_weights(), fitted.gamma if sample is None else None
        )
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
            events,
            items,
            customer_ids=customer_ids,
            space=space,
            holidays=self.config.holidays,
        )
        n, k = features.n_customers, len(self.persona_ids)
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
        return self._fold_in_chunks(features, log_weights, centre=centre)

    def _fold_in_chunks(
        self,
        features: EventFeatures,
        log_weights: NDArray[np.float64],
        gamma: NDArray[np.float64] | None = None,
        centre: NDArray[np.float64] | None = None,
    ) -> InferredMixes:
        """Every customer's overall mix (``fold_in_mixture``) and context mixes, a chunk of customers at once.

        Customers fold in independently, so chunks give the mixes of one pass over everyone while
        the (personas x events) likelihoods exist for one chunk at a time; each chunk's likelihoods
        serve both fold-ins. A context's mix is the fold-in of its events centred on the customer's
        overall mix, which ``centre`` (customers x personas) replaces for customers without events.
        """
        behaviour, cfg = self.behaviour, self.config
        n, k, n_contexts = features.n_customers, len(self.persona_ids), len(CONTEXTS)
        indptr = features.customer_indptr
        theta = np.empty((n, k))
        by_context = np.empty((n * n_contexts, k))

        def fold(chunk: tuple[int, int]) -> None:
            first, last = chunk
            start, stop = int(indptr[first]), int(indptr[last])
            likelihoods, _ = scaled_likelihoods(
                features.matrix, behaviour.parameters, behaviour.offsets, (start, stop)
            )
            weight = features.weight[start:stop]
            posterior = fold_in_mixture(
                likelihoods,
                weight,
                indptr[first : last + 1] - start,
                behaviour.mix_prior,
                log_weights if log_weights.shape[1] == 1 else log_weights[:, first:last],
                cfg.fold_in_iterations,
                None if gamma is None else gamma[:, :, first:last],
            )
            overall = posterior.mean
            if centre is not None:
                silent = indptr[first + 1 : last + 1] == indptr[first:last]
                overall[silent] = centre[first:last][silent]
            theta[first:last] = overall
            by_context[first * n_contexts : last * n_contexts] = fold_in_by_context(
                likelihoods,
                weight,
                indptr[first : last + 1] - start,
                features.context_index[start:stop],
                n_contexts,
                overall,
                cfg.context_prior_strength,
                cfg.fold_in_iterations,
            )

        map_chunks(fold, customer_chunks(indptr, chunk_size(n, cfg)), cfg.threads)
        # one array for the (customer, context) cells, the context added in place
        cell = features.customer_index * n_contexts
        cell += features.context_index
        cell_counts = np.bincount(cell, minlength=n * n_contexts)
        del cell
        return InferredMixes(
            customer_ids=features.customer_ids,
            persona_ids=self.persona_ids,
            overall=theta,
            by_context=by_context.reshape(n, n_contexts, k),
            n_events=features.events_per_customer.astype(np.int64),
            n_events_by_context=cell_counts.reshape(n, n_contexts).astype(np.int64),
            evidence=features,
        )

    def event_log_likelihoods(self, features: EventFeatures) -> NDArray[np.float64]:
        """(events, personas) log-likelihood of each event under each persona, up to a per-event constant."""
        return np.asarray(features.matrix @ self.behaviour.parameters) + self.behaviour.offsets[None, :]

    def column_log_likelihoods(self, column: int) -> NDArray[np.float64]:
        """(personas,) what one event-level feature value (a column of ``space``) adds to an event's score.

        Live scoring adds these to a precomputed per-item score instead of encoding events through
        polars: an event's log-likelihood is its item's row plus one of these per known event fact.
        """
        if self.space.item_columns[column]:
            raise ValueError(f"column {column} is item-level; its part is in the item scores")
        return np.asarray(self.behaviour.parameters[column], dtype=np.float64).copy()

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
        k = len(self.persona_ids)
        groups = np.asarray(indptr, dtype=np.int64)
        if scores.ndim != 2 or scores.shape != (weight.size, k) or groups[-1] != weight.size:
            raise ValueError(f"log_likelihoods has shape {scores.shape}, expected ({weight.size}, {k})")
        centres = np.asarray(centre, dtype=np.float64)
        if centres.shape != (groups.size - 1, k):
            raise ValueError(f"centre has shape {centres.shape}, expected ({groups.size - 1}, {k})")
        likelihoods = np.ascontiguousarray((scores - scores.max(axis=1, keepdims=True)).T)
        np.exp(likelihoods, out=likelihoods)
        group_of_event = np.repeat(np.arange(groups.size - 1), np.diff(groups))
        return fold_in(
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
        column, values = strongest_signals_of(
            self.behaviour, columns, features, mixes.overall, customer_index, customer_index + 1, top
        )
        explanations: dict[str, list[SignalContribution]] = {}
        for k, persona in enumerate(self.persona_ids):
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
        n, k = features.n_customers, len(self.persona_ids)
        top = min(top, self.space.n_columns)
        column = np.full((n, k, top), -1, dtype=signal_index_dtype(self.space.n_columns))
        values = np.zeros((len(CUSTOMER_SIGNAL_VALUES), n, k, top), dtype=np.float32)
        columns = self._column_facts(self.space)
        step = max(1, cells_per_chunk // max(1, self.space.n_columns * k))

        def explain_chunk(chunk: tuple[int, int]) -> None:
            first, last = chunk
            explain_into(
                self.behaviour, columns, features, mixes.overall, first, last,
                column[first:last], values[:, first:last],
            )  # fmt: skip

        # the compiled pass releases the GIL: chunks on the configured threads, each writing its rows
        if n:
            map_chunks(explain_chunk, customer_chunks(features.customer_indptr, step), self.config.threads)
        named = {name: values[i] for i, name in enumerate(CUSTOMER_SIGNAL_VALUES)}
        behaviour = self.behaviour
        return StrongestSignals(
            columns.names,
            columns.descriptions,
            column,
            named,
            np.asarray(behaviour.marginals, dtype=np.float32),
            np.asarray(behaviour.probabilities, dtype=np.float32),
        )

    def persona_profiles(self) -> pl.DataFrame:
        """What the data says each persona does: per feature value its share of the persona's events,
        the share the catalog seed started from, the population's share and the lift over it."""
        behaviour = self.behaviour
        space = behaviour.space
        names = space.column_names
        records: list[dict[str, Any]] = []
        for k, persona in enumerate(self.persona_ids):
            for group in space.groups:
                for offset, value in enumerate(group.values):
                    j = group.start + offset
                    records.append(
                        {
                            "persona_id": persona,
                            "persona_name": self.persona_names[k],
                            "group": group.name,
                            "value": value,
                            "feature": names[j],
                            "description": describe_feature(names[j]),
                            "probability": float(behaviour.probabilities[j, k]),
                            "seed": float(behaviour.seed_probabilities[j, k]),
                            "population": float(behaviour.marginals[j]),
                            "lift": float(behaviour.probabilities[j, k] / behaviour.marginals[j]),
                        }
                    )
        return pl.DataFrame(records)

    def _column_facts(self, space: EventFeatureSpace) -> ColumnFacts:
        """Per-column facts of the fitted space, derived once rather than on every explanation."""
        if self._columns is None or self._columns.space is not space:
            self._columns = ColumnFacts.of(space)
        return self._columns

    def _evidence_of(self, mixes: InferredMixes) -> EventFeatures:
        if mixes.persona_ids != self.persona_ids:
            raise PersonaInferenceError(
                f"mixes are over personas {mixes.persona_ids}, the model over {self.persona_ids}"
            )
        if mixes.evidence is None or mixes.evidence.space != self.space:
            raise PersonaInferenceError(
                "these mixes carry no event evidence from this model; use mixes from fit() or infer()"
            )
        return mixes.evidence

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path) -> list[Path]:
        """Write the model as ``.npy`` arrays plus a JSON manifest (no pickle); returns the files written."""
        saved = SavedModel(self.config, self.behaviour, self.unmatched_signals, self.fit_summary)
        return save_model(directory, saved)

    @classmethod
    def load(cls, directory: Path) -> PersonaInferenceModel:
        saved = load_model(directory)
        model = cls(saved.config)
        model._behaviour = saved.behaviour
        model.unmatched_signals = saved.unmatched_signals
        model.fit_summary = saved.fit_summary
        return model


EM_SAMPLE_SEED: Final = 20_161


def em_sample(n_customers: int, em_customers: int) -> NDArray[np.int64] | None:
    """Increasing positions of the customers the EM fits on, or None for all of them.

    A seeded uniform sample: the same data gives the same sample, hence the same behaviour and mixes.
    """
    if em_customers == 0 or n_customers <= em_customers:
        return None
    rng = np.random.default_rng(EM_SAMPLE_SEED)
    return np.sort(rng.choice(n_customers, size=em_customers, replace=False)).astype(np.int64)
