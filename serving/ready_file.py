"""The ready file: how a server started on port 0 tells whoever started it where it listens.

A process supervisor, a test or a benchmark that starts ``persona-engine serve --address host:0``
cannot know the port the kernel picked, nor, with ``--workers``, when every worker is serving, short
of parsing the log. With ``--ready-file PATH`` the server writes PATH once it serves on every worker: a
small JSON document with the bound port, the metrics port, its pid and its workers' pids. It is written
to a temporary file in the same folder and renamed into place, so a reader sees either no file or the
whole document, never half of one. A ready file from an earlier run is removed at start (it would name
a port nobody listens on any more), and the server removes its own when it starts to stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import PersonaEngineError


class ReadyFileError(PersonaEngineError, ValueError):
    """A ready file that is not the document a server writes; the message names the file."""


@dataclass(frozen=True)
class ServerReady:
    """What a serving server tells through its ready file.

    ``worker_pids`` are the processes that serve calls: the workers under a supervisor, or the
    server's own pid when it serves alone. ``metrics_port`` is None when metrics are off.
    """

    address: str
    port: int
    metrics_port: int | None
    pid: int
    worker_pids: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "port": self.port,
            "metrics_port": self.metrics_port,
            "pid": self.pid,
            "worker_pids": list(self.worker_pids),
        }

    @classmethod
    def from_json(cls, document: Any, source: Path) -> ServerReady:
        try:
            metrics_port = document["metrics_port"]
            return cls(
                address=str(document["address"]),
                port=int(document["port"]),
                metrics_port=None if metrics_port is None else int(metrics_port),
                pid=int(document["pid"]),
                worker_pids=tuple(int(pid) for pid in document["worker_pids"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ReadyFileError(f"{source}: not a ready file ({error!r})") from None


def write_ready_file(path: Path, ready: ServerReady) -> None:
    """Write ``path`` atomically: a temporary file beside it, flushed, then renamed over it."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            json.dump(ready.to_json(), out)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it 0600; readers may run as another user
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def read_ready_file(path: Path) -> ServerReady | None:
    """The document at ``path``, or None while there is none (the server is not serving yet)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ReadyFileError(f"{path}: not JSON ({error})") from None
    return ServerReady.from_json(document, path)


def remove_stale_ready_file(path: Path) -> None:
    """At start: whatever is at ``path`` was left by an earlier run and names a port nobody serves."""
    path.unlink(missing_ok=True)


def remove_ready_file(path: Path, pid: int) -> None:
    """On stopping: remove ``path`` if it is still the one process ``pid`` wrote (a server started
    since with the same path keeps its own)."""
    with contextlib.suppress(OSError, ReadyFileError):
        ready = read_ready_file(path)
        if ready is not None and ready.pid == pid:
            path.unlink(missing_ok=True)
