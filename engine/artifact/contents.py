"""What a trained artifact holds, written by training and read by everything else, in one place.

``ArtifactContents`` is everything training puts in an artifact; ``write_contents`` lays it out in an
``ArtifactWriter`` as ``engine.artifact.layout`` says. ``load_artifact`` verifies a version folder's
checksums (``open_artifact``), refuses it when a required entry is missing, and returns a
``LoadedArtifact``: the same contents, under the same names, read from the folder.

A ``LoadedArtifact`` reads each part on first use and keeps it, so a batch job that needs the mixes does
not pay for the explanations (hundreds of megabytes for a million customers) or the models. Models are
read on every access and not kept: serving keeps the one or two it serves, and a report that walks all
of them holds one at a time.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.artifact.folder import Artifact, ArtifactError, ArtifactWriter, open_artifact
from engine.artifact.layout import LAYOUT, CsrFiles
from engine.artifact.signing import ArtifactVerifier, ManifestIntegrity
from engine.data.feature_space import FeatureSpace
from engine.data.id_map import IdMap
from engine.data.item_catalog import ItemCatalog
from engine.decisions.arm_estimates import ArmEstimates
from engine.models.base import Recommender
from engine.models.registry import load_model
from engine.personas.catalog import PersonaCatalog, catalog_to_toml, parse_catalog
from engine.personas.drift_calibration import DriftCalibration
from engine.personas.explanations import MixExplanations
from engine.personas.inference.demographic_prior import DemographicMixPrior
from engine.personas.inference.model import PersonaInferenceModel
from engine.personas.shopping_context import DEFAULT_HOLIDAYS

Table = list[dict[str, Any]]
_WRITE_THREADS = 2


@dataclass(frozen=True)
class ArtifactContents:
    """Everything an artifact holds; rows of customer arrays follow ``customers``, columns ``catalog``."""

    catalog: PersonaCatalog
    item_catalog: ItemCatalog  # item ids with title, category, brand, price and stock, in index order
    customers: IdMap  # every customer the artifact knows
    model_customers: IdMap  # the customers the models were fitted on, in the models' row order
    item_space: FeatureSpace
    item_features: sp.csr_matrix  # (items, item_space)
    demographic_space: FeatureSpace
    demographics: sp.csr_matrix  # (customers, demographic_space)
    history: sp.csr_matrix  # (customers, items) training-period engagement
    purchases: sp.csr_matrix | None  # (customers, items) 1 where bought; None in older artifacts
    mix_overall: NDArray[np.float64]  # (customers, personas)
    mix_by_context: NDArray[np.float64]  # (customers, contexts, personas)
    n_events: NDArray[np.int64]  # training events per customer
    contexts: tuple[str, ...]  # the order of mix_by_context's middle axis
    holidays: tuple[tuple[int, int], ...]  # (month, day) counted as weekend_holiday
    inference: PersonaInferenceModel
    demographic_prior: DemographicMixPrior | None
    explanations: MixExplanations | None
    # the threshold live drift tests against; None in older artifacts (live then uses its default)
    drift_calibration: DriftCalibration | None
    models: Mapping[str, Recommender]  # by kind
    arm_estimates: Mapping[str, ArmEstimates]  # by decision type ("offer", "layout")
    offers: Table | None  # the offers table's rows; None when the shop has none
    layouts: Table | None  # the layouts table's rows; None when the shop has none


def _write_csr(writer: ArtifactWriter, entry: CsrFiles, matrix: sp.csr_matrix) -> None:
    matrix = sp.csr_matrix(matrix)
    writer.write_array(entry.data.path, matrix.data)
    writer.write_array(entry.indices.path, matrix.indices)
    writer.write_array(entry.indptr.path, matrix.indptr)
    writer.write_array(entry.shape.path, np.asarray(matrix.shape, dtype=np.int64))


def _read_csr(folder: Artifact, entry: CsrFiles) -> sp.csr_matrix:
    rows, columns = (int(x) for x in folder.load_array(entry.shape.path))
    return sp.csr_matrix(
        (
            folder.load_array(entry.data.path),
            folder.load_array(entry.indices.path),
            folder.load_array(entry.indptr.path),
        ),
        shape=(rows, columns),
    )


def write_contents(writer: ArtifactWriter, contents: ArtifactContents) -> None:
    """Write every part of ``contents`` into the writer's staging folder (the caller commits).

    The parts go to separate files, written two at a time (``_WRITE_THREADS``): writing is the kernel
    copying arrays into fresh page cache, and ``np.save`` leaves the GIL meanwhile. A million-customer
    artifact (about a gigabyte) took 2.5 s on one thread, mostly waiting for new memory pages, which
    two cores fault in side by side. Parts are ordered largest first so that neither thread idles at
    the end.
    """
    parts: list[Callable[[], object]] = [
        partial(model.save, writer.path(LAYOUT.models.component(kind).path))
        for kind, model in contents.models.items()
    ]
    if contents.explanations is not None:
        parts.append(partial(contents.explanations.save, writer.path(LAYOUT.explanations.path)))
    parts += [
        partial(_write_customer_parts, writer, contents),
        partial(_write_item_parts, writer, contents),
        partial(contents.inference.save, writer.path(LAYOUT.persona_inference.path)),
    ]
    parts += [
        partial(estimates.save, writer.path(LAYOUT.arm_estimates.component(kind).path))
        for kind, estimates in contents.arm_estimates.items()
    ]
    if contents.demographic_prior is not None:
        parts.append(partial(contents.demographic_prior.save, writer.path(LAYOUT.demographic_prior.path)))
    writer.write_text(LAYOUT.persona_catalog.path, catalog_to_toml(contents.catalog))
    writer.write_json(LAYOUT.item_feature_names.path, list(contents.item_space.names))
    writer.write_json(LAYOUT.demographic_feature_names.path, list(contents.demographic_space.names))
    writer.write_json(LAYOUT.contexts.path, list(contents.contexts))
    writer.write_json(LAYOUT.holidays.path, [list(pair) for pair in contents.holidays])
    if contents.drift_calibration is not None:
        writer.write_json(LAYOUT.drift_calibration.path, contents.drift_calibration.to_json())
    if contents.offers is not None:
        writer.write_json(LAYOUT.offers.path, contents.offers)
    if contents.layouts is not None:
        writer.write_json(LAYOUT.layouts.path, contents.layouts)
    with ThreadPoolExecutor(_WRITE_THREADS, thread_name_prefix="artifact-write") as pool:
        try:
            for done in [pool.submit(part) for part in parts]:
                done.result()
        except BaseException:
            # parts not started yet are dropped; the caller aborts the staging folder once both
            # threads are done with the running ones
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _write_customer_parts(writer: ArtifactWriter, contents: ArtifactContents) -> None:
    writer.write_array(LAYOUT.customer_ids.path, contents.customers.ids)
    writer.write_array(LAYOUT.model_customer_ids.path, contents.model_customers.ids)
    writer.write_array(LAYOUT.mix_overall.path, contents.mix_overall)
    writer.write_array(LAYOUT.mix_by_context.path, contents.mix_by_context)
    writer.write_array(LAYOUT.n_events.path, contents.n_events)
    _write_csr(writer, LAYOUT.demographics, contents.demographics)
    _write_csr(writer, LAYOUT.history, contents.history)
    if contents.purchases is not None:
        _write_csr(writer, LAYOUT.purchases, contents.purchases)


def _write_item_parts(writer: ArtifactWriter, contents: ArtifactContents) -> None:
    items = contents.item_catalog
    writer.write_array(LAYOUT.item_ids.path, items.ids.ids)
    writer.write_array(LAYOUT.item_titles.path, items.titles)
    writer.write_array(LAYOUT.item_categories.path, items.categories)
    writer.write_array(LAYOUT.item_brands.path, items.brands)
    writer.write_array(LAYOUT.item_prices.path, items.prices)
    writer.write_array(LAYOUT.item_in_stock.path, items.in_stock)
    _write_csr(writer, LAYOUT.item_features, contents.item_features)


class StoredModels(Mapping[str, Recommender]):
    """The artifact's models by kind, each read from its folder when asked for (and not kept)."""

    def __init__(self, folder: Artifact) -> None:
        self._folder = folder
        self._kinds = LAYOUT.models.names(folder.files)

    def __getitem__(self, kind: str) -> Recommender:
        if kind not in self._kinds:
            raise KeyError(kind)
        return load_model(self._folder.file(LAYOUT.models.component(kind).path))

    def __iter__(self) -> Iterator[str]:
        return iter(self._kinds)

    def __len__(self) -> int:
        return len(self._kinds)

    def __repr__(self) -> str:
        return f"StoredModels({', '.join(self._kinds)})"


