"""The artifact's layout and contents: what training writes is what every reader gets back."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from engine.artifact import DIGEST_FILE, MANIFEST, ArtifactError, ArtifactWriter, new_version, open_artifact
from engine.artifact.contents import ArtifactContents, LoadedArtifact, load_artifact, write_contents
from engine.artifact.layout import LAYOUT, CsrFiles
from engine.data.id_map import IdMap
from engine.data.item_catalog import ItemCatalog
from engine.personalizer import Personalizer
from engine.personas.catalog import PersonaCatalog
from engine.personas.shopping_context import DEFAULT_HOLIDAYS
from tests.engine.small_artifact import train_small_artifact

FIELDS = {"data_fingerprint": "sha256:test", "config": {}, "metrics": []}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_artifact(tmp_path_factory.mktemp("contents"))


def contents_of(loaded: LoadedArtifact) -> ArtifactContents:
    """Everything a loaded artifact holds, read into ``ArtifactContents`` (models included)."""
    values = {field.name: getattr(loaded, field.name) for field in fields(ArtifactContents)}
    values["models"] = dict(loaded.models)
    return ArtifactContents(**values)


def rewrite(contents: ArtifactContents, root: Path) -> Path:
    with ArtifactWriter(root, new_version(root)) as writer:
        write_contents(writer, contents)
        return writer.commit(FIELDS)


def saved_bytes(component: Any, folder: Path) -> dict[str, bytes]:
    """A component's files as it saves them: components without ``==`` compare in their own format."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    written = component.save(folder)
    paths = [written] if isinstance(written, Path) else written
    return {
        str(Path(p).relative_to(folder)) if Path(p) != folder else "": Path(p).read_bytes() for p in paths
    }


def assert_same(name: str, first: Any, second: Any, scratch: Path) -> None:
    if isinstance(first, np.ndarray):
        assert first.dtype == second.dtype, name
        np.testing.assert_array_equal(first, second, err_msg=name)
    elif isinstance(first, sp.csr_matrix):
        assert first.shape == second.shape and first.dtype == second.dtype, name
        for part in ("data", "indices", "indptr"):
            np.testing.assert_array_equal(getattr(first, part), getattr(second, part), err_msg=name)
    elif isinstance(first, ItemCatalog):
        assert first.ids == second.ids, name
        for column in ("titles", "categories", "brands", "prices", "in_stock"):
            assert_same(f"{name}.{column}", getattr(first, column), getattr(second, column), scratch)
    elif isinstance(first, IdMap):
        assert first == second and first.kind == second.kind, name
    elif isinstance(first, PersonaCatalog):
        assert first.personas == second.personas, name
    elif isinstance(first, Mapping):
        assert sorted(first) == sorted(second), name
        for key in first:
            assert_same(f"{name}[{key}]", first[key], second[key], scratch)
    elif hasattr(first, "save"):
        assert saved_bytes(first, scratch / name / "a") == saved_bytes(second, scratch / name / "b"), name
    else:
        assert first == second, name


def test_every_field_reads_back_as_written_and_the_files_are_the_same(trained: Path, tmp_path: Path) -> None:
    original = load_artifact(trained)
    copy = load_artifact(rewrite(contents_of(original), tmp_path / "root"))
    for field in fields(ArtifactContents):
        first, second = getattr(original, field.name), getattr(copy, field.name)
        assert (first is None) == (second is None), field.name
        if first is not None:
            assert_same(field.name, first, second, tmp_path / "scratch")
    # Training's own write and a write of what was read are the same bytes: the layout loses nothing.
    assert original.manifest["files"] == copy.manifest["files"]


def test_a_trained_artifact_has_every_entry_and_nothing_outside_the_layout(trained: Path) -> None:
    files = open_artifact(trained).files
    assert LAYOUT.missing(files) == []
    covered: set[str] = set()
    for entry in LAYOUT.entries().values():
        if isinstance(entry, CsrFiles):
            covered |= {array.path for array in entry.arrays}
        elif hasattr(entry, "names"):
            covered |= {f for f in files if f.startswith(entry.path + "/") and f.count("/") >= 2}
        elif entry.path in files:
            covered.add(entry.path)
        else:
            covered |= {f for f in files if f.startswith(entry.path + "/")}
    assert sorted(set(files) - covered) == []


def test_layout_paths_are_unique() -> None:
    paths = [
        path
        for entry in LAYOUT.entries().values()
        for path in ([a.path for a in entry.arrays] if isinstance(entry, CsrFiles) else [entry.path])
    ]
    assert len(paths) == len(set(paths))


def _drop_from_manifest(folder: Path, *names: str) -> None:
    """Remove files and their manifest entries, as an artifact written before they existed would be
    (before the manifest's digest existed too: it has no manifest.sha256)."""
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    for name in names:
        (folder / name).unlink()
        del manifest["files"][name]
    (folder / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    (folder / DIGEST_FILE).unlink()


def test_a_missing_required_entry_is_refused_naming_it(trained: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(trained, tmp_path / trained.name))
    _drop_from_manifest(folder, LAYOUT.n_events.path)
    with pytest.raises(ArtifactError, match=r"has no customers/n_events\.npy"):
        load_artifact(folder)


def test_a_tampered_file_is_refused_naming_it(trained: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(trained, tmp_path / trained.name))
    target = folder / LAYOUT.mix_overall.path
    target.write_bytes(target.read_bytes()[:-8] + bytes(8))
    with pytest.raises(ArtifactError, match=r"customers/mix_overall\.npy does not match its sha256"):
        load_artifact(folder)


def test_older_artifacts_without_the_optional_entries_still_load(trained: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(trained, tmp_path / trained.name))
    optional = [
        LAYOUT.holidays.path,
        LAYOUT.demographic_prior.path,
        *(a.path for a in LAYOUT.purchases.arrays),
    ]
    explanations = [f for f in open_artifact(folder).files if f.startswith(LAYOUT.explanations.path + "/")]
    _drop_from_manifest(folder, *optional, *explanations)
    shutil.rmtree(folder / LAYOUT.explanations.path)
    loaded = load_artifact(folder)
    assert loaded.purchases is None and loaded.demographic_prior is None and loaded.explanations is None
    assert loaded.holidays == DEFAULT_HOLIDAYS
    personalizer = Personalizer(loaded)
    assert personalizer.purchases is personalizer.history
    assert personalizer.recommend(str(loaded.customers.ids[0]), k=3).items


def test_models_are_read_when_asked_for(trained: Path) -> None:
    models = load_artifact(trained).models
    assert list(models) == sorted(["als", "persona_popularity", "popularity"])
    assert models["als"].kind == "als"
    assert models["als"] is not models["als"]  # not kept: callers keep what they serve
    with pytest.raises(KeyError):
        models["lightfm_hybrid"]


def test_a_part_that_fails_to_write_stops_the_artifact(trained: Path, tmp_path: Path) -> None:
    """Parts are written on two threads; the first failure still reaches the caller, and the writer
    then publishes nothing (no version folder, no ``latest``)."""
    contents = contents_of(load_artifact(trained))

    class Unwritable:
        def save(self, path: Path) -> Path:
            raise OSError(f"disk full writing {path.name}")

    broken = ArtifactContents(
        **{**{f.name: getattr(contents, f.name) for f in fields(ArtifactContents)}, "inference": Unwritable()}
    )
    root = tmp_path / "artifacts"
    with pytest.raises(OSError, match="disk full writing"):
        rewrite(broken, root)
    assert not (root / "latest").exists()
    assert [p.name for p in root.iterdir() if not p.name.startswith(".")] == []
