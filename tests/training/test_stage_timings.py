"""Stage records: nesting puts a stage opened inside another among its parts, in the order they ran."""

from __future__ import annotations

import pytest

from training.stage_timings import StageTimings


def test_nested_stages_are_parts_of_the_enclosing_stage_in_order() -> None:
    timings = StageTimings()
    with timings.stage("prepare"):
        with timings.stage("load"):
            sum(range(10_000))
        with timings.stage("split"):
            pass
    with timings.stage("fit"):
        pass
    stages = timings.to_json()
    assert [s["stage"] for s in stages] == ["prepare", "fit"]
    assert [p["stage"] for p in stages[0]["parts"]] == ["load", "split"]
    assert "parts" not in stages[1]
    assert sum(p["seconds"] for p in stages[0]["parts"]) <= stages[0]["seconds"]
    assert stages[0]["peak_rss_mb"] >= stages[0]["parts"][0]["peak_rss_mb"] > 0


def test_to_json_copies_parts_so_callers_cannot_change_the_record() -> None:
    timings = StageTimings()
    with timings.stage("outer"), timings.stage("inner"):
        pass
    copy = timings.to_json()
    copy[0]["parts"][0]["stage"] = "changed"
    assert timings.to_json()[0]["parts"][0]["stage"] == "inner"


def test_a_failing_stage_leaves_no_open_parent_behind() -> None:
    timings = StageTimings()
    with pytest.raises(RuntimeError), timings.stage("outer"), timings.stage("inner"):
        raise RuntimeError("boom")
    with timings.stage("next"):
        pass
    assert [s["stage"] for s in timings.to_json()] == ["next"]


def test_a_stage_records_what_it_left_resident() -> None:
    # The level at a stage's end says what the next stages start from; a peak alone cannot tell a
    # stage that held on to its memory from one that only needed it for a moment.
    timings = StageTimings()
    with timings.stage("hold"):
        held = bytearray(64 * 1024 * 1024)
        held[::4096] = b"x" * len(held[::4096])  # touch every page so it is resident
    with timings.stage("release"):
        del held
    hold, release = timings.to_json()
    assert hold["rss_at_end_mb"] - release["rss_at_end_mb"] > 48


def test_a_stage_records_the_pages_it_faulted_in_and_its_kernel_time() -> None:
    # Touching fresh memory is kernel work (on a VM that returns free memory to its host, the largest
    # part of some stages); the record keeps it apart from the stage's own computation.
    timings = StageTimings()
    with timings.stage("touch"):
        touched = bytearray(32 * 1024 * 1024)
        touched[::4096] = b"x" * len(touched[::4096])
    with timings.stage("compute"):
        sum(range(10_000))
    touch, compute = timings.to_json()
    assert touch["minor_page_faults"] > compute["minor_page_faults"]
    assert touch["minor_page_faults"] >= 16  # 32 MB: at least 16 huge pages, or 8,192 small ones
    assert 0.0 <= touch["system_cpu_seconds"] <= touch["cpu_seconds"] + 0.01
    del touched
