"""The dimensions a model was fitted on, and the checks that queries and saved arrays still match them.

Every model answers for a fixed set of customers, items, personas and demographic columns. A query
built against another catalog (a mix over six personas for a five-persona model) or a saved array
cut to the wrong size would otherwise surface as a broadcasting error deep inside a matrix product,
or worse as silently wrong scores. Checking once, here, lets every model reject such input with a
message that names the model, the field and the offending row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.errors import PersonaEngineError
from engine.models.base import ModelFitError, ModelFormatError, TrainingSet, UserBatch

MIX_SUM_TOLERANCE = 1e-4


class ModelNotFittedError(PersonaEngineError, RuntimeError):
    """A model was asked to score, recommend or save before ``fit`` or ``load`` gave it a state."""


class UserBatchError(PersonaEngineError, ValueError):
    """A ``UserBatch`` that does not fit the model it was sent to; ``field`` names the culprit."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class FittedShape:
    """Sizes of the training set a model learned from; saved with the model as ``shape.npy``."""

    n_users: int
    n_items: int
    n_personas: int
    n_demographic_features: int

    @classmethod
    def of(cls, data: TrainingSet) -> FittedShape:
        return cls(
            n_users=data.n_users,
            n_items=data.n_items,
            n_personas=len(data.persona_names),
            n_demographic_features=len(data.demographic_feature_names),
        )

    def as_array(self) -> NDArray[np.int64]:
        return np.array(
            [self.n_users, self.n_items, self.n_personas, self.n_demographic_features], dtype=np.int64
        )

    @classmethod
    def from_arrays(cls, arrays: dict[str, NDArray[Any]], kind: str) -> FittedShape:
        """Read the ``shape`` array written by ``as_array``; a model folder without it is unusable."""
        if "shape" not in arrays:
            raise ModelFormatError(f"{kind} model: saved arrays lack 'shape'")
        raw = arrays["shape"]
        if raw.shape != (4,) or not np.issubdtype(raw.dtype, np.integer) or (raw < 0).any():
            raise ModelFormatError(
                f"{kind} model: array 'shape' must be 4 non-negative integers, got {raw.dtype} {raw.shape}"
            )
        n_users, n_items, n_personas, n_demographic_features = (int(v) for v in raw)
        if min(n_users, n_items, n_personas) == 0:
            raise ModelFormatError(
                f"{kind} model: array 'shape' says {n_users} users, {n_items} items, {n_personas} personas"
            )
        return cls(n_users, n_items, n_personas, n_demographic_features)

    def check_batch(self, users: UserBatch, kind: str) -> None:
        """Reject a batch that was built for different dimensions or holds unusable mixes.

        A batch the engine marked ``validated`` (built from checked values) is trusted as it is.
        """
        if users.validated:
            return
        index = np.asarray(users.user_index)
        if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
            raise UserBatchError(
                f"{kind} model: user_index must be a 1-D integer array, got {index.dtype} {index.shape}",
                field="user_index",
            )
        out_of_range = np.flatnonzero((index < -1) | (index >= self.n_users))
        if out_of_range.size:
            row = int(out_of_range[0])
            raise UserBatchError(
                f"{kind} model: user_index {int(index[row])} in row {row} is outside the "
                f"{self.n_users} customers it was fitted on (use -1 for an unknown customer)",
                field="user_index",
            )
        if users.mix.shape[1] != self.n_personas:
            raise UserBatchError(
                f"{kind} model: mix has {users.mix.shape[1]} persona columns, "
                f"the model knows {self.n_personas}",
                field="mix",
            )
        self._check_mix_rows(users.mix, kind)
        if users.base_mix is not None:
            self._check_mix_rows(users.base_mix, kind, field="base_mix")
        if users.steering is not None and not (
            np.isfinite(users.steering).all() and ((users.steering >= 0) & (users.steering <= 1)).all()
        ):
            raise UserBatchError(f"{kind} model: steering must be between 0 and 1", field="steering")
        if users.demographics.shape[1] != self.n_demographic_features:
            raise UserBatchError(
                f"{kind} model: demographics has {users.demographics.shape[1]} columns, "
                f"the model knows {self.n_demographic_features}",
                field="demographics",
            )
        events = users.events
        if events is not None:
            if events.shape[1] != self.n_items:
                raise UserBatchError(
                    f"{kind} model: events cover {events.shape[1]} items, the model knows {self.n_items}",
                    field="events",
                )
            if events.data.size and (not np.all(np.isfinite(events.data)) or (events.data < 0).any()):
                raise UserBatchError(f"{kind} model: events must be finite and non-negative", field="events")
        demographics = users.demographics
        values = demographics if isinstance(demographics, np.ndarray) else demographics.data
        if values.size and (not np.all(np.isfinite(values)) or (values < 0).any()):
            raise UserBatchError(
                f"{kind} model: demographics must be finite and non-negative", field="demographics"
            )

    @staticmethod
    def _check_mix_rows(mix: NDArray[np.float64], kind: str, field: str = "mix") -> None:
        bad_value = np.flatnonzero(~np.isfinite(mix).all(axis=1) | (mix < 0).any(axis=1))
        if bad_value.size:
            row = int(bad_value[0])
            raise UserBatchError(
                f"{kind} model: {field} row {row} has a negative or non-finite weight: {mix[row].tolist()}",
                field=field,
            )
        sums = mix.sum(axis=1)
        off_simplex = np.flatnonzero(np.abs(sums - 1.0) > MIX_SUM_TOLERANCE)
        if off_simplex.size:
            row = int(off_simplex[0])
            raise UserBatchError(
                f"{kind} model: {field} row {row} sums to {float(sums[row]):.6f}, not 1", field=field
            )

    def check_training_set(self, data: TrainingSet, kind: str) -> None:
        """Refuse training data that no model can learn from, naming what is wrong with it."""
        if self.n_users == 0 or self.n_items == 0:
            raise ModelFitError(
                f"{kind} model: training set has {self.n_users} users and {self.n_items} items"
            )
        if self.n_personas == 0:
            raise ModelFitError(f"{kind} model: training set has no personas")
        values = data.interactions.data
        if data.interactions.nnz == 0 or not (values > 0).any():
            raise ModelFitError(f"{kind} model: training set has no positive interactions")
        if not np.all(np.isfinite(values)) or (values < 0).any():
            raise ModelFitError(f"{kind} model: interaction confidences must be finite and non-negative")
        self._check_mix_rows(data.user_mix, kind)


def expect_array(
    arrays: dict[str, NDArray[Any]], name: str, shape: tuple[int, ...], kind: str
) -> NDArray[np.float32]:
    """One saved float array, checked for presence, shape and finiteness, as float32."""
    if name not in arrays:
        raise ModelFormatError(f"{kind} model: saved arrays lack {name!r}")
    array = arrays[name]
    if array.shape != shape:
        raise ModelFormatError(f"{kind} model: array {name!r} has shape {array.shape}, expected {shape}")
    if not np.issubdtype(array.dtype, np.floating) or not np.all(np.isfinite(array)):
        raise ModelFormatError(f"{kind} model: array {name!r} must hold finite floats ({array.dtype})")
    return np.asarray(array, dtype=np.float32)


def require_finite(kind: str, **arrays: NDArray[np.floating]) -> None:
    """Raise ModelFitError naming the first fitted array with NaN or inf (a diverged fit)."""
    for name, array in arrays.items():
        if not np.all(np.isfinite(array)):
            raise ModelFitError(
                f"{kind} model: fitted {name} contain NaN or inf, a diverged fit: raise the "
                "regularisation, or lower the learning rate of a model that has one (bpr, lightfm_hybrid)"
            )
