"""Which persona mix a request is served with, and where that mix came from.

In order of precedence:

1. the mix the request gives (validated once, where it is built: ``PersonaMix.from_entries`` for a
   gRPC request, ``from_mapping`` for the CLI): source REQUEST;
2. the customer's inferred mix for the request's shopping context (weekday or weekend/holiday), or
   the overall inferred mix when no context is given: source INFERRED;
3. a customer the artifact knows without events (only in the customers table) gets the demographic
   prior of their age band, region and income band: source PRIOR;
4. an id the artifact has never seen gets the population's average mix: source PRIOR. (The
   demographic prior would need demographics, which requests do not carry.)

``CustomerMixes`` holds the stored mixes (2-4) and ``MixResolver`` applies the order above. A
resolver built with live state (``engine.live.customer_state``) hands the mix of 2-4 to it as the
long-term mix: a customer with recent session events gets the blend of that mix and their session's
(source LIVE), and whatever the live state holds (items just bought, drift) travels with the resolved
mix. A mix given in the request is never overridden. The live state is a constructor argument, never
set on a resolver afterwards, so a resolver resolves the same way for its whole life; a model that
gains live state gets a new resolver (``Personalizer.use_live_state``).

Priors for the customers without events are computed once at load, so resolving is a look-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple, Protocol

import numpy as np
import polars as pl
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.data.feature_space import ABOVE_MEAN, BELOW_MEAN, DEMOGRAPHIC_COLUMNS, FeatureSpace
from engine.data.id_map import IdMap
from engine.personas.drift import DriftStatus
from engine.personas.inference.demographic_prior import DemographicMixPrior
from engine.personas.mix import PersonaMix, normalize_rows
from engine.personas.shopping_context import CONTEXTS

UNKNOWN_ROW = -1


class MixSource(StrEnum):
    REQUEST = "request"
    INFERRED = "inferred"
    PRIOR = "prior"
    LIVE = "live"  # the inferred or prior mix, moved by the customer's current session
    DRIFT = "drift"  # a drifting customer: their recent mix (since the drift began), moved by the session


class LiveInteraction(NamedTuple):
    """One event of a customer's live state as serving folds it in: when (UTC seconds), what, which type."""

    timestamp: float
    item_id: str
    event_type: str


@dataclass(frozen=True)
class LiveView:
    """What a customer's live state changes about serving them right now.

    ``mix`` is None when no session evidence is left (the long-term mix stands); ``purchased_item_ids``
    are bought since the artifact was trained and must not be recommended again. ``recent_mix``: the
    customer drifts, and ``mix`` starts from their recent mix instead of the long-term one.

    ``events``: the customer's kept events (the last ``max_events``, in time order). Serving folds
    those after the artifact's data into the customer's vector, as a refit on them would place the
    customer (``engine.ranking.unlearned_events``): the mix alone barely moves a known customer's list.
    """

    mix: PersonaMix | None
    purchased_item_ids: tuple[str, ...] = ()
    drift: DriftStatus | None = None
    recent_mix: bool = False
    events: tuple[LiveInteraction, ...] = ()


class LiveMixes(Protocol):
    """Live customer state as mix resolution sees it (``engine.live.customer_state.LiveCustomerStates``)."""

    def live_view(self, customer_id: str, long_term: PersonaMix) -> LiveView | None: ...


@dataclass(frozen=True)
class ResolvedMix:
    """The mix a request uses; ``row`` is the customer's artifact row, or -1 for unknown ids."""

    customer_id: str
    row: int
    mix: PersonaMix
    source: MixSource
    has_events: bool
    live: LiveView | None = field(default=None, compare=False)
    # For a mix the request gave a known customer: the mix they would have had in this context (how far
    # the request moves them decides how much it steers, ``engine.personas.steering``).
    own: PersonaMix | None = field(default=None, compare=False)


def demographic_frame(demographics: sp.csr_matrix, space: FeatureSpace) -> pl.DataFrame:
    """Decode encoded rows back into one column per demographic attribute.

    One-hot ``column=value`` features become a string column; a numeric extra feature's
    ``:above_mean``/``:below_mean`` pair becomes its standardized value z (0 when neither is set).
    """
    n = demographics.shape[0]
    text_names = list(DEMOGRAPHIC_COLUMNS)
    numeric_names: list[str] = []
    for name in space.names:
        if name.endswith(ABOVE_MEAN):
            numeric_names.append(name.removesuffix(ABOVE_MEAN))
        elif "=" in name and name.partition("=")[0] not in text_names:
            text_names.append(name.partition("=")[0])
    categories: dict[str, list[str]] = {c: [] for c in text_names}
    codes = {c: np.full(n, -1, dtype=np.int64) for c in text_names}
    numbers = {c: np.zeros(n) for c in numeric_names}
    # column by column, in column order: a row's later column wins and its numbers add up in the same
    # order as a row-by-row walk would, without a Python step per stored value (millions of customers)
    by_column = sp.csc_matrix(demographics)
    by_column.sort_indices()
    for column, name in enumerate(space.names):
        span = slice(by_column.indptr[column], by_column.indptr[column + 1])
        rows, values = by_column.indices[span], by_column.data[span]
        if name.endswith(ABOVE_MEAN):
            numbers[name.removesuffix(ABOVE_MEAN)][rows] += values
        elif name.endswith(BELOW_MEAN):
            numbers[name.removesuffix(BELOW_MEAN)][rows] -= values
        else:
            attribute, _, category = name.partition("=")
            if attribute in codes:
                codes[attribute][rows] = len(categories[attribute])
                categories[attribute].append(category)
    text = {c: _decoded(c, categories[c], codes[c]) for c in text_names}
    frame = pl.DataFrame(text, schema=dict.fromkeys(text_names, pl.Utf8))
    return frame.with_columns([pl.Series(c, v, dtype=pl.Float64) for c, v in numbers.items()])


