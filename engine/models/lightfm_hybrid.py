"""A LightFM hybrid whose customers are the sum of their id, their persona mix and their demographics.

LightFM represents a customer as the weighted sum of the embeddings of the features in their row.
Giving every customer an id feature, one feature per persona (weighted by their mix) and their
demographic features means the persona and demographic embeddings are learned from everyone, and
the same sum can be formed for any mix: a known customer in a different context (weekday vs
weekend), a customer never seen (mix and demographics only) or a pure persona.

After training, the embeddings and biases are copied out of LightFM and scoring is plain numpy, so
a saved model is a handful of float arrays: loading never unpickles a LightFM object and serving
does not import LightFM at all.

Feature weighting (chosen so known and unknown customers live on the same scale): a customer row is
``[1 (own id) | persona_weight * mix | demographic_weight * demographics / n_attributes]`` and is then
divided by its sum, LightFM's own normalisation. Dropping the id for an unknown customer therefore
re-weights the remaining features instead of shrinking the representation. Item rows are
``[1 (own id) | item_attribute_weight * attributes / n_attributes]``, normalised the same way: items
never bought still score through their category, brand and tags, while ``item_attribute_weight``
sets how much items with the same attributes are tied together (at the default 0.25, an item is 80%
its own id; on the synthetic shop 0.25 beat 1.0 by a few percent NDCG, as did a learning rate of 0.02
over 0.05).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from rich.progress import track

from engine.models.base import ModelFitError, Recommender, TrainingSet, UserBatch
from engine.models.fitted_shape import FittedShape, ModelNotFittedError, expect_array, require_finite

LIGHTFM_LOSSES = ("warp", "bpr", "logistic", "warp-kos")


def normalise_rows(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Divide each row by its sum; all-zero rows stay zero."""
    sums = np.asarray(matrix.sum(axis=1), dtype=np.float64).ravel()
    scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    return sp.csr_matrix(sp.diags(scale) @ matrix)


def user_feature_weights(
    user_index: NDArray[np.int64],
    mix: NDArray[np.float64],
    demographics: sp.csr_matrix | NDArray[np.floating],
    persona_weight: float,
    demographic_weight: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64], sp.csr_matrix]:
    """The normalised weights of a customer's id, persona and demographic features, block by block.

    Returned separately so that scoring never materialises the wide (n, n_users + ...) row matrix.
    """
    identity = (np.asarray(user_index) >= 0).astype(np.float64)
    personas = persona_weight * np.asarray(mix, dtype=np.float64)
    demo = sp.csr_matrix(demographics, dtype=np.float64)
    attributes_present = np.asarray(demo.sum(axis=1), dtype=np.float64).ravel()
    demo_scale = np.divide(
        demographic_weight,
        attributes_present,
        out=np.zeros_like(attributes_present),
        where=attributes_present > 0,
    )
    demo = sp.csr_matrix(sp.diags(demo_scale) @ demo)
    total = identity + personas.sum(axis=1) + demographic_weight * (attributes_present > 0)
    inverse = np.divide(1.0, total, out=np.zeros_like(total), where=total > 0)
    return identity * inverse, personas * inverse[:, None], sp.csr_matrix(sp.diags(inverse) @ demo)


def training_user_features(
    data: TrainingSet, persona_weight: float, demographic_weight: float
) -> sp.csr_matrix:
    """LightFM's user feature matrix for the training customers: [identity | personas | demographics]."""
    identity, personas, demo = user_feature_weights(
        np.arange(data.n_users, dtype=np.int64),
        data.user_mix,
        data.user_demographics,
        persona_weight,
        demographic_weight,
    )
    blocks = [sp.diags(identity), sp.csr_matrix(personas), demo]
    return sp.csr_matrix(sp.hstack(blocks, format="csr"), dtype=np.float32)


