"""ReloadModel to an artifact with another persona catalog, against a real server process: refused
unless asked for, and then said in the response and in a WARNING naming both catalogs.

A demo server reloaded with an artifact trained on another catalog switched silently: requests naming
the old personas started failing, and the online bandit's learning from earlier decisions failed on
every outcome batch (their mixes are in the old catalog's order)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from serving.model_holder import catalog_difference
from serving.server_process import ServerProcess, running_server
from tests.serving.server_harness import FAST_MODELS, TrainedArtifacts, trained_artifacts
from training.config import parse_config
from training.train_job import run_training

TOKEN = "adm1n-Token-for-catalog-tests-0123456789"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> TrainedArtifacts:
    return trained_artifacts(tmp_path_factory)


@pytest.fixture(scope="module")
def retail(artifacts: TrainedArtifacts, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same shop trained with the bundled online_retail catalog (after the shared artifacts, so it
    is newer: a rollback would be refused first, and the same version back unchanged)."""
    while dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") <= artifacts.newer.name:
        time.sleep(0.1)  # versions are UTC seconds
    config = parse_config(
        {
            "data": {"path": str(artifacts.shop)},
            "personas": {"catalog": "online_retail"},
            "split": {"test_days": 28, "cold_start_share": 0.15},
            "models": FAST_MODELS,
            "output": {"root": str(tmp_path_factory.mktemp("retail") / "artifacts")},
        }
    )
    return run_training(config, show_progress=False).artifact_path


@pytest.fixture(scope="module")
def server(artifacts: TrainedArtifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("catalog-server")
    token_file = workdir / "admin-token"
    token_file.write_text(TOKEN, encoding="utf-8")
    token_file.chmod(0o600)
    with running_server(
        artifacts.newer, workdir, extra_args=["--admin-token-file", str(token_file)]
    ) as running:
        running.admin_token = TOKEN
        yield running


def test_another_catalog_is_refused_unless_allowed_and_then_said(
    server: ServerProcess, artifacts: TrainedArtifacts, retail: Path
) -> None:
    with server.client() as client:
        before = list(client.get_model_info().persona_ids)
        with pytest.raises(grpc.RpcError) as refused:
            client.reload_model(str(retail))
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        details = str(refused.value.details())
        assert details.startswith(
            f"artifact_path: {retail.name} has another persona catalog than the serving "
            f"{artifacts.newer.name} (removed {', '.join(before)}; added "
        )
        assert details.endswith("set allow_catalog_change to switch anyway")
        assert list(client.get_model_info().persona_ids) == before  # the old artifact still serves
        client.personalize("c0000001", persona_mix={before[0]: 1.0})

        switched = client.reload_model(str(retail), allow_catalog_change=True)
        after = list(switched.persona_ids)
        assert switched.persona_catalog_changed and list(switched.previous_persona_ids) == before
        assert after == list(client.get_model_info().persona_ids) and not set(after) & set(before)
        assert (
            f"WARNING [{server.process.pid}] persona_engine.model: persona catalog changed "
            f"(allow_catalog_change set): {artifacts.newer.name} served {', '.join(before)}, "
            f"{retail.name} serves {', '.join(after)}"
        ) in server.log()

        same = client.reload_model(str(artifacts.newer), allow_rollback=True, allow_catalog_change=True)
        assert same.persona_catalog_changed and list(same.persona_ids) == before
        unchanged_catalog = client.reload_model(str(artifacts.newer), model_name="popularity")
        assert not unchanged_catalog.persona_catalog_changed
        assert list(unchanged_catalog.previous_persona_ids) == list(unchanged_catalog.persona_ids) == before


def test_the_same_personas_in_another_order_are_another_catalog() -> None:
    """Mixes travel as vectors in catalog order (the bandit's pending decisions, say)."""
    assert catalog_difference(("a", "b"), ("b", "a")) == "the same personas in another order (a, b -> b, a)"
    assert catalog_difference(("a", "b"), ("a", "c")) == "removed b; added c"
