"""The live-session fold-in benchmark, run small on a real trained artifact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.live_fold_in import main
from tests.engine.small_artifact import train_small_artifact


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_artifact(tmp_path_factory.mktemp("fold-in-bench"))


def test_it_times_every_mode_against_the_mix_only_baseline_and_writes_its_results(
    artifact: Path, tmp_path: Path
) -> None:
    assert (
        main(
            [
                str(artifact),
                "--customers",
                "40",
                "--requests",
                "60",
                "--batch",
                "8",
                "--results",
                str(tmp_path),
            ]
        )
        == 0
    )
    (written,) = tmp_path.glob("live_fold_in-*.json")
    result = json.loads(written.read_text())
    for part in ("page", "batch"):
        for mode in ("fold_in", "fold_in_first_page", "mix_only"):
            figures = result[part][mode]
            assert figures["calls"] > 0 and figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"]
        for ratio in ("ratio", "ratio_first_page"):
            assert set(result[part][ratio]) == {"p50_ms", "p95_ms", "p99_ms"}
    assert 0 < result["top_k_changed_share"]["mean"] <= 1, "the sessions move some lists"
    rows = [
        line for line in (tmp_path / "live_fold_in.md").read_text().splitlines() if line.startswith("| 20")
    ]
    assert len(rows) == 1 and result["time"] in rows[0], "one history row per run"


def test_a_model_that_folds_nothing_in_is_refused_by_name(artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([str(artifact), "--model", "persona_popularity", "--results", str(tmp_path)])
    assert exit_.value.code == 2
