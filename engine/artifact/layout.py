"""Where each part of a trained artifact lives inside its version folder: the one definition of the format.

Training writes an artifact and serving, the CLI, the report and the batch jobs read it; if each of them
spelled the file names itself, a renamed file would break a reader that nobody thought of. So every
entry is named once, here, with the kind of thing stored there, and ``engine.artifact.contents`` is the
only code that turns entries into files and back. The names are the on-disk format that artifacts
already written carry: add an entry rather than rename one, or those artifacts stop loading.

Entries marked ``optional`` are missing from artifacts written before they existed; the reader gives a
documented default for them. Every other entry must be present for ``load_artifact`` to accept a folder.
Sub-folders (a model, the persona model, the explanations, the arm estimates) hold files their component
writes and reads itself (``Recommender.save``/``load`` and the like): their inside is the component's
format, not the artifact's.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, fields

ARRAY_SUFFIX = ".npy"


def _holds_folder(files: Collection[str], folder: str) -> bool:
    return any(name.startswith(folder + "/") for name in files)


@dataclass(frozen=True)
class ArrayFile:
    """One ``.npy`` array (read without pickle)."""

    path: str
    optional: bool = False

    def __post_init__(self) -> None:
        if not self.path.endswith(ARRAY_SUFFIX):
            raise ValueError(f"array file {self.path!r} must end in {ARRAY_SUFFIX}")

    def missing(self, files: Collection[str]) -> list[str]:
        return [] if self.path in files else [self.path]


@dataclass(frozen=True)
class JsonFile:
    """One strict JSON document."""

    path: str
    optional: bool = False

    def missing(self, files: Collection[str]) -> list[str]:
        return [] if self.path in files else [self.path]


@dataclass(frozen=True)
class TextFile:
    """One UTF-8 text file (the persona catalog's TOML)."""

    path: str
    optional: bool = False

    def missing(self, files: Collection[str]) -> list[str]:
        return [] if self.path in files else [self.path]


@dataclass(frozen=True)
class ComponentFile:
    """One file a component writes and reads itself (the demographic mix prior's JSON)."""

    path: str
    optional: bool = False

    def missing(self, files: Collection[str]) -> list[str]:
        return [] if self.path in files else [self.path]


@dataclass(frozen=True)
class CsrFiles:
    """A scipy CSR matrix as four arrays: ``<prefix>.data``, ``.indices``, ``.indptr`` and ``.shape``."""

    prefix: str
    optional: bool = False

    @property
    def data(self) -> ArrayFile:
        return ArrayFile(f"{self.prefix}.data{ARRAY_SUFFIX}")

    @property
    def indices(self) -> ArrayFile:
        return ArrayFile(f"{self.prefix}.indices{ARRAY_SUFFIX}")

    @property
    def indptr(self) -> ArrayFile:
        return ArrayFile(f"{self.prefix}.indptr{ARRAY_SUFFIX}")

    @property
    def shape(self) -> ArrayFile:
        """(rows, columns) as int64: an empty trailing row or column is not visible in the other three."""
        return ArrayFile(f"{self.prefix}.shape{ARRAY_SUFFIX}")

    @property
    def arrays(self) -> tuple[ArrayFile, ArrayFile, ArrayFile, ArrayFile]:
        return (self.data, self.indices, self.indptr, self.shape)

    def missing(self, files: Collection[str]) -> list[str]:
        return [name for array in self.arrays for name in array.missing(files)]


@dataclass(frozen=True)
class ComponentFolder:
    """A folder whose files one component writes and reads itself (a model, the persona model...)."""

    path: str
    optional: bool = False

    def missing(self, files: Collection[str]) -> list[str]:
        return [] if _holds_folder(files, self.path) else [f"{self.path}/"]


@dataclass(frozen=True)
class FolderOfComponents:
    """A folder holding one component folder per name (a model per kind, estimates per decision type)."""

    path: str
    optional: bool = False

    def component(self, name: str) -> ComponentFolder:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"{name!r} is not a folder name inside {self.path}/")
        return ComponentFolder(f"{self.path}/{name}")

    def names(self, files: Collection[str]) -> tuple[str, ...]:
        """The component folders present among ``files`` (the artifact's file list), sorted."""
        prefix = self.path + "/"
        return tuple(
            sorted(
                {
                    name[len(prefix) :].split("/")[0]
                    for name in files
                    if name.count("/") >= 2 and name.startswith(prefix)
                }
            )
        )

    def missing(self, files: Collection[str]) -> list[str]:
        return [] if self.names(files) else [f"{self.path}/<name>/"]


