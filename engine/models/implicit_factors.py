"""Matrix factorisation from ``implicit`` (ALS, BPR), conditioned on personas by blending vectors.

``implicit`` learns one vector per customer and per item from the interactions alone; it knows
nothing of personas. Personas enter afterwards, in vector space:

- persona vector ``p_k = sum_c theta_ck u_c / sum_c theta_ck``: the membership-weighted mean of the
  vectors of the customers in persona k (customers without interactions, whose vectors carry no
  signal, are left out);
- a known customer scored under their own inferred mix b uses
  ``u' = (1 - persona_blend) * u_c + persona_blend * (b @ P)``; ``persona_blend`` = 0 is plain
  ALS/BPR, 1 scores every customer as their mix;
- scored under another mix m (a weekend context, a live session, a mix the request gives), the
  customer's own vector first trades persona b for m, ``u_c + (m - b) @ P`` (their individual taste
  kept, their persona replaced), and is then blended with ``m @ P`` as above. Blending alone would
  move a customer's vector by only ``persona_blend`` of a persona vector that is already short
  (a mean), and a mix given in a request barely changed their list;
- a mix the request gives can override the customer's history further (``UserBatch.steering``, see
  ``_steered``): the vector is turned towards the requested mix's direction by the steering share;
- an unknown customer (index -1) uses ``(1 - demographic_weight) * (m @ P) + demographic_weight * d``,
  where ``d`` is the mean of the demographic vectors of the attributes in their row and a
  demographic vector is the mean vector of the training customers with that attribute; without
  demographics the customer is just ``m @ P``;
- an unknown customer who brings events (``UserBatch.events``: the history an artifact holds for a
  cold-start hold-out) is placed by them instead: ALS solves their vector from the events against its
  item factors (``engine.models.fold_in``), which is then blended with ``m @ P`` like a known
  customer's, with the weights of the activity level their number of events puts them in. On
  MovieLens 100K, the synthetic shop and Online Retail this took the held-out customers from 1.48x,
  1.44x and 2.55x popularity's NDCG@10 (mix and demographics alone) to 2.07x, 2.25x and 3.14x
  (``make model-quality``, 20 trials). BPR has no closed-form user step and scores such customers
  from their mix;
- a known customer who brings events (their history and what they did since the artifact was trained,
  from live events) has their own vector ``u_c`` replaced by the one solved from all of them, as a
  refit would place them with the item factors kept; the persona trade and blend apply as above. A
  fold-in of the history alone gives back the fitted vector (to the fit's few conjugate-gradient
  steps), so only the new events move it.

Persona vectors are means, so they are shorter than a typical customer vector: a blend moves a known
customer's *direction* less than ``persona_blend`` suggests, and BPR's item-bias column (its users
carry a constant 1 there, which blending preserves) weighs relatively more for cold-start customers,
which leans them toward popular items.

BLAS threads: implicit parallelises itself and is slowed down badly by a multithreaded OpenBLAS, so
fitting runs under ``threadpoolctl.threadpool_limits(1, "blas")`` (threadpoolctl ships as a
dependency of implicit), which also keeps implicit from warning about BLAS threads. Training jobs
should still set ``OPENBLAS_NUM_THREADS=1``: it covers every BLAS call in the process, including any
code that fits implicit models without going through this module.

The CPU implementations are used even where a GPU exists, so factors are always numpy arrays (no
``to_cpu`` conversion needed) and a model fitted on one machine scores the same everywhere.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from engine.models.base import ModelFitError, ModelFormatError, Recommender, TrainingSet, UserBatch
from engine.models.fitted_shape import FittedShape, ModelNotFittedError, expect_array, require_finite
from engine.models.fold_in import fold_in, item_gram
from engine.models.persona_prior import (
    ablated_prior,
    activity_level,
    check_prior_settings,
    levels_from_events,
    prior_state,
)

_MAX_FOLDED = 20_000  # remembered folded-in vectors per model (a few MB at 64 factors)
# Batches of more rows are offline jobs (evaluation, batch-recommend), which fold each row once.
_REMEMBERED_BATCH_ROWS = 256

# ALS's penalty forms: implicit's, the same for every vector, or MLlib's, in proportion to interactions
ALS_PENALTIES: tuple[str, ...] = ("constant", "per_interaction")
# Each form's default regularization (its scale differs by the interactions per vector, ~100x here)
ALS_DEFAULT_REGULARIZATION: dict[str, float] = {"constant": 20.0, "per_interaction": 0.2}


# Rows of float32 vectors upcast at a time when weighted sums are taken in float64 (16 MB at 64
# factors): upcasting a million customers' vectors at once was half a gigabyte of fresh memory per
# sum, two to three seconds of a million-customer fit on this machine (more than the sums themselves).
_SUM_BLOCK_ROWS = 32_768


def membership_weighted_means(
    weights: NDArray[np.float64], vectors: NDArray[np.float32], fallback: NDArray[np.float64]
) -> NDArray[np.float32]:
    """Row k = sum_c weights[c, k] * vectors[c] / sum_c weights[c, k]; ``fallback`` for an empty column."""
    sums, mass = weighted_sums(lambda rows: weights[rows], vectors, weights.shape[1])
    return _means(sums, mass, fallback)


def weighted_sums(
    weights_of: Callable[[slice], NDArray[np.float64]], vectors: NDArray[np.float32], columns: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(columns, d) sums of ``vectors`` weighted by ``weights_of(rows)`` (rows x columns), and the
    weights' column totals, in float64, a block of rows at a time (``_SUM_BLOCK_ROWS``)."""
    sums = np.zeros((columns, vectors.shape[1]))
    mass = np.zeros(columns)
    for start in range(0, vectors.shape[0], _SUM_BLOCK_ROWS):
        rows = slice(start, start + _SUM_BLOCK_ROWS)
        weights = weights_of(rows)
        sums += weights.T @ vectors[rows].astype(np.float64)
        mass += weights.sum(axis=0)
    return sums, mass


