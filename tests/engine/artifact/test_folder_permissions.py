"""A published artifact is readable by the other accounts that serve or inspect it (0755, not 0700)."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.engine.artifact.test_folder import write_version


def test_a_committed_version_folder_is_world_readable(tmp_path: Path) -> None:
    version_dir = write_version(tmp_path / "artifacts")
    assert stat.S_IMODE(version_dir.stat().st_mode) == 0o755
