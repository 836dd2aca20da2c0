"""Serving with an artifact key: signed artifacts are served, anything unsigned, altered or signed with
another key is refused at start and on reload (the old model keeps answering, no call fails), and an
older version needs the rollback flag. Signed artifacts come from ``run_training`` with a signer."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry

from cli.main import main as cli_main
from engine.artifact import ENV_ARTIFACT_KEY_FILE, MANIFEST, ArtifactSigner, ArtifactVerifier
from engine.artifact.signing import write_integrity_files
from serving.client import PersonaEngineClient
from serving.generated.persona.v1 import admin_service_pb2
from serving.metrics import ServingMetrics
from serving.model_holder import ModelHolder, ModelReloader, SharedModelState, load_model
from serving.process_lifecycle import EXIT_USAGE
from serving.server import serve
from serving.server_process import ServerProcess, running_server
from serving.settings import ServeConfigError, add_serve_arguments, settings_from_args
from tests.engine.artifact.signing_keys import write_key_pair
from tests.serving.server_harness import FAST_MODELS, TrainedArtifacts, trained_artifacts
from training.config import parse_config
from training.train_job import run_training

TOKEN = "signing-admin-token-0123456789abcdef"


@dataclass(frozen=True)
class Keys:
    private: Path
    public: Path
    other_private: Path  # a key the server does not trust

    @property
    def signer(self) -> ArtifactSigner:
        return ArtifactSigner.from_file(self.private)


@dataclass(frozen=True)
class Signed:
    older: Path
    newer: Path
    unsigned: TrainedArtifacts  # the serving tests' artifacts, trained without a key


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("keys")
    private, public = write_key_pair(directory)
    other, _ = write_key_pair(directory, "other")
    return Keys(private, public, other)


@pytest.fixture(scope="module")
def signed(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Signed:
    """Two versions trained with the signing key from the serving tests' shop, the second by
    ``persona-engine train --artifact-key``."""
    unsigned = trained_artifacts(tmp_path_factory)
    directory = tmp_path_factory.mktemp("signed")
    sections = {
        "data": {"path": str(unsigned.shop)},
        "split": {"test_days": 28, "cold_start_share": 0.15},
        "models": FAST_MODELS,
        "output": {"root": str(directory / "artifacts"), "refit_on_all_events": False},
    }
    older = run_training(parse_config(sections), show_progress=False, signer=keys.signer).artifact_path
    config = directory / "train.toml"
    config.write_text(
        f"""
[data]
path = "{unsigned.shop}"
[split]
test_days = 28
cold_start_share = 0.15
[models.popularity]
[models.persona_popularity]
[models.als]
factors = 8
iterations = 3
[output]
root = "{directory / "artifacts"}"
refit_on_all_events = false
""",
        encoding="utf-8",
    )
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert (
            cli_main(["train", "--config", str(config), "--artifact-key", str(keys.private), "--json"]) == 0
        )
    trained = json.loads(printed.getvalue())
    assert trained["signing_key"] == keys.signer.key_id
    return Signed(older, Path(trained["artifact"]), unsigned)


@pytest.fixture(scope="module")
def server(signed: Signed, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Two workers: the supervisor passes the key on to both."""
    workdir = tmp_path_factory.mktemp("signing-server")
    extra = ["--artifact-key", str(keys.public)]
    with running_server(
        signed.older, workdir, workers=2, admin_token=TOKEN, extra_args=extra, ready_timeout_s=120
    ) as running:
        yield running


def _copy(artifact: Path, destination: Path) -> Path:
    """A copy under the same version name (the name is part of what is checked)."""
    return Path(shutil.copytree(artifact, destination / artifact.name))


def _edit_manifest(folder: Path, key: str, value: object) -> None:
    """Change the manifest as someone who knows the format would, digest rewritten."""
    document = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    document[key] = value
    data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")
    (folder / MANIFEST).write_bytes(data)
    (folder / "manifest.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  {MANIFEST}\n", "ascii")


def _refusal(client: PersonaEngineClient, path: Path, *, allow_rollback: bool = False) -> str:
    with pytest.raises(grpc.RpcError) as failure:
        client.reload_model(str(path), allow_rollback=allow_rollback)
    assert failure.value.code() is grpc.StatusCode.FAILED_PRECONDITION, failure.value.details()
    return str(failure.value.details())


