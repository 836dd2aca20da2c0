"""The entry point's contract: mistakes the user can fix give exit status 2 and one line, no traceback."""

from __future__ import annotations

import os
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
    with pytest.raises(SystemExit) as refused:  # a file a flag names is checked when parsed
        main(["personas", "--catalog", str(tmp_path / "missing.toml")])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: persona-engine personas: argument --catalog: ") and "Traceback" not in err
    assert f"{tmp_path / 'missing.toml'}: no such file" in err


def test_user_errors_belong_to_the_one_error_family() -> None:
    assert issubclass(UserError, PersonaEngineError)


def test_python_dash_m_cli_runs_the_same_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli", "personas", "--json"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert '"id": "bargain_hunter"' in done.stdout


@pytest.mark.parametrize(("given", "expected"), [(None, "narenas:1"), ("narenas:4", "narenas:4")])
def test_the_command_line_sets_polars_allocator_before_polars_loads(given: str | None, expected: str) -> None:
    """One jemalloc arena (``cli.allocator_settings``) unless the user chose otherwise: polars reads the
    variable when it loads, adding its own defaults in front."""
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    if given is not None:
        env["_RJEM_MALLOC_CONF"] = given
    script = "import cli.main, os, polars; print(os.environ['_RJEM_MALLOC_CONF'])"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().split(",")[-1] == expected
