"""The benchmark's side of the load generator (``benchmarks.load_generator``): start the process,
send it one JSON command per line, read its JSON events with a deadline, and stop it.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.serving_artifact_cache import REPO_ROOT
from serving.server_process import child_environment


class LoadGenerator:
    """The load generator process and its line protocol (see ``benchmarks.load_generator``)."""

    def __init__(self, workdir: Path, name: str = "load_generator") -> None:
        """``name`` names its log in ``workdir``: one per generator running at the same time."""
        self.stderr_path = workdir / f"{name}.log"
        with open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.load_generator"],
                cwd=REPO_ROOT,
                env=child_environment(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self._buffer = b""

    def send(self, command: Mapping[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        self.process.stdin.flush()

    def expect(self, event: str, timeout_s: float) -> dict[str, Any]:
        """The next event line, which must be ``event``; bounded by ``timeout_s``."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"load generator: no {event!r} event within {timeout_s:.0f}s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"load generator exited; its log: {self.stderr_path}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        document: dict[str, Any] = json.loads(line)
        if document.get("event") != event:
            raise RuntimeError(f"load generator: expected {event!r}, got {document}")
        return document

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.send({"command": "quit"})
                assert self.process.stdin is not None
                self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
