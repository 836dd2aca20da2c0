"""Versioned, checksummed model artifacts: what training writes and serving loads.

A server that loads a half-written folder, or a file that was edited or damaged after training, serves
wrong answers without noticing. So an artifact is only ever visible complete: it is written into a
staging folder, every file is listed in ``manifest.json`` with its size and sha256, the folder is
renamed into place and ``ROOT/latest`` is repointed by replacing a symlink (both renames are atomic on
POSIX file systems). Opening an artifact re-checks every file against the manifest and refuses extra
ones, so what is loaded is exactly what training committed. Arrays are ``.npy`` read with
``allow_pickle=False`` and everything else is JSON or TOML: loading an artifact never runs code.

Layout::

    ROOT/
      20261123T153012Z/        one folder per version; names sort in creation order
        manifest.json
        ...                     the entries of engine.artifact.layout
      latest -> 20261123T153012Z

One writer per root at a time is assumed; a second writer that commits an older version than one
already committed is refused rather than allowed to move ``latest`` backwards.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, Self

from numpy.typing import NDArray

from engine.artifact.arrays import ARRAY_SUFFIX, load_array, save_array
from engine.artifact.errors import ArtifactError
from engine.artifact.manifest import (
    ARTIFACT_FORMAT_VERSION,
    MANIFEST,
    REQUIRED_KEYS,
    VERSION_PATTERN,
    WRITER_KEYS,
    is_version,
    parse_manifest,
    unknown_keys,
)
from engine.artifact.signing import (
    INTEGRITY_FILES,
    ArtifactSigner,
    ArtifactVerifier,
    ManifestIntegrity,
    check_manifest,
    write_integrity_files,
)

LATEST = "latest"
STAGING_PREFIX = ".staging-"
_MAX_SUFFIX = 9999
_RESERVED_FIELDS = tuple(key for key in WRITER_KEYS if key != "library_versions")
_REQUIRED_FIELDS = tuple(REQUIRED_KEYS)
_CHUNK = 1 << 20
_COMMIT_THREADS = 2

# Distribution name -> key in the manifest. lightfm is installed from the rectools fork.
_LIBRARIES = {
    "numpy": "numpy",
    "scipy": "scipy",
    "implicit": "implicit",
    "rectools-lightfm": "lightfm",
    "polars": "polars",
    "pyarrow": "pyarrow",
}


def list_versions(root: Path) -> list[str]:
    """Committed versions under ``root``, oldest first (version names sort in creation order)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if is_version(p.name) and p.is_dir() and not p.is_symlink())


def new_version(root: Path, now: dt.datetime | None = None) -> str:
    """A version name for a new artifact, strictly greater than every version under ``root``.

    The name is the UTC time to the second (``20261123T153012Z``). If that does not sort after the
    newest existing version (a second artifact within the same second, or a clock that went back),
    the newest version gets a four-digit suffix one higher (``...Z-0001``), so versions only increase
    and plain string order is creation order.
    """
    moment = dt.datetime.now(dt.UTC) if now is None else now
    if moment.tzinfo is None:
        raise ValueError("now must be timezone-aware; a naive time would be read in local time")
    candidate = moment.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    existing = list_versions(root)
    if not existing or candidate > existing[-1]:
        return candidate
    match = VERSION_PATTERN.match(existing[-1])
    assert match is not None  # list_versions keeps only matching names
    stamp, suffix = match.group(1), int(match.group(2) or 0)
    if suffix >= _MAX_SUFFIX:
        raise ArtifactError(
            f"{root}: version {existing[-1]} has the largest suffix; cannot create a later one"
        )
    return f"{stamp}-{suffix + 1:04d}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _durable_entry(path: Path) -> dict[str, Any]:
    """The manifest entry of a written file, once the file is on disk (fsync) and checksummed."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def _fingerprint_entries(paths: Iterable[Path]) -> list[tuple[str, Path]]:
    entries: list[tuple[str, Path]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            entries.extend(
                (f"{path.name}/{p.relative_to(path).as_posix()}", p) for p in path.rglob("*") if p.is_file()
            )
        elif path.is_file():
            entries.append((path.name, path))
        else:
            raise FileNotFoundError(f"cannot fingerprint {path}: no such file or folder")
    return sorted(entries, key=lambda entry: (entry[0], str(entry[1])))


def data_fingerprint(paths: Iterable[Path]) -> str:
    """``sha256:<hex>`` over the input files' names, sizes and contents, streamed.

    Names rather than full paths go in, so the same data copied to another machine or folder gives the
    same fingerprint; a folder contributes every file below it under ``folder/relative/path``. Files are
    taken in name order, so the order of ``paths`` does not matter. Each name and size is length-framed
    so that no two different inputs can produce the same byte stream.
    """
    digest = hashlib.sha256()
    for name, path in _fingerprint_entries(paths):
        encoded = name.encode("utf-8")
        size = path.stat().st_size
        digest.update(len(encoded).to_bytes(8, "big") + encoded + size.to_bytes(8, "big"))
        read = 0
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                read += len(chunk)
        if read != size:
            raise ArtifactError(f"{path} changed size while it was fingerprinted ({size} -> {read} bytes)")
    return f"sha256:{digest.hexdigest()}"


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour shapes a trained model, for reproducing it later."""
    versions: dict[str, str] = {}
    for distribution, key in _LIBRARIES.items():
        try:
            versions[key] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[key] = "not installed"
    versions["python"] = platform.python_version()
    return versions


