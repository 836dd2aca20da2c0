"""Cold-start mixes from demographics: the expected persona mix of a customer with no events yet.

Learnt from the inferred mixes of customers with events and saved beside the model as JSON; serving
uses it as the prior centre of a new customer's fold-in.

Text attributes (the fixed demographics and the customers table's categorical ``feature__*`` columns)
give a lift per value. Numeric ``feature__*`` columns arrive standardized (z, as the feature space
encodes them: engine/data/feature_space.py) and are modelled Gaussian naive-Bayes style: z given
persona k is normal around a persona mean mu_k with a shared variance, so their lift is
(z mu_k - mu_k^2 / 2) / variance, linear in z.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from engine.data.contract import CUSTOMER_FEATURE_PREFIX
from engine.personas.inference.errors import PersonaModelFormatError
from engine.personas.inference.inferred_mixes import InferredMixes

DEMOGRAPHIC_ATTRIBUTES: tuple[str, ...] = ("age_band", "region", "income_band", "gender", "occupation")


@dataclass(frozen=True)
class NumericAttribute:
    """A standardized numeric attribute: its mean per persona and the variance around those means."""

    means: NDArray[np.float64]  # (K,)
    variance: float

    def log_lift(self, z: NDArray[np.float64]) -> NDArray[np.float64]:
        """(n, K) log-likelihood of each z under each persona, up to a per-row constant."""
        return np.asarray((np.outer(z, self.means) - 0.5 * self.means**2) / self.variance, dtype=np.float64)


MIN_VARIANCE = 1e-3
"""Floor on a numeric attribute's within-persona variance, so one constant column cannot dominate."""


