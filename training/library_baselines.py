"""The recommender libraries exactly as their documentation sets them up: the bar the engine must clear.

A comparison against a library tuned by us would measure our tuning, not the engine, so these run
with each library's documented *default* hyperparameters (implicit 0.7, LightFM 1.17), as someone
would on day one:

- implicit ``AlternatingLeastSquares()``: factors 100, regularization 0.01, alpha 1.0, 15 iterations;
- implicit ``BayesianPersonalizedRanking()``: factors 100, learning rate 0.01, regularization 0.01,
  100 iterations;
- ``LightFM(loss="warp")``: 10 components, learning rate 0.05 (adagrad), no user or item features.
  ``fit`` itself defaults to a single epoch; we run 30, the number in LightFM's own MovieLens
  quickstart (``model.fit(data['train'], epochs=30, num_threads=2)``), because one epoch is not a
  trained model.

The only setting we fix is the random seed (the libraries default to an unseeded generator), so
that a comparison can be re-run to the same numbers; a seed is not a hyperparameter.

They learn one vector per training customer and have no way to place a customer they never saw, so
they are scored on known customers only; cold start is where the persona-conditioned models compete
with popularity alone. They are Recommenders only to be scored by the same evaluation code as every
other model; they are never registered, saved in artifacts or served.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from engine.models.base import Recommender, TrainingSet, UserBatch
from engine.models.fitted_shape import FittedShape, ModelNotFittedError, expect_array, require_finite

LIGHTFM_QUICKSTART_EPOCHS = 30


class LibraryDefaultModel(Recommender):
    """A library model with its default hyperparameters: user and item vectors, scored by dot product."""

    kind: ClassVar[str] = "library_default"
    library: ClassVar[str] = ""

    def __init__(self, random_state: int = 42) -> None:
        self.random_state = int(random_state)
        self._shape: FittedShape | None = None
        self._users: NDArray[np.float32] | None = None
        self._items: NDArray[np.float32] | None = None

    def documented_parameters(self) -> dict[str, Any]:
        """The library's defaults in force (for reports), plus anything we set."""
        return {}

    @abstractmethod
    def _vectors(self, data: TrainingSet) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Fit the library model with its defaults; user and item vectors whose dot product scores."""

    def fit(self, data: TrainingSet, *, show_progress: bool = False) -> None:
        shape = FittedShape.of(data)
        shape.check_training_set(data, self.kind)
        users, items = self._vectors(data)
        require_finite(self.kind, user_factors=users, item_factors=items)
        self._users, self._items, self._shape = users, items, shape

    def _fitted(self) -> tuple[FittedShape, NDArray[np.float32], NDArray[np.float32]]:
        if self._shape is None or self._users is None or self._items is None:
            raise ModelNotFittedError(f"{self.kind} model is not fitted")
        return self._shape, self._users, self._items

    def score(self, users: UserBatch) -> NDArray[np.float32]:
        shape, user_vectors, item_vectors = self._fitted()
        shape.check_batch(users, self.kind)
        if (users.user_index < 0).any():
            raise ValueError(
                f"{self.kind} scores known customers only: the library has no vector for a customer it "
                "never saw (cold start is for the persona-conditioned models)"
            )
        return np.asarray(user_vectors[users.user_index] @ item_vectors.T, dtype=np.float32)

    @property
    def n_items(self) -> int:
        return self._fitted()[0].n_items

    def get_config(self) -> dict[str, Any]:
        return {"random_state": self.random_state}

    def _arrays(self) -> dict[str, NDArray[Any]]:
        shape, users, items = self._fitted()
        return {"shape": shape.as_array(), "user_vectors": users, "item_vectors": items}

    def _restore(self, arrays: dict[str, NDArray[Any]]) -> None:
        shape = FittedShape.from_arrays(arrays, self.kind)
        users = np.asarray(arrays.get("user_vectors"))
        width = users.shape[1] if users.ndim == 2 else 0
        self._users = expect_array(arrays, "user_vectors", (shape.n_users, width), self.kind)
        self._items = expect_array(arrays, "item_vectors", (shape.n_items, width), self.kind)
        self._shape = shape


class ImplicitALSDefaults(LibraryDefaultModel):
    kind = "implicit_als_defaults"
    library = "implicit"

    def documented_parameters(self) -> dict[str, Any]:
        return {
            "factors": 100,
            "regularization": 0.01,
            "alpha": 1.0,
            "iterations": 15,
            "seed": self.random_state,
        }

    def _vectors(self, data: TrainingSet) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        from implicit.cpu.als import AlternatingLeastSquares

        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(random_state=self.random_state)
            model.fit(sp.csr_matrix(data.interactions, dtype=np.float32), show_progress=False)
        return np.asarray(model.user_factors, np.float32), np.asarray(model.item_factors, np.float32)


class ImplicitBPRDefaults(LibraryDefaultModel):
    kind = "implicit_bpr_defaults"
    library = "implicit"

    def documented_parameters(self) -> dict[str, Any]:
        return {
            "factors": 100,
            "learning_rate": 0.01,
            "regularization": 0.01,
            "iterations": 100,
            "seed": self.random_state,
        }

    def _vectors(self, data: TrainingSet) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        with threadpool_limits(1, "blas"):
            model = BayesianPersonalizedRanking(random_state=self.random_state)
            model.fit(sp.csr_matrix(data.interactions, dtype=np.float32), show_progress=False)
        # Users carry a constant 1 in the last column and items their bias, so a dot product scores.
        return np.asarray(model.user_factors, np.float32), np.asarray(model.item_factors, np.float32)


class LightFMWarpDefaults(LibraryDefaultModel):
    kind = "lightfm_warp_defaults"
    library = "lightfm"

    def documented_parameters(self) -> dict[str, Any]:
        return {
            "loss": "warp",
            "no_components": 10,
            "learning_rate": 0.05,
            "learning_schedule": "adagrad",
            "epochs": LIGHTFM_QUICKSTART_EPOCHS,
            "num_threads": 2,
            "seed": self.random_state,
        }

    def _vectors(self, data: TrainingSet) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        from lightfm import LightFM

        positives = sp.coo_matrix(data.interactions)
        positives.sum_duplicates()
        keep = positives.data > 0
        interactions = sp.coo_matrix(
            (np.ones(int(keep.sum()), dtype=np.float32), (positives.row[keep], positives.col[keep])),
            shape=positives.shape,
        )
        model = LightFM(loss="warp", random_state=np.random.RandomState(self.random_state))
        model.fit(interactions, epochs=LIGHTFM_QUICKSTART_EPOCHS, num_threads=2)
        # Without features LightFM's representations are the id embeddings; biases join as two columns.
        n_users, n_items = data.n_users, data.n_items
        users = np.hstack(
            [model.user_embeddings, model.user_biases[:, None], np.ones((n_users, 1), dtype=np.float32)]
        )
        items = np.hstack(
            [model.item_embeddings, np.ones((n_items, 1), dtype=np.float32), model.item_biases[:, None]]
        )
        return users.astype(np.float32), items.astype(np.float32)


LIBRARY_DEFAULTS: tuple[type[LibraryDefaultModel], ...] = (
    ImplicitALSDefaults,
    ImplicitBPRDefaults,
    LightFMWarpDefaults,
)