def _means(
    sums: NDArray[np.float64], mass: NDArray[np.float64], fallback: NDArray[np.float64]
) -> NDArray[np.float32]:
    means = np.where(mass[:, None] > 0, sums / np.where(mass > 0, mass, 1.0)[:, None], fallback[None, :])
    return means.astype(np.float32)


def member_means(
    user_factors: NDArray[np.float32], data: TrainingSet
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Each persona's and each demographic attribute's vector: the membership-weighted mean of the
    active customers' factors (``membership_weighted_means``); the active customers' overall mean
    where nobody belongs.

    One pass over the factors for all three means; customers without interactions weigh nothing
    rather than being copied out (their vectors are the regularizer's, not their taste's).
    """
    active = (np.diff(data.interactions.indptr) > 0).astype(np.float64)
    mix = np.asarray(data.user_mix, dtype=np.float64)
    demographics = sp.csr_matrix(data.user_demographics)
    n_personas, n_attributes = mix.shape[1], demographics.shape[1]

    def weights(rows: slice) -> NDArray[np.float64]:
        on = active[rows, None]
        return np.hstack([on, mix[rows] * on, (demographics[rows] > 0).toarray() * on])

    sums, mass = weighted_sums(weights, user_factors, 1 + n_personas + n_attributes)
    overall = sums[0] / mass[0] if mass[0] > 0 else np.zeros(user_factors.shape[1])
    personas, attributes = slice(1, 1 + n_personas), slice(1 + n_personas, None)
    return (
        _means(sums[personas], mass[personas], overall),
        _means(sums[attributes], mass[attributes], overall),
    )


def ordered_product(weights: NDArray[np.floating], vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    """(n, d) = weights (n, m) @ vectors (m, d) in float32, each row computed on its own.

    The terms of each row are added in order (numpy reduces a middle axis term by term), so row i is
    the same bits whatever the other rows, which a BLAS product does not promise (its rounding depends
    on the number of rows). ``m`` is small here (personas, demographic attributes), so the
    (n, m, d) intermediate is too.
    """
    w = np.asarray(weights, dtype=np.float32)
    return np.asarray((w[:, :, None] * vectors[None, :, :]).sum(axis=1), dtype=np.float32)


def _check_fraction(name: str, value: float) -> float:
    if not np.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
    return float(value)


def _check_positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _level_weights(
    name: str, weights: list[float] | None, expected: int, upper: float | None
) -> list[float] | None:
    """A per-activity-level weight list: ``expected`` finite values >= 0 (and <= ``upper``), or None."""
    if weights is None:
        return None
    values = [float(w) for w in weights]
    if len(values) != expected or not all(np.isfinite(w) and w >= 0 for w in values):
        raise ValueError(f"{name} must be {expected} non-negative numbers (one per level), got {weights!r}")
    if upper is not None and any(w > upper for w in values):
        raise ValueError(f"{name} must each be at most {upper}, got {weights!r}")
    return values


def _check_positive(name: str, value: float) -> float:
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value}")
    return float(value)


class ImplicitFactorsModel(Recommender):
    """Shared fitting, persona blending, scoring and saving for the ``implicit`` factor models.

    Subclasses choose the algorithm (and so their ``kind``), its hyperparameters and what it is
    trained on; ``num_threads`` 0 lets implicit use every core. ``blend_weights`` (one per activity
    level, known customers) replace ``persona_blend`` when given, and ``prior_weights`` (one per level,
    index 0 for customers the model never saw) add the persona popularity of the mix
    (``engine.models.persona_prior``; ``training.persona_weights`` fits both on a validation split).
    With all persona weights 0 the model is its factor fit alone for known customers
    (``without_personas``): implicit's own BPR, or ALS with the constant penalty.
    """

    def __init__(
        self,
        factors: int,
        regularization: float,
        iterations: int,
        persona_blend: float,
        demographic_weight: float,
        num_threads: int,
        random_state: int,
        activity_levels: int = 3,
        blend_weights: list[float] | None = None,
        prior_weights: list[float] | None = None,
        prior_half_life_days: float | None = None,
        prior_scope: str = "personas",
    ) -> None:
        self.factors = _check_positive_int("factors", factors)
        if not np.isfinite(regularization) or regularization < 0:
            raise ValueError(f"regularization must be a non-negative number, got {regularization}")
        self.regularization = float(regularization)
        self.iterations = _check_positive_int("iterations", iterations)
        self.persona_blend = _check_fraction("persona_blend", persona_blend)
        self.demographic_weight = _check_fraction("demographic_weight", demographic_weight)
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 0:
            raise ValueError(
                f"num_threads must be a non-negative integer (0 = all cores), got {num_threads!r}"
            )
        self.num_threads = num_threads
        self.random_state = int(random_state)
        self.activity_levels = _check_positive_int("activity_levels", activity_levels)
        self.blend_weights = _level_weights("blend_weights", blend_weights, activity_levels, 1.0)
        self.prior_weights = _level_weights("prior_weights", prior_weights, activity_levels + 1, None)
        self.prior_half_life_days, self.prior_scope = check_prior_settings(prior_half_life_days, prior_scope)
        self._shape: FittedShape | None = None
        self._state: dict[str, NDArray[np.float32]] | None = None
        self._item_vectors: NDArray[np.float32] | None = None
        self._gram: NDArray[np.float64] | None = None  # the item factors' Gram matrix, for folding in
        # Folded-in vectors by their row of events: a customer's pages between two of their events
        # fold the same events in, and the solve is most of what folding in costs a page.
        self._folded_memo: dict[bytes, NDArray[np.float32]] = {}

    @classmethod
    def without_personas(cls, config: dict[str, Any]) -> dict[str, Any]:
        """``config`` with persona conditioning off: no persona vectors, no demographics, and the prior as
        ``persona_prior.ablated_prior`` leaves it (a recency prior over the population; without one,
        the library's own model)."""
        ablated = {**config, "persona_blend": 0.0, "demographic_weight": 0.0, "blend_weights": None}
        return {**ablated, **ablated_prior(config)}

    @abstractmethod
    def _estimator_factory(self) -> Callable[[], Any]:
        """Import implicit and return a builder of a fresh estimator with this model's hyperparameters."""

    @abstractmethod
    def _training_matrix(self, data: TrainingSet) -> sp.csr_matrix:
        """The users x items CSR the algorithm is fitted on (implicit >= 0.5 takes user x item)."""

    @property
    @abstractmethod
    def factor_width(self) -> int:
        """Columns of the stored factor arrays (BPR adds an item-bias column)."""

    def _blend_config(self) -> dict[str, Any]:
        return {
            "factors": self.factors,
            "regularization": self.regularization,
            "iterations": self.iterations,
            "persona_blend": self.persona_blend,
            "demographic_weight": self.demographic_weight,
            "num_threads": self.num_threads,
            "random_state": self.random_state,
            "activity_levels": self.activity_levels,
            "blend_weights": self.blend_weights,
            "prior_weights": self.prior_weights,
            "prior_half_life_days": self.prior_half_life_days,
            "prior_scope": self.prior_scope,
        }

    def fit(self, data: TrainingSet, *, show_progress: bool = False) -> None:
        shape = FittedShape.of(data)
        shape.check_training_set(data, self.kind)
        estimator = self._train(data, show_progress)
        self._adopt(estimator, data, shape)
        assert self._state is not None
        self._state.update(
            prior_state(
                data,
                self.activity_levels,
                population=self.prior_scope == "population",
                half_life_days=self.prior_half_life_days,
            )
        )
        self._item_vectors = None
        self._gram = None
        self._folded_memo = {}

    def with_persona_weights(
        self, blend_weights: list[float] | None, prior_weights: list[float] | None
    ) -> ImplicitFactorsModel:
        """The fitted model with other per-level persona weights (no refit: the factors are shared).

        How ``training.persona_weights`` tries weights on a validation split through the model's own
        scoring code.
        """
        shape, state = self._fitted()
        twin = type(self)(
            **{**self.get_config(), "blend_weights": blend_weights, "prior_weights": prior_weights}
        )
        twin._shape, twin._state = shape, state
        return twin

    @property
    def persona_item_scores(self) -> NDArray[np.float32]:
        """(n_items, n_personas): n_items x each persona's smoothed popularity (the prior's item side)."""
        return self._fitted()[1]["persona_item_scores"]

    @property
    def _uses_prior(self) -> bool:
        return self.prior_weights is not None and any(w != 0.0 for w in self.prior_weights)

    def _train(self, data: TrainingSet, show_progress: bool) -> Any:
        matrix = self._training_matrix(data)
        make_estimator = self._estimator_factory()
        # Limit BLAS only after implicit is imported: the import loads a BLAS of its own, which a
        # limit set earlier would not cover (and implicit would warn about its threads).
        with threadpool_limits(1, "blas"):
            estimator = make_estimator()
            started = time.perf_counter()
            estimator.fit(matrix, show_progress=show_progress)
            self.library_fit_seconds = time.perf_counter() - started
        return estimator

    def _adopt(self, estimator: Any, data: TrainingSet, shape: FittedShape) -> None:
        """Keep the factors as float32 numpy arrays and derive persona and demographic vectors."""
        user_factors = np.asarray(estimator.user_factors, dtype=np.float32)
        item_factors = np.asarray(estimator.item_factors, dtype=np.float32)
        expected = ((shape.n_users, self.factor_width), (shape.n_items, self.factor_width))
        if (user_factors.shape, item_factors.shape) != expected:
            raise ModelFitError(
                f"{self.kind} model: implicit returned user factors {user_factors.shape} and item factors "
                f"{item_factors.shape}, expected {expected[0]} and {expected[1]} (users x items input)"
            )
        require_finite(self.kind, user_factors=user_factors, item_factors=item_factors)
        persona_factors, demographic_factors = member_means(user_factors, data)
        self._state = {
            "user_factors": user_factors,
            "item_factors": item_factors,
            "persona_factors": persona_factors,
            "demographic_factors": demographic_factors,
        }
        self._shape = shape

    def _fitted(self) -> tuple[FittedShape, dict[str, NDArray[np.float32]]]:
        if self._shape is None or self._state is None:
            raise ModelNotFittedError(f"{self.kind} model is not fitted; call fit or load first")
        return self._shape, self._state

    def user_vectors(self, users: UserBatch) -> NDArray[np.float32]:
        """The blended vector each customer in the batch is scored with (see the module docstring).

        Row i depends only on row i of the batch, to the last bit (``ordered_product``), so serving
        can score many requests together and give each what it would get alone.
        """
        return self._user_vectors(users, *self._placed(users))

    def _placed(
        self, users: UserBatch
    ) -> tuple[tuple[NDArray[np.int64], NDArray[np.float32]] | None, NDArray[np.int64] | None]:
        """The batch's folded-in rows (``_folded_rows``) and, when a per-level weight reads them, its
        activity levels: looked up once per batch for the blend and the prior, and not at all otherwise."""
        folded = self._folded_rows(users)
        reads_levels = self.blend_weights is not None or (self._uses_prior and self.prior_weights is not None)
        return folded, (self._levels(users, folded) if reads_levels else None)

    def _user_vectors(
        self,
        users: UserBatch,
        folded: tuple[NDArray[np.int64], NDArray[np.float32]] | None,
        levels: NDArray[np.int64] | None,
    ) -> NDArray[np.float32]:
        _, state = self._fitted()
        # A known customer is keep * (u + (m - b) @ P) + blend * (m @ P), i.e. keep * u + (m - keep b) @ P:
        # one persona product per row, whoever the customer is (b = m when no base mix is given).
        known = users.user_index >= 0
        keep = 1.0 - self._blends(len(users.user_index), levels)[:, None]  # (n, 1), per level when fitted
        base = users.base_mix if users.base_mix is not None else users.mix
        if known.all():  # the common page: a known customer; demographics play no part
            vectors = ordered_product(users.mix - keep * base, state["persona_factors"])
            own_vectors = state["user_factors"][users.user_index]
            if folded is not None:  # with events since training: solved from all their events
                own_vectors[folded[0]] = folded[1]
            vectors += keep.astype(np.float32) * own_vectors
            return self._steered(vectors, users, state["persona_factors"])
        coefficients = np.array(users.mix, dtype=np.float64)
        coefficients[known] -= keep[known] * base[known]
        vectors = ordered_product(coefficients, state["persona_factors"])  # m @ P for cold rows
        own_vectors = state["user_factors"][users.user_index[known]]
        folded_cold = None
        if folded is not None:
            rows, own = folded
            from_events = known[rows]
            if from_events.any():  # known customers with new events: their vector solved from all of them
                position = np.cumsum(known) - 1  # each known row's place among the known rows
                own_vectors[position[rows[from_events]]] = own[from_events]
            folded_cold = (rows[~from_events], own[~from_events])
        vectors[known] += keep[known].astype(np.float32) * own_vectors
        if folded_cold is not None and folded_cold[0].size:
            rows, own = folded_cold  # placed by their events, then blended like a known customer
            share = keep[rows].astype(np.float32)
            vectors[rows] = (np.float32(1.0) - share) * vectors[rows] + share * own
        persona_part = vectors
        # Dense: a batch has at most a few hundred rows of a few dozen attributes, and scipy's
        # per-operation overhead outweighs that work many times over.
        demographics = users.dense_demographics()
        attribute_mass = demographics.sum(axis=1)
        cold_with_attributes = ~known & (attribute_mass > 0)
        if folded_cold is not None:
            cold_with_attributes[folded_cold[0]] = False
        if cold_with_attributes.any():
            rows = np.flatnonzero(cold_with_attributes)
            weights = demographics[rows] / attribute_mass[rows, None]
            demographic_part = ordered_product(weights, state["demographic_factors"])
            w = self.demographic_weight
            vectors[rows] = (1.0 - w) * persona_part[rows] + w * demographic_part
        return self._steered(np.asarray(vectors, dtype=np.float32), users, state["persona_factors"])

    def _steered(
        self, vectors: NDArray[np.float32], users: UserBatch, persona_factors: NDArray[np.float32]
    ) -> NDArray[np.float32]:
        """Known rows with steering s > 0 turned towards their requested mix: ``(1 - s) v + s |v| q / |q|``.

        ``q = m @ P`` is what the requested mix alone points at; it is rescaled to the length of the
        customer's vector so that s is the share of the direction handed over (persona vectors are
        means, much shorter than a customer's, and unscaled they would barely move the list until s
        was nearly 1). At s = 1 a known customer is ranked as the mix alone ranks, minus what they have
        already seen. BPR's last column (a constant 1 that picks up the item biases) is left as it is.
        Rows are computed on their own, so a row steers the same alone and in any batch.
        """
        steering = users.steering
        if steering is None:
            return vectors
        rows = np.flatnonzero((steering > 0) & (users.user_index >= 0))
        if rows.size == 0:
            return vectors
        width = self.factors  # the taste columns (ALS: all of them; BPR: all but the bias column)
        aim = ordered_product(users.mix[rows], persona_factors)[:, :width]
        own = vectors[rows, :width]
        own_length = np.sqrt(np.einsum("ij,ij->i", own, own))
        aim_length = np.sqrt(np.einsum("ij,ij->i", aim, aim))
        scale = np.divide(own_length, aim_length, out=np.zeros_like(own_length), where=aim_length > 0)
        share = steering[rows].astype(np.float32)[:, None]
        vectors[rows, :width] = (1.0 - share) * own + share * (scale[:, None] * aim)
        return vectors

    def activity_levels_of(self, user_index: NDArray[np.int64]) -> NDArray[np.int64]:
        """Activity level per customer: 0 unknown, 1..activity_levels by training interactions."""
        _, state = self._fitted()
        if "activity_counts" not in state:  # a model saved before activity levels: one level for all
            return np.where(np.asarray(user_index) >= 0, 1, 0).astype(np.int64)
        # Indexed as stored: a cast of the whole array would cost a pass over every customer per call.
        return activity_level(user_index, state["activity_counts"], state["activity_edges"])

    def _folded_in(self, events: sp.csr_matrix, rows: NDArray[np.int64]) -> NDArray[np.float32] | None:
        """Vectors of the customers in ``rows``, outside the fit, from their events
        (``engine.models.fold_in``); None: the algorithm has no such step (BPR's vectors come from
        sampled rankings, not a closed form)."""
        return None

    def _folded_rows(self, users: UserBatch) -> tuple[NDArray[np.int64], NDArray[np.float32]] | None:
        """The rows that carry events (unknown customers, and known ones with events since training),
        and their folded-in vectors; None when there are none.

        Checks the batch first: every scoring path starts here."""
        shape, _ = self._fitted()
        shape.check_batch(users, self.kind)
        if users.events is None:
            return None
        events = users.events.tocsr()  # no copy when it is CSR already, as batches build it
        rows = np.flatnonzero(np.diff(events.indptr) > 0)
        if rows.size == 0:
            return None
        return self._remembered_fold_in(events, rows)

    def forget_folded_in(self) -> None:
        self._folded_memo = {}

    def _remembered_fold_in(
        self, events: sp.csr_matrix, rows: NDArray[np.int64]
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]] | None:
        """``_folded_in`` of ``rows``, each row's vector solved once per distinct row of events: a row
        is solved on its own (``engine.models.fold_in``), so a remembered vector is the same bits."""
        if rows.size > _REMEMBERED_BATCH_ROWS:
            own = self._folded_in(events, rows)
            return None if own is None else (rows, own)
        memo = self._folded_memo
        indptr, indices, data = events.indptr, events.indices, events.data
        kinds = (indices.dtype.char + data.dtype.char).encode()
        keys = [
            kinds + indices[indptr[r] : indptr[r + 1]].tobytes() + data[indptr[r] : indptr[r + 1]].tobytes()
            for r in rows.tolist()
        ]
        found = [memo.get(key) for key in keys]
        missing = [n for n, vector in enumerate(found) if vector is None]
        if missing:
            solved = self._folded_in(events, rows[missing])
            if solved is None:
                return None
            if len(memo) + len(missing) > _MAX_FOLDED:
                memo.clear()  # a crude bound: the next pages refill what is still in use
            for n, vector in zip(missing, solved, strict=True):
                found[n] = memo[keys[n]] = vector
        return rows, np.array(found, dtype=np.float32).reshape(rows.size, -1)

    def _levels(
        self, users: UserBatch, folded: tuple[NDArray[np.int64], NDArray[np.float32]] | None
    ) -> NDArray[np.int64]:
        """Activity level per row: a folded-in unknown customer takes the level of their number of
        events; a known one keeps the level of their training events (the weights were fitted so)."""
        levels = self.activity_levels_of(users.user_index)
        if folded is not None and users.events is not None:
            _, state = self._fitted()
            edges = state.get("activity_edges", np.zeros(0, dtype=np.float32))
            cold = folded[0][users.user_index[folded[0]] < 0]
            if cold.size:
                levels[cold] = levels_from_events(users.events, cold, edges)
        return levels

    def _blends(self, n: int, levels: NDArray[np.int64] | None) -> NDArray[np.float64]:
        """``persona_blend`` for each of the n rows, or the fitted weight of each row's activity level."""
        if self.blend_weights is None:
            return np.full(n, self.persona_blend, dtype=np.float64)
        assert levels is not None, "_placed looks levels up whenever blend weights are fitted"
        return np.asarray(self.blend_weights, dtype=np.float64)[np.maximum(levels, 1) - 1]

    def _prior_weights(self, levels: NDArray[np.int64] | None) -> NDArray[np.float32] | None:
        """The persona prior's weight per customer of the batch (by activity level); None when off."""
        if not self._uses_prior or self.prior_weights is None:
            return None
        assert levels is not None, "_placed looks levels up whenever prior weights are fitted"
        return np.asarray(self.prior_weights, dtype=np.float32)[levels]

    def score(self, users: UserBatch) -> NDArray[np.float32]:
        return np.asarray(self.query_vectors(users) @ self.item_vectors().T, dtype=np.float32)

    def item_vectors(self) -> NDArray[np.float32]:
        """Item factors, followed by the items' persona popularity columns when the prior is on."""
        _, state = self._fitted()
        if not self._uses_prior:
            return state["item_factors"]
        if self._item_vectors is None:
            self._item_vectors = np.ascontiguousarray(
                np.hstack([state["item_factors"], state["persona_item_scores"]]), dtype=np.float32
            )
        return self._item_vectors

    def query_vectors(self, users: UserBatch) -> NDArray[np.float32]:
        folded, levels = self._placed(users)
        vectors = self._user_vectors(users, folded, levels)
        weights = self._prior_weights(levels)
        if weights is None:
            return vectors
        prior = weights[:, None] * np.asarray(users.mix, dtype=np.float32)
        return np.ascontiguousarray(np.hstack([vectors, prior]), dtype=np.float32)

    @property
    def n_items(self) -> int:
        return self._fitted()[0].n_items

    def _arrays(self) -> dict[str, NDArray[Any]]:
        shape, state = self._fitted()
        return {"shape": shape.as_array(), **state}

    def _restore(self, arrays: dict[str, NDArray[Any]]) -> None:
        shape = FittedShape.from_arrays(arrays, self.kind)
        width = self.factor_width
        expected: dict[str, tuple[int, ...]] = {
            "user_factors": (shape.n_users, width),
            "item_factors": (shape.n_items, width),
            "persona_factors": (shape.n_personas, width),
            "demographic_factors": (shape.n_demographic_features, width),
        }
        if "activity_counts" in arrays:  # absent in models saved before activity levels
            expected["activity_counts"] = (shape.n_users,)
            expected["activity_edges"] = (max(self.activity_levels - 1, 0),)
            expected["persona_item_scores"] = (shape.n_items, shape.n_personas)
        elif self._uses_prior:
            raise ModelFormatError(f"{self.kind} model: prior_weights are set but no prior arrays were saved")
        self._state = {name: expect_array(arrays, name, dims, self.kind) for name, dims in expected.items()}
        self._shape = shape
        self._item_vectors = None
        self._gram = None
        self._folded_memo = {}


class ImplicitALSModel(ImplicitFactorsModel):
    """Implicit-feedback ALS (Hu, Koren & Volinsky) on the confidence-weighted interactions.

    The default ``penalty = "per_interaction"`` is Spark MLlib's objective (ALS-WR: each vector's
    penalty is ``regularization`` times its interactions, an observed pair weighs ``1 + alpha *
    confidence``; ``engine.models.interaction_weighted_als``), so the Spark engine trains the same
    model. At default settings it is also the better one (a light customer's vector is held near zero
    and a heavy one's is free to fit, where one constant penalty must pick a side): NDCG@10 against the
    constant form at its default 20, ml-100k +4%, a 200k-event shop +5%, a 10M-event shop +31%. Tuned
    with the same budget the two forms tie on ml-100k and Online Retail (README, model quality).

    ``penalty = "constant"`` is implicit's own ALS (one penalty for every vector, an observed pair
    weighed ``alpha * confidence``; its default regularization 20, where implicit's is 0.01, came from
    a time-split sweep on the synthetic shop). ``alpha`` 2 puts an observed pair at a few times an
    unobserved one for the shop's confidences (log1p of summed event weights, 0.7 to about 3). An unset
    ``regularization`` is the chosen form's default (``ALS_DEFAULT_REGULARIZATION``).
    """

    kind = "als"

    def __init__(
        self,
        factors: int = 64,
        regularization: float | None = None,
        alpha: float = 2.0,
        iterations: int = 15,
        persona_blend: float = 0.3,
        demographic_weight: float = 0.3,
        num_threads: int = 2,
        random_state: int = 42,
        activity_levels: int = 3,
        blend_weights: list[float] | None = None,
        prior_weights: list[float] | None = None,
        penalty: str = "per_interaction",
        prior_half_life_days: float | None = None,
        prior_scope: str = "personas",
    ) -> None:
        if penalty not in ALS_PENALTIES:
            raise ValueError(f"penalty must be one of {', '.join(ALS_PENALTIES)}, got {penalty!r}")
        super().__init__(
            factors,
            ALS_DEFAULT_REGULARIZATION[penalty] if regularization is None else regularization,
            iterations,
            persona_blend,
            demographic_weight,
            num_threads,
            random_state,
            activity_levels,
            blend_weights,
            prior_weights,
            prior_half_life_days,
            prior_scope,
        )
        self.alpha = _check_positive("alpha", alpha)
        self.penalty = penalty

    def get_config(self) -> dict[str, Any]:
        return {**self._blend_config(), "alpha": self.alpha, "penalty": self.penalty}

    @property
    def factor_width(self) -> int:
        return self.factors

    def _estimator_factory(self) -> Callable[[], Any]:
        settings: dict[str, Any] = {
            "factors": self.factors,
            "regularization": self.regularization,
            "alpha": self.alpha,
            "iterations": self.iterations,
            "num_threads": self.num_threads,
            "random_state": self.random_state,
        }
        if self.penalty == "per_interaction":
            from engine.models.interaction_weighted_als import InteractionWeightedALS

            return partial(InteractionWeightedALS, **settings)
        from implicit.cpu.als import AlternatingLeastSquares  # only training needs implicit, not scoring

        return partial(AlternatingLeastSquares, **settings)

    def _training_matrix(self, data: TrainingSet) -> sp.csr_matrix:
        return sp.csr_matrix(data.interactions, dtype=np.float32)

    folds_in_events = True

    def _folded_in(self, events: sp.csr_matrix, rows: NDArray[np.int64]) -> NDArray[np.float32]:
        _, state = self._fitted()
        if self._gram is None:
            self._gram = item_gram(state["item_factors"])
        return fold_in(
            events,
            state["item_factors"],
            self._gram,
            regularization=self.regularization,
            alpha=self.alpha,
            per_interaction=self.penalty == "per_interaction",
            rows=rows,
        )


class ImplicitBPRModel(ImplicitFactorsModel):
    """Bayesian Personalised Ranking: learns to rank each customer's items above sampled others.

    BPR treats every interaction as a plain positive (confidence is ignored by implicit); its factors
    carry one extra column, a constant 1 for users and a learned bias for items. On the synthetic shop
    a learning rate of 0.01 left the item biases unlearned after 100 epochs (they even ran against
    popularity), hence 0.05. ``persona_blend`` defaults high (0.8) because there BPR's individual
    vectors, learned from a couple of dozen interactions, ranked below global popularity while its
    persona vectors and item biases gave the best cold-start ranking; lower it for richer histories.
    """

    kind = "bpr"

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.05,
        regularization: float = 0.01,
        iterations: int = 100,
        verify_negative_samples: bool = True,
        persona_blend: float = 0.8,
        demographic_weight: float = 0.3,
        num_threads: int = 2,
        random_state: int = 42,
        activity_levels: int = 3,
        blend_weights: list[float] | None = None,
        prior_weights: list[float] | None = None,
        prior_half_life_days: float | None = None,
        prior_scope: str = "personas",
    ) -> None:
        super().__init__(
            factors,
            regularization,
            iterations,
            persona_blend,
            demographic_weight,
            num_threads,
            random_state,
            activity_levels,
            blend_weights,
            prior_weights,
            prior_half_life_days,
            prior_scope,
        )
        self.learning_rate = _check_positive("learning_rate", learning_rate)
        self.verify_negative_samples = bool(verify_negative_samples)

    def get_config(self) -> dict[str, Any]:
        return {
            **self._blend_config(),
            "learning_rate": self.learning_rate,
            "verify_negative_samples": self.verify_negative_samples,
        }

    @property
    def factor_width(self) -> int:
        return self.factors + 1

    def _estimator_factory(self) -> Callable[[], Any]:
        from implicit.cpu.bpr import BayesianPersonalizedRanking  # only training needs implicit

        return partial(
            BayesianPersonalizedRanking,
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            verify_negative_samples=self.verify_negative_samples,
            num_threads=self.num_threads,
            random_state=self.random_state,
        )

    def _training_matrix(self, data: TrainingSet) -> sp.csr_matrix:
        positives = sp.csr_matrix(data.interactions > 0, dtype=np.float32)
        positives.eliminate_zeros()
        return positives
