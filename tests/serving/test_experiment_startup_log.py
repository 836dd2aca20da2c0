"""A server started with ``--experiment`` says so in its start-up log: which experiment, arms, shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.server_process import running_server
from tests.serving.server_harness import trained_artifacts

EXPERIMENT = """
[experiment]
name = "bandit-vs-static"
control = "static"

[experiment.arms.static]
share = 0.8

[experiment.arms.bandit]
share = 0.2
policy = "online-bandit"
model = "als"
"""


def test_the_start_up_log_names_the_running_experiment(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    artifacts = trained_artifacts(tmp_path_factory)
    config = tmp_path / "experiment.toml"
    config.write_text(EXPERIMENT, encoding="utf-8")
    with running_server(artifacts.newer, tmp_path, extra_args=["--experiment", str(config)]) as server:
        log = server.log()
    assert (
        "experiment bandit-vs-static running: control static; arms static 80% (artifact policy), "
        "bandit 20% (online-bandit policy, model als)"
    ) in log