def test_refused_reloads_keep_the_old_model_serving_without_a_failed_call(
    server: ServerProcess, signed: Signed, keys: Keys, tmp_path: Path
) -> None:
    tampered_version = _copy(signed.newer, tmp_path / "version")
    _edit_manifest(tampered_version, "artifact_version", "29991231T000000Z")
    tampered_key = _copy(signed.newer, tmp_path / "key")
    _edit_manifest(tampered_key, "trusted", True)
    wrong_key = _copy(signed.unsigned.newer, tmp_path / "wrong")
    write_integrity_files(
        wrong_key, (wrong_key / MANIFEST).read_bytes(), ArtifactSigner.from_file(keys.other_private)
    )
    other_id = ArtifactSigner.from_file(keys.other_private).key_id
    key_id = keys.signer.key_id

    stop = threading.Event()
    versions: list[str] = []
    errors: list[BaseException] = []

    def shop() -> None:
        with server.client(timeout_s=5, retries=0) as engine:
            while not stop.is_set():
                try:
                    versions.append(engine.personalize("c0000007").decision.model_version)
                except BaseException as error:  # any failed call fails the test
                    errors.append(error)
                    return

    shoppers = [threading.Thread(target=shop) for _ in range(3)]
    for thread in shoppers:
        thread.start()
    try:
        with server.client() as client:
            time.sleep(0.3)
            assert f"artifact {signed.unsigned.newer.name} is not signed" in _refusal(
                client, signed.unsigned.newer
            )
            assert f"must be signed with key {key_id}" in _refusal(client, signed.unsigned.newer)
            for tampered in (tampered_version, tampered_key):
                message = _refusal(client, tampered)
                assert (
                    f"artifact {signed.newer.name}: the signature in manifest.sig does not verify" in message
                )
            assert f"signed with key {other_id}, not with the configured key {key_id}" in _refusal(
                client, wrong_key
            )
            assert client.get_model_info().artifact_version == signed.older.name
            time.sleep(0.3)
    finally:
        stop.set()
        for thread in shoppers:
            thread.join(timeout=10)
    assert errors == []
    assert len(versions) > 10 and set(versions) == {signed.older.name}
    assert server.metric("persona_engine_model_reloads_total", outcome="failed_precondition") >= 5
    assert f"artifact {signed.older.name}: signed by key {key_id}, signature verified" in server.log()


def test_a_signed_newer_version_reloads_and_a_rollback_needs_the_flag(
    server: ServerProcess, signed: Signed
) -> None:
    with server.client() as client:
        client.reload_model(str(signed.older), allow_rollback=True)  # whatever an earlier test left
        answer = client.reload_model(str(signed.newer))
        assert (answer.outcome, answer.new_version) == (
            admin_service_pb2.RELOAD_OUTCOME_RELOADED,
            signed.newer.name,
        )
        message = _refusal(client, signed.older)
        assert f"version {signed.older.name} is older than the serving version {signed.newer.name}" in message
        assert client.personalize("c0000001").decision.model_version == signed.newer.name
        back = client.reload_model(str(signed.older), allow_rollback=True)
        assert (back.previous_version, back.new_version) == (signed.newer.name, signed.older.name)
        # every worker follows: several calls land on both and all see the rolled-back version
        assert {client.personalize(f"c{n:07d}").decision.model_version for n in range(20)} == {
            signed.older.name
        }


