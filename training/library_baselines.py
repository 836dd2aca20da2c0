"""The recommender libraries as they come: the bar the engine must clear, at defaults and tuned.

Each class runs one library model with *its own* hyperparameters, defaulting to the library's
documented defaults (implicit 0.7, LightFM 1.17), as someone would on day one:

- implicit ``AlternatingLeastSquares()``: factors 100, regularization 0.01, alpha 1.0, 15 iterations;
- implicit ``BayesianPersonalizedRanking()``: factors 100, learning rate 0.01, regularization 0.01,
  100 iterations;
- ``LightFM(loss="warp")``: 10 components, learning rate 0.05 (adagrad), no user or item features.
  ``fit`` itself defaults to a single epoch; we run 30, the number in LightFM's own MovieLens
  quickstart (``model.fit(data['train'], epochs=30, num_threads=2)``), because one epoch is not a
  trained model.

``persona-engine compare`` scores them at these defaults and again *tuned* by the same random search,
trial budget and validation split as the engine's models (``training.tune_job``), so a lead of the
engine over the tuned libraries is not a tuning lead. The settings that are not hyperparameters are
fixed: a seed (the libraries default to an unseeded generator) and one thread (LightFM and BPR train
Hogwild-style with more, which makes a run irreproducible), so a comparison re-runs to the same numbers.

They learn one vector per training customer and have no way to place a customer they never saw, so
they are scored on known customers only; cold start is where the persona-conditioned models compete
with popularity alone. They are Recommenders only to be scored by the same evaluation code as every
other model; they are never registered, saved in artifacts or served. With the same hyperparameters
and seed, an engine model with its persona conditioning off (``without_personas``) scores known
customers exactly as its library counterpart here (tests/training/test_ablation_identity.py), ALS
with ``penalty = "constant"``: the engine's default per-interaction ALS is a solver of its own, and
implicit's ALS starts its search from the constant form's default regularization.
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


class LibraryModel(Recommender):
    """A raw library model: user and item vectors learned from interactions alone, scored by dot product."""

    kind: ClassVar[str] = "library"
    library: ClassVar[str] = ""

    def __init__(self, random_state: int = 42, num_threads: int = 1) -> None:
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive integer, got {num_threads!r}")
        self.random_state = int(random_state)
        self.num_threads = num_threads
        self._shape: FittedShape | None = None
        self._users: NDArray[np.float32] | None = None
        self._items: NDArray[np.float32] | None = None

    def hyperparameters(self) -> dict[str, Any]:
        """The library's hyperparameters in force (the tunable ones)."""
        return {}

    def documented_parameters(self) -> dict[str, Any]:
        """The hyperparameters in force plus what we set (seed, threads), for reports."""
        return {**self.hyperparameters(), "num_threads": self.num_threads, "seed": self.random_state}

    @abstractmethod
    def _vectors(self, data: TrainingSet) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Fit the library model; user and item vectors whose dot product scores."""

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
        return {**self.hyperparameters(), "random_state": self.random_state, "num_threads": self.num_threads}

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


class ImplicitALS(LibraryModel):
    kind = "implicit_als"
    library = "implicit"

    def __init__(
        self,
        factors: int = 100,
        regularization: float = 0.01,
        alpha: float = 1.0,
        iterations: int = 15,
        random_state: int = 42,
        num_threads: int = 1,
    ) -> None:
        super().__init__(random_state, num_threads)
        self.factors, self.regularization, self.alpha, self.iterations = (
            factors,
            regularization,
            alpha,
            iterations,
        )

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "factors": self.factors,
            "regularization": self.regularization,
            "alpha": self.alpha,
            "iterations": self.iterations,
        }

    def _vectors(self, data: TrainingSet) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        from implicit.cpu.als import AlternatingLeastSquares

        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                **self.hyperparameters(), num_threads=self.num_threads, random_state=self.random_state
            )
            model.fit(sp.csr_matrix(data.interactions, dtype=np.float32), show_progress=False)
        return np.asarray(model.user_factors, np.float32), np.asarray(model.item_factors, np.float32)


class ImplicitBPR(LibraryModel):
    kind = "implicit_bpr"
    library = "implicit"

    def __init__(
        self,
        factors: int = 100,
        learning_rate: float = 0.01,
        regularization: float = 0.01,
        iterations: int = 100,
        random_state: int = 42,
        num_threads: int = 1,
    ) -> None:
        super().__init__(random_state, num_threads)
        self.factors, self.learning_rate = factors, learning_rate
        self.regularization, self.iterations = regularization, iterations

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "factors": self.factors,
            "learning_rate": self.learning_rate,
            "regularization": self.regularization,
            "iterations": self.iterations,
        }

    def _vectors(self, data: TrainingSet) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        # BPR samples pairs of the positives: every interaction is one, whatever its confidence.
        positives = sp.csr_matrix(data.interactions > 0, dtype=np.float32)
        positives.eliminate_zeros()
        with threadpool_limits(1, "blas"):
            model = BayesianPersonalizedRanking(
                **self.hyperparameters(), num_threads=self.num_threads, random_state=self.random_state
            )
            model.fit(positives, show_progress=False)
        # Users carry a constant 1 in the last column and items their bias, so a dot product scores.
        return np.asarray(model.user_factors, np.float32), np.asarray(model.item_factors, np.float32)


class LightFMWarp(LibraryModel):
    kind = "lightfm_warp"
    library = "lightfm"

    def __init__(
        self,
        no_components: int = 10,
        learning_rate: float = 0.05,
        epochs: int = LIGHTFM_QUICKSTART_EPOCHS,
        item_alpha: float = 0.0,
        user_alpha: float = 0.0,
        max_sampled: int = 10,
        random_state: int = 42,
        num_threads: int = 1,
    ) -> None:
        super().__init__(random_state, num_threads)
        self.no_components, self.learning_rate, self.epochs = no_components, learning_rate, epochs
        self.item_alpha, self.user_alpha, self.max_sampled = item_alpha, user_alpha, max_sampled

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "no_components": self.no_components,
            "learning_rate": self.learning_rate,
            "epochs": self.epochs,
            "item_alpha": self.item_alpha,
            "user_alpha": self.user_alpha,
            "max_sampled": self.max_sampled,
        }

    def documented_parameters(self) -> dict[str, Any]:
        return {"loss": "warp", "learning_schedule": "adagrad", **super().documented_parameters()}

    def _vectors(self, data: TrainingSet) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        from lightfm import LightFM

        positives = sp.coo_matrix(data.interactions)
        positives.sum_duplicates()
        keep = positives.data > 0
        interactions = sp.coo_matrix(
            (np.ones(int(keep.sum()), dtype=np.float32), (positives.row[keep], positives.col[keep])),
            shape=positives.shape,
        )
        model = LightFM(
            loss="warp",
            no_components=self.no_components,
            learning_rate=self.learning_rate,
            item_alpha=self.item_alpha,
            user_alpha=self.user_alpha,
            max_sampled=self.max_sampled,
            random_state=np.random.RandomState(self.random_state),
        )
        model.fit(interactions, epochs=self.epochs, num_threads=self.num_threads)
        # Without features LightFM's representations are the id embeddings; biases join as two columns.
        n_users, n_items = data.n_users, data.n_items
        users = np.hstack(
            [model.user_embeddings, model.user_biases[:, None], np.ones((n_users, 1), dtype=np.float32)]
        )
        items = np.hstack(
            [model.item_embeddings, np.ones((n_items, 1), dtype=np.float32), model.item_biases[:, None]]
        )
        return users.astype(np.float32), items.astype(np.float32)


LIBRARY_MODELS: dict[str, type[LibraryModel]] = {
    model.kind: model for model in (ImplicitALS, ImplicitBPR, LightFMWarp)
}
# The engine model each library model is the persona-free counterpart of: its tuning starts from the
# engine model's configured values of the hyperparameters they share, and searches the same ranges.
ENGINE_COUNTERPART: dict[str, str] = {
    "implicit_als": "als",
    "implicit_bpr": "bpr",
    "lightfm_warp": "lightfm_hybrid",
}


def create_library_model(kind: str, **params: Any) -> LibraryModel:
    """A library model of ``kind`` ("implicit_als", "implicit_bpr", "lightfm_warp") with ``params``."""
    if kind not in LIBRARY_MODELS:
        raise ValueError(f"unknown library model {kind!r}; known: {', '.join(LIBRARY_MODELS)}")
    return LIBRARY_MODELS[kind](**params)


def library_parameters(kind: str) -> tuple[str, ...]:
    """The hyperparameter names of a library model (what tuning may set)."""
    return tuple(LIBRARY_MODELS[kind]().hyperparameters())
