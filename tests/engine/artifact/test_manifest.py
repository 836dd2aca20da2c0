"""The manifest's schema: known keys only, typed values, and the version is the folder's name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.artifact import MANIFEST_KEYS, ArtifactError, ArtifactWriter
from engine.artifact.manifest import is_version, parse_manifest, unknown_keys

VERSION = "20261123T153012Z"


def manifest(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "format_version": 1,
        "artifact_version": VERSION,
        "created_utc": "2026-11-23T15:30:12Z",
        "library_versions": {"numpy": "2.0"},
        "files": {"a.npy": {"size": 3, "sha256": "00"}},
        "data_fingerprint": "sha256:abc",
        "config": {},
        "metrics": [],
        "models": ["als"],
        "summary": {"best_model": "als"},
    }
    document.update(changes)
    return document


def parse(document: object, folder: str = VERSION) -> dict[str, Any]:
    return parse_manifest(json.dumps(document).encode("utf-8"), Path("/artifacts") / folder)


def test_a_manifest_as_training_writes_it_is_accepted() -> None:
    assert parse(manifest()) == manifest()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"config": []}, r"'config' must be an object, not list"),
        ({"metrics": "good"}, r"'metrics' must be a list or an object, not str"),
        ({"models": "als"}, r"'models' must be a list"),
        ({"format_version": True}, r"'format_version' must be a number, not bool"),
        ({"files": {"a.npy": {"size": "3", "sha256": "00"}}}, r"'files' must map each path"),
        ({"format_version": 2}, r"unknown format_version 2"),
        ({"extra": 1, "another": 2}, r"unknown keys 'another', 'extra'"),
    ],
)
def test_a_bad_value_is_refused_naming_the_key(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ArtifactError, match=message):
        parse(manifest(**changes))


def test_required_keys_and_the_json_shape() -> None:
    document = manifest()
    del document["metrics"]
    with pytest.raises(ArtifactError, match=r"missing field 'metrics'"):
        parse(document)
    with pytest.raises(ArtifactError, match="must hold a JSON object"):
        parse([1, 2])
    with pytest.raises(ArtifactError, match="not valid JSON"):
        parse_manifest(b"{", Path(VERSION))


def test_the_version_must_be_the_folder_name_and_a_version_name() -> None:
    with pytest.raises(ArtifactError, match=rf"'{VERSION}' is not the name of its folder '20261123T153013Z'"):
        parse(manifest(), folder="20261123T153013Z")
    with pytest.raises(ArtifactError, match=r"'copy' is not of the form"):
        parse(manifest(artifact_version="copy"), folder="copy")
    assert is_version("20261123T153012Z-0001") and not is_version("20261123T153012Z-1")


@given(st.text(min_size=1, max_size=30).filter(lambda key: key not in MANIFEST_KEYS))
def test_any_key_outside_the_schema_is_refused(key: str) -> None:
    assert unknown_keys([key, "config"]) == [key]
    with pytest.raises(ArtifactError, match="unknown key"):
        parse(manifest(**{key: 1}))


def test_the_writer_refuses_a_key_readers_would_refuse(tmp_path: Path) -> None:
    with ArtifactWriter(tmp_path, VERSION) as writer:
        writer.write_array("a.npy", np.zeros(2))
        with pytest.raises(ArtifactError, match=r"manifest fields shiny are unknown"):
            writer.commit({"data_fingerprint": "f", "config": {}, "metrics": [], "shiny": 1})
        with pytest.raises(ArtifactError, match=r"'config' must be an object"):
            writer.commit({"data_fingerprint": "f", "config": [], "metrics": []})
        writer.abort()
    assert not (tmp_path / VERSION).exists()
