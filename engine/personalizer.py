"""A trained artifact, loaded and verified, answering "what should this customer see".

This is the domain-level entry point that the CLI and the gRPC server share: it resolves a customer
id to a model row (or to cold start), picks the persona mix (given, per context, or inferred), scores,
filters what the customer already has, and backfills from persona-mixed popularity so a list is
always full. Everything is precomputed at load; a request is a lookup, a product and a top-k.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from engine.artifact import Artifact, open_artifact
from engine.feature_space import FeatureSpace
from engine.id_map import IdMap
from engine.interactions import empty_csr_matrix
from engine.models.base import Recommender, UserBatch
from engine.models.registry import load_model
from engine.persona_catalog import PersonaCatalog, parse_catalog
from engine.persona_mix import PersonaMix
from engine.shopping_context import CONTEXTS

BACKFILL_MODEL = "persona_popularity"


@dataclass(frozen=True)
class RecommendedItem:
    item_id: str
    title: str
    category: str
    price: float
    score: float
    reason: str  # "personalized" | "persona" | "popular_backfill"


@dataclass(frozen=True)
class Recommendation:
    customer_id: str
    items: list[RecommendedItem]
    mix: PersonaMix
    cold_start: bool
    model: str
    model_version: str


def _read_csr(artifact: Artifact, prefix: str) -> sp.csr_matrix:
    rows, columns = (int(x) for x in artifact.load_array(f"{prefix}.shape.npy"))
    return sp.csr_matrix(
        (
            artifact.load_array(f"{prefix}.data.npy"),
            artifact.load_array(f"{prefix}.indices.npy"),
            artifact.load_array(f"{prefix}.indptr.npy"),
        ),
        shape=(rows, columns),
    )


class Personalizer:
    """Scores customers and persona mixes with one model of a verified artifact."""

    def __init__(self, artifact: Artifact, model_name: str | None = None) -> None:
        self.artifact = artifact
        manifest = artifact.manifest
        self.version = artifact.version
        self.catalog: PersonaCatalog = parse_catalog(
            tomllib.loads((artifact.path / "persona_catalog.toml").read_text(encoding="utf-8")),
            source=f"{artifact.path}/persona_catalog.toml",
        )
        self.items = IdMap.load(artifact.path / "ids/items.npy", kind="item")
        self.customers = IdMap.load(artifact.path / "ids/customers.npy", kind="customer")
        self.model_customers = IdMap.load(artifact.path / "ids/model_customers.npy", kind="customer")
        self._model_row = self.model_customers.to_internal(self.customers.ids.tolist(), strict=False)
        self.titles = artifact.load_array("items/title.npy")
        self.categories = artifact.load_array("items/category.npy")
        self.prices = artifact.load_array("items/price.npy")
        self.in_stock = artifact.load_array("items/in_stock.npy")
        self.demographic_space = FeatureSpace(tuple(artifact.read_json("features/demographic_features.json")))
        self.demographics = _read_csr(artifact, "customers/demographics")
        self.history = _read_csr(artifact, "customers/history")
        self.mix_overall = artifact.load_array("customers/mix_overall.npy")
        self.mix_by_context = artifact.load_array("customers/mix_by_context.npy")
        self.population_mix = (
            self.mix_overall.mean(axis=0)
            if len(self.mix_overall)
            else np.full(len(self.catalog), 1.0 / len(self.catalog))
        )
        available = list(manifest.get("models", []))
        chosen = model_name or manifest.get("summary", {}).get("best_model") or available[0]
        if chosen not in available:
            raise ValueError(
                f"artifact {artifact.path} has no model {chosen!r}; it has {', '.join(available)}"
            )
        self.model_name: str = chosen
        self.model: Recommender = load_model(artifact.path / "models" / chosen)
        self.backfill: Recommender | None = (
            load_model(artifact.path / "models" / BACKFILL_MODEL) if BACKFILL_MODEL in available else None
        )

    @classmethod
    def from_path(cls, path: Path, model_name: str | None = None) -> Personalizer:
        return cls(open_artifact(path), model_name)

    def mix_for(self, customer_id: str, context: str | None = None) -> tuple[PersonaMix, bool]:
        """The customer's inferred mix (per context when given) and whether they are unknown."""
        personas = self.catalog.ids
        if customer_id not in self.customers:
            return PersonaMix(personas, self.population_mix / self.population_mix.sum()), True
        row = self.customers.index(customer_id)
        if context is not None:
            if context not in CONTEXTS:
                raise ValueError(f"unknown context {context!r}; expected one of {', '.join(CONTEXTS)}")
            weights = self.mix_by_context[row, CONTEXTS.index(context)]
        else:
            weights = self.mix_overall[row]
        return PersonaMix(personas, np.asarray(weights, dtype=np.float64) / float(np.sum(weights))), False

    def recommend(
        self,
        customer_id: str,
        k: int = 10,
        *,
        mix: Mapping[str, float] | PersonaMix | None = None,
        context: str | None = None,
        exclude_seen: bool = True,
    ) -> Recommendation:
        inferred, unknown = self.mix_for(customer_id, context)
        if mix is None:
            used = inferred
        elif isinstance(mix, PersonaMix):
            used = mix
        else:
            used = PersonaMix.from_mapping(mix, self.catalog.ids)
        row = -1 if unknown else self.customers.index(customer_id)
        model_row = int(self._model_row[row]) if row >= 0 else -1
        demographics = (
            self.demographics[row]
            if row >= 0
            else empty_csr_matrix(1, len(self.demographic_space))
        )
        users = UserBatch(
            user_index=np.asarray([model_row], dtype=np.int64),
            mix=used.weights[None, :],
            demographics=demographics,
        )
        exclude = self.history[row] if (exclude_seen and row >= 0) else None
        ids, scores = self.model.recommend(users, k, exclude=exclude, item_mask=self.in_stock)
        reason = "personalized" if model_row >= 0 else "persona"
        picked: list[tuple[int, float, str]] = [
            (int(i), float(s), reason) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0
        ]
        if len(picked) < k and self.backfill is not None:
            mask = self.in_stock.copy()
            mask[[i for i, _, _ in picked]] = False
            more, more_scores = self.backfill.recommend(
                users, k - len(picked), exclude=exclude, item_mask=mask
            )
            picked += [
                (int(i), float(s), "popular_backfill")
                for i, s in zip(more[0], more_scores[0], strict=True)
                if i >= 0
            ]
        items = [
            RecommendedItem(
                item_id=str(self.items.ids[i]),
                title=str(self.titles[i]),
                category=str(self.categories[i]),
                price=float(self.prices[i]),
                score=s,
                reason=r,
            )
            for i, s, r in picked
        ]
        return Recommendation(
            customer_id=customer_id,
            items=items,
            mix=used,
            cold_start=model_row < 0,
            model=self.model_name,
            model_version=self.version,
        )
