"""A customer's persona mix as a first-class value: named weights on the simplex.

A mix is what every part of the engine conditions on: the models blend persona vectors by it, offers
and layouts combine per-persona response estimates by it, and the server accepts one in a request. A
loose ``dict`` would let a typo'd persona name or a NaN weight slip through to a matrix product, so
mixes are validated once, here, with errors that name the offending persona and value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from engine.errors import PersonaEngineError
from engine.invalid_request import InvalidRequestError


class PersonaMixError(PersonaEngineError, ValueError):
    """A mix that cannot be used; ``field`` names the persona (or ``"persona_mix"`` for the whole mix)."""

    def __init__(self, message: str, field: str = "persona_mix") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class PersonaMix:
    """Weights over a fixed, ordered set of personas; weights are non-negative and sum to 1."""

    personas: tuple[str, ...]
    weights: NDArray[np.float64]

    def __post_init__(self) -> None:
        if len(self.personas) != len(self.weights):
            raise PersonaMixError(
                f"{len(self.weights)} weights for {len(self.personas)} personas; they must match"
            )
        if not np.all(np.isfinite(self.weights)) or (self.weights < 0).any():
            raise PersonaMixError("mix weights must be finite and non-negative")
        if not math.isclose(float(self.weights.sum()), 1.0, rel_tol=0, abs_tol=1e-6):
            raise PersonaMixError(f"mix weights must sum to 1, not {float(self.weights.sum()):.6f}")

    @classmethod
    def from_mapping(cls, weights: Mapping[str, float], personas: Sequence[str]) -> PersonaMix:
        """Validate and normalise user-given weights (for example from the CLI) against a catalog.

        Personas not named get weight 0. Unknown names, negative, NaN or infinite weights, and a mix
        whose weights are all zero are rejected with a message naming the persona at fault.
        """
        order = {name: i for i, name in enumerate(personas)}
        vector = np.zeros(len(personas), dtype=np.float64)
        if not weights:
            raise PersonaMixError("persona mix is empty; give at least one persona with a positive weight")
        for name, raw in weights.items():
            if name not in order:
                known = ", ".join(personas)
                raise PersonaMixError(f"unknown persona {name!r} in persona mix; known: {known}", field=name)
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise PersonaMixError(
                    f"weight of persona {name!r} is not a number: {raw!r}", field=name
                ) from None
            problem = _weight_problem(value)
            if problem is not None:
                raise PersonaMixError(f"weight of persona {name!r} {problem}", field=name)
            vector[order[name]] = value
        if vector.max() <= 0:
            raise PersonaMixError("persona mix weights are all zero; at least one must be positive")
        return cls(tuple(personas), _normalised(vector))

    @classmethod
    def from_entries(
        cls, entries: Sequence[tuple[str, float]], personas: Sequence[str], field: str = "persona_mix"
    ) -> PersonaMix:
        """Validate and normalise a request's list of (persona id, weight) entries against a catalog.

        A request's mix is a list, so unlike ``from_mapping`` it can name a persona twice, and its
        errors are ``InvalidRequestError``s whose path starts at ``field``, the mix's place in the
        request (``targets[3].persona_mix.weights[1].weight: must be >= 0, got -0.2``); a duplicate's
        message names the entry it repeats by its full path too. This is the request path's one
        validation of the mix.
        """
        if not entries:
            raise InvalidRequestError(
                f"{field}.weights",
                "empty; give at least one persona with a positive weight, or leave the mix unset",
            )
        order = {name: i for i, name in enumerate(personas)}
        seen: dict[str, int] = {}
        vector = np.zeros(len(personas), dtype=np.float64)
        for i, (name, value) in enumerate(entries):
            where = f"{field}.weights[{i}]"
            if name not in order:
                raise InvalidRequestError(
                    f"{where}.persona_id", f"unknown persona {name!r}; known: {', '.join(personas)}"
                )
            if name in seen:
                raise InvalidRequestError(
                    f"{where}.persona_id", f"{name!r} already appears in {field}.weights[{seen[name]}]"
                )
            seen[name] = i
            problem = _weight_problem(value)
            if problem is not None:
                raise InvalidRequestError(f"{where}.weight", problem)
            vector[order[name]] = value
        if vector.max() <= 0:
            raise InvalidRequestError(
                f"{field}.weights", "all weights are zero; at least one must be positive"
            )
        return cls(tuple(personas), _normalised(vector))

    @classmethod
    def of_checked(cls, personas: tuple[str, ...], weights: NDArray[np.float64]) -> PersonaMix:
        """A mix from weights already known to be valid (rows the engine normalised onto the simplex at
        load), without checking them again: the request path reads a stored mix per call, and the
        checks would cost more than the look-up. Never for weights that come from outside."""
        mix = object.__new__(cls)
        object.__setattr__(mix, "personas", personas)
        object.__setattr__(mix, "weights", weights)
        return mix

    @classmethod
    def uniform(cls, personas: Sequence[str]) -> PersonaMix:
        n = len(personas)
        return cls(tuple(personas), np.full(n, 1.0 / n))

    @classmethod
    def pure(cls, persona: str, personas: Sequence[str]) -> PersonaMix:
        """All weight on one persona: how the engine scores 'what would a Bargain Hunter want'."""
        return cls.from_mapping({persona: 1.0}, personas)

    def as_dict(self) -> dict[str, float]:
        return {p: float(w) for p, w in zip(self.personas, self.weights, strict=True)}

    @property
    def dominant(self) -> str:
        return self.personas[int(np.argmax(self.weights))]

    def total_variation(self, other: PersonaMix) -> float:
        """Half the L1 distance: the largest difference in probability the two mixes give any set."""
        if other.personas != self.personas:
            raise PersonaMixError("cannot compare mixes over different persona lists")
        return float(0.5 * np.abs(self.weights - other.weights).sum())


def _normalised(vector: NDArray[np.float64]) -> NDArray[np.float64]:
    """Weights over their sum, scaled by the largest first: finite weights near the float limits
    (two of 1e308, or 1e-320 each) would otherwise sum to infinity or lose their digits."""
    scaled = vector / vector.max()
    return scaled / scaled.sum()


def _weight_problem(value: float) -> str | None:
    """What is wrong with one given weight (the rule both ways of giving a mix share), or None."""
    if math.isnan(value) or math.isinf(value):
        return f"must be finite, got {value}"
    if value < 0:
        return f"must be >= 0, got {value}"
    return None


def normalize_rows(
    matrix: NDArray[np.floating], *, fallback: NDArray[np.floating] | None = None
) -> NDArray[np.float64]:
    """Row-normalise non-negative weights onto the simplex; all-zero rows take ``fallback`` (or uniform)."""
    m = np.asarray(matrix, dtype=np.float64)
    totals = m.sum(axis=1, keepdims=True)
    out = np.divide(m, totals, out=np.zeros_like(m), where=totals > 0)
    empty = totals[:, 0] <= 0
    if empty.any():
        fill = (
            np.full(m.shape[1], 1.0 / m.shape[1])
            if fallback is None
            else np.asarray(fallback, dtype=np.float64)
        )
        out[empty] = fill
    return out


def total_variation_rows(a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float64]:
    """Total-variation distance between matching rows of two mix matrices."""
    return 0.5 * np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).sum(axis=1)
