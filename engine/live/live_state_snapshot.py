"""Snapshots of in-memory live customer state, so a restart replays only the tail of the event log.

A server with the in-memory state store used to rebuild every customer's live state from the whole
drift window of the event log before serving (about 1.5 ms an event: a minute at 33,000 events). A
snapshot is that rebuilt state at one position of the log: the stored state document of every
customer (the same JSON bytes the StateStore holds, never pickle), the time of each customer's latest
event, and the log's last event ``rowid`` it covers. Start-up loads the newest snapshot and replays
only the events logged after it (``engine.live.live_state``).

On disk, next to the log ``events.db``, in ``events.db.live-state/``:

- ``snapshot-<rowid>.parquet``: columns ``customer_id`` (utf8), ``state`` (binary), ``last_event_us``
  (int64, UTC microseconds);
- ``snapshot-<rowid>.json``: the manifest, written last (its rename is the commit point): format,
  covered rowid, when it was taken, under which artifact, the live-state settings' digest, the row
  count and the SHA-256 of the Parquet file.

Each file is written to a temporary name, fsynced and renamed, then the folder is fsynced, so a crash
leaves either the whole new snapshot or none. A snapshot whose Parquet file does not match its
manifest's checksum, or whose settings digest differs from the running ones (another ``max_events``
would change every state), is skipped for the next older one; with none usable, start-up replays the
whole window, as before. The newest ``KEEP`` snapshots are kept.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import polars as pl

from engine.errors import PersonaEngineError
from engine.live.customer_state import LiveStateConfig

LOGGER = logging.getLogger("persona_engine.live")

SNAPSHOT_FORMAT: Final = 1
KEEP: Final = 2
_FOLDER_SUFFIX: Final = ".live-state"
_PREFIX: Final = "snapshot-"
_SCHEMA: Final = {"customer_id": pl.Utf8, "state": pl.Binary, "last_event_us": pl.Int64}
_MANIFEST_KEYS: Final = frozenset(
    {"format", "last_event_rowid", "taken_at", "artifact_version", "config_digest", "customers", "sha256"}
)


class SnapshotError(PersonaEngineError, ValueError):
    """A snapshot on disk cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class LiveStateSnapshot:
    """Every customer's live state after the log's events up to ``last_event_rowid``."""

    last_event_rowid: int
    taken_at: dt.datetime
    artifact_version: str
    config_digest: str
    customer_ids: tuple[str, ...]
    states: tuple[bytes, ...]
    last_event_us: tuple[int, ...]


def snapshot_folder(event_log: Path) -> Path:
    """Where the snapshots of the log at ``event_log`` live: beside it, named after it."""
    return event_log.with_name(event_log.name + _FOLDER_SUFFIX)


def config_digest(config: LiveStateConfig) -> str:
    """A digest of the settings that shape a stored state: a snapshot taken under others is not used."""
    return hashlib.sha256(repr(config).encode("utf-8")).hexdigest()[:16]


