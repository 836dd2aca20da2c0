"""The manifest's digest and signature: what is accepted, with and without a key, and every refusal."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.artifact import (
    DIGEST_FILE,
    MANIFEST,
    SIGNATURE_FILE,
    ArtifactError,
    ArtifactKeyError,
    ArtifactSigner,
    ArtifactVerifier,
    ArtifactWriter,
    IntegrityStatus,
    new_version,
    open_artifact,
)
from tests.engine.artifact.signing_keys import write_key_pair

FIELDS: dict[str, Any] = {"data_fingerprint": "sha256:abc", "config": {}, "metrics": []}
T0 = dt.datetime(2026, 11, 23, 15, 30, 12, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_key_pair(tmp_path_factory.mktemp("keys"))


def write(root: Path, signer: ArtifactSigner | None = None, now: dt.datetime = T0) -> Path:
    with ArtifactWriter(root, new_version(root, now), signer=signer) as writer:
        writer.write_array("models/als/user_factors.npy", np.arange(6, dtype=np.float32))
        writer.write_json("personas/mixes.json", {"weekday": [0.5, 0.5]})
        return writer.commit(FIELDS)


def edit(folder: Path, change: Callable[[dict[str, Any]], object], *, rewrite_digest: bool) -> None:
    """Edit the manifest as someone who knows the format would (re-serialised, digest rewritten)."""
    document = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    change(document)
    data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")
    (folder / MANIFEST).write_bytes(data)
    if rewrite_digest:
        (folder / DIGEST_FILE).write_text(f"{hashlib.sha256(data).hexdigest()}  {MANIFEST}\n", "ascii")


def _change_version(m: dict[str, Any]) -> None:
    m["artifact_version"] = "29991231T000000Z"


def _add_key(m: dict[str, Any]) -> None:
    m["trusted"] = True


def _change_checksum(m: dict[str, Any]) -> None:
    m["files"]["personas/mixes.json"]["sha256"] = "0" * 64


TAMPERING = {"version changed": _change_version, "key added": _add_key, "checksum changed": _change_checksum}
# What a reader without a key says once the digest was rewritten too (with a key: the signature fails).
UNKEYED_REFUSAL = {
    "version changed": r"artifact_version '29991231T000000Z' is not the name of its folder",
    "key added": r"unknown key 'trusted'",
    "checksum changed": r"personas/mixes\.json does not match its sha256",
}


def test_train_writes_a_digest_sha256sum_can_check_and_opening_says_unsigned(tmp_path: Path) -> None:
    folder = write(tmp_path)
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == [MANIFEST, DIGEST_FILE]
    integrity = open_artifact(folder).integrity
    assert integrity.status is IntegrityStatus.UNSIGNED and not integrity.signed
    assert "unsigned" in integrity.describe()
    if shutil.which("sha256sum"):
        checked = subprocess.run(["sha256sum", "-c", DIGEST_FILE], cwd=folder, capture_output=True, text=True)
        assert checked.returncode == 0 and f"{MANIFEST}: OK" in checked.stdout


def test_a_signed_artifact_is_accepted_by_its_key_public_or_private(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    signer = ArtifactSigner.from_file(private)
    folder = write(tmp_path, signer)
    assert (folder / SIGNATURE_FILE).is_file() and SIGNATURE_FILE not in open_artifact(folder).files
    for key_file in (public, private):
        integrity = open_artifact(folder, ArtifactVerifier.from_file(key_file)).integrity
        assert integrity.status is IntegrityStatus.SIGNED
        assert integrity.key_id == signer.key_id
        assert f"signed by key {signer.key_id}, signature verified" == integrity.describe()
    unverified = open_artifact(folder).integrity  # no key configured: said, not checked
    assert (unverified.status, unverified.key_id) == (IntegrityStatus.SIGNED_UNVERIFIED, signer.key_id)


def test_a_wrong_key_and_an_unsigned_artifact_are_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    _, other_public = write_key_pair(tmp_path / "other")
    signer = ArtifactSigner.from_file(keys[0])
    other = ArtifactVerifier.from_file(other_public)
    signed = write(tmp_path / "a", signer)
    with pytest.raises(ArtifactError, match=rf"signed with key {signer.key_id}, not with the configured key"):
        open_artifact(signed, other)
    unsigned = write(tmp_path / "b")
    with pytest.raises(ArtifactError, match=rf"artifact {unsigned.name} is not signed \(no manifest\.sig\)"):
        open_artifact(unsigned, other)


@pytest.mark.parametrize("tampering", sorted(TAMPERING))
def test_a_tampered_manifest_is_refused_with_and_without_a_key(
    tmp_path: Path, keys: tuple[Path, Path], tampering: str
) -> None:
    signer = ArtifactSigner.from_file(keys[0])
    verifier = ArtifactVerifier.from_file(keys[1])
    folder = write(tmp_path, signer)
    edit(folder, TAMPERING[tampering], rewrite_digest=False)
    for key in (None, verifier):
        with pytest.raises(ArtifactError, match=r"manifest\.json does not match manifest\.sha256"):
            open_artifact(folder, key)
    edit(folder, lambda m: None, rewrite_digest=True)
    with pytest.raises(ArtifactError, match=r"does not verify under key .*manifest\.json was altered"):
        open_artifact(folder, verifier)
    with pytest.raises(ArtifactError, match=UNKEYED_REFUSAL[tampering]):
        open_artifact(folder)


def test_a_signature_moved_from_another_artifact_does_not_verify(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    signer = ArtifactSigner.from_file(keys[0])
    first = write(tmp_path, signer)
    second = write(tmp_path, signer, T0 + dt.timedelta(hours=1))
    shutil.copy(first / SIGNATURE_FILE, second / SIGNATURE_FILE)
    with pytest.raises(ArtifactError, match="does not verify"):
        open_artifact(second, signer.verifier())


@pytest.mark.parametrize(
    "document",
    [
        b"not json",
        b'{"algorithm": "ed25519", "key_id": "x"}',
        b'{"algorithm": "ed25519", "key_id": "x", "signature": "***"}',
    ],
)
def test_a_malformed_signature_file_is_refused(
    tmp_path: Path, keys: tuple[Path, Path], document: bytes
) -> None:
    folder = write(tmp_path, ArtifactSigner.from_file(keys[0]))
    (folder / SIGNATURE_FILE).write_bytes(document)
    with pytest.raises(ArtifactError, match=r"manifest\.sig is not a signature written by persona-engine"):
        open_artifact(folder, ArtifactVerifier.from_file(keys[1]))


def test_an_artifact_from_before_digests_is_legacy_without_a_key_and_refused_with_one(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    folder = write(tmp_path)
    (folder / DIGEST_FILE).unlink()
    integrity = open_artifact(folder).integrity
    assert integrity.status is IntegrityStatus.LEGACY
    assert "legacy" in integrity.describe() and "retrain" in integrity.describe()
    with pytest.raises(ArtifactError, match="is not signed"):
        open_artifact(folder, ArtifactVerifier.from_file(keys[1]))


def test_the_integrity_files_cannot_be_written_or_listed_by_callers(tmp_path: Path) -> None:
    with ArtifactWriter(tmp_path, new_version(tmp_path, T0)) as writer:
        for name in (DIGEST_FILE, SIGNATURE_FILE):
            with pytest.raises(ArtifactError, match="written by commit"):
                writer.path(name)
        writer.abort()


def test_key_files_that_cannot_sign_or_verify_are_named(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    with pytest.raises(ArtifactKeyError, match=r"nope\.pem: cannot read"):
        ArtifactVerifier.from_file(tmp_path / "nope.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n", encoding="utf-8")
    with pytest.raises(ArtifactKeyError, match=r"garbage\.pem: not a PEM file .*openssl genpkey"):
        ArtifactSigner.from_file(garbage)
    with pytest.raises(ArtifactKeyError, match="holds a public key; signing needs the private key"):
        ArtifactSigner.from_file(keys[1])
    rsa = tmp_path / "rsa.pem"
    rsa.write_bytes(
        generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(ArtifactKeyError, match="not an Ed25519 key"):
        ArtifactVerifier.from_file(rsa)
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", encoding="ascii")
    with pytest.raises(ArtifactKeyError, match="not a readable public key"):
        ArtifactVerifier.from_file(broken)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_keys_made_with_the_documented_openssl_commands_work(tmp_path: Path) -> None:
    private, public = tmp_path / "signing.pem", tmp_path / "signing.pub.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", private], check=True)
    subprocess.run(["openssl", "pkey", "-in", private, "-pubout", "-out", public], check=True)
    folder = write(tmp_path / "artifacts", ArtifactSigner.from_file(private))
    assert open_artifact(folder, ArtifactVerifier.from_file(public)).integrity.signed


@pytest.fixture(scope="module")
def signed_folder(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> Path:
    return write(tmp_path_factory.mktemp("signed"), ArtifactSigner.from_file(keys[0]))


@settings(max_examples=60, deadline=None)
@given(position=st.floats(min_value=0, max_value=1, exclude_max=True), flip=st.integers(1, 255))
def test_any_changed_byte_of_a_signed_manifest_is_refused(
    signed_folder: Path, keys: tuple[Path, Path], position: float, flip: int
) -> None:
    path = signed_folder / MANIFEST
    original = path.read_bytes()
    changed = bytearray(original)
    changed[int(position * len(changed))] ^= flip
    verifier = ArtifactVerifier.from_file(keys[1])
    try:
        path.write_bytes(bytes(changed))
        (signed_folder / DIGEST_FILE).write_text(
            f"{hashlib.sha256(changed).hexdigest()}  {MANIFEST}\n", encoding="ascii"
        )
        with pytest.raises(ArtifactError):
            open_artifact(signed_folder, verifier)
    finally:
        path.write_bytes(original)
        (signed_folder / DIGEST_FILE).write_text(
            f"{hashlib.sha256(original).hexdigest()}  {MANIFEST}\n", encoding="ascii"
        )
    assert open_artifact(signed_folder, verifier).integrity.signed
