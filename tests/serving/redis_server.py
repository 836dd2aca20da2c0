"""A real redis-server for tests: started on a free port in a temporary folder, stopped afterwards.

``make test`` runs scripts/install-redis.sh first, so the server is there on a fresh machine; tests
are skipped (saying why) only when it still cannot be found, e.g. without root to install it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

START_TIMEOUT_S = 10.0


def redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not found on PATH; run scripts/install-redis.sh (as root) to install it")
    return binary


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """One redis-server on a fixed port that a test can stop and start again (a Redis outage)."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.binary = redis_server_binary()
        self.folder = folder
        self.port = port or _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server (without persistence: a restart comes back empty) and wait until it answers."""
        process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.process = process
        deadline = time.monotonic() + START_TIMEOUT_S
        client = redis.Redis.from_url(self.url)
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        error = process.stderr.read().decode() if process.stderr else ""
                        raise RuntimeError(
                            f"redis-server did not start on port {self.port}: {error}"
                        ) from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s); the port is free again afterwards."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running_redis(folder: Path) -> Iterator[str]:
    """Start redis-server in ``folder`` without persistence; yields its redis:// URL."""
    server = RedisProcess(folder)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
