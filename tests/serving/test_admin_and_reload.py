"""AdminService against a real server process: the token, GetModelInfo, and ReloadModel under load."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry

from engine.artifact import open_artifact
from serving.client import PersonaEngineClient
from serving.generated.persona.v1 import admin_service_pb2, admin_service_pb2_grpc
from serving.metrics import ServingMetrics
from serving.model_holder import ModelHolder, ModelReloader, SharedModelState, load_model
from serving.server_process import ServerProcess, running_server
from tests.serving.server_harness import (
    TrainedArtifacts,
    corrupt_copy,
    in_process_server,
    trained_artifacts,
    wait_for_server,
)

TOKEN = "adm1n-Token-for-tests-0123456789abcdef"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> TrainedArtifacts:
    return trained_artifacts(tmp_path_factory)


@pytest.fixture(scope="module")
def server(artifacts: TrainedArtifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("admin-server")
    token_file = workdir / "admin-token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    extra = ["--admin-token-file", str(token_file)]
    with running_server(artifacts.older, workdir, extra_args=extra) as running:
        running.admin_token = TOKEN
        yield running


@pytest.fixture
def client(server: ServerProcess) -> Iterator[PersonaEngineClient]:
    with server.client() as engine:
        yield engine


def _serve(client: PersonaEngineClient, artifact: Path) -> None:
    """Put the shared server on ``artifact`` whatever earlier tests left it on (older or newer)."""
    answer = client.reload_model(str(artifact), allow_rollback=True)
    assert answer.new_version == artifact.name


def _reload_error(client: PersonaEngineClient, path: str, model_name: str = "") -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as failure:
        client.reload_model(path, model_name=model_name)
    return failure.value


def _admin_call(address: str, metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    with grpc.insecure_channel(address) as channel:
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        try:
            stub.GetModelInfo(admin_service_pb2.GetModelInfoRequest(), timeout=5, metadata=metadata)
        except grpc.RpcError as error:
            code: grpc.StatusCode = error.code()
            return code
        return grpc.StatusCode.OK


def test_admin_calls_need_the_bearer_token_and_it_is_never_logged(server: ServerProcess) -> None:
    assert _admin_call(server.address, ()) is grpc.StatusCode.UNAUTHENTICATED
    assert (
        _admin_call(server.address, (("authorization", f"Basic {TOKEN}"),)) is grpc.StatusCode.UNAUTHENTICATED
    )
    assert (
        _admin_call(server.address, (("authorization", "Bearer wrong"),)) is grpc.StatusCode.PERMISSION_DENIED
    )
    assert (
        _admin_call(server.address, (("authorization", f"Bearer {TOKEN}x"),))
        is grpc.StatusCode.PERMISSION_DENIED
    )
    assert _admin_call(server.address, (("authorization", f"Bearer {TOKEN}"),)) is grpc.StatusCode.OK
    assert _admin_call(server.address, (("authorization", f"bearer {TOKEN}"),)) is grpc.StatusCode.OK
    counted = {
        code: server.metric("persona_engine_requests_total", method="GetModelInfo", code=code)
        for code in ("UNAUTHENTICATED", "PERMISSION_DENIED")
    }
    assert counted == {"UNAUTHENTICATED": 2, "PERMISSION_DENIED": 2}
    assert "GetModelInfo PERMISSION_DENIED" in server.log()
    assert TOKEN not in server.log()


def test_a_server_without_a_token_refuses_every_admin_call(artifacts: TrainedArtifacts) -> None:
    with in_process_server(artifacts.older) as running:
        assert _admin_call(running.address, ()) is grpc.StatusCode.PERMISSION_DENIED
        assert (
            _admin_call(running.address, (("authorization", f"Bearer {TOKEN}"),))
            is grpc.StatusCode.PERMISSION_DENIED
        )


def _every_field_set(message: Message) -> list[str]:
    unset = []
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and not field.is_repeated:
            if not message.HasField(field.name):
                unset.append(field.name)
        elif not value:
            unset.append(field.name)
    return unset


def test_get_model_info_describes_the_serving_artifact(
    server: ServerProcess, client: PersonaEngineClient, artifacts: TrainedArtifacts
) -> None:
    _serve(client, artifacts.older)
    before = dt.datetime.now(dt.UTC)
    info = client.get_model_info()
    assert _every_field_set(info) == []
    manifest = open_artifact(artifacts.older).manifest
    assert info.artifact_version == artifacts.older.name
    assert info.artifact_path == str(artifacts.older.resolve())
    assert (
        info.artifact_created_at.ToDatetime(dt.UTC).isoformat().replace("+00:00", "Z")
        == manifest["created_utc"]
    )
    assert sorted(info.available_models) == sorted(manifest["models"])
    assert info.serving_model == manifest["summary"]["best_model"]
    assert list(info.persona_ids) == [
        "bargain_hunter",
        "brand_loyalist",
        "health_enthusiast",
        "tech_savvy",
        "luxury_enthusiast",
    ]
    assert (info.num_items, info.num_customers) == (300, 600)
    assert info.loaded_at.ToDatetime(dt.UTC) <= before
    assert 0 < info.load_duration.ToTimedelta().total_seconds() < 10


def test_reload_under_concurrent_load_fails_no_request_and_switches_version(
    server: ServerProcess, client: PersonaEngineClient, artifacts: TrainedArtifacts
) -> None:
    _serve(client, artifacts.older)
    stop = threading.Event()
    seen: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def shop(worker: int) -> None:
        versions = seen.setdefault(worker, [])
        with server.client(timeout_s=5, retries=0) as engine:
            while not stop.is_set():
                try:
                    if worker % 2:
                        versions.append(engine.personalize(f"c{worker:07d}").decision.model_version)
                    else:
                        batch = engine.recommend_products_batch([f"c{n:07d}" for n in range(20)])
                        versions.extend({r.decision.model_version for r in batch.results})
                except BaseException as error:  # any failure at all fails the test
                    errors.append(error)
                    return

    shoppers = [threading.Thread(target=shop, args=(n,)) for n in range(4)]
    for thread in shoppers:
        thread.start()
    time.sleep(0.4)
    answer = client.reload_model(str(artifacts.newer))
    time.sleep(0.4)
    stop.set()
    for thread in shoppers:
        thread.join(timeout=10)
    assert errors == []
    assert answer.outcome == admin_service_pb2.RELOAD_OUTCOME_RELOADED
    assert (answer.previous_version, answer.new_version) == (artifacts.older.name, artifacts.newer.name)
    assert answer.load_duration.ToTimedelta().total_seconds() > 0
    for versions in seen.values():
        switch = versions.index(artifacts.newer.name)  # every shopper saw the switch, once, for good
        assert switch >= 3 and len(versions) - switch >= 3, versions
        assert set(versions[:switch]) == {artifacts.older.name}
        assert set(versions[switch:]) == {artifacts.newer.name}
    assert client.get_model_info().artifact_version == artifacts.newer.name


def test_corrupt_artifact_is_refused_naming_the_file_and_the_old_model_keeps_serving(
    server: ServerProcess, client: PersonaEngineClient, artifacts: TrainedArtifacts, tmp_path: Path
) -> None:
    _serve(client, artifacts.older)
    refused_before = server.metric("persona_engine_model_reloads_total", outcome="failed_precondition")
    broken = corrupt_copy(artifacts.newer, tmp_path)
    error = _reload_error(client, str(broken))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "customers/mix_overall.npy does not match its sha256" in str(error.details())
    manifest = broken / "manifest.json"
    document = json.loads(manifest.read_text(encoding="utf-8"))
    document["format_version"] = 999
    data = json.dumps(document).encode("utf-8")
    manifest.write_bytes(data)
    edited = _reload_error(client, str(broken))
    assert edited.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "manifest.json does not match manifest.sha256" in str(edited.details())
    (broken / "manifest.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  manifest.json\n")
    incompatible = _reload_error(client, str(broken))  # a newer engine's manifest, say
    assert incompatible.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "format_version 999" in str(incompatible.details())
    assert client.get_model_info().artifact_version == artifacts.older.name
    assert client.personalize("c0000001").decision.model_version == artifacts.older.name
    refused_after = server.metric("persona_engine_model_reloads_total", outcome="failed_precondition")
    assert refused_after - refused_before == 3


def test_a_copy_claiming_a_later_version_is_refused_and_the_old_model_keeps_serving(
    server: ServerProcess, client: PersonaEngineClient, artifacts: TrainedArtifacts, tmp_path: Path
) -> None:
    """Issue 14, finding 2: a copied artifact whose manifest says 29991231T000000Z was served as that."""
    _serve(client, artifacts.older)
    copy = tmp_path / artifacts.newer.name
    shutil.copytree(artifacts.newer, copy)
    manifest = copy / "manifest.json"
    document = json.loads(manifest.read_text(encoding="utf-8"))
    document["artifact_version"] = "29991231T000000Z"
    data = json.dumps(document).encode("utf-8")
    manifest.write_bytes(data)
    edited = _reload_error(client, str(copy))
    assert edited.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "manifest.json does not match manifest.sha256" in str(edited.details())
    # someone who can write to the folder rewrites the digest too: the folder name still gives it away
    (copy / "manifest.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  manifest.json\n", "ascii")
    renamed = _reload_error(client, str(copy))
    assert renamed.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "artifact_version '29991231T000000Z' is not the name of its folder" in str(renamed.details())
    assert client.get_model_info().artifact_version == artifacts.older.name


def test_missing_path_is_not_found_and_empty_path_invalid(
    server: ServerProcess, client: PersonaEngineClient, artifacts: TrainedArtifacts, tmp_path: Path
) -> None:
    missing = _reload_error(client, str(tmp_path / "no-such-artifact"))
    assert missing.code() is grpc.StatusCode.NOT_FOUND
    assert "no-such-artifact does not exist" in str(missing.details())
    # A status message quoting a long non-ASCII path is cut to fit gRPC's trailers (it came back
    # RESOURCE_EXHAUSTED, 16 KB percent-encoded against an 8 KiB limit; fuzz pass).
    accented = ("€" * 80 + "/") * 16  # 3,856 bytes: a path Linux takes, 11.6 KB percent-encoded
    cut = _reload_error(client, accented)
    assert cut.code() is grpc.StatusCode.NOT_FOUND
    assert str(cut.details()).startswith("artifact_path: €€") and str(cut.details()).endswith(" characters)")
    # The refusal's log line quotes the path escaped: a path cannot forge a log line (fuzz pass).
    forged = _reload_error(client, "artifacts/x\n2026-01-01 00:00:00,000 INFO forged")
    assert forged.code() is grpc.StatusCode.NOT_FOUND
    wait_for_server(lambda: "x\\x0a2026-01-01" in server.log(), "the escaped refusal", server)
    assert not any(
        line.startswith("2026-01-01 00:00:00,000 INFO forged") for line in server.log().splitlines()
    )
    empty = _reload_error(client, "")
    assert empty.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "artifact_path" in str(empty.details())
    assert _reload_error(client, "x" * 5000).code() is grpc.StatusCode.INVALID_ARGUMENT
    long_name = _reload_error(client, str(artifacts.newer), model_name="x" * 20_000)
    assert long_name.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert str(long_name.details()) == "model_name: 20000 characters, at most 256 allowed"


def test_same_version_is_unchanged_older_needs_the_rollback_flag_and_models_can_be_chosen(
    server: ServerProcess, client: PersonaEngineClient, artifacts: TrainedArtifacts
) -> None:
    _serve(client, artifacts.newer)
    # relative paths resolve against the server's working directory; the root means its latest
    relative_root = os.path.relpath(artifacts.root, server.log_path.parent)
    same = client.reload_model(relative_root)
    assert same.outcome == admin_service_pb2.RELOAD_OUTCOME_UNCHANGED
    assert same.previous_version == same.new_version == artifacts.newer.name
    assert same.load_duration.ToTimedelta().total_seconds() == 0
    refused = _reload_error(client, str(artifacts.older))
    assert refused.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert (
        f"version {artifacts.older.name} is older than the serving version {artifacts.newer.name}; "
        "set allow_rollback" in str(refused.details())
    )
    assert client.get_model_info().artifact_version == artifacts.newer.name
    rollback = client.reload_model(str(artifacts.older), allow_rollback=True)
    assert rollback.outcome == admin_service_pb2.RELOAD_OUTCOME_RELOADED
    assert (rollback.previous_version, rollback.new_version) == (artifacts.newer.name, artifacts.older.name)
    assert "rollback: serving " + artifacts.older.name in server.log()
    info = client.get_model_info()  # choose a model other than the one serving, so the reload is real
    other = next(name for name in info.available_models if name != info.serving_model)
    chosen = client.reload_model(str(artifacts.older), model_name=other)
    assert (chosen.outcome, chosen.serving_model) == (admin_service_pb2.RELOAD_OUTCOME_RELOADED, other)
    assert client.personalize("c0000001").decision.model_name == other
    unknown = _reload_error(client, str(artifacts.older), model_name="nope")
    assert unknown.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "no model 'nope'" in str(unknown.details())
    assert client.get_model_info().serving_model == other


def test_a_worker_follows_published_generations_and_keeps_its_model_when_one_cannot_load(
    artifacts: TrainedArtifacts, tmp_path: Path
) -> None:
    state = SharedModelState.create(tmp_path / "run", artifacts.older, "")
    loaded = load_model(artifacts.older)
    holder = ModelHolder(loaded.personalizer, loaded.path, load_seconds=loaded.load_seconds)
    registry = CollectorRegistry()
    swaps: list[str] = []
    follower = ModelReloader(
        holder,
        ServingMetrics(registry),
        state,
        applied_generation=0,
        after_swap=lambda: swaps.append(holder.current().version),
    )
    assert follower.follow_once() is False
    with state.exclusive():
        state.publish(artifacts.newer, loaded.personalizer.model_name, artifacts.newer.name)
    previous = holder.current()
    assert follower.follow_once() is True
    assert previous.version == artifacts.older.name  # the swap replaced the reference, not the object
    assert (holder.current().version, holder.path, follower.applied_generation) == (
        artifacts.newer.name,
        artifacts.newer.resolve(),
        1,
    )
    with state.exclusive():
        state.publish(corrupt_copy(artifacts.older, tmp_path), "", artifacts.older.name)
    assert follower.follow_once() is False
    assert follower.follow_once() is False  # a generation that failed is not retried every poll
    assert holder.current().version == artifacts.newer.name
    assert follower.applied_generation == 2
    assert swaps == [artifacts.newer.name]  # once per swap, after it; never for a refused model
    failed = {"trigger": "peer", "outcome": "failed_precondition"}
    assert registry.get_sample_value("persona_engine_model_reloads_total", failed) == 1
    assert [(r.generation, r.version) for r in state.reports()] == [(2, artifacts.newer.name)]
