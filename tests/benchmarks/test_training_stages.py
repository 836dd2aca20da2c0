"""The training-cost benchmark's reading of a train run: ratio, slowest step and stage rows.

Figures here are made up; nothing is timed (performance is measured by the benchmark, never asserted).
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.training_cost import ratio_rows
from benchmarks.training_stages import cpu_overhead_ratio, dominant_stage, overhead_ratio, stage_rows


def stage(name: str, seconds: float, *parts: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {"stage": name, "seconds": seconds, "cpu_seconds": seconds, "peak_rss_mb": 100.0}
    if parts:
        record["parts"] = list(parts)
    return record


def measured(library_fit: float = 4.0) -> dict[str, Any]:
    return {
        "data": "shop",
        "size": {"customers": 1_000_000, "items": 100_000, "train_events": 9_000_000, "test_events": 10},
        "train_seconds": 10.0,
        "library_fit_seconds": library_fit,
        "engine_overhead_seconds": 10.0 - library_fit,
        "raw_library_fit_seconds": {"implicit_als": 3.0},
        "persona_inference_seconds": 2.0,
        "process_peak_rss_mb": 90.0,
        "stages": [
            stage("prepare", 5.0, stage("load", 1.0), stage("persona_inference", 3.5)),
            stage("fit_models", 4.0),
            stage("write_artifact", 1.0),
        ],
    }


def test_overhead_ratio_is_everything_but_library_fits_over_library_fits() -> None:
    assert overhead_ratio(measured()) == pytest.approx(6.0 / 4.0)
    assert overhead_ratio(measured(library_fit=0.0)) is None  # no library model configured


def test_cpu_ratio_counts_the_fit_stages_of_split_and_refit_as_fits() -> None:
    result = measured()
    result["stages"].append(stage("refit", 3.0, stage("persona_inference", 1.0), stage("fit_models", 2.0)))
    # CPU: 5 + 4 + 1 + 3 = 13 in all, of which fits 4 + 2
    assert cpu_overhead_ratio(result) == pytest.approx((13.0 - 6.0) / 6.0)
    result["stages"] = [stage("prepare", 1.0)]
    assert cpu_overhead_ratio(result) is None


def test_slowest_step_is_a_leaf_named_by_its_path() -> None:
    assert dominant_stage(measured()) == ("fit_models", 4.0)
    result = measured()
    result["stages"][0]["parts"][1]["seconds"] = 4.5
    assert dominant_stage(result) == ("prepare.persona_inference", 4.5)


def test_stage_rows_indent_parts_and_name_the_data_set_once() -> None:
    rows = stage_rows(measured())
    assert [row[1] for row in rows] == [
        "prepare",
        "  load",
        "  persona_inference",
        "fit_models",
        "write_artifact",
    ]
    assert [row[0] for row in rows] == ["shop", "", "", "", ""]
    assert rows[0][-1] == "50.0%"
    assert rows[0][-2] == "-"  # a record from before stages noted their RSS at the end
    result = measured()
    result["stages"][0]["rss_at_end_mb"] = 123.4
    assert stage_rows(result)[0][-2] == 123
    assert rows[0][4] == "-"  # nor their kernel time
    result["stages"][0]["system_cpu_seconds"] = 1.234
    assert stage_rows(result)[0][4] == 1.23


def test_ratio_rows_carry_the_ratio_and_the_peak_of_process_and_stages() -> None:
    result = {"sets": [measured()], "ratios": {"shop": {"engine_overhead_vs_library_fit": 1.5}}}
    (row,) = ratio_rows(result)
    assert row[1] == "1.0M x 100.0k x 9.0M"
    assert row[5] == 1.5
    assert row[-1] == 100  # a stage's own peak is higher than the sampled process tree's