def _relative(rel: str | os.PathLike[str]) -> PurePosixPath:
    """A safe relative path inside an artifact: no absolute paths, no '..', not the manifest itself."""
    text = os.fspath(rel)
    path = PurePosixPath(text.replace("\\", "/"))
    if (
        not text
        or path.is_absolute()
        or any(part in ("", ".", "..") for part in path.parts)
        or not path.parts
    ):
        raise ArtifactError(f"artifact file path {text!r} must be relative and stay inside the artifact")
    if str(path) in (MANIFEST, *INTEGRITY_FILES):
        raise ArtifactError(f"{path} is written by commit(); callers may not write it")
    return path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _walk_files(folder: Path) -> Iterator[PurePosixPath]:
    """Every file below ``folder``; symlinked folders are yielded too (os.walk would hide them)."""
    for dirpath, dirnames, filenames in os.walk(folder):
        linked = [name for name in dirnames if Path(dirpath, name).is_symlink()]
        for name in [*filenames, *linked]:
            yield PurePosixPath(Path(dirpath, name).relative_to(folder).as_posix())


class ArtifactWriter:
    """Writes one artifact version into a staging folder and publishes it on ``commit``.

    Use as a context manager. An exception inside the ``with`` block, or leaving it without
    ``commit()`` or ``abort()``, removes the staging folder; no version folder appears and ``latest``
    is left as it was. With ``signer`` the manifest is signed (``engine.artifact.signing``).
    """

    def __init__(self, root: Path, version: str, *, signer: ArtifactSigner | None = None) -> None:
        if not is_version(version):
            raise ArtifactError(
                f"version {version!r} is not of the form 20261123T153012Z or 20261123T153012Z-0001"
            )
        self.root = Path(root)
        self.version = version
        self.signer = signer
        self._staging: Path | None = None
        self._closed = False

    def __enter__(self) -> Self:
        if (self.root / self.version).exists():
            raise ArtifactError(f"{self.root}: version {self.version} already exists")
        self.root.mkdir(parents=True, exist_ok=True)
        self._staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{self.version}-", dir=self.root))
        self._staging.chmod(0o755)  # mkdtemp's 0700 would hide the published version from other accounts
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._closed:
            return
        self.abort()
        if exc_type is None:
            raise ArtifactError(
                f"{self.root}: artifact {self.version} was neither committed nor aborted; "
                "nothing was published"
            )

    @property
    def staging(self) -> Path:
        if self._staging is None or self._closed:
            raise ArtifactError(f"artifact writer for {self.version} is not open (use it in a with block)")
        return self._staging

    def path(self, rel: str | os.PathLike[str]) -> Path:
        """Where to write ``rel`` (e.g. ``models/als/user_factors.npy``); parent folders are created."""
        target = self.staging.joinpath(*_relative(rel).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_json(self, rel: str, obj: Any) -> Path:
        """Strict JSON (NaN and infinity are refused, since other readers reject them), sorted keys."""
        try:
            text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError) as error:
            raise ArtifactError(f"cannot write {rel} as JSON: {error}") from None
        target = self.path(rel)
        target.write_text(text + "\n", encoding="utf-8")
        return target

    def write_text(self, rel: str, text: str) -> Path:
        target = self.path(rel)
        target.write_text(text, encoding="utf-8")
        return target

    def write_array(self, rel: str, array: NDArray[Any]) -> Path:
        if not rel.endswith(ARRAY_SUFFIX):
            raise ArtifactError(f"array file {rel!r} must end in {ARRAY_SUFFIX}")
        target = self.path(rel)
        try:
            return save_array(target, array)
        except ValueError as error:  # object arrays need pickle, which artifacts never hold
            target.unlink(missing_ok=True)
            raise ArtifactError(f"cannot write {rel}: {error}") from None

    def abort(self) -> None:
        """Discard everything written so far."""
        if self._staging is not None and self._staging.exists():
            shutil.rmtree(self._staging)
        self._closed = True

    def commit(self, manifest_fields: dict[str, Any]) -> Path:
        """Checksum every file, write the manifest, publish the version and repoint ``latest``.

        ``manifest_fields`` must hold ``data_fingerprint``, ``config`` and ``metrics``; it may hold
        ``library_versions`` (measured here otherwise) and the other keys ``engine.artifact.manifest``
        knows, and nothing else: readers refuse unknown keys, so they are refused here first. The format
        version, artifact version, creation time and file list are set here and may not be given.
        """
        staging = self.staging
        unknown = unknown_keys(manifest_fields)
        if unknown:
            raise ArtifactError(
                f"manifest fields {', '.join(unknown)} are unknown; add them to "
                "engine.artifact.manifest.MANIFEST_KEYS first, or readers would refuse the artifact"
            )
        missing = [key for key in _REQUIRED_FIELDS if key not in manifest_fields]
        if missing:
            raise ArtifactError(f"manifest fields missing: {', '.join(missing)}")
        reserved = [key for key in _RESERVED_FIELDS if key in manifest_fields]
        if reserved:
            raise ArtifactError(
                f"manifest fields {', '.join(reserved)} are set by commit() and may not be given"
            )
        newer = [v for v in list_versions(self.root) if v >= self.version]
        if newer:
            raise ArtifactError(
                f"{self.root}: cannot commit {self.version}; version {newer[-1]} is not older "
                "(versions only increase)"
            )

        paths = sorted(_walk_files(staging))
        for rel in paths:
            if staging.joinpath(*rel.parts).is_symlink():
                raise ArtifactError(f"{rel}: symlinks are not allowed in an artifact")
        # fsync and SHA-256 release the GIL: two files at a time halve the wait on a large artifact
        with ThreadPoolExecutor(_COMMIT_THREADS) as pool:
            entries = list(pool.map(lambda rel: _durable_entry(staging.joinpath(*rel.parts)), paths))
        files: dict[str, dict[str, Any]] = {
            str(rel): entry for rel, entry in zip(paths, entries, strict=True)
        }
        manifest = {
            "format_version": ARTIFACT_FORMAT_VERSION,
            "artifact_version": self.version,
            "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "library_versions": library_versions(),
            **manifest_fields,
            "files": files,
        }
        try:
            text = json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError) as error:
            raise ArtifactError(f"manifest fields are not strict JSON: {error}") from None
        data = (text + "\n").encode("utf-8")
        parse_manifest(data, self.root / self.version)  # what readers will check, before publishing
        with open(staging / MANIFEST, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        write_integrity_files(staging, data, self.signer)  # of the exact bytes written
        for folder in {staging.joinpath(*rel.parent.parts) for rel in map(PurePosixPath, files)} | {staging}:
            _fsync_dir(folder)

        final = self.root / self.version
        if final.exists():
            raise ArtifactError(
                f"{self.root}: version {self.version} appeared while writing; not overwriting it"
            )
        os.rename(staging, final)
        self._closed = True
        _point_latest(self.root, self.version)
        return final


def _point_latest(root: Path, version: str) -> None:
    """Replace ``root/latest`` by a symlink to ``version`` in one rename, so readers never see it missing."""
    latest = root / LATEST
    if latest.exists() and not latest.is_symlink():
        raise ArtifactError(f"{latest} exists and is not a symlink; refusing to replace it")
    temporary = root / f".{LATEST}-{secrets.token_hex(6)}"
    os.symlink(version, temporary)  # relative target: the root can be moved or mounted elsewhere
    try:
        os.replace(temporary, latest)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_dir(root)


class Artifact:
    """An opened, verified artifact. Files can only be read through it if the manifest lists them.

    ``integrity`` says what protects its manifest (signed and verified, unsigned...), for logs and
    reports.
    """

    def __init__(self, path: Path, manifest: dict[str, Any], integrity: ManifestIntegrity) -> None:
        self.path = path
        self.manifest = manifest
        self.integrity = integrity
        self.version: str = manifest["artifact_version"]
        self._files: dict[str, dict[str, Any]] = manifest["files"]

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(sorted(self._files))

    def file(self, rel: str) -> Path:
        """Path of a listed file; a folder is accepted when listed files lie below it (model subfolders)."""
        key = str(_relative(rel))
        if key not in self._files and not any(name.startswith(key + "/") for name in self._files):
            raise ArtifactError(f"artifact {self.version} ({self.path}) has no file {key}")
        return self.path.joinpath(*PurePosixPath(key).parts)

    def load_array(self, rel: str) -> NDArray[Any]:
        return load_array(self.file(rel), error=ArtifactError)

    def read_text(self, rel: str) -> str:
        return self.file(rel).read_text(encoding="utf-8")

    def read_json(self, rel: str) -> Any:
        try:
            return json.loads(self.file(rel).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ArtifactError(f"artifact {self.version}: {rel} is not valid JSON ({error})") from None

    def __repr__(self) -> str:
        return f"Artifact(version={self.version!r}, path={str(self.path)!r}, files={len(self._files)})"


def _read_manifest(
    folder: Path, verifier: ArtifactVerifier | None
) -> tuple[dict[str, Any], ManifestIntegrity]:
    """The manifest's bytes are read once, and the same bytes are checked and parsed."""
    path = folder / MANIFEST
    if path.is_symlink():
        raise ArtifactError(
            f"artifact {folder.name}: {MANIFEST} is a symlink; artifacts hold only regular files"
        )
    if not path.is_file():
        raise ArtifactError(f"{folder}: no {MANIFEST}; not an artifact version folder")
    data = path.read_bytes()
    integrity = check_manifest(folder, data, verifier)
    return parse_manifest(data, folder), integrity


def _version_folder(path: Path) -> Path:
    path = Path(path)
    if not (path / MANIFEST).exists() and (path / LATEST).exists():
        path = path / LATEST
    folder = path.resolve()
    if not folder.is_dir():
        raise ArtifactError(f"{path}: no such artifact folder")
    return folder


def manifest_integrity(path: Path, verifier: ArtifactVerifier | None = None) -> ManifestIntegrity:
    """What protects the manifest of the artifact at ``path`` (resolved as ``open_artifact`` does),
    checked as ``open_artifact`` checks it but without reading the other files: cheap, for reports."""
    return _read_manifest(_version_folder(path), verifier)[1]


def open_artifact(path: Path, verifier: ArtifactVerifier | None = None) -> Artifact:
    """Open and verify an artifact: ``ROOT/latest``, ``ROOT/<version>``, or ``ROOT`` itself (means latest).

    The manifest must match its digest (and, with ``verifier``, carry a signature that verifies under
    its key), hold only known keys and name its folder as its version (``engine.artifact.manifest``);
    every listed file must exist with the listed size and sha256, and no other file may be present. The
    first problem found raises ArtifactError naming the artifact and the file.
    """
    folder = _version_folder(path)
    manifest, integrity = _read_manifest(folder, verifier)
    listed: dict[str, dict[str, Any]] = manifest["files"]
    for rel, entry in sorted(listed.items()):
        parts = PurePosixPath(rel).parts
        if rel in (MANIFEST, *INTEGRITY_FILES) or PurePosixPath(rel).is_absolute() or ".." in parts:
            raise ArtifactError(f"artifact {folder.name}: manifest lists an invalid file path {rel!r}")
        file_path = folder.joinpath(*parts)
        if file_path.is_symlink():
            raise ArtifactError(
                f"artifact {folder.name}: file {rel} is a symlink; artifacts hold only regular files"
            )
        if not file_path.is_file():
            raise ArtifactError(f"artifact {folder.name}: file {rel} listed in the manifest is missing")
        size = file_path.stat().st_size
        if size != entry["size"]:
            raise ArtifactError(
                f"artifact {folder.name}: file {rel} has {size} bytes, the manifest says {entry['size']}"
            )
        if sha256_file(file_path) != entry["sha256"]:
            raise ArtifactError(
                f"artifact {folder.name}: file {rel} does not match its sha256 in the manifest"
            )
    own = {MANIFEST, *INTEGRITY_FILES}
    extra = sorted(str(rel) for rel in _walk_files(folder) if str(rel) not in own and str(rel) not in listed)
    if extra:
        raise ArtifactError(
            f"artifact {folder.name}: unexpected file(s) not in the manifest: {', '.join(extra)}"
        )
    return Artifact(folder, manifest, integrity)
