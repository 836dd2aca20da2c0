"""Every command's ``--help`` works and ends with examples: the help is the CLI's manual, kept complete.

The commands are read from the parser itself, so a new command is checked without editing this file;
the pinned list below catches a command that disappears or is renamed by accident.
"""

from __future__ import annotations

import argparse

import pytest

from cli.main import main
from cli.parser import build_parser

COMMANDS = {
    "generate",
    "train",
    "evaluate",
    "recommend",
    "personas",
    "discover",
    "summary",
    "report",
    "adapt",
    "batch-recommend",
    "segments",
    "compare",
    "tune",
    "evaluate-policy",
    "experiment-report",
    "drift",
    "serve",
    "archive-events",
}
ADAPT_SOURCES = {"transactions", "movielens"}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def _command_lines() -> list[list[str]]:
    """``[command]`` for every command and ``[command, sub]`` for every sub-subcommand (adapt SOURCE)."""
    lines: list[list[str]] = []
    for name, parser in _subcommands(build_parser()).items():
        lines.append([name])
        lines.extend([name, sub] for sub in _subcommands(parser))
    return lines


def test_the_commands_are_the_documented_ones() -> None:
    commands = _subcommands(build_parser())
    assert set(commands) == COMMANDS
    assert set(_subcommands(commands["adapt"])) == ADAPT_SOURCES


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_the_program_help_lists_every_command_and_a_first_run(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help([], capsys)
    assert all(command in text for command in COMMANDS)
    assert "persona-engine generate --out data/demo" in text


@pytest.mark.parametrize("argv", _command_lines(), ids=" ".join)
def test_every_command_help_exits_0_with_an_example(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    text = _help(argv, capsys)
    assert text.startswith(f"usage: persona-engine {' '.join(argv)}")
    examples = text.split("examples:", 1)
    assert len(examples) == 2, f"'persona-engine {' '.join(argv)} --help' has no examples section"
    assert f"persona-engine {' '.join(argv)} " in examples[1]
