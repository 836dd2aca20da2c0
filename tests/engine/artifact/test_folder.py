from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.artifact import (
    LATEST,
    MANIFEST,
    ArtifactError,
    ArtifactWriter,
    data_fingerprint,
    library_versions,
    list_versions,
    new_version,
    open_artifact,
)

FIELDS: dict[str, Any] = {
    "data_fingerprint": "sha256:abc",
    "config": {"factors": 8},
    "metrics": {"ndcg@10": 0.25},
}
T0 = dt.datetime(2026, 11, 23, 15, 30, 12, tzinfo=dt.UTC)


def write_version(root: Path, now: dt.datetime = T0, *, scale: float = 1.0) -> Path:
    version = new_version(root, now)
    with ArtifactWriter(root, version) as writer:
        writer.write_array(
            "models/als/user_factors.npy", np.arange(12, dtype=np.float32).reshape(3, 4) * scale
        )
        writer.write_array("id_maps/items.npy", np.asarray(["i1", "i2", "i3"]))
        writer.write_json("personas/mixes.json", {"weekday": [0.5, 0.5]})
        writer.path("personas/catalog.toml").write_text('[[personas]]\nid = "a"\n', encoding="utf-8")
        return writer.commit(FIELDS)


def test_round_trip_through_latest(tmp_path: Path) -> None:
    folder = write_version(tmp_path)
    assert folder == tmp_path / "20261123T153012Z"
    assert os.readlink(tmp_path / LATEST) == "20261123T153012Z"
    artifact = open_artifact(tmp_path / LATEST)
    assert artifact.version == "20261123T153012Z"
    assert artifact.path == folder.resolve()
    np.testing.assert_array_equal(
        artifact.load_array("models/als/user_factors.npy"), np.arange(12, dtype=np.float32).reshape(3, 4)
    )
    assert artifact.load_array("id_maps/items.npy").tolist() == ["i1", "i2", "i3"]
    assert artifact.read_json("personas/mixes.json") == {"weekday": [0.5, 0.5]}
    assert artifact.file("models/als").is_dir()
    manifest = artifact.manifest
    assert manifest["format_version"] == 1
    assert manifest["artifact_version"] == "20261123T153012Z"
    assert manifest["config"] == {"factors": 8} and manifest["metrics"] == {"ndcg@10": 0.25}
    assert manifest["data_fingerprint"] == "sha256:abc"
    assert manifest["created_utc"].endswith("Z")
    assert set(manifest["library_versions"]) == {
        "numpy",
        "scipy",
        "implicit",
        "lightfm",
        "polars",
        "pyarrow",
        "python",
    }
    assert set(manifest["files"]) == {
        "models/als/user_factors.npy",
        "id_maps/items.npy",
        "personas/mixes.json",
        "personas/catalog.toml",
    }
    toml_entry = manifest["files"]["personas/catalog.toml"]
    assert toml_entry["size"] == (folder / "personas/catalog.toml").stat().st_size
    # the root itself opens its latest version
    assert open_artifact(tmp_path).version == artifact.version
    with pytest.raises(ArtifactError, match=r"no file models/missing\.npy"):
        artifact.load_array("models/missing.npy")


def test_latest_moves_to_the_newest_commit(tmp_path: Path) -> None:
    write_version(tmp_path)
    second = write_version(tmp_path, T0 + dt.timedelta(hours=1), scale=2.0)
    assert os.readlink(tmp_path / LATEST) == second.name
    assert open_artifact(tmp_path / LATEST).load_array("models/als/user_factors.npy")[0, 1] == 2.0
    assert list_versions(tmp_path) == ["20261123T153012Z", "20261123T163012Z"]


@pytest.mark.parametrize("same_size", [True, False])
def test_tampered_file_is_named(tmp_path: Path, same_size: bool) -> None:
    folder = write_version(tmp_path)
    target = folder / "personas/mixes.json"
    text = target.read_text(encoding="utf-8")
    target.write_text(text.replace("0.5", "0.7" if same_size else "0.75"), encoding="utf-8")
    expected = "does not match its sha256" if same_size else "has .* bytes, the manifest says"
    with pytest.raises(ArtifactError, match=f"file personas/mixes.json {expected}"):
        open_artifact(folder)


def test_missing_file_is_named(tmp_path: Path) -> None:
    folder = write_version(tmp_path)
    (folder / "id_maps/items.npy").unlink()
    with pytest.raises(ArtifactError, match=r"file id_maps/items\.npy listed in the manifest is missing"):
        open_artifact(tmp_path / LATEST)


