"""Everything a report reads, loaded once: the verified artifact and, when found, its training data.

The artifact alone gives model metrics, mixes and recommendations. Drift over time and the comparison
with planted mixes need the events, so the data folder is loaded when it can be found (``--data`` or
the path in the artifact's config); the split is rebuilt from the stored config exactly as
``persona-engine evaluate`` does. The artifact's mixes were inferred from the split's training events,
or from every event when its models were refit on all events (``training.served_models``); the
sections that compare mixes with events use exactly those events (``ShopEvidence.mix_events``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl
from numpy.typing import NDArray

from engine.artifact import MANIFEST, ArtifactError
from engine.artifact.contents import LoadedArtifact, load_artifact
from engine.data.id_map import IdMap
from engine.data.loading import load_shop
from engine.personas.catalog import PersonaCatalog
from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.shopping_context import CONTEXTS, context_expr
from training.config import TrainConfig, parse_config
from training.data_match import folder_fingerprint
from training.persona_report import TRUTH_FILE
from training.prepared_data import split_for
from training.served_models import ServedModels
from training.synthetic_shop import TRUTH_DIR


@dataclass(frozen=True)
class ShopEvidence:
    """The events behind an artifact: all of them, those its mixes came from, planted truth if generated."""

    data_dir: Path
    events: pl.DataFrame
    items: pl.DataFrame
    mix_events: pl.DataFrame  # the events the artifact's mixes were inferred from
    test_start: dt.datetime  # where the evaluation's held-out period starts
    matches_artifact: bool  # same data fingerprint as the artifact was trained on
    truth: pl.DataFrame | None  # truth/customer_mixes.parquet of a generated shop


@dataclass(frozen=True)
class ReportInputs:
    artifact: LoadedArtifact
    config: TrainConfig
    shop: ShopEvidence | None
    data_note: str  # why ``shop`` is missing or what to know about it; empty when all is well

    @property
    def catalog(self) -> PersonaCatalog:
        return self.artifact.catalog

    @property
    def served(self) -> ServedModels:
        """What the artifact's models and mixes were fitted on (the split, or all events)."""
        return ServedModels.of(self.artifact.manifest)

    @property
    def customers(self) -> IdMap:
        return self.artifact.customers

    @property
    def mix_overall(self) -> NDArray[np.float64]:
        """(customers, personas)"""
        return self.artifact.mix_overall

    @property
    def mix_by_context(self) -> NDArray[np.float64]:
        """(customers, contexts, personas)"""
        return self.artifact.mix_by_context

    @property
    def n_events(self) -> NDArray[np.int64]:
        """Training events per customer."""
        return self.artifact.n_events

    @property
    def holidays(self) -> tuple[tuple[int, int], ...]:
        return self.artifact.holidays

    @property
    def personas(self) -> tuple[str, ...]:
        return self.catalog.ids

    @property
    def persona_names(self) -> tuple[str, ...]:
        return self.catalog.names

    @property
    def model_order(self) -> list[str]:
        """The artifact's models in evaluation order (baseline first), the same in every table and chart."""
        stored = list(self.artifact.manifest.get("models", []))
        evaluated = [m["model"] for m in self.artifact.manifest.get("metrics", [])]
        return [m for m in dict.fromkeys(evaluated) if m in stored] + [
            m for m in stored if m not in evaluated
        ]

    @cached_property
    def context_event_counts(self) -> NDArray[np.int64]:
        """(customers, contexts) events behind the mixes, per customer and context (needs the data)."""
        if self.shop is None:
            raise ValueError("per-context event counts need the training data")
        counts = np.zeros((len(self.customers), len(CONTEXTS)), dtype=np.int64)
        per_cell = (
            self.shop.mix_events.select(
                pl.col("customer_id").cast(pl.Utf8), context_expr("timestamp", self.holidays).alias("context")
            )
            .group_by("customer_id", "context")
            .len()
        )
        rows = self.customers.to_internal(per_cell["customer_id"].to_list(), strict=False)
        columns = np.asarray([CONTEXTS.index(c) for c in per_cell["context"].to_list()], dtype=np.int64)
        known = rows >= 0
        counts[rows[known], columns[known]] = per_cell["len"].to_numpy()[known]
        return counts

    def stored_mixes(self) -> InferredMixes:
        """The artifact's mixes as ``InferredMixes`` (per-context counts from the events behind them)."""
        return InferredMixes(
            customer_ids=self.customers,
            persona_ids=self.personas,
            overall=self.mix_overall,
            by_context=self.mix_by_context,
            n_events=self.n_events,
            n_events_by_context=self.context_event_counts,
        )


def load_inputs(artifact_path: Path, data_path: Path | None = None) -> ReportInputs:
    """Open and verify the artifact, then load its data if it can be found (a note says if not)."""
    artifact = load_artifact(artifact_path)
    manifest = artifact.manifest
    config = parse_config(manifest["config"], source=f"{artifact.path}/{MANIFEST}")
    catalog = artifact.catalog
    if list(catalog.ids) != list(manifest.get("personas", catalog.ids)):
        raise ArtifactError(f"artifact {artifact.version}: persona catalog and manifest disagree on personas")
    data_dir = Path(data_path or config.data.path)
    shop: ShopEvidence | None = None
    if data_dir.is_dir():
        refit = ServedModels.of(manifest).refit_on_all_events
        shop = _load_evidence(data_dir, config, manifest.get("data_fingerprint"), refit=refit)
        note = (
            ""
            if shop.matches_artifact
            else f"The data in {data_dir} is not the data this artifact was trained on (its fingerprint "
            "differs); sections computed from events describe that data, not the training data."
        )
    else:
        note = (
            f"The data folder {data_dir} was not found, so the sections that need events (drift over "
            "time, planted mixes) are left out. Give --data to include them."
        )
    return ReportInputs(artifact=artifact, config=config, shop=shop, data_note=note)


def _load_evidence(
    data_dir: Path, config: TrainConfig, fingerprint: str | None, *, refit: bool
) -> ShopEvidence:
    shop = load_shop(data_dir, skip_invalid=config.data.skip_invalid)
    split = split_for(config, shop, data_dir)
    truth_path = data_dir / TRUTH_DIR / TRUTH_FILE
    return ShopEvidence(
        data_dir=data_dir,
        events=shop.events,
        items=shop.items,
        mix_events=shop.events if refit else split.train_events,
        test_start=split.test_start,
        matches_artifact=folder_fingerprint(data_dir) == fingerprint,
        truth=pl.read_parquet(truth_path) if truth_path.is_file() else None,
    )
