"""The serving benchmark's tables, from result documents: how phases are labelled and the capacity table.

Figures here are made up; nothing is timed.
"""

from __future__ import annotations

import math

import pytest

from benchmarks.load_phases import closed_concurrency, closed_phase_key
from benchmarks.serving_report import capacity_rows, floor_rows, report_rows
from tests.benchmarks.result_documents import floor_run, result_document, server_run, with_closed_phases


def test_closed_phase_keys_name_their_concurrency_unless_it_is_the_runs_own() -> None:
    assert closed_phase_key("Personalize", 16, 16) == "Personalize|closed"
    assert closed_phase_key("Personalize", 32, 16) == "Personalize|closed@32"
    assert closed_concurrency("Personalize|closed@32") == 32
    assert closed_concurrency("Personalize|closed") is None
    assert closed_concurrency("Personalize|open@1000") is None
    assert closed_concurrency("Personalize|closed-profiled") is None


def _document() -> dict[str, object]:
    return result_document(
        [with_closed_phases(server_run(2, 1500.0), {32: 2100.0, 64: 1900.0})],
        [with_closed_phases(floor_run(2, 3500.0), {32: 3300.0, 64: 3000.0})],
    )


def test_every_closed_phase_is_labelled_with_the_concurrency_it_ran_at() -> None:
    document = _document()
    document["in_process"] = {}
    modes = [r["mode"] for r in report_rows(document)]
    assert modes == ["closed c=16", "open 300/s", "open 1000/s", "closed c=32", "closed c=64"]
    assert [r["mode"] for r in floor_rows(document)] == ["closed c=16", "closed c=32", "closed c=64"]


def test_the_capacity_table_has_a_row_per_concurrency_and_names_each_servers_best() -> None:
    rows = capacity_rows(_document())
    assert [(r[0], r[1]) for r in rows] == [("2", "16"), ("2", "32"), ("2", "64")]
    by_c = {r[1]: r for r in rows}
    assert by_c["16"][2:5] == [1500.0, 3500.0, pytest.approx(1500.0 / 3500.0)]
    assert by_c["32"][5] == 8.0  # the made-up batch: c / 4
    assert [by_c[c][-1] for c in ("16", "32", "64")] == ["floor", "Pers.", ""]


def test_no_capacity_table_without_further_concurrencies() -> None:
    assert capacity_rows(result_document([server_run(2, 1500.0)], [floor_run(2, 3500.0)])) == []


def test_a_concurrency_the_floor_did_not_run_has_no_ratio() -> None:
    document = result_document(
        [with_closed_phases(server_run(2, 1500.0), {32: 2100.0})], [floor_run(2, 3500.0)]
    )
    row = next(r for r in capacity_rows(document) if r[1] == "32")
    assert math.isnan(row[3]) and math.isnan(row[4])


def test_a_concurrency_best_for_both_servers_says_both() -> None:
    document = result_document(
        [with_closed_phases(server_run(2, 1500.0), {32: 2100.0})],
        [with_closed_phases(floor_run(2, 3000.0), {32: 3300.0})],
    )
    assert [r[-1] for r in capacity_rows(document)] == ["", "both"]
