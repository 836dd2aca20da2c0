"""Experiments and the online bandit over real gRPC: admin calls, arms in responses, learning, logging."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from cli.main import main
from engine.decisions.experiment import ArmPolicy, Experiment, ExperimentArm
from engine.decisions.journey_stage import JourneyStage
from engine.live.decision_log_writer import DecisionLogWriter
from engine.live.decisions import LiveDecisions
from engine.live.event_log import EventLog
from engine.live.events import DecisionOutcome, OutcomeKind
from engine.live.state_store import MemoryStateStore
from serving.client import PersonaEngineClient
from serving.generated.persona.v1 import admin_service_pb2 as admin
from serving.generated.persona.v1 import admin_service_pb2_grpc as admin_grpc
from serving.model_holder import load_model
from serving.process_lifecycle import EXIT_USAGE
from serving.server import serve
from serving.settings import ServeConfigError, ServeSettings, add_serve_arguments, settings_from_args
from tests.serving.server_harness import InProcessServer, in_process_server, trained_artifacts
from training.config import parse_config
from training.train_job import run_training

TOKEN = "live-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
EXPERIMENT = Experiment(
    "bandit-test",
    "static",
    (ExperimentArm("static", 0.5), ExperimentArm("bandit", 0.5, ArmPolicy.ONLINE_BANDIT)),
)


@dataclass
class Live:
    server: InProcessServer
    client: PersonaEngineClient
    admin: admin_grpc.AdminServiceStub
    live: LiveDecisions
    log: EventLog
    writer: DecisionLogWriter
    log_path: Path

    def customers(self, n: int) -> list[str]:
        return [str(c) for c in self.server.holder.current().model_customers.ids[:n]]


@pytest.fixture
def live(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    artifact = trained_artifacts(tmp_path_factory).older
    path = tmp_path / "events.db"
    log = EventLog.open(path)
    writer = DecisionLogWriter(path)
    decisions = LiveDecisions(MemoryStateStore())
    with (
        in_process_server(
            artifact, event_log=log, decision_writer=writer, live=decisions, admin_token=TOKEN
        ) as server,
        PersonaEngineClient(server.address, timeout_s=10.0) as client,
        grpc.insecure_channel(server.address) as channel,
    ):
        yield Live(server, client, admin_grpc.AdminServiceStub(channel), decisions, log, writer, path)
    writer.close()
    log.close()


def _proto(experiment: Experiment) -> admin.Experiment:
    policies = {
        ArmPolicy.ARTIFACT: admin.ARM_POLICY_ARTIFACT,
        ArmPolicy.ONLINE_BANDIT: admin.ARM_POLICY_ONLINE_BANDIT,
    }
    return admin.Experiment(
        name=experiment.name,
        control_arm=experiment.control,
        arms=[
            admin.ExperimentArm(name=a.name, share=a.share, policy=policies[a.policy])
            for a in experiment.arms
        ],
    )


def test_set_and_get_experiment_are_token_protected_and_validated(live: Live) -> None:
    empty = live.admin.GetExperiment(admin.GetExperimentRequest(), metadata=AUTH, timeout=5)
    assert not empty.HasField("experiment")
    with pytest.raises(grpc.RpcError) as denied:
        live.admin.SetExperiment(admin.SetExperimentRequest(experiment=_proto(EXPERIMENT)), timeout=5)
    assert denied.value.code() is grpc.StatusCode.UNAUTHENTICATED
    bad = _proto(EXPERIMENT)
    bad.arms[1].share = 0.4
    with pytest.raises(grpc.RpcError) as invalid:
        live.admin.SetExperiment(admin.SetExperimentRequest(experiment=bad), metadata=AUTH, timeout=5)
    assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "sum to 1" in str(invalid.value.details())
    # Names and shares follow the .proto's rules, refused with the request's field path and never
    # quoted whole (a 20,000-character name made an error too long for gRPC's status header).
    for field, value, expected in (
        ("name", "n" * 20_000, "experiment.name: at most 64 characters, got 20000"),
        ("control_arm", "a b", "experiment.control_arm: must be 1 to 64 letters"),
        ("arms[0].name", "x" * 20_000, "experiment.arms[0].name: at most 64 characters, got 20000"),
        ("arms[1].model", "m" * 9_000, "experiment.arms[1].model: at most 256 characters, got 9000"),
        ("arms[0].share", float("nan"), "experiment.arms[0].share: must be in (0, 1], got nan"),
        ("arms[1].name", "static", "experiment.arms[1].name: 'static' is the name of arms[0] too"),
        (
            "control_arm",
            "zzz",
            "experiment.control_arm: 'zzz' is not the name of one of the arms (static, bandit)",
        ),
    ):
        broken = _proto(EXPERIMENT)
        target, _, attribute = field.rpartition(".")
        holder = broken.arms[int(target[5:-1])] if target else broken
        setattr(holder, attribute or field, value)
        with pytest.raises(grpc.RpcError) as refused:
            live.admin.SetExperiment(admin.SetExperimentRequest(experiment=broken), metadata=AUTH, timeout=5)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert expected in str(refused.value.details()) and len(str(refused.value.details())) < 300
    set_response = live.admin.SetExperiment(
        admin.SetExperimentRequest(experiment=_proto(EXPERIMENT)), metadata=AUTH, timeout=5
    )
    assert not set_response.HasField("previous") and set_response.experiment.name == "bandit-test"
    got = live.admin.GetExperiment(admin.GetExperimentRequest(), metadata=AUTH, timeout=5)
    assert [(a.name, a.share) for a in got.experiment.arms] == [("static", 0.5), ("bandit", 0.5)]
    stopped = live.admin.SetExperiment(admin.SetExperimentRequest(), metadata=AUTH, timeout=5)
    assert stopped.previous.name == "bandit-test" and not stopped.HasField("experiment")
    customer = live.customers(1)[0]
    assert live.client.rank_offers(customer).experiment_arm == ""


def test_responses_name_the_arm_and_the_bandit_arm_learns_and_is_logged(live: Live) -> None:
    live.admin.SetExperiment(
        admin.SetExperimentRequest(experiment=_proto(EXPERIMENT)), metadata=AUTH, timeout=5
    )
    customers = live.customers(40)
    served: dict[str, tuple[str, str, str]] = {}  # decision id -> customer, arm, first offer
    for customer in customers:
        expected = EXPERIMENT.assign(customer).name
        page = live.client.personalize(customer, k=4)
        assert page.experiment_arm == expected
        assert live.client.select_layout(customer).experiment_arm == expected
        batch = live.client.recommend_products_batch([customer], k=3)
        assert batch.results[0].experiment_arm == expected
        if page.offers:
            assert ("online bandit" in page.offers[0].reason) == (expected == "bandit")
            served[page.decision.decision_id] = (customer, expected, page.offers[0].offer_id)
        if expected == "bandit":
            assert 0 < page.layout.propensity <= 1

    bandit_decisions = [(d, c, o) for d, (c, arm, o) in served.items() if arm == "bandit"]
    assert bandit_decisions
    offer_bandit = live.live.bandits(live.server.holder.current()).offer
    assert offer_bandit is not None
    stages = list(JourneyStage)
    before = {stage: offer_bandit.posterior(stage).alpha.sum() for stage in stages}
    # Redemptions in both arms teach the bandit: the control arm's offers were chosen by the
    # artifact's policy, but the per persona x arm statistics do not depend on who chose.
    outcomes = [
        DecisionOutcome(f"r-{d}", d, c, OutcomeKind.OFFER_REDEEMED, NOW, o, revenue=10.0)
        for d, (c, _, o) in served.items()
    ]
    assert len(outcomes) > len(bandit_decisions)
    response = live.client.record_events(outcomes=outcomes)
    assert response.accepted_outcomes == len(outcomes)
    after = {stage: offer_bandit.posterior(stage).alpha.sum() for stage in stages}
    assert sum(after.values()) - sum(before.values()) == pytest.approx(len(outcomes))

    live.writer.flush()
    logged = live.log.served_decisions()
    by_id = {d.decision_id: d for d in logged if d.decision_type == "offer"}
    for decision_id, (_, arm, _) in served.items():
        assert by_id[decision_id].experiment_arm == arm
        assert by_id[decision_id].journey_stage in {s.value for s in JourneyStage}


def test_experiment_report_reads_the_servers_log(live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    live.admin.SetExperiment(
        admin.SetExperimentRequest(experiment=_proto(EXPERIMENT)), metadata=AUTH, timeout=5
    )
    outcomes = []
    for customer in live.customers(30):
        decision_id = live.client.rank_offers(customer).decision.decision_id
        outcomes.append(
            DecisionOutcome(f"s-{decision_id}", decision_id, customer, OutcomeKind.OFFER_SHOWN, NOW)
        )
    live.client.record_events(outcomes=outcomes)
    live.writer.flush()
    args = ["experiment-report", "--event-log", str(live.log_path), "--control", "static", "--json"]
    assert main([*args, "--resamples", "200"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {arm["arm"] for arm in report["arms"]} <= {"static", "bandit"}
    assert sum(arm["decisions"] for arm in report["arms"]) == 30
    # The same log feeds off-policy evaluation, with the mixes the server decided on.
    artifact = str(live.server.holder.snapshot().path)
    args = ["evaluate-policy", "--event-log", str(live.log_path), "--artifact", artifact, "--json"]
    assert main([*args, "--all-decisions", "--policy", "uniform", "--policy", "greedy"]) == 0
    evaluation = json.loads(capsys.readouterr().out)
    assert evaluation["decisions"] == 30 and evaluation["mix_source"] == "event log"
    assert [p["policy"] for p in evaluation["policies"]] == ["uniform", "greedy"]


def _settings_with_experiment(artifact: Path, config: Path) -> ServeSettings:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = ["--artifact", str(artifact), "--address", "127.0.0.1:0", "--metrics-port", "0"]
    return settings_from_args(parser.parse_args([*args, "--experiment", str(config)]), {})


def test_serve_starts_the_experiment_of_its_config_file(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    artifact = trained_artifacts(tmp_path_factory).older
    config = tmp_path / "experiment.toml"
    config.write_text(
        '[experiment]\nname = "from-file"\ncontrol = "a"\n'
        "[experiment.arms.a]\nshare = 0.5\n"
        '[experiment.arms.b]\nshare = 0.5\npolicy = "online-bandit"\n',
        encoding="utf-8",
    )
    settings = _settings_with_experiment(artifact, config)
    assert settings.experiment == config.resolve()
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    base = ["--artifact", str(artifact), "--address", "127.0.0.1:0", "--metrics-port", "0"]
    broken = tmp_path / "broken.toml"
    broken.write_text(
        config.read_text(encoding="utf-8").replace("share = 0.5\npolicy", "share = 0.6\npolicy")
    )
    with pytest.raises(ServeConfigError, match=r"--experiment: .*sum to 1"):
        settings_from_args(parser.parse_args([*base, "--experiment", str(broken)]), {})
    bandit = tmp_path / "bandit.toml"
    bandit.write_text("[bandit.budgets]\noffer_freeship_all = 100\n", encoding="utf-8")
    with_budget = settings_from_args(parser.parse_args([*base, "--bandit", str(bandit)]), {})
    assert with_budget.bandit is not None and dict(with_budget.bandit.budgets) == {
        "offer_freeship_all": 100.0
    }
    bandit.write_text("[bandit]\nfloor = 0.1\n", encoding="utf-8")
    with pytest.raises(ServeConfigError, match=r"--bandit: .*bandit\.floor: unknown key"):
        settings_from_args(parser.parse_args([*base, "--bandit", str(bandit)]), {})

    stop, ready = threading.Event(), queue.Queue[int]()
    thread = threading.Thread(target=serve, args=(settings,), kwargs={"stop": stop, "on_ready": ready.put})
    thread.start()
    try:
        port = ready.get(timeout=60)
        with PersonaEngineClient(f"127.0.0.1:{port}", timeout_s=10.0) as client:
            for customer in ("c001", "c002", "someone-new"):
                arm = client.rank_offers(customer).experiment_arm
                assert (
                    arm
                    == Experiment(
                        "from-file",
                        "a",
                        (ExperimentArm("a", 0.5), ExperimentArm("b", 0.5, ArmPolicy.ONLINE_BANDIT)),
                    )
                    .assign(customer)
                    .name
                )
    finally:
        stop.set()
        thread.join(timeout=30)


def test_an_arm_whose_model_the_artifact_lacks_is_never_an_internal_error(
    live: Live, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A reload to an artifact without an arm's model is refused naming the arm (fuzz pass: it was
    accepted, and that arm's customers got INTERNAL); a server that serves such an artifact anyway (a
    replica started with it) serves those customers outside the experiment."""
    shop = trained_artifacts(tmp_path_factory).shop
    config = parse_config(
        {
            "data": {"path": str(shop)},
            "split": {"test_days": 28, "cold_start_share": 0.15},
            "models": {"popularity": {}, "als": {"factors": 8, "iterations": 3}},
            "output": {"root": str(tmp_path / "artifacts")},
        }
    )
    lacking = run_training(config, show_progress=False).artifact_path
    experiment = admin.Experiment(
        name="model-test",
        control_arm="ctl",
        arms=[
            admin.ExperimentArm(name="ctl", share=0.5),
            admin.ExperimentArm(name="treat", share=0.5, model="persona_popularity"),
        ],
    )
    live.admin.SetExperiment(admin.SetExperimentRequest(experiment=experiment), metadata=AUTH, timeout=5)
    serving = live.server.holder.current().version
    with pytest.raises(grpc.RpcError) as refused:
        live.admin.ReloadModel(
            admin.ReloadModelRequest(artifact_path=str(lacking)), metadata=AUTH, timeout=30
        )
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert (
        f"{lacking.name} has no model 'persona_popularity', which arm 'treat' of the running experiment "
        "'model-test' serves (experiment.arms[1].model" in str(refused.value.details())
    )
    assert live.server.holder.current().version == serving

    loaded = load_model(lacking)
    live.server.holder.swap(loaded.personalizer, loaded.path)
    model = Experiment(
        "model-test",
        "ctl",
        (ExperimentArm("ctl", 0.5), ExperimentArm("treat", 0.5, model="persona_popularity")),
    )
    customers = live.customers(30)
    arms = {customer: model.assign(customer).name for customer in customers}
    assert set(arms.values()) == {"ctl", "treat"}
    lists = live.client.recommend_products_batch(customers, k=3)
    for customer in customers:
        expected = "ctl" if arms[customer] == "ctl" else ""
        assert live.client.personalize(customer).experiment_arm == expected
        assert live.client.rank_offers(customer).experiment_arm == expected
        assert live.client.select_layout(customer).experiment_arm == expected
    assert [result.experiment_arm for result in lists.results] == [
        "ctl" if arms[c] == "ctl" else "" for c in customers
    ]

    live.admin.SetExperiment(admin.SetExperimentRequest(), metadata=AUTH, timeout=5)  # stopped: it loads
    answer = live.admin.ReloadModel(
        admin.ReloadModelRequest(artifact_path=str(lacking)), metadata=AUTH, timeout=30
    )
    assert answer.new_version == lacking.name


def test_serve_refuses_an_experiment_whose_arm_names_a_model_the_artifact_lacks(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    artifact = trained_artifacts(tmp_path_factory).older
    config = tmp_path / "experiment.toml"
    config.write_text(
        '[experiment]\nname = "needs-bpr"\ncontrol = "a"\n'
        '[experiment.arms.a]\nshare = 0.5\n[experiment.arms.b]\nshare = 0.5\nmodel = "bpr"\n',
        encoding="utf-8",
    )
    assert serve(_settings_with_experiment(artifact, config), stop=threading.Event()) == EXIT_USAGE
    assert f"experiment.arms.b.model: artifact {artifact.name} has no model 'bpr' (it has " in caplog.text
