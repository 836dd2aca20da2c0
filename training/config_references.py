"""The training config's keys that name something outside the file, checked before any data is read.

``[data] path`` (the data folder), ``[data] event_log`` (a SQLite event log), ``[personas] catalog`` (a
bundled catalog name or a .toml file), ``[split] test_events`` (the predefined split's file, relative to
the data folder) and ``[output] root`` (where artifacts go). Without these checks each was found only when
a job reached it, the artifact root after the whole training run, and the message named the missing
thing but not the config file or the key that named it ("no bundled persona catalog named 'nosuch'"), so
a user with several configs had to guess which one was wrong and where.

A problem is reported as ``CONFIG, [section] key: problem``, like every other config error. When a
command-line flag has replaced the config's value (``train --data``, ``compare --catalog``, ``train
--output``) the config file is not to blame: the data folder and catalog are then left to the code that
reads them, whose messages name the path or name, and the artifact root's problem names the folder alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from engine.errors import PersonaEngineError
from engine.live.event_store import is_shared_log_location
from engine.personas.catalog import load_catalog
from training.config import ConfigError, TrainConfig


def check_references(config: TrainConfig, *, data_path: Path | None = None) -> None:
    """What ``prepare`` reads besides the tables: the data folder (unless ``data_path`` replaces it), the
    event log, the persona catalog and, for ``[split] method = "predefined"``, the test events file."""
    data_dir = Path(data_path or config.data.path)
    if data_path is None or Path(data_path) == Path(config.data.path):
        check_data_folder(config)
    location = config.data.event_log
    if location and not is_shared_log_location(location) and not Path(location).is_file():
        _refuse(
            config,
            "[data] event_log",
            location,
            f"event log {location}: no such file (the server creates it with --event-log)",
        )
    with naming_the_key(config, "[personas] catalog", config.personas.catalog):
        load_catalog(config.personas.catalog)
    check_split_file(config, data_dir)


@contextmanager
def naming_the_key(config: TrainConfig, key: str, value: str) -> Iterator[None]:
    """A user error raised while reading what ``key`` names (a catalog that is not valid TOML, a file
    that is not an event log) is re-raised naming the config file and the key, when the value is the
    file's; its own message, which names the catalog or log, follows."""
    try:
        yield
    except PersonaEngineError as error:
        if not config.from_source(key, value):
            raise
        raise ConfigError(f"{config.source}, {key}: {error}") from None


def check_data_folder(config: TrainConfig) -> None:
    """``[data] path`` is a folder (a URL, read by Spark, is left to Spark)."""
    path = config.data.path
    if "://" in path or not config.from_source("[data] path", path):
        return
    if not Path(path).exists():
        _refuse(config, "[data] path", path, f"data folder {path}: no such folder")
    if not Path(path).is_dir():
        _refuse(config, "[data] path", path, f"data folder {path}: is a file, not a folder")


def check_split_file(config: TrainConfig, data_dir: Path) -> None:
    """For a predefined split, ``[split] test_events`` is a file in the data folder."""
    if config.split.method != "predefined":
        return
    path = data_dir / config.split.test_events
    if not path.is_file():
        _refuse(
            config,
            "[split] test_events",
            config.split.test_events,
            f"{path}: no such file (the predefined split's test events, relative to the data folder; "
            f'[split] method = "predefined")',
        )


def check_artifact_root(config: TrainConfig) -> None:
    """``[output] root`` is a folder, or is made one now: a file there (or in its path) or a parent that
    cannot be written used to stop the run only after training, when the artifact was written."""
    root = Path(config.output.root)
    existing = next((p for p in (root, *root.parents) if p.exists()), Path.cwd())
    where = "" if existing == root else f"{existing}, where it would be made, "
    if not existing.is_dir():
        problem = f"artifact folder {root}: {where}is a file, not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"artifact folder {root}: {where}is not writable"
    else:
        try:  # made now, as the artifact writer would at the end (some places refuse even root)
            root.mkdir(parents=True, exist_ok=True)
            return
        except OSError as error:
            problem = f"artifact folder {root}: cannot be made ({(error.strerror or str(error)).lower()})"
    _refuse(config, "[output] root", config.output.root, problem)


def _refuse(config: TrainConfig, key: str, value: str, problem: str) -> NoReturn:
    """Raise ``problem``, prefixed with the config file and ``key`` when the value is the file's."""
    if config.from_source(key, value):
        raise ConfigError(f"{config.source}, {key}: {problem}")
    raise ConfigError(problem)
