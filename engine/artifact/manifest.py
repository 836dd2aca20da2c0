"""What an artifact's ``manifest.json`` may hold, checked before anything it lists is trusted.

The manifest decides what is served: it names the version and lists every file with its checksum. So a
manifest is read strictly. A key this engine does not know (a hand edit, or a writer whose meaning this
reader cannot know) is refused, naming the key, rather than silently ignored; each key's value must
have the JSON type its readers expect; and ``artifact_version`` must be the name of the folder the
manifest is in. Versions are folder names because that is how they are ordered and found
(``ROOT/<version>``, ``ROOT/latest``); a manifest claiming another version would be served, reported
and compared (rollback) under a name that is not where it lives.

Keys are added to ``MANIFEST_KEYS`` when a writer starts writing them and are never removed, so
artifacts already written keep loading. Whether the bytes themselves are the ones training wrote is
``engine.artifact.signing``'s question, asked before these.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from engine.artifact.errors import ArtifactError

ARTIFACT_FORMAT_VERSION: Final = 1
MANIFEST: Final = "manifest.json"
VERSION_PATTERN: Final = re.compile(r"^(\d{8}T\d{6}Z)(?:-(\d{4}))?$")

_ANY: Final[tuple[type, ...]] = ()  # any JSON value: the key's reader checks it
# Set by ArtifactWriter.commit; a caller may give library_versions only.
WRITER_KEYS: Final[Mapping[str, tuple[type, ...]]] = {
    "format_version": (int,),
    "artifact_version": (str,),
    "created_utc": (str,),
    "library_versions": (dict,),
    "files": (dict,),
}
# Every writer must give these.
REQUIRED_KEYS: Final[Mapping[str, tuple[type, ...]]] = {
    "data_fingerprint": (str,),
    "config": (dict,),
    "metrics": (list, dict),
}
# Written by training (training.train_job) and read by evaluate, the report, the summary and serving.
TRAINING_KEYS: Final[Mapping[str, tuple[type, ...]]] = {
    "format": (str,),
    "created_by": (str,),
    "models": (list,),
    "personas": (list,),
    "summary": (dict,),
    "persona_accuracy": _ANY,
    "decision_quality": _ANY,
    "fit_seconds": _ANY,
    "served_models": _ANY,
    "stages": _ANY,
    "context_evaluation": (list,),
    "steering_evaluation": (list,),
    "drift_evaluation": (dict,),
    "session_evaluation": (dict,),
    # Which training engine ran (local or spark), its master and the Spark path's choices
    # (hyperparameter mapping, evaluation sample); training.spark writes it.
    "engine": (dict,),
}
MANIFEST_KEYS: Final[Mapping[str, tuple[type, ...]]] = {**WRITER_KEYS, **REQUIRED_KEYS, **TRAINING_KEYS}
_JSON_TYPES: Final = {int: "a number", str: "a string", dict: "an object", list: "a list"}


def served_data_until(manifest: Mapping[str, Any]) -> dt.datetime | None:
    """``served_models.data_until``: the newest event or decision the artifact's served models were
    fitted on (UTC; a time written without a zone is taken as UTC), or None where it is not recorded."""
    record = manifest.get("served_models")
    text = record.get("data_until") if isinstance(record, Mapping) else None
    if not isinstance(text, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def is_version(name: str) -> bool:
    """Whether ``name`` is a version name (``20261123T153012Z`` or ``20261123T153012Z-0001``)."""
    return VERSION_PATTERN.match(name) is not None


def unknown_keys(keys: Iterable[object]) -> list[str]:
    """Those of ``keys`` (a manifest's, or fields given to a writer) that no manifest may hold, sorted."""
    return sorted(str(key) for key in keys if key not in MANIFEST_KEYS)


def _type_error(key: str, value: object) -> str | None:
    allowed = MANIFEST_KEYS[key]
    if not allowed:
        return None
    # bool is an int to Python, not a number to a manifest's readers
    if isinstance(value, bool) or not isinstance(value, allowed):
        expected = " or ".join(_JSON_TYPES[kind] for kind in allowed)
        return f"{key!r} must be {expected}, not {type(value).__name__}"
    return None


def parse_manifest(data: bytes, folder: Path) -> dict[str, Any]:
    """The manifest ``data`` read from ``folder``'s ``manifest.json``; ArtifactError names what is wrong.

    Checked: strict JSON object, format version, no unknown key, every required key, each key's type,
    the file list's shape, and ``artifact_version`` equal to ``folder.name``.
    """
    where = folder / MANIFEST
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{where}: not valid JSON ({error})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{where}: must hold a JSON object")
    if manifest.get("format_version") != ARTIFACT_FORMAT_VERSION:
        raise ArtifactError(
            f"{where}: unknown format_version {manifest.get('format_version')!r}; "
            f"this engine reads version {ARTIFACT_FORMAT_VERSION}"
        )
    unknown = unknown_keys(manifest)
    if unknown:
        raise ArtifactError(
            f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; a "
            "manifest holds only what persona-engine writes (was it edited by hand?)"
        )
    for key in ("artifact_version", "files", *REQUIRED_KEYS):
        if key not in manifest:
            raise ArtifactError(f"{where}: missing field {key!r}")
    for key, value in manifest.items():
        problem = _type_error(key, value)
        if problem is not None:
            raise ArtifactError(f"{where}: {problem}")
    files = manifest["files"]
    if not all(
        isinstance(entry, dict)
        and isinstance(entry.get("size"), int)
        and isinstance(entry.get("sha256"), str)
        for entry in files.values()
    ):
        raise ArtifactError(f"{where}: 'files' must map each path to its size and sha256")
    version = manifest["artifact_version"]
    if version != folder.name:
        raise ArtifactError(
            f"{where}: artifact_version {version!r} is not the name of its folder {folder.name!r}; an "
            "artifact is served under the folder name training gave it (copy or move the folder whole, "
            "keeping its name)"
        )
    if not is_version(version):
        raise ArtifactError(
            f"{where}: artifact_version {version!r} is not of the form 20261123T153012Z "
            "or 20261123T153012Z-0001"
        )
    return manifest