def test_extra_file_is_named(tmp_path: Path) -> None:
    folder = write_version(tmp_path)
    (folder / "models/als/extra.npy").write_bytes(b"x")
    with pytest.raises(ArtifactError, match=r"unexpected file.*models/als/extra\.npy"):
        open_artifact(folder)


def test_missing_manifest_and_unknown_format_version(tmp_path: Path) -> None:
    folder = write_version(tmp_path)
    _edit_manifest(folder, lambda m: m.update(format_version=99))
    with pytest.raises(ArtifactError, match="unknown format_version 99"):
        open_artifact(folder)
    (folder / MANIFEST).unlink()
    with pytest.raises(ArtifactError, match=f"no {MANIFEST}"):
        open_artifact(folder)


def test_crash_inside_writer_leaves_no_trace(tmp_path: Path) -> None:
    first = write_version(tmp_path)
    version = new_version(tmp_path, T0 + dt.timedelta(minutes=5))
    with pytest.raises(RuntimeError, match="training blew up"), ArtifactWriter(tmp_path, version) as writer:
        writer.write_array("a.npy", np.zeros(3))
        raise RuntimeError("training blew up")
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name, LATEST]
    assert os.readlink(tmp_path / LATEST) == first.name


def test_failed_commit_and_forgotten_commit_publish_nothing(tmp_path: Path) -> None:
    version = new_version(tmp_path, T0)
    with (
        pytest.raises(ArtifactError, match="manifest fields missing: metrics"),
        ArtifactWriter(tmp_path, version) as w,
    ):
        w.write_json("x.json", {})
        w.commit({"data_fingerprint": "f", "config": {}})
    with (
        pytest.raises(ArtifactError, match="neither committed nor aborted"),
        ArtifactWriter(tmp_path, version) as w,
    ):
        w.write_json("x.json", {})
    with ArtifactWriter(tmp_path, version) as w:
        w.write_json("x.json", {})
        w.abort()
    assert list(tmp_path.iterdir()) == []


def test_versions_strictly_increase_within_a_second_and_when_the_clock_goes_back(tmp_path: Path) -> None:
    committed = [write_version(tmp_path, T0).name for _ in range(3)]
    assert committed == ["20261123T153012Z", "20261123T153012Z-0001", "20261123T153012Z-0002"]
    earlier = write_version(tmp_path, T0 - dt.timedelta(days=1)).name
    assert earlier == "20261123T153012Z-0003"
    later = write_version(tmp_path, T0 + dt.timedelta(seconds=1)).name
    assert later == "20261123T153013Z"
    assert list_versions(tmp_path) == sorted([*committed, earlier, later])
    assert os.readlink(tmp_path / LATEST) == later


def test_committing_an_older_version_is_refused(tmp_path: Path) -> None:
    old = new_version(tmp_path, T0)
    write_version(tmp_path, T0 + dt.timedelta(hours=1))
    with (
        pytest.raises(ArtifactError, match="versions only increase"),
        ArtifactWriter(tmp_path, old) as writer,
    ):
        writer.write_json("x.json", {})
        writer.commit(FIELDS)
    assert os.readlink(tmp_path / LATEST) == "20261123T163012Z"


def test_no_file_in_an_artifact_needs_pickle(tmp_path: Path) -> None:
    folder = write_version(tmp_path)
    arrays = list(folder.rglob("*.npy"))
    assert len(arrays) == 2
    for path in arrays:
        np.load(path, allow_pickle=False)
    version = new_version(tmp_path, T0 + dt.timedelta(hours=2))
    with ArtifactWriter(tmp_path, version) as writer:
        with pytest.raises(ArtifactError, match=r"cannot write bad\.npy"):
            writer.write_array("bad.npy", np.array([{"a": 1}], dtype=object))
        assert not writer.path("bad.npy").exists()
        writer.abort()


@pytest.mark.parametrize("rel", ["../escape.json", "/abs.json", MANIFEST, "a/../../b.json", ""])
def test_paths_must_stay_inside_the_artifact(tmp_path: Path, rel: str) -> None:
    with ArtifactWriter(tmp_path, new_version(tmp_path, T0)) as writer:
        with pytest.raises(ArtifactError):
            writer.path(rel)
        writer.abort()