Entry = ArrayFile | JsonFile | TextFile | ComponentFile | CsrFiles | ComponentFolder | FolderOfComponents


@dataclass(frozen=True)
class ArtifactLayout:
    """Every entry of an artifact version folder (besides ``manifest.json``, which ``folder`` owns)."""

    persona_catalog: TextFile = TextFile("persona_catalog.toml")
    item_ids: ArrayFile = ArrayFile("ids/items.npy")
    customer_ids: ArrayFile = ArrayFile("ids/customers.npy")
    # The customers the models were fitted on, in the models' row order (a subset of customer_ids).
    model_customer_ids: ArrayFile = ArrayFile("ids/model_customers.npy")
    item_titles: ArrayFile = ArrayFile("items/title.npy")
    item_categories: ArrayFile = ArrayFile("items/category.npy")
    item_brands: ArrayFile = ArrayFile("items/brand.npy")
    item_prices: ArrayFile = ArrayFile("items/price.npy")
    item_in_stock: ArrayFile = ArrayFile("items/in_stock.npy")
    item_features: CsrFiles = CsrFiles("items/features")
    item_feature_names: JsonFile = JsonFile("features/item_features.json")
    demographic_feature_names: JsonFile = JsonFile("features/demographic_features.json")
    demographics: CsrFiles = CsrFiles("customers/demographics")
    history: CsrFiles = CsrFiles("customers/history")
    # Older artifacts lack purchases; readers then treat all engagement as bought (stricter).
    purchases: CsrFiles = CsrFiles("customers/purchases", optional=True)
    mix_overall: ArrayFile = ArrayFile("customers/mix_overall.npy")
    mix_by_context: ArrayFile = ArrayFile("customers/mix_by_context.npy")
    n_events: ArrayFile = ArrayFile("customers/n_events.npy")
    # The context order of mix_by_context's middle axis.
    contexts: JsonFile = JsonFile("customers/contexts.json")
    # The (month, day) holidays training counted as weekend_holiday; older artifacts used the defaults.
    holidays: JsonFile = JsonFile("customers/holidays.json", optional=True)
    persona_inference: ComponentFolder = ComponentFolder("personas/inference")
    demographic_prior: ComponentFile = ComponentFile("personas/demographic_prior", optional=True)
    explanations: ComponentFolder = ComponentFolder("personas/explanations", optional=True)
    # The live path's drift threshold, calibrated on the training events; older artifacts lack it.
    drift_calibration: JsonFile = JsonFile("personas/drift_calibration.json", optional=True)
    models: FolderOfComponents = FolderOfComponents("models")
    arm_estimates: FolderOfComponents = FolderOfComponents("decisions", optional=True)
    offers: JsonFile = JsonFile("decisions/offers.json", optional=True)
    layouts: JsonFile = JsonFile("decisions/layouts.json", optional=True)

    def entries(self) -> dict[str, Entry]:
        """Every entry by its field name."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    def missing(self, files: Collection[str]) -> list[str]:
        """The required entries absent from ``files`` (an artifact's file list), as file or folder names."""
        listed = set(files)
        return [
            name for entry in self.entries().values() if not entry.optional for name in entry.missing(listed)
        ]


LAYOUT = ArtifactLayout()
