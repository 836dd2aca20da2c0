"""The Makefile's commands follow the command line's conventions, and its first install is not silent."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cli.parser import build_parser

MAKEFILE = (Path(__file__).resolve().parents[2] / "Makefile").read_text(encoding="utf-8")


def _recipe(target: str) -> list[str]:
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", MAKEFILE, flags=re.MULTILINE)
    assert match, f"no target {target}"
    return [line.strip() for line in match.group(1).splitlines()]


def test_every_persona_engine_line_parses_with_the_current_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsed where the demo's earlier steps would have left their output: flags naming files are
    checked as they are parsed, so a clean checkout has no artifacts/latest yet."""
    (tmp_path / "artifacts" / "latest").mkdir(parents=True)
    (tmp_path / "artifacts" / "latest" / "manifest.json").write_text("{}")
    (tmp_path / "data" / "demo").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    lines = [line for line in MAKEFILE.splitlines() if "$(BIN)/persona-engine " in line]
    assert len(lines) >= 7
    for line in lines:
        argv = shlex.split(line.split("$(BIN)/persona-engine ", 1)[1])
        args = build_parser().parse_args(argv)
        assert getattr(args, "legacy_artifact", None) is None, f"deprecated form in the Makefile: {line}"


def test_the_first_install_says_what_it_installs_and_shows_pip_progress() -> None:
    recipe = _recipe("$(STAMP)")
    main_install = next(line for line in recipe if "install" in line and "-e" in line)
    assert "--quiet" not in main_install
    assert any(line.startswith("@echo") and "minutes" in line for line in recipe)