def test_manifest_fields_must_be_strict_json_and_not_reserved(tmp_path: Path) -> None:
    with ArtifactWriter(tmp_path, new_version(tmp_path, T0)) as writer:
        with pytest.raises(ArtifactError, match="files are set by commit"):
            writer.commit({**FIELDS, "files": {}})
        with pytest.raises(ArtifactError, match="not strict JSON"):
            writer.commit({**FIELDS, "metrics": {"ndcg@10": float("nan")}})
        writer.abort()


def test_data_fingerprint_covers_names_sizes_and_contents(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "events.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    (data / "items.csv").write_text("x\n", encoding="utf-8")
    files = [data / "events.csv", data / "items.csv"]
    base = data_fingerprint(files)
    assert base.startswith("sha256:") and len(base) == len("sha256:") + 64
    assert data_fingerprint(list(reversed(files))) == base
    copy = tmp_path / "elsewhere"
    shutil.copytree(data, copy)
    assert data_fingerprint([copy / "events.csv", copy / "items.csv"]) == base
    (data / "items.csv").write_text("y\n", encoding="utf-8")
    assert data_fingerprint(files) != base
    (data / "items.csv").write_text("x\n", encoding="utf-8")
    (data / "items.csv").rename(data / "items2.csv")
    assert data_fingerprint([data / "events.csv", data / "items2.csv"]) != base
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        data_fingerprint([data / "nope.csv"])


def test_data_fingerprint_of_a_folder_is_independent_of_its_location(tmp_path: Path) -> None:
    for parent in ("one", "two"):
        folder = tmp_path / parent / "data"
        (folder / "sub").mkdir(parents=True)
        (folder / "events.csv").write_text("e\n", encoding="utf-8")
        (folder / "sub" / "items.csv").write_text("i\n", encoding="utf-8")
    assert data_fingerprint([tmp_path / "one/data"]) == data_fingerprint([tmp_path / "two/data"])
    (tmp_path / "two/data/sub/items.csv").write_text("j\n", encoding="utf-8")
    assert data_fingerprint([tmp_path / "one/data"]) != data_fingerprint([tmp_path / "two/data"])


def test_library_versions_name_every_library() -> None:
    versions = library_versions()
    assert set(versions) == {"numpy", "scipy", "implicit", "lightfm", "polars", "pyarrow", "python"}
    assert versions["numpy"] == np.__version__
    assert versions["lightfm"] != "not installed"


# -- the manifest itself (issue 14, finding 2) --------------------------------------------------------
# An attacker who can write to the folder knows the format: these edits also rewrite manifest.sha256
# when there is one (a digest is no defence against them; the key checks and signatures are).


def _edit_manifest(folder: Path, edit: Any, *, rewrite_digest: bool = True) -> None:
    path = folder / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    edit(manifest)
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")
    path.write_bytes(data)
    digest = folder / "manifest.sha256"
    if rewrite_digest and digest.exists():
        digest.write_text(f"{hashlib.sha256(data).hexdigest()}  {MANIFEST}\n", encoding="ascii")


def test_a_manifest_edited_in_place_is_refused(tmp_path: Path) -> None:
    folder = write_version(tmp_path)
    _edit_manifest(folder, lambda m: m.update(artifact_version="29991231T000000Z"), rewrite_digest=False)
    with pytest.raises(ArtifactError, match=r"manifest\.json does not match manifest\.sha256"):
        open_artifact(folder)


def test_a_version_other_than_the_folder_name_is_refused(tmp_path: Path) -> None:
    folder = write_version(tmp_path)
    _edit_manifest(folder, lambda m: m.update(artifact_version="29991231T000000Z"))
    with pytest.raises(
        ArtifactError, match=r"artifact_version '29991231T000000Z' is not the name of its folder"
    ):
        open_artifact(folder)


def test_a_copy_under_another_version_name_is_refused(tmp_path: Path) -> None:
    folder = write_version(tmp_path)
    renamed = Path(shutil.copytree(folder, tmp_path / "29991231T000000Z"))
    with pytest.raises(
        ArtifactError, match=r"'20261123T153012Z' is not the name of its folder '29991231T000000Z'"
    ):
        open_artifact(renamed)


def test_an_unknown_manifest_key_is_refused_naming_it(tmp_path: Path) -> None:
    folder = write_version(tmp_path)
    _edit_manifest(folder, lambda m: m.update(serve_anyway=True))
    with pytest.raises(ArtifactError, match=r"unknown key 'serve_anyway'"):
        open_artifact(folder)
