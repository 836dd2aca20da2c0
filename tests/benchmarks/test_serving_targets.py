"""The serving benchmark's judgement of a result: ratios, verdicts and target rows, from result documents.

Figures here are made up; nothing is timed (performance is measured by the benchmark, never asserted).
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.floor_phase import skipped_floor
from benchmarks.mixed_workload import paired_open_p99
from benchmarks.serving_targets import (
    CALLS,
    MS,
    SHARE,
    TIMES,
    Unit,
    closed_capacity,
    latency_verdict,
    ratios,
    target_rows,
    targets_section,
    targets_title,
    verdict,
    verdict_summary,
)
from tests.benchmarks.result_documents import (
    floor_run,
    phase,
    result_document,
    server_run,
    with_closed_phases,
)


def test_ratios_carry_the_exact_keys_per_worker_count_and_the_largest_count_at_the_top() -> None:
    result = result_document(
        [server_run(1, calls_per_s=900.0, cpu_ms=1.2), server_run(2, calls_per_s=1500.0, cpu_ms=1.0)],
        [floor_run(1, 1800.0), floor_run(2, 2500.0)],
        servicer_mean_ms=0.8,
    )
    out = ratios(result)
    assert out["workers"] == 2
    assert out["personalize_vs_floor_throughput"] == pytest.approx(1500.0 / 2500.0)
    assert out["server_cpu_vs_servicer"] == pytest.approx(1.0 / 0.8)
    assert out["personalize_share_within_5ms_at_300"] == pytest.approx(0.995)
    assert set(out["by_workers"]) == {"1", "2"}
    assert out["by_workers"]["1"]["personalize_vs_floor_throughput"] == pytest.approx(0.5)
    assert out["by_workers"]["1"]["server_cpu_vs_servicer"] == pytest.approx(1.5)
    assert {k: v for k, v in out.items() if k not in ("workers", "by_workers")} == out["by_workers"]["2"]


def test_a_skipped_floor_gives_null_ratios_against_it_and_the_rest_still_computed() -> None:
    result = result_document([server_run(2, 1500.0)], [skipped_floor(2, "no flag")])
    out = ratios(result)
    assert out["personalize_vs_floor_throughput"] is None
    assert out["server_cpu_vs_servicer"] is not None
    assert out["mixed_personalize_p99_vs_read_only"] is None  # no mixed workload in this run


def test_ratios_of_a_run_without_servers_are_all_null() -> None:
    out = ratios(result_document([], []))
    assert out["workers"] is None and out["by_workers"] == {}
    assert out["personalize_vs_floor_throughput"] is None


def test_the_mixed_ratio_compares_open_loop_p99s_of_the_same_worker_count() -> None:
    result = result_document([server_run(2, 1500.0)], [floor_run(2, 2500.0)])
    result["mixed_runs"] = [
        {"workers": 2, "phases": {"open": {"Personalize": phase(rate=300.0, p99_ms=9.0)}}}
    ]
    assert ratios(result)["mixed_personalize_p99_vs_read_only"] == pytest.approx(9.0 / 6.0)
    # with alternating rounds on the mixed workload's server, their pooled p99s are compared instead
    result["mixed_runs"][0]["open_paired"] = paired_open_p99(
        [([1.0] * 99 + [4.0] * 2, [1.0] * 99 + [5.0] * 2), ([2.0] * 100, [2.0] * 100)]
    )
    paired = result["mixed_runs"][0]["open_paired"]
    assert paired["rounds"] == 2 and paired["read_only_calls"] == paired["mixed_calls"] == 201
    assert paired["read_only_p99_ms"] == pytest.approx(
        np.percentile([1.0] * 99 + [4.0] * 2 + [2.0] * 100, 99)
    )
    assert ratios(result)["mixed_personalize_p99_vs_read_only"] == pytest.approx(
        paired["mixed_p99_ms"] / paired["read_only_p99_ms"]
    )
    assert paired["round_ratios"][1] == pytest.approx(1.0) and paired["round_ratios"][0] > 1.0


@pytest.mark.parametrize(
    ("measured", "bound", "at_least", "unit", "expected"),
    [
        (2100.0, 2000.0, True, CALLS, (True, "met")),
        (1850.0, 2000.0, True, CALLS, (False, "missed by 150 calls/s (8% short)")),
        (0.45, 0.3, False, MS, (False, "missed by 0.15 ms (50% over)")),
        (0.52, 0.60, True, SHARE, (False, "missed by 8.0 points (13% short)")),
        (1.3, 1.3, False, TIMES, (True, "met")),
        (None, 1.3, False, TIMES, (None, "not measured: why")),
        (float("nan"), 1.3, False, TIMES, (None, "not measured: why")),
    ],
)
def test_verdicts_say_met_or_by_how_much_they_missed(
    measured: float | None, bound: float, at_least: bool, unit: Unit, expected: tuple[bool | None, str]
) -> None:
    assert verdict(measured, bound, at_least, unit, "why") == expected


def test_a_latency_target_is_judged_on_the_exact_share_within_its_bound() -> None:
    within = phase(p99_ms=9.0, share_within_ms={"10": 0.993})
    assert latency_verdict(within, 10.0)[1:] == (True, "met")
    late = phase(p99_ms=12.5, share_within_ms={"10": 0.97})
    assert latency_verdict(late, 10.0) == (12.5, False, "missed by 2.50 ms (97.0% within 10 ms)")
    # Successful calls all in time, but 2% failed: failures count as late.
    failing = phase(p99_ms=8.0, share_within_ms={"10": 0.98}, errors=20)
    assert latency_verdict(failing, 10.0)[1:] == (False, "missed: 2.0% of calls failed or later than 10 ms")


def test_a_no_errors_target_misses_on_a_single_failed_call() -> None:
    one_failed = phase(p99_ms=20.0, share_within_ms={"25": 0.999}, errors=1)
    assert latency_verdict(one_failed, 25.0, no_errors=True)[1:] == (False, "missed; 1 failed or dropped")
    dropped = phase(p99_ms=30.0, share_within_ms={"25": 0.9}, dropped=3)
    assert latency_verdict(dropped, 25.0, no_errors=True)[2].endswith("; 3 failed or dropped")


def test_server_side_latency_uses_the_histograms_share_within_5_ms() -> None:
    assert latency_verdict(phase(server_p99_ms=4.9, server_within_5ms=0.99), 5.0, server=True)[1] is True
    assert latency_verdict(phase(server_p99_ms=6.0, server_within_5ms=0.95), 5.0, server=True)[1] is False
    assert latency_verdict(None, 5.0, server=True, why_missing="no phase") == (
        None,
        None,
        "not measured: no phase",
    )


def test_target_rows_judge_the_two_worker_run_and_cover_every_target() -> None:
    result = result_document(
        [server_run(1, 900.0), server_run(2, 2100.0, cpu_ms=1.0)],
        [floor_run(1, 1800.0), floor_run(2, 3000.0)],
        servicer_mean_ms=0.8,
    )
    rows = {r.target: r for r in target_rows(result)}
    assert {r.workers for r in rows.values()} == {"-", 2}
    assert rows["Personalize calls/s, closed c=16"].met is True
    assert rows["Personalize / gRPC floor calls/s"].met is True  # 2100 / 3000 = 70%
    assert rows["engine Personalize p50, in-process"].met is True
    assert rows["server CPU per call / servicer mean"].met is True  # 1.0 / 0.8 = 1.25
    assert rows["end-to-end p99 + no errors, open 1,000/s"].met is True
    assert rows["mixed 10% writes: Personalize p99 / alone"].met is None
    assert verdict_summary(list(rows.values())) == "7 met, 1 not measured"


def test_target_rows_of_a_skipped_floor_are_not_measured_and_say_where_the_reason_is() -> None:
    result = result_document([server_run(2, 2100.0)], [skipped_floor(2, "no flag")])
    row = next(r for r in target_rows(result) if r.target.startswith("Personalize / gRPC floor"))
    assert (row.measured, row.met) == (None, None)
    assert row.verdict == "not measured: gRPC floor skipped (the floor section says why)"
    assert row.cells()[2] == "-"


def test_targets_are_judged_on_the_largest_worker_count_when_two_were_not_run() -> None:
    result = result_document([server_run(1, 900.0), server_run(4, 2100.0)], [])
    assert targets_section(result)["judged_workers"] == 4
    assert "this run: 1,000,000 x 100,000, 4 worker(s); judged anyway" in targets_title(result)


def test_the_targets_section_is_json_with_a_verdict_per_row() -> None:
    section = targets_section(result_document([server_run(2, 1500.0)], [floor_run(2, 2000.0)]))
    assert section["set_for"] == {"customers": 1_000_000, "items": 100_000, "workers": 2}
    throughput = next(r for r in section["rows"] if r["target"].startswith("Personalize calls/s"))
    assert throughput == {
        "target": "Personalize calls/s, closed c=16",
        "workers": 2,
        "measured": 1500.0,
        "bound": ">= 2,000 calls/s",
        "met": False,
        "verdict": "missed by 500 calls/s (25% short)",
    }


def _capacity_document() -> dict[str, object]:
    """2 workers: Personalize peaks at c=32, the floor at its base c=16."""
    return result_document(
        [with_closed_phases(server_run(2, 1500.0), {32: 2100.0, 64: 1900.0})],
        [with_closed_phases(floor_run(2, 3500.0), {32: 3300.0, 64: 3000.0})],
    )


def test_capacity_compares_each_servers_best_concurrency_and_leaves_the_fixed_concurrency_ratio_alone() -> (
    None
):
    out = ratios(_capacity_document())
    assert out["personalize_vs_floor_capacity"] == pytest.approx(2100.0 / 3500.0)
    assert out["personalize_vs_floor_throughput"] == pytest.approx(1500.0 / 3500.0)
    best = closed_capacity(_capacity_document(), _capacity_document()["server_runs"][0], "Personalize")
    assert best is not None and (best.calls_per_s, best.concurrency, best.tried) == (2100.0, 32, (16, 32, 64))


def test_a_closed_phase_with_failed_calls_is_not_capacity() -> None:
    result = result_document([with_closed_phases(server_run(2, 1500.0), {32: 2100.0}, errors={32: 3})], [])
    best = closed_capacity(result, result["server_runs"][0], "Personalize")
    assert best is not None and (best.calls_per_s, best.concurrency) == (1500.0, 16)


def test_capacity_needs_more_than_one_concurrency_on_both_servers() -> None:
    one_each = result_document([server_run(2, 1500.0)], [floor_run(2, 3500.0)])
    assert ratios(one_each)["personalize_vs_floor_capacity"] is None
    floor_at_one = result_document(
        [with_closed_phases(server_run(2, 1500.0), {32: 2100.0})], [floor_run(2, 3500.0)]
    )
    assert ratios(floor_at_one)["personalize_vs_floor_capacity"] is None
    rows = {r.target: r for r in target_rows(floor_at_one)}
    capacity = rows["Personalize / gRPC floor capacity (each at its best c)"]
    assert (capacity.met, capacity.verdict) == (
        None,
        "not measured: the floor did not run the same concurrencies",
    )


def test_capacity_targets_are_judged_beside_the_fixed_concurrency_ones() -> None:
    rows = {r.target: r for r in target_rows(_capacity_document())}
    assert rows["Personalize calls/s, closed c=16"].met is False  # 1500
    assert rows["Personalize / gRPC floor calls/s"].met is False  # 43%
    best = rows["Personalize capacity: best closed c of 16, 32, 64 (c=32)"]
    assert (best.measured, best.met) == (2100.0, True)
    share = rows["Personalize / gRPC floor capacity (each at its best c)"]
    assert share.measured == pytest.approx(0.6) and share.met is True
