"""Server-side figures of a load phase, from two scrapes of the server's metrics."""

from __future__ import annotations

import pytest

from benchmarks.latency_statistics import MetricsSnapshot, server_side


def snapshot(
    calls: float,
    seconds: float,
    batches: dict[str, tuple[float, float]],
    batch_cpu: dict[str, float] | None = None,
) -> MetricsSnapshot:
    bounds = {0.001: calls / 2, 0.005: calls, float("inf"): calls}
    return MetricsSnapshot(
        buckets={"Personalize": bounds, "GetPersonaProfile": bounds},
        sums={"Personalize": seconds, "GetPersonaProfile": seconds},
        codes={"Personalize": {"OK": calls}, "GetPersonaProfile": {"OK": calls}},
        batches=batches,
        batch_cpu=batch_cpu or {},
    )


def test_a_phase_reports_how_many_calls_its_batches_held_on_average() -> None:
    before = snapshot(100, 0.2, {"Personalize": (40, 100)})
    after = snapshot(500, 1.0, {"Personalize": (140, 500)})  # 100 batches held the phase's 400 calls

    phase = server_side(before, after, "Personalize")

    assert phase["calls"] == 400 and phase["batches"] == 100
    assert phase["mean_batch_size"] == pytest.approx(4.0)
    assert phase["mean_ms"] == pytest.approx(2.0)


def test_an_rpc_that_is_never_batched_has_no_batch_figures() -> None:
    before = snapshot(100, 0.2, {"Personalize": (40, 100)})
    after = snapshot(500, 1.0, {"Personalize": (140, 500)})

    phase = server_side(before, after, "GetPersonaProfile")

    assert phase["calls"] == 400 and "batches" not in phase and "mean_batch_size" not in phase


def test_a_phase_reports_the_cpu_its_batches_took_per_call() -> None:
    before = snapshot(100, 0.2, {"Personalize": (40, 100)}, {"Personalize": 0.05})
    after = snapshot(500, 1.0, {"Personalize": (140, 500)}, {"Personalize": 0.25})  # 0.2 s over 400 calls

    assert server_side(before, after, "Personalize")["batch_cpu_ms_per_call"] == pytest.approx(0.5)


def test_a_server_without_the_batch_cpu_metric_reports_no_such_figure() -> None:
    before = snapshot(100, 0.2, {"Personalize": (40, 100)})
    after = snapshot(500, 1.0, {"Personalize": (140, 500)})

    assert "batch_cpu_ms_per_call" not in server_side(before, after, "Personalize")