class LoadedArtifact:
    """A verified artifact: the fields of ``ArtifactContents``, each read from the folder on first use."""

    def __init__(self, folder: Artifact) -> None:
        self.folder = folder

    @property
    def path(self) -> Path:
        return self.folder.path

    @property
    def version(self) -> str:
        return self.folder.version

    @property
    def manifest(self) -> dict[str, Any]:
        return self.folder.manifest

    @property
    def integrity(self) -> ManifestIntegrity:
        """What protects the manifest (signed and verified, unsigned...)."""
        return self.folder.integrity

    def _has(self, path: str) -> bool:
        return path in self.folder.files

    def _names(self, path: str) -> tuple[str, ...]:
        return tuple(str(name) for name in self.folder.read_json(path))

    @cached_property
    def catalog(self) -> PersonaCatalog:
        entry = LAYOUT.persona_catalog.path
        return parse_catalog(tomllib.loads(self.folder.read_text(entry)), source=f"{self.path}/{entry}")

    @cached_property
    def item_catalog(self) -> ItemCatalog:
        load = self.folder.load_array
        return ItemCatalog(
            IdMap(load(LAYOUT.item_ids.path), kind="item"),
            titles=load(LAYOUT.item_titles.path),
            categories=load(LAYOUT.item_categories.path),
            brands=load(LAYOUT.item_brands.path),
            prices=load(LAYOUT.item_prices.path),
            in_stock=load(LAYOUT.item_in_stock.path),
        )

    @cached_property
    def customers(self) -> IdMap:
        return IdMap(self.folder.load_array(LAYOUT.customer_ids.path), kind="customer")

    @cached_property
    def model_customers(self) -> IdMap:
        return IdMap(self.folder.load_array(LAYOUT.model_customer_ids.path), kind="customer")

    @cached_property
    def item_space(self) -> FeatureSpace:
        return FeatureSpace(self._names(LAYOUT.item_feature_names.path))

    @cached_property
    def item_features(self) -> sp.csr_matrix:
        return _read_csr(self.folder, LAYOUT.item_features)

    @cached_property
    def demographic_space(self) -> FeatureSpace:
        return FeatureSpace(self._names(LAYOUT.demographic_feature_names.path))

    @cached_property
    def demographics(self) -> sp.csr_matrix:
        return _read_csr(self.folder, LAYOUT.demographics)

    @cached_property
    def history(self) -> sp.csr_matrix:
        return _read_csr(self.folder, LAYOUT.history)

    @cached_property
    def purchases(self) -> sp.csr_matrix | None:
        return _read_csr(self.folder, LAYOUT.purchases) if self._has(LAYOUT.purchases.shape.path) else None

    @cached_property
    def mix_overall(self) -> NDArray[np.float64]:
        return self.folder.load_array(LAYOUT.mix_overall.path)

    @cached_property
    def mix_by_context(self) -> NDArray[np.float64]:
        return self.folder.load_array(LAYOUT.mix_by_context.path)

    @cached_property
    def n_events(self) -> NDArray[np.int64]:
        return self.folder.load_array(LAYOUT.n_events.path)

    @cached_property
    def contexts(self) -> tuple[str, ...]:
        return self._names(LAYOUT.contexts.path)

    @cached_property
    def holidays(self) -> tuple[tuple[int, int], ...]:
        """The stored holidays; artifacts written before they were stored used the defaults."""
        if not self._has(LAYOUT.holidays.path):
            return DEFAULT_HOLIDAYS
        return tuple((int(month), int(day)) for month, day in self.folder.read_json(LAYOUT.holidays.path))

    @cached_property
    def inference(self) -> PersonaInferenceModel:
        return PersonaInferenceModel.load(self.folder.file(LAYOUT.persona_inference.path))

    @cached_property
    def demographic_prior(self) -> DemographicMixPrior | None:
        entry = LAYOUT.demographic_prior.path
        return DemographicMixPrior.load(self.folder.file(entry)) if self._has(entry) else None

    @cached_property
    def explanations(self) -> MixExplanations | None:
        entry = LAYOUT.explanations
        return (
            MixExplanations.load(self.folder.file(entry.path))
            if not entry.missing(self.folder.files)
            else None
        )

    @cached_property
    def drift_calibration(self) -> DriftCalibration | None:
        entry = LAYOUT.drift_calibration.path
        if not self._has(entry):
            return None
        try:
            return DriftCalibration.from_json(self.folder.read_json(entry), f"{self.path}/{entry}")
        except ValueError as error:
            raise ArtifactError(str(error)) from None

    @cached_property
    def models(self) -> StoredModels:
        return StoredModels(self.folder)

    @cached_property
    def arm_estimates(self) -> dict[str, ArmEstimates]:
        folders = LAYOUT.arm_estimates
        return {
            name: ArmEstimates.load(self.folder.file(folders.component(name).path))
            for name in folders.names(self.folder.files)
        }

    @cached_property
    def offers(self) -> Table | None:
        return list(self.folder.read_json(LAYOUT.offers.path)) if self._has(LAYOUT.offers.path) else None

    @cached_property
    def layouts(self) -> Table | None:
        return list(self.folder.read_json(LAYOUT.layouts.path)) if self._has(LAYOUT.layouts.path) else None

    def __repr__(self) -> str:
        return f"LoadedArtifact(version={self.version!r}, path={str(self.path)!r})"


def load_artifact(path: Path, verifier: ArtifactVerifier | None = None) -> LoadedArtifact:
    """Open ``ROOT``, ``ROOT/latest`` or ``ROOT/<version>``: verify the manifest (its signature under
    ``verifier``'s key, when given) and every checksum, then require every entry of the layout that is
    not optional; a problem raises ArtifactError naming the file."""
    folder = open_artifact(path, verifier)
    missing = LAYOUT.missing(folder.files)
    if missing:
        raise ArtifactError(f"artifact {folder.version} ({folder.path}) has no {', '.join(missing)}")
    return LoadedArtifact(folder)
