"""The result of persona inference: every customer's mix, overall and per shopping context.

It is the value the rest of the engine consumes (accuracy, discovery, explanations, training's
tables), so it lives apart from the model that produces it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from engine.data.id_map import IdMap
from engine.personas.mix import PersonaMix
from engine.personas.shopping_context import CONTEXTS
from engine.personas.traits import EventFeatures


@dataclass(frozen=True)
class InferredMixes:
    """Persona mixes of a set of customers: overall, per shopping context, and the evidence behind them.

    overall:    (customers, personas), each row on the simplex.
    by_context: (customers, len(CONTEXTS), personas); a context with no events equals the overall mix.
    evidence:   the encoded events the mixes came from (needed by ``explain`` and discovery); not saved.
    """

    customer_ids: IdMap
    persona_ids: tuple[str, ...]
    overall: NDArray[np.float64]
    by_context: NDArray[np.float64]
    n_events: NDArray[np.int64]
    n_events_by_context: NDArray[np.int64]
    evidence: EventFeatures | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        n, k = len(self.customer_ids), len(self.persona_ids)
        expected = {
            "overall": (self.overall.shape, (n, k)),
            "by_context": (self.by_context.shape, (n, len(CONTEXTS), k)),
            "n_events": (self.n_events.shape, (n,)),
            "n_events_by_context": (self.n_events_by_context.shape, (n, len(CONTEXTS))),
        }
        for name, (shape, wanted) in expected.items():
            if shape != wanted:
                raise ValueError(f"InferredMixes.{name} has shape {shape}, expected {wanted}")

    def mix(self, customer_id: str, context: str | None = None) -> PersonaMix:
        """One customer's mix, overall or in a context, as a validated PersonaMix."""
        row = self.customer_ids.index(customer_id)
        if context is None:
            return PersonaMix(self.persona_ids, self.overall[row].copy())
        if context not in CONTEXTS:
            raise ValueError(f"unknown context {context!r}; expected one of {', '.join(CONTEXTS)}")
        return PersonaMix(self.persona_ids, self.by_context[row, CONTEXTS.index(context)].copy())

    def to_frame(self) -> pl.DataFrame:
        """One row per customer: event counts, overall and per-context weights as ``<context>__<persona>``."""
        data: dict[str, Any] = {"customer_id": self.customer_ids.ids.tolist(), "n_events": self.n_events}
        for k, persona in enumerate(self.persona_ids):
            data[f"overall__{persona}"] = self.overall[:, k]
        for c, context in enumerate(CONTEXTS):
            data[f"n_events__{context}"] = self.n_events_by_context[:, c]
            for k, persona in enumerate(self.persona_ids):
                data[f"{context}__{persona}"] = self.by_context[:, c, k]
        return pl.DataFrame(data)