def write_snapshot(folder: Path, snapshot: LiveStateSnapshot) -> Path:
    """Write ``snapshot`` crash-safely into ``folder`` (created if needed); returns its manifest path.

    Older snapshots beyond the newest ``KEEP`` are removed afterwards.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{_PREFIX}{snapshot.last_event_rowid:015d}"
    frame = pl.DataFrame(
        {
            "customer_id": list(snapshot.customer_ids),
            "state": list(snapshot.states),
            "last_event_us": list(snapshot.last_event_us),
        },
        schema=_SCHEMA,
    )
    parquet = folder / f"{stem}.parquet"
    with _atomic_file(parquet) as handle:
        frame.write_parquet(handle)
    manifest = {
        "format": SNAPSHOT_FORMAT,
        "last_event_rowid": snapshot.last_event_rowid,
        "taken_at": snapshot.taken_at.isoformat(),
        "artifact_version": snapshot.artifact_version,
        "config_digest": snapshot.config_digest,
        "customers": frame.height,
        "sha256": _sha256(parquet),
    }
    manifest_path = folder / f"{stem}.json"
    with _atomic_file(manifest_path) as handle:
        handle.write(json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8"))
    _fsync_folder(folder)
    _prune(folder)
    return manifest_path


def read_latest_snapshot(folder: Path, digest: str) -> LiveStateSnapshot | None:
    """The newest usable snapshot in ``folder`` taken under settings ``digest``, or None.

    Unusable ones (damaged, other settings, unknown format) are logged and skipped.
    """
    for manifest in sorted(folder.glob(f"{_PREFIX}*.json"), reverse=True) if folder.is_dir() else []:
        try:
            snapshot = read_snapshot(manifest)
        except SnapshotError as error:
            LOGGER.warning("live state snapshot skipped: %s", error)
            continue
        if snapshot.config_digest != digest:
            LOGGER.warning(
                "live state snapshot %s skipped: taken under other live-state settings", manifest.name
            )
            continue
        return snapshot
    return None


def newest_snapshot_rowid(folder: Path) -> int:
    """The log position the newest snapshot in ``folder`` covers (0 with none), read from its file name.

    Cheap enough to ask every second (no file is opened): the server's upkeep compares it with the
    log's end to decide whether the tail a restart would replay has grown too long. It does not check
    the snapshot, so a damaged newest one counts as taken until the next periodic snapshot replaces it.
    """
    names = sorted(folder.glob(f"{_PREFIX}*.json")) if folder.is_dir() else []
    return int(names[-1].stem.removeprefix(_PREFIX)) if names else 0


def read_snapshot(manifest_path: Path) -> LiveStateSnapshot:
    """One snapshot, its Parquet file checked against its manifest; ``SnapshotError`` when unusable."""
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SnapshotError(f"{manifest_path}: unreadable manifest ({error})") from None
    if not isinstance(manifest, dict) or set(manifest) != _MANIFEST_KEYS:
        raise SnapshotError(f"{manifest_path}: manifest keys are not {sorted(_MANIFEST_KEYS)}")
    if manifest["format"] != SNAPSHOT_FORMAT:
        raise SnapshotError(f"{manifest_path}: format {manifest['format']!r}, expected {SNAPSHOT_FORMAT}")
    parquet = manifest_path.with_suffix(".parquet")
    try:
        actual = _sha256(parquet)
    except OSError as error:
        raise SnapshotError(f"{parquet}: cannot read ({error})") from None
    if actual != manifest["sha256"]:
        raise SnapshotError(f"{parquet}: checksum {actual} differs from the manifest's {manifest['sha256']}")
    try:
        frame = pl.read_parquet(parquet)
        if dict(frame.schema) != _SCHEMA or frame.height != manifest["customers"]:
            raise SnapshotError(f"{parquet}: columns or row count differ from the manifest")
        taken_at = dt.datetime.fromisoformat(manifest["taken_at"])
        rowid = int(manifest["last_event_rowid"])
    except (pl.exceptions.PolarsError, OSError, ValueError, TypeError) as error:
        raise SnapshotError(f"{parquet}: unreadable ({error})") from None
    return LiveStateSnapshot(
        last_event_rowid=rowid,
        taken_at=taken_at,
        artifact_version=str(manifest["artifact_version"]),
        config_digest=str(manifest["config_digest"]),
        customer_ids=tuple(frame["customer_id"].to_list()),
        states=tuple(frame["state"].to_list()),
        last_event_us=tuple(frame["last_event_us"].to_list()),
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator[Any]:
    """A file written under a temporary name, fsynced, then renamed to ``path``."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _prune(folder: Path) -> None:
    """Remove all but the newest ``KEEP`` snapshots (manifest first: a half-removed one is skipped)."""
    for manifest in sorted(folder.glob(f"{_PREFIX}*.json"), reverse=True)[KEEP:]:
        manifest.unlink(missing_ok=True)
        manifest.with_suffix(".parquet").unlink(missing_ok=True)
