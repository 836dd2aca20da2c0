"""``persona-engine drift``: which customers' recent behaviour has left their long-term persona mix.

Replays the event history of a shop (by default the data the artifact was trained on) through the
drift rule of ``engine.personas.drift``, with the artifact's persona model and long-term mixes, and
lists the customers drifting at the end of it. When the data has planted truth (the synthetic shop's
``truth/customer_mixes.parquet`` with ``drift_date``), the report also scores the detection:
precision, recall and the median delay from the planted date to the flagged start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from engine.artifact import ArtifactError
from engine.artifact.contents import load_artifact
from engine.data.loading import load_shop
from engine.personas.drift import DriftAccuracy, DriftConfig, DriftFinding, score_drift, trace_drift
from training.console_output import progress_bar

TRUTH_MIXES = Path("truth") / "customer_mixes.parquet"


@dataclass(frozen=True)
class DriftReport:
    version: str
    data: Path
    config: DriftConfig
    customers_checked: int
    drifting: list[DriftFinding]  # highest divergence first
    accuracy: DriftAccuracy | None  # only with planted truth beside the data

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "data": str(self.data),
            "threshold": self.config.threshold,
            "half_life_days": self.config.half_life_days,
            "min_evidence": self.config.min_evidence,
            "prior_strength": self.config.prior_strength,
            "customers_checked": self.customers_checked,
            "drifting": [{"customer_id": f.customer_id, **f.status.to_json()} for f in self.drifting],
            "accuracy": None if self.accuracy is None else self.accuracy.to_json(),
        }


def run_drift_report(
    artifact_path: Path,
    *,
    data_path: Path | None = None,
    config: DriftConfig | None = None,
    show_progress: bool = True,
) -> DriftReport:
    config = config or DriftConfig()
    artifact = load_artifact(artifact_path)
    if data_path is None:
        configured = artifact.manifest.get("config", {}).get("data", {}).get("path")
        if not configured:
            raise ArtifactError(f"{artifact.path}: manifest names no training data; give --data")
        data_path = Path(configured)
    if not Path(data_path).is_dir():
        raise FileNotFoundError(f"data folder {data_path} not found (give --data)")
    with progress_bar(show_progress) as progress:
        task = progress.add_task("loading events", total=3)
        shop = load_shop(Path(data_path))
        model = artifact.inference
        customers = artifact.customers
        long_term = np.asarray(artifact.mix_overall, dtype=np.float64)
        progress.update(task, advance=1, description="replaying recent mixes")
        trace = trace_drift(
            model,
            shop.events,
            shop.items,
            (customers, long_term),
            config.half_life_days,
            config.prior_strength,
        )
        progress.update(task, advance=1, description="scoring")
        findings = trace.findings(config.threshold, config.min_evidence)
        truth_path = Path(data_path) / TRUTH_MIXES
        accuracy = None
        if truth_path.is_file():
            truth = pl.read_parquet(truth_path)
            if {"customer_id", "drift_date"} <= set(truth.columns):
                accuracy = score_drift(findings, truth)
        progress.update(task, advance=1, description="done")
    drifting = sorted((f for f in findings if f.status.drifting), key=lambda f: -f.status.divergence)
    return DriftReport(artifact.version, Path(data_path), config, len(findings), drifting, accuracy)
