"""The conventions every command's arguments follow: one-line errors, defaults in ``--help``, checked values.

A bad value is refused where it is parsed, before any data or model is read, with one line naming the
flag and what it needs (``error: persona-engine recommend: argument -k/--k: must be at least 1, got 0``)
and exit status 2. The value types below say what a number may be, and which files and folders must
be there (``argument --decisions: data/demo/decision.parquet: no such file``), so the same kind of
flag is checked the same way in every command. What only a command can check (a model the artifact
lacks) it raises as ``training.flag_error.FlagError``, which ``cli.main`` prints in the same form.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

from training.flag_error import FlagError

T = TypeVar("T")

# The shopping contexts of engine.personas.shopping_context.CONTEXTS (a test keeps them equal); spelt
# out here so that building the parser does not import polars.
SHOPPING_CONTEXTS: tuple[str, ...] = ("weekday", "weekend_holiday")


class CommandLineParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line on stderr (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {self.prog}: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written, and every option's default shown unless its help already says it.

    Unlike ``ArgumentDefaultsHelpFormatter`` it leaves out defaults that say nothing (None, False).
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and default not in (None, False, argparse.SUPPRESS)
            and "default" not in text
        ):
            text += " (default: %(default)s)"
        return text


def _number(kind: Callable[[str], float], text: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {_kind_name(kind)}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _kind_name(kind: Callable[[str], float]) -> str:
    return "a whole number" if kind is int else "a number"


def at_least(low: int) -> Callable[[str], int]:
    """A whole number >= ``low`` (counts, k, seeds)."""

    def parse(text: str) -> int:
        value = int(_number(int, text))
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"whole number >= {low}"
    return parse


positive_int = at_least(1)
non_negative_int = at_least(0)


def whole_numbers_at_least(low: int) -> Callable[[str], tuple[int, ...]]:
    """One or more whole numbers >= ``low``, comma-separated (sizes to try: ``8,16,32``)."""
    each = at_least(low)

    def parse(text: str) -> tuple[int, ...]:
        parts = [part.strip() for part in text.split(",")]
        if not all(parts):
            raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}")
        return tuple(each(part) for part in parts)

    parse.__name__ = f"whole numbers >= {low}"
    return parse


def positive_float(text: str) -> float:
    """A number > 0 (seconds, half-lives)."""
    value = _number(float, text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def share(text: str) -> float:
    """A share of a population, 0 to 1 inclusive."""
    value = _number(float, text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def open_unit(text: str) -> float:
    """A probability strictly between 0 and 1 (confidence levels)."""
    value = _number(float, text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {text}")
    return value


def positive_share(text: str) -> float:
    """A share that must leave something out or keep something in: above 0, at most 1 (thresholds)."""
    value = _number(float, text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, got {text}")
    return value


def iso_moment(text: str) -> dt.datetime:
    """An ISO date or time (2026-07-01, 2026-07-01T12:00, ...+02:00); without a zone, UTC."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def existing_file(text: str) -> Path:
    """A file that must be there (a config, a decisions table, an event log): refused at parse time,
    so a typo is named as the flag's, not as broken data found half-way through the work."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder, not a file")
    return path


def event_log_file(text: str) -> Path:
    """A server's SQLite event log, which must be there; the server writes it (serve --event-log)."""
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file; a server started with --event-log writes it")
    return Path(text)


def existing_folder(text: str) -> Path:
    """A folder that must be there (a shop's data, a truth/ folder)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such folder")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a file, not a folder")
    return path


def existing_path(text: str) -> Path:
    """A file or a folder that must be there (an export given as one file or a folder of parts)."""
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder")
    return Path(text)


def data_location(text: str) -> str:
    """A data folder that must be there, or a URI (hdfs://, s3a://) that the Spark engine reads."""
    if "://" not in text:
        existing_folder(text)
    return text


def catalog_spec(text: str) -> str:
    """A persona catalog: a bundled one's name (default, movielens, ...) or a TOML file that must be
    there (engine.personas.catalog.load_catalog tells them apart the same way)."""
    from importlib import resources

    if text.endswith(".toml") or "/" in text:
        existing_file(text)
        return text
    bundled = sorted(
        entry.name.removesuffix(".toml")
        for entry in resources.files("engine.catalogs").iterdir()
        if entry.name.endswith(".toml")
    )
    if text not in bundled:
        raise argparse.ArgumentTypeError(
            f"no bundled persona catalog named {text!r}; bundled: {', '.join(bundled)} (or give a .toml file)"
        )
    return text


DEFAULT_ARTIFACT = "artifacts/latest"


def artifact_folder(text: str) -> Path:
    """An artifact: ROOT, ROOT/latest or ROOT/<version>, which must be there (what is in it is checked
    when it is opened); the default's absence means nothing was trained yet, and says how to."""
    if not Path(text).exists():
        hint = " (none trained yet? 'persona-engine train --config CONFIG' writes one)"
        raise argparse.ArgumentTypeError(
            f"{text}: no such artifact folder{hint if text == DEFAULT_ARTIFACT else ''}"
        )
    return Path(text)


def checked_later(flag: str, parse: Callable[[str], T], text: str) -> T:
    """``parse(text)`` for a flag a command checks after parsing (to check something else first),
    its refusal raised as a FlagError: printed as the parser would have printed it."""
    try:
        return parse(text)
    except argparse.ArgumentTypeError as error:
        raise FlagError(flag, str(error)) from None


def non_empty(text: str) -> str:
    """An identifier that must not be blank (a customer id)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def non_negative_float(text: str) -> float:
    """A number >= 0 (amounts of evidence)."""
    value = _number(float, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


_SPARK_MASTER = re.compile(r"^(local(\[(\*|[1-9]\d*)(,[1-9]\d*)?\])?|yarn|(spark|k8s|mesos)://\S+)$")


def spark_master(text: str) -> str:
    """A Spark master URL: local, local[N], local[*], spark://host:port, yarn or k8s://https://host."""
    if not _SPARK_MASTER.match(text):
        raise argparse.ArgumentTypeError(
            "expected a Spark master URL (local[2], spark://host:7077, yarn, k8s://https://host), "
            f"got {text!r}"
        )
    return text
