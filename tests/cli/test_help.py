"""Every command's ``--help`` works and ends with examples: the help is the CLI's manual, kept complete.

The commands are read from the parser itself, so a new command is checked without editing this file;
the pinned list below catches a command that disappears or is renamed by accident.
"""

from __future__ import annotations

import argparse
from importlib import metadata
from pathlib import Path

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
    # Examples are pasted into a shell: a command continued on the next line ends with a backslash
    # (a lost one shows as a run of spaces inside the command), so each example runs as printed.
    lines = [line for line in examples[1].splitlines() if line.strip()]
    for line, after in zip(lines, [*lines[1:], ""], strict=True):
        indent = len(line) - len(line.lstrip())
        if line.lstrip().startswith("persona-engine") or line.rstrip().endswith("\\"):
            assert "   " not in line.strip(), f"a continuation lost its backslash: {line.strip()!r}"
        continued = after.lstrip().startswith("-") and len(after) - len(after.lstrip()) > indent
        if line.lstrip().startswith("persona-engine") and continued:
            assert line.rstrip().endswith("\\"), f"{line.strip()!r} goes on below without a backslash"


def _options(argv: list[str]) -> list[argparse.Action]:
    parser = build_parser()
    for name in argv:
        parser = _subcommands(parser)[name]
    return [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]


@pytest.mark.parametrize("argv", _command_lines(), ids=" ".join)
def test_every_option_says_what_it_is_and_its_default(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    text = " ".join(_help(argv, capsys).split())
    for action in _options(argv):
        assert action.help, f"persona-engine {' '.join(argv)} {action.option_strings[0]} has no help"
        # ``is`` tests: a default of 0 or 0.0 equals False, and must be shown all the same.
        if not (
            action.default is None or action.default is argparse.SUPPRESS or isinstance(action.default, bool)
        ):
            assert "default" in action.help or f"(default: {action.default})" in text, (
                f"persona-engine {' '.join(argv)} --help hides the default of {action.option_strings[0]}"
            )


@pytest.mark.parametrize("argv", _command_lines(), ids=" ".join)
def test_one_flag_convention_in_every_command(argv: list[str]) -> None:
    flags = {flag: action for action in _options(argv) for flag in action.option_strings}
    if "-k" in flags or "--k" in flags:
        assert flags.get("-k") is flags.get("--k"), f"{argv}: -k and --k must be one option"
    if "--artifact" in flags and argv[0] != "evaluate-policy":  # there the artifact is optional
        artifact = flags["--artifact"]  # report: checked by the command (its positional ARTIFACT)
        assert (
            artifact.required
            or str(artifact.default) == "artifacts/latest"
            or "artifacts/latest" in artifact.help
        )
    if "--customers" in flags:  # a count wherever it appears; lists of ids are --customer-ids
        assert flags["--customers"].type is not None and flags["--customers"].type("3") == 3


def test_report_takes_artifact_as_a_flag_like_every_other_command(tmp_path: Path) -> None:
    args = build_parser().parse_args(["report", "--artifact", str(tmp_path)])
    assert args.artifact == tmp_path


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"persona-engine {metadata.version('persona-engine')}"


def test_choices_spelt_out_for_a_fast_help_match_the_engine() -> None:
    from cli.arguments import SHOPPING_CONTEXTS
    from cli.serving_commands import EXCLUSION_CHOICES
    from engine.personas.shopping_context import CONTEXTS
    from training.batch_recommend import EXCLUSION_RULES

    assert SHOPPING_CONTEXTS == CONTEXTS
    assert tuple(EXCLUSION_RULES) == EXCLUSION_CHOICES
