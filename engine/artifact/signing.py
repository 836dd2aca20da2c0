"""That an artifact's manifest is the one training wrote, byte for byte: its digest and its signature.

Every file of an artifact is listed in ``manifest.json`` with its sha256, so the manifest's bytes decide
what is served; two files beside it, never listed in it (they cannot be inside the bytes they cover),
protect those bytes:

- ``manifest.sha256``, always written: the manifest's sha256 in ``sha256sum``'s format, so
  ``sha256sum -c manifest.sha256`` checks it by hand too. It catches a damaged or hand-edited manifest,
  but not someone who can write to the folder: they can rewrite it as well. An artifact without a key
  is *unsigned*, and every tool that opens one says so.
- ``manifest.sig``, written when training is given a signing key: an Ed25519 signature over the exact
  bytes of ``manifest.json`` and the id of the key. A server given the key (``serve --artifact-key``)
  refuses every artifact without a signature that verifies under it, at start and on every reload.

Why Ed25519 (the ``cryptography`` library) rather than an HMAC: verifying needs only the public key, so
a fleet of servers holds no secret, and a server that is broken into cannot sign an artifact the
others would accept; with a shared HMAC key any server could. Keys are PEM files
(``openssl genpkey -algorithm ed25519 -out artifact-signing.pem``, and ``openssl pkey -in ... -pubout``
for the public half). A private key file also verifies (its public half is derived), so one file does
on a single machine.

Artifacts written before the digest existed have neither file. Without a key they are accepted as
*unsigned (legacy)* and said to be; with a key they are refused like any unsigned artifact.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from engine.artifact.errors import ArtifactError
from engine.artifact.manifest import MANIFEST
from engine.errors import PersonaEngineError

DIGEST_FILE: Final = "manifest.sha256"
SIGNATURE_FILE: Final = "manifest.sig"
INTEGRITY_FILES: Final = (DIGEST_FILE, SIGNATURE_FILE)
# One variable for train (signs with the private key) and serve (verifies with either half).
ENV_ARTIFACT_KEY_FILE: Final = "PERSONA_ENGINE_ARTIFACT_KEY_FILE"
ALGORITHM: Final = "ed25519"
_MAX_KEY_FILE_BYTES: Final = 64 * 1024
_MAX_SIGNATURE_FILE_BYTES: Final = 4096


class ArtifactKeyError(PersonaEngineError, ValueError):
    """A key file that cannot be used to sign or verify artifacts; the message names the file."""


def _read_key_file(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_KEY_FILE_BYTES + 1)
    except OSError as error:
        raise ArtifactKeyError(f"artifact key {path}: cannot read ({error.strerror})") from None
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise ArtifactKeyError(f"artifact key {path}: over {_MAX_KEY_FILE_BYTES} bytes; not a PEM key")
    if b"-----BEGIN" not in data:
        raise ArtifactKeyError(
            f"artifact key {path}: not a PEM file (make one with "
            "'openssl genpkey -algorithm ed25519 -out artifact-signing.pem')"
        )
    return data


def _key_id(public_key: Ed25519PublicKey) -> str:
    """A short name of a public key for messages: the first 16 hex digits of its raw bytes' sha256."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _private_key(data: bytes, path: Path) -> Ed25519PrivateKey | None:
    """The Ed25519 private key in ``data``, None when ``data`` holds a public key."""
    if b"PRIVATE KEY-----" not in data:
        return None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ArtifactKeyError(
            f"artifact key {path}: the private key is encrypted; store it unencrypted, "
            "readable by the training user only"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as error:
        raise ArtifactKeyError(f"artifact key {path}: not a readable private key ({error})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ArtifactKeyError(f"artifact key {path}: a {type(key).__name__}, not an Ed25519 key")
    return key


@dataclass(frozen=True)
class ArtifactVerifier:
    """Checks manifests against one public key; ``source`` (the key file) is named in messages."""

    public_key: Ed25519PublicKey
    source: str

    @classmethod
    def from_file(cls, path: Path) -> ArtifactVerifier:
        """A PEM public key, or a private key (its public half is used)."""
        path = Path(path)
        data = _read_key_file(path)
        private = _private_key(data, path)
        if private is not None:
            return cls(private.public_key(), str(path))
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as error:
            raise ArtifactKeyError(f"artifact key {path}: not a readable public key ({error})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ArtifactKeyError(f"artifact key {path}: a {type(key).__name__}, not an Ed25519 key")
        return cls(key, str(path))

    @property
    def key_id(self) -> str:
        return _key_id(self.public_key)

    def verifies(self, manifest_bytes: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, manifest_bytes)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class ArtifactSigner:
    """Signs manifests with one private key (training)."""

    private_key: Ed25519PrivateKey
    source: str

    @classmethod
    def from_file(cls, path: Path) -> ArtifactSigner:
        path = Path(path)
        private = _private_key(_read_key_file(path), path)
        if private is None:
            raise ArtifactKeyError(
                f"artifact key {path}: holds a public key; signing needs the private key it was made from"
            )
        return cls(private, str(path))

    @property
    def key_id(self) -> str:
        return _key_id(self.private_key.public_key())

    def verifier(self) -> ArtifactVerifier:
        return ArtifactVerifier(self.private_key.public_key(), self.source)

    def signature_document(self, manifest_bytes: bytes) -> bytes:
        """The contents of ``manifest.sig`` for ``manifest_bytes``."""
        signature = base64.b64encode(self.private_key.sign(manifest_bytes)).decode("ascii")
        document = {"algorithm": ALGORITHM, "key_id": self.key_id, "signature": signature}
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")


class IntegrityStatus(enum.Enum):
    SIGNED = "signed"  # the signature verified under the configured key
    SIGNED_UNVERIFIED = "signed, not verified"  # a signature is present, but no key was configured
    UNSIGNED = "unsigned"  # the digest matched; nothing says who wrote the manifest
    LEGACY = "unsigned (legacy)"  # written before digests existed: nothing protects the manifest


@dataclass(frozen=True)
class ManifestIntegrity:
    """What protects an opened artifact's manifest, for logs and reports."""

    status: IntegrityStatus
    key_id: str | None = None  # the signing key (from manifest.sig) when signed

    @property
    def signed(self) -> bool:
        return self.status is IntegrityStatus.SIGNED

    def describe(self) -> str:
        """One line for a log or a report, e.g. ``signed (key 3f2a...), verified``."""
        if self.status is IntegrityStatus.SIGNED:
            return f"signed by key {self.key_id}, signature verified"
        if self.status is IntegrityStatus.SIGNED_UNVERIFIED:
            return f"signed by key {self.key_id}, not verified (no artifact key configured)"
        if self.status is IntegrityStatus.UNSIGNED:
            return "unsigned (manifest digest checked; train with an artifact key to sign)"
        return (
            f"unsigned (legacy: no {DIGEST_FILE}, written by an older persona-engine; retrain to protect it)"
        )


def digest_line(manifest_bytes: bytes) -> bytes:
    """The contents of ``manifest.sha256``: ``<hex>  manifest.json``, as ``sha256sum`` writes it."""
    return f"{hashlib.sha256(manifest_bytes).hexdigest()}  {MANIFEST}\n".encode("ascii")


def write_integrity_files(folder: Path, manifest_bytes: bytes, signer: ArtifactSigner | None) -> None:
    """Write ``manifest.sha256`` (and ``manifest.sig`` with a signer) beside the manifest, synced."""
    outputs = [(DIGEST_FILE, digest_line(manifest_bytes))]
    if signer is not None:
        outputs.append((SIGNATURE_FILE, signer.signature_document(manifest_bytes)))
    for name, data in outputs:
        with open(folder / name, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def _read_small(path: Path, limit: int, artifact: str) -> bytes | None:
    """The file's bytes, None when it does not exist."""
    if path.is_symlink():
        raise ArtifactError(
            f"artifact {artifact}: {path.name} is a symlink; artifacts hold only regular files"
        )
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ArtifactError(f"artifact {artifact}: cannot read {path.name} ({error.strerror})") from None
    if len(data) > limit:
        raise ArtifactError(f"artifact {artifact}: {path.name} is over {limit} bytes")
    return data


def _signature(document: bytes, artifact: str) -> tuple[str, bytes]:
    """The key id and the signature of a ``manifest.sig``; ArtifactError when it is not one."""
    problem = f"artifact {artifact}: {SIGNATURE_FILE} is not a signature written by persona-engine train"
    try:
        parsed = json.loads(document.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ArtifactError(problem) from None
    if (
        not isinstance(parsed, dict)
        or set(parsed) != {"algorithm", "key_id", "signature"}
        or not all(isinstance(value, str) for value in parsed.values())
    ):
        raise ArtifactError(problem)
    if parsed["algorithm"] != ALGORITHM:
        raise ArtifactError(
            f"artifact {artifact}: {SIGNATURE_FILE} uses algorithm {parsed['algorithm']!r}; "
            f"this engine verifies {ALGORITHM}"
        )
    try:
        signature = base64.b64decode(parsed["signature"], validate=True)
    except (binascii.Error, ValueError):
        raise ArtifactError(problem) from None
    return parsed["key_id"], signature


def check_manifest(
    folder: Path, manifest_bytes: bytes, verifier: ArtifactVerifier | None
) -> ManifestIntegrity:
    """Check ``manifest_bytes`` (read once from ``folder``'s manifest) against its digest and signature.

    With ``verifier`` a signature that verifies under its key is required; without one the digest must
    match when present, and a signature present is reported but not checked. Raises ArtifactError naming
    the artifact and what failed.
    """
    artifact = folder.name
    digest = _read_small(folder / DIGEST_FILE, 1024, artifact)
    if digest is not None and digest.strip() != digest_line(manifest_bytes).strip():
        raise ArtifactError(
            f"artifact {artifact}: {MANIFEST} does not match {DIGEST_FILE}; the manifest was changed "
            "after training wrote it"
        )
    document = _read_small(folder / SIGNATURE_FILE, _MAX_SIGNATURE_FILE_BYTES, artifact)
    if document is None:
        if verifier is not None:
            raise ArtifactError(
                f"artifact {artifact} is not signed (no {SIGNATURE_FILE}), and artifacts must be signed "
                f"with key {verifier.key_id} ({verifier.source}); train it with that key "
                f"(--artifact-key or {ENV_ARTIFACT_KEY_FILE})"
            )
        return ManifestIntegrity(IntegrityStatus.UNSIGNED if digest is not None else IntegrityStatus.LEGACY)
    key_id, signature = _signature(document, artifact)
    if verifier is None:
        return ManifestIntegrity(IntegrityStatus.SIGNED_UNVERIFIED, key_id)
    if not verifier.verifies(manifest_bytes, signature):
        if key_id != verifier.key_id:
            raise ArtifactError(
                f"artifact {artifact}: signed with key {key_id}, not with the configured key "
                f"{verifier.key_id} ({verifier.source})"
            )
        raise ArtifactError(
            f"artifact {artifact}: the signature in {SIGNATURE_FILE} does not verify under key "
            f"{verifier.key_id}; {MANIFEST} was altered after it was signed"
        )
    return ManifestIntegrity(IntegrityStatus.SIGNED, verifier.key_id)