def _decoded(name: str, categories: list[str], codes: NDArray[np.int64]) -> pl.Series:
    """The category of each row (null where ``codes`` is -1)."""
    if not categories:
        return pl.Series(name, [None] * codes.size, dtype=pl.Utf8)
    values = pl.Series(name, categories, dtype=pl.Utf8).gather(np.maximum(codes, 0))
    return values.set(pl.Series(codes < 0), None)


class CustomerMixes:
    """Every known customer's mixes (overall and per context), with priors for those without events."""

    def __init__(
        self,
        persona_ids: Sequence[str],
        customers: IdMap,
        *,
        overall: NDArray[np.floating],
        by_context: NDArray[np.floating],
        n_events: NDArray[np.integer],
        population_mix: NDArray[np.floating],
        prior_for_eventless: NDArray[np.floating] | None = None,
    ) -> None:
        """``prior_for_eventless`` holds one prior mix per customer with no events, in row order."""
        self.persona_ids = tuple(persona_ids)
        self.customers = customers
        k, n = len(self.persona_ids), len(customers)
        population = np.asarray(population_mix, dtype=np.float64)
        self.population_mix = population / population.sum()
        self.overall = normalize_rows(np.asarray(overall, dtype=np.float64), fallback=self.population_mix)
        contexts = np.asarray(by_context, dtype=np.float64)
        if self.overall.shape != (n, k) or contexts.shape != (n, len(CONTEXTS), k):
            raise ValueError(
                f"mixes have shapes {self.overall.shape} and {contexts.shape}, "
                f"expected ({n}, {k}) and ({n}, {len(CONTEXTS)}, {k})"
            )
        self.by_context = normalize_rows(contexts.reshape(-1, k), fallback=self.population_mix).reshape(
            contexts.shape
        )
        self.has_events = np.asarray(n_events) > 0
        if prior_for_eventless is not None:
            eventless = np.flatnonzero(~self.has_events)
            prior = normalize_rows(
                np.asarray(prior_for_eventless, dtype=np.float64), fallback=self.population_mix
            )
            if prior.shape != (len(eventless), k):
                raise ValueError(f"{prior.shape[0]} priors for {len(eventless)} customers without events")
            self.overall[eventless] = prior
            self.by_context[eventless] = prior[:, None, :]

    @classmethod
    def with_demographic_prior(
        cls,
        persona_ids: Sequence[str],
        customers: IdMap,
        *,
        overall: NDArray[np.floating],
        by_context: NDArray[np.floating],
        n_events: NDArray[np.integer],
        prior: DemographicMixPrior,
        demographics: sp.csr_matrix,
        demographic_space: FeatureSpace,
    ) -> CustomerMixes:
        eventless = np.flatnonzero(np.asarray(n_events) <= 0)
        frame = demographic_frame(demographics[eventless], demographic_space)
        return cls(
            persona_ids,
            customers,
            overall=overall,
            by_context=by_context,
            n_events=n_events,
            population_mix=prior.population_mix,
            prior_for_eventless=prior.mix_for_frame(frame) if len(eventless) else None,
        )

    def row_of(self, customer_id: str) -> int:
        return self.customers.index(customer_id) if customer_id in self.customers else UNKNOWN_ROW

    def stored(self, row: int, context: str | None = None) -> PersonaMix:
        """The stored mix of a known row (overall, or for a context), or the population's for -1.

        Stored mixes were normalised onto the simplex at load, so they are not checked again here.
        """
        if row == UNKNOWN_ROW:
            weights = self.population_mix
        elif context is None:
            weights = self.overall[row]
        elif context in CONTEXTS:
            weights = self.by_context[row, CONTEXTS.index(context)]
        else:
            raise ValueError(f"unknown context {context!r}; expected one of {', '.join(CONTEXTS)}")
        return PersonaMix.of_checked(self.persona_ids, weights.copy())


class MixResolver:
    """The mix each request is served with: the request's, else the stored one moved by live state."""

    def __init__(self, mixes: CustomerMixes, live: LiveMixes | None = None) -> None:
        self.mixes = mixes
        self._live = live

    @property
    def live(self) -> LiveMixes | None:
        return self._live

    def resolve(
        self, customer_id: str, requested: PersonaMix | None = None, context: str | None = None
    ) -> ResolvedMix:
        mixes = self.mixes
        row = mixes.row_of(customer_id)
        has_events = row != UNKNOWN_ROW and bool(mixes.has_events[row])
        if requested is not None:
            if requested.personas != mixes.persona_ids:
                raise ValueError(
                    f"mix is over personas {requested.personas}, the artifact's {mixes.persona_ids}"
                )
            own = mixes.stored(row, context) if row != UNKNOWN_ROW else None
            return ResolvedMix(customer_id, row, requested, MixSource.REQUEST, has_events, own=own)
        source = MixSource.INFERRED if has_events else MixSource.PRIOR
        stored = mixes.stored(row, context)
        view = self._live.live_view(customer_id, stored) if self._live is not None else None
        if view is not None and view.mix is not None:
            live = MixSource.DRIFT if view.recent_mix else MixSource.LIVE
            return ResolvedMix(customer_id, row, view.mix, live, has_events, view)
        return ResolvedMix(customer_id, row, stored, source, has_events, view)
