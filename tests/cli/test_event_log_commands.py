"""``persona-engine archive-events``: retention by hand, with clear errors for a bad log path."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest

from cli.main import main
from engine.live.event_archive import archive_folder, read_archived_events
from engine.live.event_log import EventLog
from engine.live.events import BehaviorEvent
from training.logged_events import read_logged_events


def _five_days_read_by_training(tmp_path: Path) -> Path:
    """A log of five views, 100 to 96 days old, that a training run has read (so all may move)."""
    path = tmp_path / "events.db"
    now = dt.datetime.now(dt.UTC)
    with EventLog.open(path) as log:
        log.append(
            [BehaviorEvent(f"e{n}", "c1", "i1", "view", now - dt.timedelta(days=100 - n)) for n in range(5)]
        )
    read_logged_events(path)
    return path


def test_archive_events_moves_what_training_read_and_reports_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _five_days_read_by_training(tmp_path)
    assert main(["archive-events", "--event-log", str(path), "--older-than-days", "97.5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["moved"], report["events_in_log"], report["training_read_through"]) == (3, 2, 5)
    assert read_archived_events(archive_folder(path))["event_id"].to_list() == ["e0", "e1", "e2"]
    assert main(["archive-events", "--event-log", str(path)]) == 0
    assert "event log retention" in capsys.readouterr().out


def test_archive_events_names_a_missing_log_or_a_bad_age(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as missing:  # refused while parsing, as a flag's mistake
        main(["archive-events", "--event-log", str(tmp_path / "missing.db")])
    assert missing.value.code == 2
    assert "argument --event-log: " in (err := capsys.readouterr().err)
    assert "missing.db: no such file; a server started with --event-log writes it" in err
    EventLog.open(tmp_path / "events.db").close()
    with pytest.raises(SystemExit) as refused:  # refused while parsing, like every command's bad values
        main(["archive-events", "--event-log", str(tmp_path / "events.db"), "--older-than-days", "0"])
    assert refused.value.code == 2
    assert "--older-than-days: must be greater than 0, got 0" in capsys.readouterr().err


def test_archive_events_forgets_the_ids_archived_before_the_window_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _five_days_read_by_training(tmp_path)
    now = dt.datetime.now(dt.UTC)
    assert main(["archive-events", "--event-log", str(path), "--older-than-days", "97.5"]) == 0
    assert "the log keeps 3 ids of archived records" in capsys.readouterr().out
    with sqlite3.connect(path) as raw:  # as if archived 40 days ago
        raw.execute(
            "UPDATE archived_ids SET archived_s = ?", (int((now - dt.timedelta(days=40)).timestamp()),)
        )
    forget = [
        "archive-events",
        "--event-log",
        str(path),
        "--older-than-days",
        "97.5",
        "--forget-ids-after-days",
        "30",
    ]
    assert main([*forget, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["forgotten_ids"], report["archived_ids"]) == (3, 0)
    with pytest.raises(SystemExit) as refused:
        main([*forget[:-1], "-1"])
    assert refused.value.code == 2
    assert "--forget-ids-after-days: must be greater than 0, got -1" in capsys.readouterr().err
