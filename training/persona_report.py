"""Persona-inference accuracy against planted ground truth, when the data set carries one.

Only generated shops know each customer's true mix; for them the job reports how close inference
came (mean total-variation distance, dominant-persona accuracy), overall and per context. A catalog
whose personas were not planted (a proposed one, say) has no truth to compare with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from engine.evaluation.persona_accuracy import compare_with_planted
from training.prepared_data import PreparedData

TRUTH_FILE = "customer_mixes.parquet"


def persona_accuracy(prepared: PreparedData, truth_dir: Path) -> dict[str, Any] | None:
    path = truth_dir / TRUTH_FILE
    if not path.is_file():
        return None
    truth = pl.read_parquet(path)
    if not all(any(c.endswith(f"__{p}") for c in truth.columns) for p in prepared.mixes.persona_ids):
        return None  # a catalog other than the planted personas (e.g. a proposed one): nothing to compare
    result = compare_with_planted(prepared.mixes, truth, prepared.split.train_events)
    # A truth of another shop (ids renamed, a different generated shop) names none of these customers:
    # there is nothing to report, where the means of nothing would be NaN.
    return result if result["n_compared"] else None
