"""The evidence behind every known customer's persona mix, precomputed at training time for serving.

Explaining a mix needs the customer's encoded events, which the artifact does not carry (serving
never reads the raw events). So training explains every customer at once
(``PersonaInferenceModel.strongest_signals``, vectorised over chunks of customers: a loop calling
``explain`` per customer took about a millisecond each, 17 minutes for a million customers) and
stores the strongest signals per customer and persona as plain arrays:

    features.json            the signal vocabulary: per signal its feature name and description,
                             the population's share of events with it and each persona's share
    feature.npy              (customers, personas, top) signal of each slot, -1 where none: int8,
                             or int16 past 127 signals (``signal_index_dtype``; int32 once)
    customer_value.npy       (customers, personas, top) float32, and likewise
    contribution.npy

The population's and the personas' shares are facts of the signal, not of the customer, so they are
kept once per signal (artifacts written before kept them per customer too, 40% of the explanations,
which ``load`` still reads).

A profile request then reads one (personas, top) slice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numba
import numpy as np
from numpy.typing import NDArray

from engine.artifact.arrays import load_arrays, save_arrays
from engine.errors import PersonaEngineError
from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.inference.model import PersonaInferenceModel
from engine.personas.inference.signals import (
    CUSTOMER_SIGNAL_VALUES,
    SIGNAL_VALUES,
    SignalContribution,
    signal_index_dtype,
)

DEFAULT_TOP = 5
_VALUES = CUSTOMER_SIGNAL_VALUES
_FEATURES_FILE = "features.json"
_FEATURE = "feature"  # feature.npy


class MixExplanationsError(PersonaEngineError, ValueError):
    """Stored explanations that do not fit together; the message names the file and the shapes."""


class MixExplanations:
    """Per customer and persona, the top signals that pulled the customer towards the persona."""

    def __init__(
        self,
        persona_ids: Sequence[str],
        features: Sequence[tuple[str, str]],
        feature: NDArray[np.integer],
        values: Mapping[str, NDArray[np.floating]],
        population_value: NDArray[np.floating],
        persona_value: NDArray[np.floating],
    ) -> None:
        """``values``: per name in ``CUSTOMER_SIGNAL_VALUES``, shaped like ``feature``;
        ``population_value`` (signals,) and ``persona_value`` (signals, personas) per signal."""
        self.persona_ids = tuple(persona_ids)
        self.features = tuple(features)
        given = np.asarray(feature)
        if given.ndim != 3 or given.shape[1] != len(self.persona_ids):
            raise MixExplanationsError(
                f"feature has shape {given.shape}, expected (customers, {len(self.persona_ids)}, top)"
            )
        if not np.issubdtype(given.dtype, np.integer):
            raise MixExplanationsError(f"feature holds {given.dtype} values, expected signal indices")
        if given.size and (given.max() >= len(self.features) or given.min() < -1):
            raise MixExplanationsError(f"feature indices outside the {len(self.features)} known signals")
        self.feature = given.astype(signal_index_dtype(len(self.features)), copy=False)
        self.values = {name: np.asarray(values[name], dtype=np.float32) for name in _VALUES}
        for name, array in self.values.items():
            if array.shape != self.feature.shape:
                raise MixExplanationsError(f"{name} has shape {array.shape}, feature {self.feature.shape}")
        self.population_value = np.asarray(population_value, dtype=np.float32)
        self.persona_value = np.asarray(persona_value, dtype=np.float32)
        signals = (len(self.features), len(self.persona_ids))
        if self.population_value.shape != signals[:1] or self.persona_value.shape != signals:
            raise MixExplanationsError(
                f"population_value has shape {self.population_value.shape} and persona_value "
                f"{self.persona_value.shape}, expected ({signals[0]},) and {signals} (signals, personas)"
            )

    @property
    def n_customers(self) -> int:
        return int(self.feature.shape[0])

    @classmethod
    def build(
        cls, inference: PersonaInferenceModel, mixes: InferredMixes, top: int = DEFAULT_TOP
    ) -> MixExplanations:
        """Explain every customer of ``mixes`` (rows in ``mixes.customer_ids`` order).

        The signal vocabulary lists only the feature values some customer's explanation uses, in the
        order they first occur (customer by customer, persona by persona, strongest first).
        """
        strongest = inference.strongest_signals(mixes, top=top)
        column = strongest.column
        first = _first_positions(column.ravel(), len(strongest.names))
        present = np.flatnonzero(first >= 0)
        vocabulary = present[np.argsort(first[present], kind="stable")]
        # the last entry answers for -1 (no signal): one gather instead of masks over every entry
        position = np.full(len(strongest.names) + 1, -1, dtype=signal_index_dtype(vocabulary.size))
        position[vocabulary] = np.arange(vocabulary.size)
        feature = position[column]
        descriptions = [(strongest.names[j], strongest.descriptions[j]) for j in vocabulary]
        return cls(
            mixes.persona_ids,
            descriptions,
            feature,
            strongest.values,
            strongest.population_value[vocabulary],
            strongest.persona_value[vocabulary],
        )

    def signals(self, row: int) -> dict[str, list[SignalContribution]]:
        """One customer's signals per persona, strongest first (empty lists when there is no evidence)."""
        if not 0 <= row < self.n_customers:
            raise IndexError(f"customer row {row} outside 0..{self.n_customers - 1}")
        out: dict[str, list[SignalContribution]] = {}
        for p, persona in enumerate(self.persona_ids):
            entries = []
            for slot in range(self.feature.shape[2]):
                column = int(self.feature[row, p, slot])
                if column < 0:
                    break
                name, description = self.features[column]
                entries.append(
                    SignalContribution(
                        feature=name,
                        description=description,
                        population_value=float(self.population_value[column]),
                        persona_value=float(self.persona_value[column, p]),
                        **{value: float(self.values[value][row, p, slot]) for value in _VALUES},
                    )
                )
            out[persona] = entries
        return out

    def save(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        document = {
            "persona_ids": list(self.persona_ids),
            "features": [
                {
                    "feature": f,
                    "description": d,
                    "population_value": float(self.population_value[i]),
                    "persona_value": [float(v) for v in self.persona_value[i]],
                }
                for i, (f, d) in enumerate(self.features)
            ],
        }
        written = [directory / _FEATURES_FILE]
        written[0].write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        written += save_arrays(directory, {_FEATURE: self.feature, **self.values})
        return written

    @classmethod
    def load(cls, directory: Path) -> MixExplanations:
        try:
            document = json.loads((directory / _FEATURES_FILE).read_text(encoding="utf-8"))
            entries = document["features"]
            features = [(str(f["feature"]), str(f["description"])) for f in entries]
            persona_ids = [str(p) for p in document["persona_ids"]]
            per_signal = all("population_value" in f for f in entries)
            population: NDArray[np.float32] = np.zeros(0, dtype=np.float32)
            persona: NDArray[np.float32] = np.zeros((0, 0), dtype=np.float32)
            if per_signal:
                population = np.array([float(f["population_value"]) for f in entries], dtype=np.float32)
                persona = np.array(
                    [[float(v) for v in f["persona_value"]] for f in entries], dtype=np.float32
                ).reshape(len(entries), len(persona_ids))
        except (OSError, KeyError, TypeError, ValueError) as error:
            raise MixExplanationsError(f"{directory}: cannot read mix explanations: {error}") from None
        names = (_FEATURE, *_VALUES) if per_signal else (_FEATURE, *SIGNAL_VALUES)
        values = load_arrays(directory, names, error=MixExplanationsError)
        feature = values.pop(_FEATURE)
        if not per_signal:  # written before the shares were kept per signal
            population, persona = _per_signal_shares(
                feature, values.pop("population_value"), values.pop("persona_value"), len(features)
            )
        try:
            return cls(persona_ids, features, feature, values, population, persona)
        except MixExplanationsError as error:
            raise MixExplanationsError(f"{directory}: {error}") from None


def _per_signal_shares(
    feature: NDArray[np.integer],
    population: NDArray[np.floating],
    persona: NDArray[np.floating],
    n_signals: int,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Each signal's population and persona shares from explanations that stored them in every slot.

    Every slot naming a signal holds the same shares, so the first one per persona is read; a signal
    that never explains a persona has no slot to show it, and gets 0 there.
    """
    k = feature.shape[1]
    population_value = np.zeros(n_signals, dtype=np.float32)
    persona_value = np.zeros((n_signals, k), dtype=np.float32)
    for p in range(k):
        slots = np.asarray(feature[:, p, :]).ravel()
        ids, first = np.unique(slots, return_index=True)
        named = ids >= 0
        population_value[ids[named]] = np.asarray(population[:, p, :]).ravel()[first[named]]
        persona_value[ids[named], p] = np.asarray(persona[:, p, :]).ravel()[first[named]]
    return population_value, persona_value


@numba.njit(cache=True, nogil=True)
def _first_positions(column: NDArray[np.integer], n_columns: int) -> NDArray[np.int64]:  # pragma: no cover
    """Per signal column, the first position of ``column`` (flat, -1 = none) that names it, else -1.

    A million customers' explanations hold tens of millions of entries over a few dozen columns. One
    compiled pass reads them where they are (25 million one-byte slots in about 20 ms): the numpy
    version (a mask, the masked copy and ``bincount``'s int64 copy of it, to learn which columns
    occur) touched 300 MB of fresh memory for it, 1.2 s of a million-customer build.
    """
    first = np.full(n_columns, -1, dtype=np.int64)
    for position in range(column.size):
        value = column[position]
        if value >= n_columns:  # compiled code does not check bounds: refuse, as numpy indexing would
            raise ValueError("a signal column is outside the feature space")
        if value >= 0 and first[value] < 0:
            first[value] = position
    return first