@dataclass(frozen=True)
class DemographicMixPrior:
    """The expected persona mix of a customer known only by demographics (cold start).

    Per attribute value, the mean inferred mix of customers with that value, smoothed towards the
    population mix by ``smoothing`` pseudo-customers; attributes combine naive-Bayes style
    (population mix times each attribute's lift), so unseen or missing values simply add no lift.
    """

    persona_ids: tuple[str, ...]
    population_mix: NDArray[np.float64]
    attribute_mixes: dict[str, dict[str, NDArray[np.float64]]]
    smoothing: float = 20.0
    numeric_attributes: dict[str, NumericAttribute] = field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        mixes: InferredMixes,
        customers: pl.DataFrame,
        *,
        attributes: Sequence[str] = DEMOGRAPHIC_ATTRIBUTES,
        smoothing: float = 20.0,
    ) -> DemographicMixPrior:
        """Learn from customers with at least one event; ``customers`` needs customer_id and the attributes.

        Attributes absent from ``customers`` are skipped; rows for customers unknown to ``mixes`` are ignored.
        """
        if smoothing <= 0:
            raise ValueError(f"DemographicMixPrior smoothing must be > 0, got {smoothing}")
        if "customer_id" not in customers.columns:
            raise ValueError("customers table for the demographic prior lacks column customer_id")
        k = len(mixes.persona_ids)
        rows = mixes.customer_ids.to_internal(customers["customer_id"].cast(pl.Utf8), strict=False)
        usable = rows >= 0
        usable[usable] = mixes.n_events[rows[usable]] > 0
        warm = mixes.n_events > 0
        population = mixes.overall[warm].mean(axis=0) if warm.any() else np.full(k, 1.0 / k)
        table: dict[str, dict[str, NDArray[np.float64]]] = {}
        numeric: dict[str, NumericAttribute] = {}
        extras = [c for c in customers.columns if c.startswith(CUSTOMER_FEATURE_PREFIX)]
        for attribute in [*attributes, *(e for e in extras if e not in attributes)]:
            if attribute not in customers.columns:
                continue
            if customers[attribute].dtype.is_numeric():
                fitted = _numeric_attribute(customers[attribute], usable, rows, mixes.overall, smoothing)
                if fitted is not None:
                    numeric[attribute] = fitted
                continue
            column = customers[attribute].cast(pl.Utf8)
            present = usable & column.is_not_null().to_numpy()
            values = sorted(column.filter(pl.Series(present)).unique().to_list())
            codes = column.replace_strict(values, list(range(len(values))), default=-1, return_dtype=pl.Int64)
            code_of = codes.to_numpy()[present]
            # one weighted bincount per persona: np.add.at's scatter of a million rows cost 3.5 times
            # as much, 0.3 s of a million-customer build over five attributes
            present_mixes = mixes.overall[rows[present]]
            totals = np.column_stack(
                [np.bincount(code_of, weights=present_mixes[:, p], minlength=len(values)) for p in range(k)]
            )
            members = np.bincount(code_of, minlength=len(values)).astype(np.float64)
            smoothed = (totals + smoothing * population) / (members[:, None] + smoothing)
            table[attribute] = {value: smoothed[i] for i, value in enumerate(values)}
        return cls(tuple(mixes.persona_ids), population, table, smoothing, numeric)

    def mix_for(
        self, age_band: str | None = None, region: str | None = None, income_band: str | None = None
    ) -> NDArray[np.float64]:
        """The cold-start mix for one customer's demographics (None or unseen values add nothing)."""
        given = {"age_band": age_band, "region": region, "income_band": income_band}
        frame = pl.DataFrame(
            {name: [value] for name, value in given.items()}, schema=dict.fromkeys(given, pl.Utf8)
        )
        return self.mix_for_frame(frame)[0]

    def mix_for_frame(self, frame: pl.DataFrame) -> NDArray[np.float64]:
        """Cold-start mixes for every row of a frame with (some of) the demographic columns."""
        log_mix = np.tile(np.log(self.population_mix), (frame.height, 1))
        for attribute, per_value in self.attribute_mixes.items():
            if attribute not in frame.columns or not per_value:
                continue
            values = list(per_value)
            lifts = np.vstack(
                [np.log(per_value[v]) - np.log(self.population_mix) for v in values]
                + [np.zeros(len(self.persona_ids))]
            )
            index = {v: i for i, v in enumerate(values)}
            codes = np.fromiter(
                (
                    index.get(v, len(values)) if v is not None else len(values)
                    for v in frame[attribute].cast(pl.Utf8).to_list()
                ),
                dtype=np.int64,
                count=frame.height,
            )
            log_mix += lifts[codes]
        for attribute, model in self.numeric_attributes.items():
            if attribute not in frame.columns:
                continue
            z = frame[attribute].cast(pl.Float64).fill_null(np.nan).to_numpy()
            known = np.isfinite(z)  # a missing value adds no lift
            log_mix[known] += model.log_lift(z[known])
        log_mix -= log_mix.max(axis=1, keepdims=True)
        mix = np.exp(log_mix)
        return np.asarray(mix / mix.sum(axis=1, keepdims=True), dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        return {
            "persona_ids": list(self.persona_ids),
            "population_mix": self.population_mix.tolist(),
            "smoothing": self.smoothing,
            "attribute_mixes": {
                a: {v: m.tolist() for v, m in values.items()} for a, values in self.attribute_mixes.items()
            },
            "numeric_attributes": {
                a: {"means": n.means.tolist(), "variance": n.variance}
                for a, n in self.numeric_attributes.items()
            },
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> DemographicMixPrior:
        try:
            persona_ids = tuple(str(p) for p in document["persona_ids"])
            k = len(persona_ids)

            def vector(raw: Any, where: str) -> NDArray[np.float64]:
                array = np.asarray(raw, dtype=np.float64)
                if array.shape != (k,) or (array <= 0).any() or not np.isclose(array.sum(), 1.0):
                    raise ValueError(f"{where} must be {k} positive weights summing to 1")
                return array

            return cls(
                persona_ids=persona_ids,
                population_mix=vector(document["population_mix"], "population_mix"),
                attribute_mixes={
                    str(a): {str(v): vector(m, f"attribute_mixes.{a}.{v}") for v, m in values.items()}
                    for a, values in document["attribute_mixes"].items()
                },
                smoothing=float(document["smoothing"]),
                numeric_attributes={
                    str(a): _numeric_from_json(raw, k, str(a))
                    for a, raw in document.get("numeric_attributes", {}).items()
                },
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"malformed demographic mix prior: {error}") from None

    def save(self, path: Path) -> Path:
        Path(path).write_text(json.dumps(self.to_json(), indent=2), encoding="utf-8")
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> DemographicMixPrior:
        path = Path(path)
        if not path.is_file():
            raise PersonaModelFormatError(f"{path}: demographic mix prior file not found")
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, ValueError) as error:
            raise PersonaModelFormatError(f"{path}: {error}") from None


def _numeric_from_json(raw: Any, k: int, name: str) -> NumericAttribute:
    means = np.asarray(raw["means"], dtype=np.float64)
    variance = float(raw["variance"])
    if means.shape != (k,) or not np.isfinite(means).all() or not variance > 0:
        raise ValueError(f"numeric_attributes.{name} needs {k} finite means and a positive variance")
    return NumericAttribute(means, variance)


def _numeric_attribute(
    column: pl.Series,
    usable: NDArray[np.bool_],
    rows: NDArray[np.int64],
    overall: NDArray[np.float64],
    smoothing: float,
) -> NumericAttribute | None:
    """Per-persona means of a standardized attribute, each customer counting by their mix.

    A persona's mean is shrunk towards the overall mean by ``smoothing`` pseudo-customers, as the
    text attributes' mixes are; the variance is pooled within personas. None without usable values.
    """
    values = column.cast(pl.Float64).fill_null(np.nan).to_numpy()
    present = usable & np.isfinite(values)
    if present.sum() < 2:
        return None
    z = values[present]
    weights = overall[rows[present]]  # (n, K) soft membership
    mass = weights.sum(axis=0)
    centre = float(z.mean())
    means = (weights.T @ z + smoothing * centre) / (mass + smoothing)
    residual = (z[:, None] - means[None, :]) ** 2
    variance = float((weights * residual).sum() / max(float(mass.sum()), 1e-12))
    return NumericAttribute(means, max(variance, MIN_VARIANCE))
