"""The entry point's contract: mistakes the user can fix give exit status 2 and one line, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cli.errors import UserError
from cli.main import main
from engine.errors import PersonaEngineError


def test_a_bad_flag_value_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--out", str(tmp_path / "shop"), "--customers", "0"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        "error: persona-engine generate: argument --customers: must be at least 1, got 0 "
        "(see 'persona-engine generate --help')"
    )
    assert captured.out == ""
    assert not (tmp_path / "shop").exists()


def test_a_missing_file_is_the_users_to_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["personas", "--catalog", str(tmp_path / "missing.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_user_errors_belong_to_the_one_error_family() -> None:
    assert issubclass(UserError, PersonaEngineError)


def test_python_dash_m_cli_runs_the_same_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli", "personas", "--json"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert '"id": "bargain_hunter"' in done.stdout
