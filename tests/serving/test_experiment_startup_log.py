"""A server started with ``--experiment`` (the README's example, ``serving/examples/experiment.toml``)
says so in its start-up log (which experiment, arms, shares) and names each customer's arm in every
response, in the response and in its DecisionInfo."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.artifact.contents import load_artifact
from engine.decisions.experiment import load_experiment
from serving.server_process import SOURCE_ROOT, ServerProcess, running_server
from tests.serving.server_harness import trained_artifacts

EXAMPLE = SOURCE_ROOT / "serving" / "examples" / "experiment.toml"  # the README's example


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    artifacts = trained_artifacts(tmp_path_factory)
    with running_server(
        artifacts.newer, tmp_path_factory.mktemp("server"), extra_args=["--experiment", str(EXAMPLE)]
    ) as running:
        yield running


def test_the_start_up_log_names_the_running_experiment(server: ServerProcess) -> None:
    assert (
        "experiment bandit-vs-static running: control static; arms static 50% (artifact policy), "
        "bandit 50% (online-bandit policy, model als)"
    ) in server.log()


def test_every_decision_names_the_arm_its_response_names(
    server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """DecisionInfo.experiment_arm was always empty while the response's experiment_arm was set."""
    assigned = load_experiment(EXAMPLE)
    artifact = trained_artifacts(tmp_path_factory).newer
    customers = [str(c) for c in load_artifact(artifact).customers.ids[:40]]
    arms = {customer: assigned.assign(customer).name for customer in customers}
    assert set(arms.values()) == {"static", "bandit"}
    with server.client() as client:
        batch = client.recommend_products_batch(customers, k=2).results
        for customer, result in zip(customers, batch, strict=True):
            responses = [
                client.personalize(customer, k=2),
                client.rank_offers(customer),
                client.select_layout(customer),
                result,
            ]
            assert [(r.experiment_arm, r.decision.experiment_arm) for r in responses] == [
                (arms[customer], arms[customer])
            ] * 4, customer


def test_the_readme_shows_the_example_experiment_as_it_is() -> None:
    """The README's TOML block is the file the tests serve, so it stays one that a server accepts."""
    readme = (SOURCE_ROOT / "README.md").read_text(encoding="utf-8")
    assert f"```toml\n{EXAMPLE.read_text(encoding='utf-8')}```" in readme
    assert "--experiment serving/examples/experiment.toml" in readme
