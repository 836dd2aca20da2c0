"""The one interface every recommendation model implements, and the data it is trained and queried on.

Models never see external ids: the training job maps ids once (``engine.data.id_map``) and hands models
dense matrices. A query is a ``UserBatch``: known customers by index, each with the persona mix to
condition on and their demographic features; index -1 means a customer the model never saw, who is
scored from mix and demographics alone (cold start). Batches are the primary path; a single customer
is a batch of one.

Saved models are a folder with ``model.json`` (kind, format version, config) and one ``.npy`` per
array, loaded with ``allow_pickle=False`` so a model file can never run code.
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.artifact.arrays import load_arrays, save_arrays
from engine.errors import PersonaEngineError
from engine.ranking.top_k import top_k

MODEL_FORMAT_VERSION = 1
MODEL_MANIFEST = "model.json"


class ModelFitError(PersonaEngineError, RuntimeError):
    """Training produced an unusable model (for example NaN factors); the message says which model and why."""


class ModelFormatError(PersonaEngineError, ValueError):
    """A saved model folder that cannot be loaded: missing file, unknown kind, wrong version or shape."""


@dataclass(frozen=True)
class TrainingSet:
    """Everything a model may learn from, as dense-index matrices.

    interactions:      (n_users, n_items) float32 CSR, implicit-feedback confidence per pair (> 0).
    user_mix:          (n_users, n_personas) float64, each row on the simplex (inferred persona mixes).
    user_demographics: (n_users, n_demographic_features) CSR, one-hot demographic attributes.
    item_features:     (n_items, n_item_features) CSR, item attributes (category, brand, tags, price
                       band); no identity columns, models add those themselves if they want them.
    interaction_age_days: (n_users, n_items) float32 CSR with exactly the pairs of ``interactions``: days
                       from each pair's latest event to the end of the training period
                       (``engine.data.interactions.interaction_ages``); None when the events had no
                       usable times (models that weigh recency then count every pair alike).
    """

    interactions: sp.csr_matrix
    user_mix: NDArray[np.float64]
    user_demographics: sp.csr_matrix
    item_features: sp.csr_matrix
    persona_names: tuple[str, ...]
    demographic_feature_names: tuple[str, ...]
    item_feature_names: tuple[str, ...]
    seed: int = 42
    interaction_age_days: sp.csr_matrix | None = None

    def __post_init__(self) -> None:
        n_users, n_items = self.interactions.shape
        ages = self.interaction_age_days
        if ages is not None and (
            ages.shape != self.interactions.shape
            or ages.nnz != self.interactions.nnz
            or not np.array_equal(ages.indptr, self.interactions.indptr)
            or not np.array_equal(ages.indices, self.interactions.indices)
        ):
            raise ValueError(
                "TrainingSet.interaction_age_days must hold exactly the pairs of interactions "
                f"(shape {ages.shape}, {ages.nnz} pairs against {self.interactions.shape}, "
                f"{self.interactions.nnz})"
            )
        checks = [
            (self.user_mix.shape == (n_users, len(self.persona_names)), "user_mix", self.user_mix.shape),
            (
                self.user_demographics.shape == (n_users, len(self.demographic_feature_names)),
                "user_demographics",
                self.user_demographics.shape,
            ),
            (
                self.item_features.shape == (n_items, len(self.item_feature_names)),
                "item_features",
                self.item_features.shape,
            ),
        ]
        for ok, name, shape in checks:
            if not ok:
                raise ValueError(
                    f"TrainingSet.{name} has shape {shape}, "
                    f"inconsistent with interactions {n_users}x{n_items}"
                )

    @property
    def n_users(self) -> int:
        return int(self.interactions.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.interactions.shape[1])


@dataclass(frozen=True)
class UserBatch:
    """Whom to score: user_index (n,) with -1 for unknown customers, mix (n, n_personas), demographics.

    ``demographics`` (n, n_demographic_features) is a CSR matrix (training, evaluation: many rows) or
    a dense array (the request path: a few rows, where building a CSR matrix costs more than scoring).

    ``base_mix`` (n, n_personas) is the mix each known customer's own history was learned under (their
    overall inferred mix). When ``mix`` differs from it (a shopping context, a live session, a mix
    given in the request), models that hold a vector per customer move that vector by the difference
    of the two mixes, so the mix replaces the customer's persona instead of being averaged with it.
    None means the two are the same (offline evaluation, which scores the inferred mix).

    ``steering`` (n,) in [0, 1] says, per row, how far a mix given in the request overrides the
    customer's own history (``engine.personas.steering``): 0 (or None for the whole batch) scores them
    as above; 1 scores a known customer as a stranger with that mix would be scored. Models without
    per-customer state ignore it.

    ``events`` (n, n_items) CSR, optional, with the confidence the training matrix gives an event: for
    customers the model never saw (index -1), the events it did not learn from (their history in the
    artifact, or the training period of a cold-start hold-out); for a known customer, *all* their
    events, the training history and what they did since (live events). Models that can place a
    customer from their events (ALS folds them in, ``engine.models.fold_in``) do so, a known customer's
    solved vector taking the place of their fitted one; the others, and rows without events, score as
    without events. A row of a known customer is empty unless they did something since training: a
    fold-in of the history alone would only cost time to give back (nearly) the fitted vector.

    ``validated``: the engine built the batch from values already checked once (PersonaMix weights
    are validated on construction, rows come from the artifact itself), so models skip re-checking it
    (``FittedShape.check_batch``); on the request path those checks cost more than the scoring.
    """

    user_index: NDArray[np.int64]
    mix: NDArray[np.float64]
    demographics: sp.csr_matrix | NDArray[np.floating]
    base_mix: NDArray[np.float64] | None = None
    validated: bool = False
    steering: NDArray[np.float64] | None = None
    events: sp.csr_matrix | None = None

    def __post_init__(self) -> None:
        n = len(self.user_index)
        if self.mix.ndim != 2 or self.mix.shape[0] != n or self.demographics.shape[0] != n:
            raise ValueError(
                f"UserBatch rows disagree: {n} users, mix {self.mix.shape}, "
                f"demographics {self.demographics.shape}"
            )
        if self.base_mix is not None and self.base_mix.shape != self.mix.shape:
            raise ValueError(f"UserBatch base_mix has shape {self.base_mix.shape}, mix {self.mix.shape}")
        if self.steering is not None and self.steering.shape != (n,):
            raise ValueError(f"UserBatch steering has shape {self.steering.shape}, expected ({n},)")
        if self.events is not None and self.events.shape[0] != n:
            raise ValueError(f"UserBatch events has {self.events.shape[0]} rows for {n} users")

    def __len__(self) -> int:
        return len(self.user_index)

    def dense_demographics(self) -> NDArray[np.float64]:
        """(n, n_demographic_features) as a dense float64 array, whichever form the batch holds."""
        if isinstance(self.demographics, np.ndarray):
            return np.asarray(self.demographics, dtype=np.float64)
        return np.asarray(self.demographics.toarray(), dtype=np.float64)

    def rows(self, indices: NDArray[np.int64]) -> UserBatch:
        """The batch of these rows only, in this order."""
        return UserBatch(
            user_index=self.user_index[indices],
            mix=self.mix[indices],
            demographics=(
                self.demographics[indices]
                if isinstance(self.demographics, np.ndarray)
                else sp.csr_matrix(self.demographics[indices])
            ),
            base_mix=self.base_mix[indices] if self.base_mix is not None else None,
            validated=self.validated,
            steering=self.steering[indices] if self.steering is not None else None,
            events=sp.csr_matrix(self.events[indices]) if self.events is not None else None,
        )

    def without_events(self) -> UserBatch:
        """The batch with its customers' unlearned events left out: every unknown row scored from its mix."""
        return dataclasses.replace(self, events=None)

    @classmethod
    def for_personas(cls, n_personas: int, n_demographic_features: int) -> UserBatch:
        """One row per pure persona, no id and no demographics: 'what would this persona want'."""
        return cls(
            user_index=np.full(n_personas, -1, dtype=np.int64),
            mix=np.eye(n_personas, dtype=np.float64),
            demographics=sp.csr_matrix(np.zeros((n_personas, n_demographic_features), dtype=np.float32)),
        )


