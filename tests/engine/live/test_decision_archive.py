"""Retention of served decisions and outcomes: old ones move to the archive, their readers see no change.

Decisions are the log's biggest table on a busy shop (one per Personalize call that decided an offer
or a layout), so a log that kept them would grow for ever. Policy evaluation and experiment reports
read the log and the archive together; moving rows, a crash half-way and a retried outcome must all
leave what they read unchanged.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from engine.live.event_archive import (
    archive_events,
    archive_folder,
    read_outcomes,
    read_served_decisions,
    write_part,
)
from engine.live.event_log import EventLog
from engine.live.events import DecisionOutcome, OutcomeKind, ServedDecision
from training.experiment_report_job import from_event_log
from training.policy_evaluation_job import read_event_log

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
CUTOFF = NOW - dt.timedelta(days=56)
MIX = (("bargain", 0.7), ("brand", 0.3))


def served(n: int, days_ago: float) -> list[ServedDecision]:
    """Decision ``d<n>``: two offers ranked and a layout, as one Personalize call logs them."""
    moment = NOW - dt.timedelta(days=days_ago, minutes=n)

    def arm(decision_type: str, arm_id: str, propensity: float, experiment_arm: str = "") -> ServedDecision:
        return ServedDecision(
            f"d{n}",
            f"c{n % 4}",
            moment,
            "weekday",
            decision_type,
            arm_id,
            propensity,
            MIX,
            "",
            experiment_arm,
        )

    layout = "grid" if n % 2 else "list"
    return [
        arm("offer", "o1", 0.6),
        arm("offer", "o2", 0.3),
        arm("layout", layout, 0.5, "treatment" if n % 3 else "control"),
    ]


def outcomes(n: int, days_ago: float) -> list[DecisionOutcome]:
    moment = NOW - dt.timedelta(days=days_ago, minutes=n) + dt.timedelta(minutes=1)
    shown = DecisionOutcome(f"x{n}", f"d{n}", f"c{n % 4}", OutcomeKind.LAYOUT_SHOWN, moment)
    if n % 3:
        return [shown]
    converted = DecisionOutcome(
        f"y{n}", f"d{n}", f"c{n % 4}", OutcomeKind.LAYOUT_CONVERTED, moment, None, 12.5
    )
    redeemed = DecisionOutcome(f"z{n}", f"d{n}", f"c{n % 4}", OutcomeKind.OFFER_REDEEMED, moment, "o1", 4.0)
    return [shown, converted, redeemed]


def fill(path: Path, count: int = 30) -> None:
    """``count`` decisions with their outcomes, the first two thirds before the cutoff."""
    with EventLog.open(path) as log:
        for n in range(count):
            days_ago = 80 if n < 2 * count // 3 else 5
            log.log_decisions(served(n, days_ago))
            log.append([], outcomes(n, days_ago))


def everything_read(path: Path) -> tuple[list[ServedDecision], list[DecisionOutcome]]:
    with EventLog.open(path) as log:
        return read_served_decisions(log, archive_folder(path)), read_outcomes(log, archive_folder(path))


def test_old_decisions_and_outcomes_move_and_every_reader_sees_the_same(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    fill(path)
    with EventLog.open(path) as log:
        before_counts = log.counts()
        assert (log.served_decisions(), log.outcomes()) == everything_read(path)
    report_before = from_event_log(path, "layout")
    evaluation_before = read_event_log(path)
    read_before = everything_read(path)

    with EventLog.open(path) as log:
        run = archive_events(log, archive_folder(path), CUTOFF, batch=7)
        after_counts = log.counts()
    # 20 old decisions of 3 arms each; 7 of them (n % 3 == 0) with 3 outcomes, 13 with one
    assert (run.decisions_moved, run.outcomes_moved) == (60, 34)
    assert after_counts["decisions"] == before_counts["decisions"] - 60
    assert after_counts["outcomes"] == before_counts["outcomes"] - run.outcomes_moved
    assert sorted(p.name.split("-")[0] for p in run.parts) == ["decisions"] * 9 + ["outcomes"] * 5

    assert everything_read(path) == read_before
    report_after = from_event_log(path, "layout")
    assert report_after.arms == report_before.arms
    assert np.array_equal(report_after.converted, report_before.converted)
    assert np.array_equal(report_after.revenue, report_before.revenue)
    evaluation_after = read_event_log(path)
    assert evaluation_after.frame.equals(evaluation_before.frame)
    assert evaluation_after.mixes is not None and evaluation_before.mixes is not None
    assert np.array_equal(evaluation_after.mixes, evaluation_before.mixes)


def test_a_crash_between_writing_a_part_and_deleting_its_rows_repeats_nothing(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    fill(path)
    expected = everything_read(path)
    with EventLog.open(path) as log:
        rows = log.archivable_rows("decisions", CUTOFF, 10)
    # What a crash after the part's fsync and before the delete leaves: the rows in both places.
    write_part(archive_folder(path) / "decisions-000000000000001-000000000000010.parquet", rows)
    assert everything_read(path) == expected
    with EventLog.open(path) as log:
        run = archive_events(log, archive_folder(path), CUTOFF, batch=10)
    assert run.decisions_moved == 60  # the ten written before the crash again, with the rest
    assert everything_read(path) == expected


def test_an_outcome_retried_after_its_archiving_is_a_duplicate_and_read_once(tmp_path: Path) -> None:
    """The log keeps the ids it archived, so a retry after retention moved the first copy is answered
    as a duplicate and adds no row (it used to be accepted again: found by a fuzz pass)."""
    path = tmp_path / "events.db"
    fill(path)
    expected = everything_read(path)
    with EventLog.open(path) as log:
        archive_events(log, archive_folder(path), CUTOFF)
        rows = log.table_rows("outcomes").height
        retried = outcomes(0, 80)  # archived already: only archived_ids still knows these ids
        result = log.append([], retried)
        assert result.new_outcomes == () and result.duplicate_outcomes == len(retried)
        assert log.table_rows("outcomes").height == rows
    assert everything_read(path) == expected


def test_the_newest_decision_and_outcome_stay_in_the_log(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with EventLog.open(path) as log:
        for n in range(3):
            log.log_decisions(served(n, 80))
            log.append([], outcomes(n, 80))
        run = archive_events(log, archive_folder(path), CUTOFF)
        assert log.counts()["decisions"] == 1 and log.counts()["outcomes"] == 1
        assert (run.decisions_moved, run.outcomes_moved) == (8, 4)
