"""Whether the data a command reads is the data an artifact was trained on, said where it matters.

``evaluate``, ``drift`` and ``report`` take ``--data`` to read other data than the artifact's own (a
newer export, a held-out copy). Given a different shop by mistake they still run to the end: every
customer the artifact does not know is a stranger, and the figures are those of its models on other
data. A data scientist's walkthrough ran ``drift`` of an Online Retail artifact on MovieLens and got a
list of users "drifting" between gift-shop personas, without a word. The fingerprint the artifact
records of its training files (``engine.artifact.data_fingerprint``) tells the two apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.artifact import data_fingerprint


def folder_fingerprint(data_dir: Path) -> str:
    """The fingerprint of a data folder's files, as ``train`` records it in the manifest."""
    return data_fingerprint(sorted(path for path in data_dir.glob("*.*") if path.is_file()))


def is_training_data(data_dir: Path, manifest: Mapping[str, Any]) -> bool:
    """Whether the files of ``data_dir`` are those the artifact of ``manifest`` was trained on."""
    return folder_fingerprint(data_dir) == manifest.get("data_fingerprint")


def other_data_warning(data_dir: Path, manifest: Mapping[str, Any], version: str) -> str | None:
    """A warning when ``data_dir`` is not the artifact's training data; None when it is."""
    if is_training_data(data_dir, manifest):
        return None
    return (
        f"{data_dir} is not the data artifact {version} was trained on (its files differ): these are its "
        "models and personas applied to other data, and customers it does not know are strangers to it"
    )