class Recommender(ABC):
    """fit, score, recommend, save, load: the contract shared by every model (tested once for all)."""

    kind: ClassVar[str]
    # Whether row i of ``score(batch)`` depends only on row i of the batch, to the last bit, whatever
    # the other rows. A BLAS matrix product does not guarantee it (its rounding depends on the number
    # of rows), so only models that compute each row on its own say so; the serving path scores the
    # others one row at a time when a batch must give each row what it would get alone.
    row_independent_scores: ClassVar[bool] = False
    # Whether ``score`` places a customer it never saw from the batch's ``events`` (ALS folds them in);
    # callers build events only for models that use them.
    folds_in_events: ClassVar[bool] = False
    # Wall seconds the last ``fit`` spent inside the factorization it wraps (implicit's or LightFM's fit,
    # Spark MLlib's, or the compiled solver standing in for implicit's ALS), None for models that wrap
    # none. The rest of ``fit`` (matrices, persona and demographic vectors) is the engine's own work,
    # and training cost is judged by the engine's time against this one.
    library_fit_seconds: float | None = None

    @classmethod
    def without_personas(cls, config: dict[str, Any]) -> dict[str, Any] | None:
        """``config`` with persona conditioning switched off (no persona vectors, no persona or
        demographic features), everything else identical: the ablation that measures what personas add.

        None: the model has no such switch (popularity never looks at personas; persona popularity is
        nothing but personas, its ablation is popularity).
        """
        return None

    @abstractmethod
    def fit(self, data: TrainingSet, *, show_progress: bool = False) -> None:
        """Learn from ``data``; raises ModelFitError if the result is unusable."""

    @abstractmethod
    def score(self, users: UserBatch) -> NDArray[np.float32]:
        """Scores (n_users, n_items); higher is better. Works for unknown users (index -1) too."""

    @abstractmethod
    def get_config(self) -> dict[str, Any]:
        """Hyperparameters as plain JSON values; ``cls(**config)`` rebuilds an unfitted twin."""

    @abstractmethod
    def _arrays(self) -> dict[str, NDArray[Any]]:
        """The fitted state as named arrays (what ``save`` writes)."""

    @abstractmethod
    def _restore(self, arrays: dict[str, NDArray[Any]]) -> None:
        """Set the fitted state from arrays read by ``load``; validate shapes."""

    @property
    @abstractmethod
    def n_items(self) -> int: ...

    def forget_folded_in(self) -> None:
        """Drop the vectors remembered from folding events in (``folds_in_events`` models remember the
        fold-in of each distinct row of events of a serving batch): what a page costs after a new event."""
        return  # the others remember nothing

    def item_vectors(self) -> NDArray[np.float32] | None:
        """(n_items, d) when the model scores by inner product, ``score == query_vectors @ item_vectors.T``.

        Such a model can be served through a candidate index (``engine.ranking.candidate_index``) instead of
        a full scan; None (the default) means its scores have no such form.
        """
        return None

    def query_vectors(self, users: UserBatch) -> NDArray[np.float32]:
        """(n_users, d) vectors whose inner products with ``item_vectors()`` are the scores.

        Row i must depend only on row i of the batch, to the last bit (see ``row_independent_scores``):
        the serving path scores a batch's rows against the items one by one and must give each row
        what it would get alone.
        """
        raise NotImplementedError(f"{self.kind} model does not score by inner product")

    def recommend(
        self,
        users: UserBatch,
        k: int,
        *,
        exclude: sp.csr_matrix | None = None,
        item_mask: NDArray[np.bool_] | None = None,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Top-k item indices and scores per user, best first; -1 pads rows with too few candidates."""
        return top_k(self.score(users), k, exclude=exclude, item_mask=item_mask)

    def save(self, directory: Path) -> list[Path]:
        """Write model.json and one .npy per array into ``directory``; returns the files written."""
        arrays = self._arrays()
        written = save_arrays(directory, arrays)
        manifest = {
            "kind": self.kind,
            "format_version": MODEL_FORMAT_VERSION,
            "config": self.get_config(),
            "arrays": sorted(arrays),
        }
        manifest_path = directory / MODEL_MANIFEST
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(manifest_path)
        return written

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Rebuild a fitted model from ``save`` output; never unpickles."""
        manifest = read_model_manifest(directory)
        if manifest["kind"] != cls.kind:
            raise ModelFormatError(f"{directory}: holds a {manifest['kind']!r} model, not {cls.kind!r}")
        model = cls(**manifest["config"])
        model._restore(load_arrays(directory, manifest["arrays"], error=ModelFormatError))
        return model


def read_model_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MODEL_MANIFEST
    if not path.is_file():
        raise ModelFormatError(f"{directory}: no {MODEL_MANIFEST}; not a saved model folder")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ModelFormatError(f"{path}: not valid JSON ({error})") from None
    for key in ("kind", "format_version", "config", "arrays"):
        if key not in manifest:
            raise ModelFormatError(f"{path}: missing key {key!r}")
    if manifest["format_version"] != MODEL_FORMAT_VERSION:
        raise ModelFormatError(
            f"{path}: format version {manifest['format_version']} is not supported "
            f"(expected {MODEL_FORMAT_VERSION})"
        )
    return dict(manifest)
