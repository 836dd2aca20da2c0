"""Every command, given bad arguments, exits 2 with one clear line on stderr and no traceback.

The cases below name each command the parser has (a new command without cases fails
``test_every_command_has_bad_argument_cases``); they run against a small real artifact and shop, so
values that only turn out bad once the artifact is read (an unknown model, an unknown context) are
covered too, not only what argparse can see.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from cli.main import main
from tests.cli.test_help import COMMANDS
from tests.engine.small_artifact import train_small_artifact

# {artifact}, {shop}, {config}, {unreachable_log_config}, {tmp} and {file} (an ordinary file, to put a
# folder under) are filled in.
A = ["--artifact", "{artifact}"]
BAD_ARGUMENTS: dict[str, list[list[str]]] = {
    "generate": [
        ["--out", "{tmp}/g", "--customers", "0"],
        ["--out", "{tmp}/g", "--items", "-3"],
        ["--out", "{tmp}/g", "--events", "many"],
        ["--out", "{tmp}/g", "--drift-share", "1.5"],
        ["--out", "{tmp}/g", "--hidden-segment-share", "-0.1"],
        ["--out", "{tmp}/g", "--seed", "-1"],
        ["--out", "{tmp}/g", "--format", "xlsx"],
        ["--out", "{file}/shop"],
    ],
    "train": [
        ["--config", "{tmp}/missing.toml"],
        ["--config", "{config}", "--data", "{tmp}/no-such-data"],
        ["--config", "{unreachable_log_config}"],  # [data] event_log names a Redis that does not answer
        ["--config", "{config}", "--engine", "flink"],
        ["--config", "{config}", "--engine", "spark", "--master", "localhost"],
        ["--config", "{config}", "--master", "local[2]"],
    ],
    "evaluate": [[*A, "--data", "{tmp}/no-such-data"], ["--artifact", "{tmp}/no-such-artifact"]],
    "recommend": [
        [*A, "--customer", "c0042", "--model", "foo"],
        [*A, "--customer", "c0042", "--context", "sunday"],
        [*A, "--customer", "c0042", "-k", "0"],
        [*A, "--customer", "c0042", "-k", "ten"],
        [*A, "--customer", "c0042", "--mix", "bargain_hunter"],
        [*A, "--customer", "c0042", "--mix", "bargain_hunter=-1"],
        [*A, "--customer", "c0042", "--mix", "nobody=1"],
        [*A, "--customer", "c0042", "--exclude", "everything"],
        [*A, "--customer", "c0042", "--steering", "0.5"],
        [*A, "--customer", ""],
        ["--artifact", "{tmp}/no-such-artifact", "--customer", "c0042"],
    ],
    "personas": [["--catalog", "no_such_catalog"], ["--catalog", "{tmp}/missing.toml"]],
    "discover": [["--data", "{tmp}/no-such-data"], ["--data", "{shop}", "--min-share", "2"]],
    "summary": [[*A, "--customers", "-1"], ["--artifact", "{tmp}/no-such-artifact"]],
    "report": [
        [*A, "--out", "{tmp}/report.txt"],
        ["--artifact", "{tmp}/no-such-artifact", "--out", "{tmp}/r.html"],
        [*A, "--out", "{file}/r.html"],
    ],
    "adapt": [
        ["transactions", "--mapping", "{tmp}/none.toml", "--source", "{tmp}/x.csv", "--out", "{tmp}/o"],
        ["movielens", "--source", "{tmp}/no-such-folder", "--out", "{tmp}/o"],
        ["movielens", "--source", "{tmp}", "--out", "{tmp}/o", "--positive-threshold", "9"],
        ["nonsense"],
    ],
    "batch-recommend": [
        [*A, "--out", "{tmp}/b.parquet", "-k", "0"],
        [*A, "--out", "{tmp}/b.parquet", "--chunk", "0"],
        [*A, "--out", "{tmp}/b.csv"],
        [*A, "--out", "{tmp}/b.parquet", "--customer-ids", "{tmp}/none.csv"],
        [*A, "--out", "{tmp}/b.parquet", "--model", "foo"],
        [*A, "--out", "{tmp}/b.parquet", "--context", "sunday"],
        [*A, "--out", "{file}/b.parquet"],
    ],
    "segments": [
        [*A, "--out", "{tmp}/s.csv", "--threshold", "0"],
        [*A, "--out", "{tmp}/s.txt"],
        ["--artifact", "{tmp}/no-such-artifact", "--out", "{tmp}/s.csv"],
    ],
    "compare": [["--config", "{tmp}/missing.toml"], ["--config", "{config}", "--data", "{tmp}/none"]],
    "tune": [
        ["--config", "{config}", "--budget-seconds", "0"],
        ["--config", "{config}", "--budget-seconds", "10", "--models", "foo"],
        ["--config", "{tmp}/missing.toml", "--budget-seconds", "10"],
    ],
    "evaluate-policy": [
        ["--decisions", "{shop}/decisions.parquet", "--policy", "nonsense"],
        ["--decisions", "{shop}/decisions.parquet", "--policy", "greedy", "--level", "2"],
        ["--decisions", "{shop}/decisions.parquet", "--policy", "uniform", "--folds", "1"],
        ["--decisions", "{shop}/decisions.parquet", "--policy", "uniform", "--since", "yesterday"],
        ["--decisions", "{tmp}/none.parquet", "--policy", "uniform"],
    ],
    "experiment-report": [
        ["--decisions", "{tmp}/none.parquet"],
        ["--decisions", "{shop}/decisions.parquet", "--level", "0"],
        ["--decisions", "{shop}/decisions.parquet", "--resamples", "5"],
        ["--decisions", "{shop}/decisions.parquet", "--experiment", "{tmp}/none.toml"],
        ["--decisions", "{shop}/decisions.parquet", "--experiment", "{config}"],
    ],
    "archive-events": [
        ["--event-log", "{tmp}/no-such.sqlite"],
        ["--event-log", "{file}", "--older-than-days", "0"],
        ["--event-log", "{file}", "--older-than-days", "soon"],
    ],
    "drift": [
        [*A, "--threshold", "-1"],
        [*A, "--limit", "-1"],
        [*A, "--baseline-lag-days", "0"],
        [*A, "--target-false-alarm", "1"],
        ["--artifact", "{tmp}/no-such-artifact"],
    ],
    "serve": [
        ["--artifact", "{tmp}/no-such-artifact"],
        [*A, "--model", "foo"],
        [*A, "--workers", "0"],
        [*A, "--max-connection-age", "-1"],
        [*A, "--event-log", "redis://127.0.0.1:1/0"],  # a shared log needs shared live state
        [*A, "--state", "redis://127.0.0.1:1/0", "--event-log", "redis://127.0.0.1:1/0"],  # unreachable
        [*A, "--state", "redis://127.0.0.1:1/0", "--event-log", "redis://127.0.0.1:1/0?stream="],
    ],
}
STAGE_LINE = re.compile(r"^[a-z-]+: [^:]*\(\d+\.\d s\)$")
SUBPROCESS_ONLY = {"serve"}  # a bad argument that slipped through would start a server: run it with a timeout


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("bad-arguments")
    artifact = train_small_artifact(folder)
    config = folder / "train.toml"
    config.write_text(f'[data]\npath = "{folder / "shop"}"\n[models.popularity]\n', encoding="utf-8")
    unreachable_log = folder / "unreachable-log.toml"
    unreachable_log.write_text(
        f'[data]\npath = "{folder / "shop"}"\nevent_log = "redis://127.0.0.1:1/0"\n[models.popularity]\n',
        encoding="utf-8",
    )
    (folder / "a-file").write_text("not a folder\n", encoding="utf-8")
    return {
        "artifact": str(artifact),
        "shop": str(folder / "shop"),
        "config": str(config),
        "unreachable_log_config": str(unreachable_log),
        "tmp": str(folder / "scratch"),
        "file": str(folder / "a-file"),
    }


def _cases() -> list[tuple[str, list[str]]]:
    cases = [(command, argv) for command, lists in BAD_ARGUMENTS.items() for argv in lists]
    cases += [(command, ["--no-such-flag"]) for command in BAD_ARGUMENTS]
    return cases


def test_every_command_has_bad_argument_cases() -> None:
    assert set(BAD_ARGUMENTS) == COMMANDS


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | str | None, str]:
    if argv[0] in SUBPROCESS_ONLY:
        done = subprocess.run(
            [sys.executable, "-m", "cli", *argv], capture_output=True, text=True, timeout=120, check=False
        )
        return done.returncode, done.stderr
    capsys.readouterr()
    try:
        code: int | str | None = main(argv)
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "argv"), _cases(), ids=lambda v: v if isinstance(v, str) else " ".join(v)
)
def test_a_bad_argument_exits_2_with_one_clear_line(
    command: str, argv: list[str], places: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    filled = [command, *(part.format(**places) for part in argv)]
    code, err = _run(filled, capsys)
    # progress lines of the work done before the mistake showed ("evaluate: verifying the artifact (0.0 s)")
    lines = [line for line in err.splitlines() if line.strip() and not STAGE_LINE.match(line)]
    assert code == 2, f"persona-engine {' '.join(filled)} exited {code}: {err}"
    assert "Traceback" not in err
    assert len(lines) == 1, err
    # serve reports through its own log ("error: persona-engine serve: ..." or a log line at ERROR)
    assert lines[0].startswith("error: ") if command not in SUBPROCESS_ONLY else "error" in lines[0].lower()


# A mistake in one flag's value reads one way, whether the parser, the command or the job found it:
# argparse's form, naming the command and the flag (a missing file named by a flag is such a mistake,
# not broken data).
FLAG_MISTAKES: list[tuple[list[str], str, str]] = [
    (["segments", *A, "--out", "{tmp}/s.csv", "--threshold", "0"], "--threshold", "above 0"),
    (["segments", *A, "--out", "{tmp}/s.txt"], "--out", "s.txt: write segments to a .csv or .parquet"),
    (["report", *A, "--out", "{tmp}/report.txt"], "--out", "report.txt: the report is HTML"),
    # Inside the version folder it would break the artifact for every other command (walkthrough).
    (["report", *A, "--out", "{artifact}/report.html"], "--out", "report.html: inside the artifact version"),
    (["report", *A, "--out", "{file}/report.html"], "--out", "report.html: cannot write there"),
    # A hand-written catalog was replaced without a word, the --catalog read among them (walkthrough).
    (
        ["discover", "--data", "{shop}", "--catalog", "{file}", "--write-catalog", "{file}"],
        "--write-catalog",
        "{file} already exists (it is the --catalog read): name a new file, or pass --overwrite",
    ),
    (["recommend", *A, "--customer", "c0042", "--model", "foo"], "--model", "foo: artifact"),
    (["recommend", *A, "--customer", "c0042", "--mix", "nobody=1"], "--mix", "nobody"),
    (
        ["tune", "--config", "{config}", "--budget-seconds", "10", "--models", "foo"],
        "--models",
        "cannot tune foo",
    ),
    (["train", "--config", "{config}", "--master", "local[2]"], "--master", "needs --engine spark"),
    (
        ["discover", "--data", "{shop}", "--catalog", "nope"],
        "--catalog",
        "no bundled persona catalog named 'nope'",
    ),
    (
        ["discover", "--data", "{shop}", "--write-catalog", "{tmp}/c.toml", "--held-out-days", "0"],
        "--held-out-days",
        "at least 1",
    ),
    (
        [
            "evaluate-policy",
            "--decisions",
            "{shop}/decisions.parquet",
            "--policy",
            "uniform",
            "--since",
            "soon",
        ],
        "--since",
        "not an ISO date",
    ),
    (
        ["evaluate-policy", "--decisions", "{tmp}/decision.parquet", "--policy", "greedy"],
        "--decisions",
        "{tmp}/decision.parquet: no such file",
    ),
    (
        ["evaluate-policy", "--event-log", "{tmp}/events.db", "--policy", "greedy"],
        "--event-log",
        "{tmp}/events.db: no such file",
    ),
    (
        [
            "evaluate-policy",
            "--decisions",
            "{shop}/decisions.parquet",
            "--policy",
            "uniform",
            "--truth",
            "{tmp}/truth",
        ],
        "--truth",
        "{tmp}/truth: no such folder",
    ),
    (
        [
            "evaluate-policy",
            "--decisions",
            "{shop}/decisions.parquet",
            "--policy",
            "uniform",
            "--arm-table",
            "{tmp}/o.parquet",
        ],
        "--arm-table",
        "{tmp}/o.parquet: no such file",
    ),
    (
        [
            "evaluate-policy",
            "--decisions",
            "{shop}/decisions.parquet",
            "--policy",
            "uniform",
            "--artifact",
            "{tmp}/a",
        ],
        "--artifact",
        "{tmp}/a: no such artifact folder",
    ),
    (
        ["experiment-report", "--decisions", "{shop}/decisions.parquet", "--experiment", "{tmp}/x.toml"],
        "--experiment",
        "{tmp}/x.toml: no such file",
    ),
    (["archive-events", "--event-log", "{tmp}/events.db"], "--event-log", "{tmp}/events.db: no such file"),
    (["evaluate", "--artifact", "{tmp}/a"], "--artifact", "{tmp}/a: no such artifact folder"),
    (
        ["report", "--artifact", "{tmp}/a", "--out", "{tmp}/r.html"],
        "--artifact",
        "{tmp}/a: no such artifact folder",
    ),
    (
        ["batch-recommend", *A, "--out", "{tmp}/b.parquet", "--customer-ids", "{tmp}/ids.csv"],
        "--customer-ids",
        "{tmp}/ids.csv: no such file",
    ),
    (["drift", *A, "--data", "{tmp}/shop"], "--data", "{tmp}/shop: no such folder"),
    (["train", "--config", "{tmp}/train.toml"], "--config", "{tmp}/train.toml: no such file"),
    (
        ["tune", "--config", "{config}", "--data", "{file}", "--budget-seconds", "1"],
        "--data",
        "{file}: is a file, not a folder",
    ),
    (
        ["adapt", "transactions", "--mapping", "{config}", "--source", "{tmp}/x.csv", "--out", "{tmp}/o"],
        "--source",
        "{tmp}/x.csv: no such file",
    ),
    (["personas", "--catalog", "{tmp}/mine.toml"], "--catalog", "{tmp}/mine.toml: no such file"),
]


@pytest.mark.parametrize(
    ("argv", "flag", "problem"), FLAG_MISTAKES, ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
def test_a_flags_mistake_reads_as_the_parser_prints_it(
    argv: list[str], flag: str, problem: str, places: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    filled = [part.format(**places) for part in argv]
    command = " ".join(filled[:2]) if filled[0] == "adapt" else filled[0]
    code, err = _run(filled, capsys)
    assert code == 2
    line = " ".join(err.split())
    prefix = f"error: persona-engine {command}: argument {flag}: "
    assert line.startswith(prefix) and line.endswith(f"(see 'persona-engine {command} --help')"), err
    assert problem.format(**places) in line