def training_item_features(data: TrainingSet, attribute_weight: float) -> sp.csr_matrix:
    """LightFM's item features: [1 (own id) | attribute_weight * attributes / n_attributes], rows sum to 1."""
    attributes = sp.csr_matrix(data.item_features, dtype=np.float64)
    present = np.asarray(attributes.sum(axis=1), dtype=np.float64).ravel()
    scale = np.divide(attribute_weight, present, out=np.zeros_like(present), where=present > 0)
    blocks = [sp.identity(data.n_items, format="csr"), sp.diags(scale) @ attributes]
    return sp.csr_matrix(normalise_rows(sp.csr_matrix(sp.hstack(blocks, format="csr"))), dtype=np.float32)


class LightFMHybridModel(Recommender):
    """LightFM with id + persona + demographic user features, scored in numpy from the learned embeddings.

    ``persona_weight`` and ``demographic_weight`` set how much of a customer's representation comes
    from their persona mix and demographics relative to their own id (weight 1): at 1.0 and 0.5 a
    known customer is 40% id, 40% personas, 20% demographics. Raising ``persona_weight`` makes
    recommendations follow context shifts in the mix more strongly. ``num_threads`` > 1 trains
    Hogwild-style, so results then vary slightly between runs even with a fixed ``random_state``.
    """

    kind = "lightfm_hybrid"

    def __init__(
        self,
        no_components: int = 32,
        loss: str = "warp",
        learning_rate: float = 0.02,
        epochs: int = 30,
        item_alpha: float = 1e-6,
        user_alpha: float = 1e-6,
        persona_weight: float = 1.0,
        demographic_weight: float = 0.5,
        item_attribute_weight: float = 0.25,
        max_sampled: int = 10,
        num_threads: int = 2,
        random_state: int = 42,
    ) -> None:
        positive_ints = {"no_components": no_components, "epochs": epochs, "max_sampled": max_sampled}
        positive_ints["num_threads"] = num_threads
        for name, value in positive_ints.items():
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if loss not in LIGHTFM_LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LIGHTFM_LOSSES)}; got {loss!r}")
        if not np.isfinite(learning_rate) or learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate}")
        for name, weight in {
            "item_alpha": item_alpha,
            "user_alpha": user_alpha,
            "persona_weight": persona_weight,
            "demographic_weight": demographic_weight,
            "item_attribute_weight": item_attribute_weight,
        }.items():
            if not np.isfinite(weight) or weight < 0:
                raise ValueError(f"{name} must be a non-negative number, got {weight}")
        self.no_components = no_components
        self.loss = loss
        self.learning_rate = float(learning_rate)
        self.epochs = epochs
        self.item_alpha = float(item_alpha)
        self.user_alpha = float(user_alpha)
        self.persona_weight = float(persona_weight)
        self.demographic_weight = float(demographic_weight)
        self.item_attribute_weight = float(item_attribute_weight)
        self.max_sampled = max_sampled
        self.num_threads = num_threads
        self.random_state = int(random_state)
        self._shape: FittedShape | None = None
        self._state: dict[str, NDArray[np.float32]] | None = None

    def get_config(self) -> dict[str, Any]:
        return {
            "no_components": self.no_components,
            "loss": self.loss,
            "learning_rate": self.learning_rate,
            "epochs": self.epochs,
            "item_alpha": self.item_alpha,
            "user_alpha": self.user_alpha,
            "persona_weight": self.persona_weight,
            "demographic_weight": self.demographic_weight,
            "item_attribute_weight": self.item_attribute_weight,
            "max_sampled": self.max_sampled,
            "num_threads": self.num_threads,
            "random_state": self.random_state,
        }

    @classmethod
    def without_personas(cls, config: dict[str, Any]) -> dict[str, Any]:
        """No persona, demographic or item attribute features: LightFM on ids alone (plain WARP)."""
        return {**config, "persona_weight": 0.0, "demographic_weight": 0.0, "item_attribute_weight": 0.0}

    @property
    def _ids_only_users(self) -> bool:
        return self.persona_weight == 0.0 and self.demographic_weight == 0.0

    def fit(self, data: TrainingSet, *, show_progress: bool = False) -> None:
        shape = FittedShape.of(data)
        shape.check_training_set(data, self.kind)
        # Zero-weight feature blocks are left out, not passed as empty columns: LightFM draws its
        # initial embeddings for every feature column, so empty ones would change the random stream.
        if self.item_attribute_weight == 0.0:
            item_features = sp.identity(data.n_items, dtype=np.float32, format="csr")
        else:
            item_features = training_item_features(data, self.item_attribute_weight)
        estimator = self._train(data, item_features, show_progress)
        self._adopt(estimator, item_features, shape)

    def _train(self, data: TrainingSet, item_features: sp.csr_matrix, show_progress: bool) -> Any:
        """Run LightFM one epoch at a time (same result as ``fit(epochs=n)``, but with progress)."""
        from lightfm import LightFM  # imported here so that loading and scoring never need LightFM

        estimator = LightFM(
            no_components=self.no_components,
            loss=self.loss,
            learning_rate=self.learning_rate,
            item_alpha=self.item_alpha,
            user_alpha=self.user_alpha,
            max_sampled=self.max_sampled,
            random_state=np.random.RandomState(self.random_state),
        )
        positives = sp.coo_matrix(data.interactions)
        positives.sum_duplicates()
        keep = positives.data > 0
        rows, cols, confidence = positives.row[keep], positives.col[keep], positives.data[keep]
        interactions = sp.coo_matrix((np.ones_like(confidence), (rows, cols)), shape=positives.shape)
        # Confidence becomes a per-pair weight with mean 1, so the learning rate keeps its meaning
        # whatever scale the shop's event weights are on.
        weights = sp.coo_matrix((confidence / confidence.mean(), (rows, cols)), shape=positives.shape)
        user_features = (
            sp.identity(data.n_users, dtype=np.float32, format="csr")
            if self._ids_only_users
            else training_user_features(data, self.persona_weight, self.demographic_weight)
        )
        epochs: Iterable[int] = range(self.epochs)
        if show_progress:
            epochs = track(epochs, description=f"{self.kind}: epochs", total=self.epochs)
        started = time.perf_counter()
        for _ in epochs:
            estimator.fit_partial(
                interactions,
                user_features=user_features,
                item_features=item_features,
                sample_weight=weights,
                epochs=1,
                num_threads=self.num_threads,
            )
        self.library_fit_seconds = time.perf_counter() - started
        return estimator

    def _adopt(self, estimator: Any, item_features: sp.csr_matrix, shape: FittedShape) -> None:
        """Copy the learned embeddings out of LightFM, splitting the user ones by feature block."""
        user_embeddings = np.asarray(estimator.user_embeddings, dtype=np.float32)
        user_biases = np.asarray(estimator.user_biases, dtype=np.float32)
        item_embeddings = np.asarray(estimator.item_embeddings, dtype=np.float32)
        item_biases = np.asarray(estimator.item_biases, dtype=np.float32)
        require_finite(
            self.kind,
            user_embeddings=user_embeddings,
            user_biases=user_biases,
            item_embeddings=item_embeddings,
            item_biases=item_biases,
        )
        if self._ids_only_users:  # the persona and demographic blocks were left out: zero embeddings
            extra = shape.n_personas + shape.n_demographic_features
            user_embeddings = np.vstack([user_embeddings, np.zeros((extra, self.no_components), np.float32)])
            user_biases = np.concatenate([user_biases, np.zeros(extra, np.float32)])
        n_user_features = shape.n_users + shape.n_personas + shape.n_demographic_features
        if user_embeddings.shape != (n_user_features, self.no_components) or item_embeddings.shape != (
            item_features.shape[1],
            self.no_components,
        ):
            raise ModelFitError(
                f"{self.kind} model: LightFM returned user embeddings {user_embeddings.shape} and item "
                f"embeddings {item_embeddings.shape}, expected ({n_user_features}, {self.no_components}) and "
                f"({item_features.shape[1]}, {self.no_components})"
            )
        ids_end = shape.n_users
        personas_end = ids_end + shape.n_personas
        self._state = {
            "id_embeddings": user_embeddings[:ids_end],
            "id_biases": user_biases[:ids_end],
            "persona_embeddings": user_embeddings[ids_end:personas_end],
            "persona_biases": user_biases[ids_end:personas_end],
            "demographic_embeddings": user_embeddings[personas_end:],
            "demographic_biases": user_biases[personas_end:],
            "item_representations": np.asarray(item_features @ item_embeddings, dtype=np.float32),
            "item_representation_biases": np.asarray(item_features @ item_biases, dtype=np.float32),
        }
        self._shape = shape

    def _fitted(self) -> tuple[FittedShape, dict[str, NDArray[np.float32]]]:
        if self._shape is None or self._state is None:
            raise ModelNotFittedError(f"{self.kind} model is not fitted; call fit or load first")
        return self._shape, self._state

    def user_representations(self, users: UserBatch) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Each customer's embedding and bias, as LightFM's ``get_user_representations`` would give."""
        shape, state = self._fitted()
        shape.check_batch(users, self.kind)
        identity, personas, demo = user_feature_weights(
            users.user_index, users.mix, users.demographics, self.persona_weight, self.demographic_weight
        )
        known = np.clip(users.user_index, 0, None)
        embedding = (
            identity[:, None] * state["id_embeddings"][known]
            + personas @ state["persona_embeddings"]
            + demo @ state["demographic_embeddings"]
        )
        bias = (
            identity * state["id_biases"][known]
            + personas @ state["persona_biases"]
            + demo @ state["demographic_biases"]
        )
        embedding, bias = np.asarray(embedding, dtype=np.float32), np.asarray(bias, dtype=np.float32)
        if users.steering is not None:
            self._steer(users, embedding, bias)
        return embedding, bias

    def _steer(self, users: UserBatch, embedding: NDArray[np.float32], bias: NDArray[np.float32]) -> None:
        """Known rows with steering s > 0 become ``(1 - s)`` themselves plus ``s`` a stranger with their mix.

        The requested mix already replaces the customer's mix features; steering also takes weight off
        their own id (their history): at s = 1 they are scored from the requested mix and their
        demographics alone, as a new customer with that mix would be. Both representations are on one
        scale (LightFM's normalised rows), so s is the share of the representation handed over.
        """
        assert users.steering is not None
        rows = np.flatnonzero((users.steering > 0) & (users.user_index >= 0))
        if rows.size == 0:
            return
        _, state = self._fitted()
        _, personas, demo = user_feature_weights(
            np.full(rows.size, -1, dtype=np.int64),
            users.mix[rows],
            users.demographics[rows],
            self.persona_weight,
            self.demographic_weight,
        )
        stranger = personas @ state["persona_embeddings"] + demo @ state["demographic_embeddings"]
        stranger_bias = personas @ state["persona_biases"] + demo @ state["demographic_biases"]
        share = users.steering[rows]
        embedding[rows] = (1.0 - share[:, None]) * embedding[rows] + share[:, None] * stranger
        bias[rows] = (1.0 - share) * bias[rows] + share * stranger_bias

    def score(self, users: UserBatch) -> NDArray[np.float32]:
        _, state = self._fitted()
        embedding, bias = self.user_representations(users)
        scores = embedding @ state["item_representations"].T
        scores += bias[:, None] + state["item_representation_biases"][None, :]
        return np.asarray(scores, dtype=np.float32)

    @property
    def n_items(self) -> int:
        return self._fitted()[0].n_items

    def _arrays(self) -> dict[str, NDArray[Any]]:
        shape, state = self._fitted()
        return {"shape": shape.as_array(), **state}

    def _restore(self, arrays: dict[str, NDArray[Any]]) -> None:
        shape = FittedShape.from_arrays(arrays, self.kind)
        d = self.no_components
        expected = {
            "id_embeddings": (shape.n_users, d),
            "id_biases": (shape.n_users,),
            "persona_embeddings": (shape.n_personas, d),
            "persona_biases": (shape.n_personas,),
            "demographic_embeddings": (shape.n_demographic_features, d),
            "demographic_biases": (shape.n_demographic_features,),
            "item_representations": (shape.n_items, d),
            "item_representation_biases": (shape.n_items,),
        }
        self._state = {name: expect_array(arrays, name, dims, self.kind) for name, dims in expected.items()}
        self._shape = shape