def _settings_args(artifact: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(
        ["--artifact", str(artifact), "--address", "127.0.0.1:0", "--metrics-port", "0", *extra]
    )


def test_serve_refuses_to_start_on_an_unsigned_artifact_and_reads_the_key_from_the_environment(
    signed: Signed, keys: Keys, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_from_args(
        _settings_args(signed.unsigned.older), {ENV_ARTIFACT_KEY_FILE: str(keys.public)}
    )
    assert settings.artifact_verifier is not None and settings.artifact_key == keys.public.resolve()
    assert settings.artifact_verifier.key_id == keys.signer.key_id
    with caplog.at_level(logging.ERROR, logger="persona_engine.server"):
        assert serve(settings) == EXIT_USAGE
    assert f"artifact {signed.unsigned.older.name} is not signed (no manifest.sig)" in caplog.text
    garbage = tmp_path / "key.pem"
    garbage.write_text("not a key\n", encoding="utf-8")
    with pytest.raises(
        ServeConfigError, match=rf"^{ENV_ARTIFACT_KEY_FILE}: artifact key .*key\.pem: not a PEM"
    ):
        settings_from_args(_settings_args(signed.older), {ENV_ARTIFACT_KEY_FILE: str(garbage)})
    with pytest.raises(ServeConfigError, match=r"^--artifact-key: artifact key .*nope\.pem: cannot read"):
        settings_from_args(_settings_args(signed.older, "--artifact-key", str(tmp_path / "nope.pem")), {})


def test_loading_says_whether_an_artifact_is_signed(
    signed: Signed, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="persona_engine.model"):
        load_model(signed.unsigned.older)
        load_model(signed.older)
        load_model(signed.older, verifier=ArtifactVerifier.from_file(keys.public))
    lines = [(record.levelname, record.getMessage()) for record in caplog.records]
    assert (
        "WARNING",
        f"artifact {signed.unsigned.older.name}: unsigned (manifest digest checked; train "
        "with an artifact key to sign)",
    ) in lines
    assert (
        "WARNING",
        f"artifact {signed.older.name}: signed by key {keys.signer.key_id}, not verified "
        "(no artifact key configured)",
    ) in lines
    assert (
        "INFO",
        f"artifact {signed.older.name}: signed by key {keys.signer.key_id}, signature verified",
    ) in lines


def test_a_worker_following_its_peers_refuses_an_unsigned_artifact(
    signed: Signed, keys: Keys, tmp_path: Path
) -> None:
    verifier = ArtifactVerifier.from_file(keys.public)
    state = SharedModelState.create(tmp_path / "run", signed.older, "")
    loaded = load_model(signed.older, verifier=verifier)
    holder = ModelHolder(loaded.personalizer, loaded.path)
    registry = CollectorRegistry()
    follower = ModelReloader(holder, ServingMetrics(registry), state, verifier=verifier)
    with state.exclusive():
        state.publish(signed.unsigned.newer, "", signed.unsigned.newer.name)
    assert follower.follow_once() is False
    assert holder.current().version == signed.older.name
    failed = {"trigger": "peer", "outcome": "failed_precondition"}
    assert registry.get_sample_value("persona_engine_model_reloads_total", failed) == 1
    with state.exclusive():
        state.publish(signed.newer, "", signed.newer.name)
    assert follower.follow_once() is True and holder.current().version == signed.newer.name


def test_train_reads_its_key_before_training_and_refuses_a_public_one(
    keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "never-read.toml"  # the key is checked first: a bad one costs no training
    assert cli_main(["train", "--config", str(config), "--artifact-key", str(keys.public)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--artifact-key: artifact key" in err and "signing needs the private key" in err
    monkeypatch.setenv(ENV_ARTIFACT_KEY_FILE, str(tmp_path / "missing.pem"))
    assert cli_main(["train", "--config", str(config)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{ENV_ARTIFACT_KEY_FILE}: artifact key" in err and "missing.pem: cannot read" in err


def test_summary_says_what_protects_the_manifest_and_verifies_with_the_key_in_the_environment(
    signed: Signed, keys: Keys, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def summary(artifact: Path) -> tuple[int, str]:
        status = cli_main(["summary", "--artifact", str(artifact), "--customers", "1", "--json"])
        captured = capsys.readouterr()
        return status, json.loads(captured.out)["manifest"] if status == 0 else captured.err

    key_id = keys.signer.key_id
    assert summary(signed.unsigned.older) == (
        0,
        "unsigned (manifest digest checked; train with an artifact key to sign)",
    )
    assert summary(signed.older) == (0, f"signed by key {key_id}, not verified (no artifact key configured)")
    monkeypatch.setenv(ENV_ARTIFACT_KEY_FILE, str(keys.public))
    assert summary(signed.older) == (0, f"signed by key {key_id}, signature verified")
    status, err = summary(signed.unsigned.older)
    assert status == 2 and "is not signed" in " ".join(err.split())
