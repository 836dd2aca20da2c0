"""Popularity baselines: what every customer would be shown if the engine knew nothing about them.

Both models count *customers*, not confidence: a pair counts once however many times the customer
viewed or bought the item, so one heavy buyer clicking an item fifty times cannot lift it above an
item that thirty different customers bought. ``PopularityModel`` is the floor every other model must
beat. ``PersonaPopularityModel`` is the simplest persona-conditioned model: one popularity ranking
per persona, blended by the customer's mix, so it already answers 'what would a Bargain Hunter buy'
and serves cold-start customers from their mix alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.models.base import Recommender, TrainingSet, UserBatch, read_model_manifest
from engine.models.fitted_shape import FittedShape, ModelNotFittedError, expect_array
from engine.models.persona_attribution import ATTRIBUTION_ITERATIONS, persona_item_distributions


def customers_per_item(interactions: sp.csr_matrix) -> NDArray[np.float64]:
    """How many distinct customers interacted with each item (any positive confidence counts once).

    A canonical CSR matrix (the training sets') holds each pair once, so this counts the columns of its
    positive entries; a boolean copy of the matrix summed by column did the same with two copies of
    its indices (0.1-0.2 s at a million customers).
    """
    matrix = sp.csr_matrix(interactions)
    if not matrix.has_canonical_format:
        return np.asarray((matrix > 0).sum(axis=0), dtype=np.float64).ravel()
    positive = matrix.indices[matrix.data > 0]
    return np.bincount(positive, minlength=matrix.shape[1]).astype(np.float64)


class PopularityModel(Recommender):
    """Global popularity: the share of customer-item pairs that fall on each item.

    Scores are the same for every customer and ignore the mix and demographics, which is what makes
    it the baseline for persona-conditioned models.
    """

    kind = "popularity"
    row_independent_scores = True  # every row is the same popularity vector

    def __init__(self) -> None:
        self._shape: FittedShape | None = None
        self._item_popularity: NDArray[np.float32] | None = None

    def fit(self, data: TrainingSet, *, show_progress: bool = False) -> None:
        shape = FittedShape.of(data)
        shape.check_training_set(data, self.kind)
        counts = customers_per_item(data.interactions)
        self._item_popularity = (counts / counts.sum()).astype(np.float32)
        self._shape = shape

    def _fitted(self) -> tuple[FittedShape, NDArray[np.float32]]:
        if self._shape is None or self._item_popularity is None:
            raise ModelNotFittedError(f"{self.kind} model is not fitted; call fit or load first")
        return self._shape, self._item_popularity

    def score(self, users: UserBatch) -> NDArray[np.float32]:
        shape, popularity = self._fitted()
        shape.check_batch(users, self.kind)
        return np.tile(popularity, (len(users), 1))

    @property
    def n_items(self) -> int:
        return self._fitted()[0].n_items

    def get_config(self) -> dict[str, Any]:
        return {}

    def _arrays(self) -> dict[str, NDArray[Any]]:
        shape, popularity = self._fitted()
        return {"shape": shape.as_array(), "item_popularity": popularity}

    def _restore(self, arrays: dict[str, NDArray[Any]]) -> None:
        shape = FittedShape.from_arrays(arrays, self.kind)
        self._item_popularity = expect_array(arrays, "item_popularity", (shape.n_items,), self.kind)
        self._shape = shape


class PersonaPopularityModel(Recommender):
    """One popularity distribution per persona, blended by the mix: score = mix @ Pop.

    Persona k's popularity starts by counting each customer in proportion to their membership,
    ``pop_k(i) = sum_c theta_ck * [x_ci > 0]``, so a customer who is 70% Bargain Hunter lends 70% of
    a vote to the Bargain Hunter ranking; ``attribution_iterations`` EM steps then attribute each vote
    to the personas that explain the item best (``engine.models.persona_attribution``; 0 keeps the
    membership counts). Each row is smoothed toward global popularity with a Dirichlet prior of
    ``prior_strength`` pseudo-interactions and normalised to sum to 1:
    ``Pop_k = (pop_k + s * global) / (sum(pop_k) + s)``. A persona few customers belong to thus
    falls back to global popularity instead of ranking on a handful of votes, while a well-populated
    persona barely moves. Because every ``Pop_k`` is a distribution and a mix is on the simplex, a
    score row is itself a distribution over items.
    """

    kind = "persona_popularity"

    def __init__(
        self, prior_strength: float = 50.0, attribution_iterations: int = ATTRIBUTION_ITERATIONS
    ) -> None:
        if not np.isfinite(prior_strength) or prior_strength <= 0:
            raise ValueError(
                f"prior_strength must be a positive number of pseudo-interactions, got {prior_strength}"
            )
        if isinstance(attribution_iterations, bool) or int(attribution_iterations) != attribution_iterations:
            raise ValueError(f"attribution_iterations must be a whole number, got {attribution_iterations!r}")
        if attribution_iterations < 0:
            raise ValueError(f"attribution_iterations must be >= 0, got {attribution_iterations}")
        self.prior_strength = float(prior_strength)
        self.attribution_iterations = int(attribution_iterations)
        self._shape: FittedShape | None = None
        self._persona_popularity: NDArray[np.float32] | None = None

    def fit(self, data: TrainingSet, *, show_progress: bool = False) -> None:
        self._fit_from_counts(data, None, customers_per_item(data.interactions))

    def _fit_from_counts(
        self, data: TrainingSet, counts: NDArray[np.float64] | None, customers: NDArray[np.float64]
    ) -> None:
        """Fit from the membership counts (personas x items; None: counted here) and the customers per
        item, which a distributed engine may have summed elsewhere; attribution and smoothing are here."""
        shape = FittedShape.of(data)
        shape.check_training_set(data, self.kind)
        seen = sp.csr_matrix(data.interactions > 0, dtype=np.float64)
        smoothed = persona_item_distributions(
            seen, data.user_mix, self.prior_strength, self.attribution_iterations, counts, customers
        )
        self._persona_popularity = smoothed.astype(np.float32)
        self._shape = shape

    def _fitted(self) -> tuple[FittedShape, NDArray[np.float32]]:
        if self._shape is None or self._persona_popularity is None:
            raise ModelNotFittedError(f"{self.kind} model is not fitted; call fit or load first")
        return self._shape, self._persona_popularity

    @property
    def persona_popularity(self) -> NDArray[np.float32]:
        """(n_personas, n_items): each persona's smoothed item distribution (rows sum to 1)."""
        return self._fitted()[1]

    def score(self, users: UserBatch) -> NDArray[np.float32]:
        shape, popularity = self._fitted()
        shape.check_batch(users, self.kind)
        return np.asarray(users.mix, dtype=np.float32) @ popularity

    @property
    def n_items(self) -> int:
        return self._fitted()[0].n_items

    def get_config(self) -> dict[str, Any]:
        return {"prior_strength": self.prior_strength, "attribution_iterations": self.attribution_iterations}

    @classmethod
    def load(cls, directory: Path) -> Self:
        model = super().load(directory)
        if "attribution_iterations" not in read_model_manifest(directory)["config"]:
            model.attribution_iterations = 0  # saved before attribution existed: membership counts
        return model

    def _arrays(self) -> dict[str, NDArray[Any]]:
        shape, popularity = self._fitted()
        return {"shape": shape.as_array(), "persona_popularity": popularity}

    def _restore(self, arrays: dict[str, NDArray[Any]]) -> None:
        shape = FittedShape.from_arrays(arrays, self.kind)
        self._persona_popularity = expect_array(
            arrays, "persona_popularity", (shape.n_personas, shape.n_items), self.kind
        )
        self._shape = shape
