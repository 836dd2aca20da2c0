"""Client connections are closed at ``--max-connection-age``, and the client carries on without a failure.

The kernel spreads only new connections over the workers of a port, so closing aged connections is
what lets clients spread again over a replaced worker (``serving.settings.DEFAULT_MAX_CONNECTION_AGE_S``).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from serving.server_process import running_server
from tests.serving.server_harness import TrainedArtifacts, trained_artifacts

PEER = re.compile(r"/persona\.v1\.PersonalizationService/Personalize OK .* peer=(\S+)")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> TrainedArtifacts:
    return trained_artifacts(tmp_path_factory)


def _peers(log: str) -> list[str]:
    return PEER.findall(log)


@pytest.mark.parametrize(("age", "reconnects"), [("1", True), ("0", False)])
def test_an_aged_connection_is_replaced_without_failing_a_call(
    artifacts: TrainedArtifacts, tmp_path: Path, age: str, reconnects: bool
) -> None:
    with (
        running_server(artifacts.older, tmp_path, extra_args=["--max-connection-age", age]) as server,
        server.client(timeout_s=10) as client,  # one channel throughout
    ):
        assert client.personalize("c0000001").items
        assert client.personalize("c0000001").items  # the same connection, well within its age
        time.sleep(2.5)  # past the age (gRPC adds up to 10% jitter): the server sent its GOAWAY
        assert client.personalize("c0000001").items
    peers = _peers(server.log())  # read once the server stopped: its log writer has written every line
    assert len(peers) == 3 and peers[0] == peers[1]
    assert (peers[2] != peers[0]) is reconnects  # a new connection has a new client port
