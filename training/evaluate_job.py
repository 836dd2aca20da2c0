"""``persona-engine evaluate``: re-score an artifact's models on the split its config defines.

Evaluation rebuilds the split, id maps and mixes from the stored config (deterministic), loads the
models from the artifact (never refits them) and checks that the data is the data the artifact was
trained on, so a number printed here can be compared with the one in the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.artifact import MANIFEST, ArtifactError, data_fingerprint
from engine.artifact.contents import load_artifact
from training.config import parse_config
from training.evaluation import SegmentResult, evaluate_models
from training.persona_report import persona_accuracy
from training.prepared_data import evaluation_segments, prepare


@dataclass(frozen=True)
class EvaluationReport:
    version: str
    k: int
    results: list[SegmentResult]
    persona_accuracy: dict[str, Any] | None
    data_matches_artifact: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "k": self.k,
            "metrics": [r.to_dict() for r in self.results],
            "persona_accuracy": self.persona_accuracy,
            "data_matches_artifact": self.data_matches_artifact,
        }


def run_evaluation(artifact_path: Path, *, data_path: Path | None = None) -> EvaluationReport:
    artifact = load_artifact(artifact_path)
    manifest = artifact.manifest
    if "config" not in manifest:
        raise ArtifactError(f"{artifact.path}: manifest has no training config; cannot rebuild its split")
    config = parse_config(manifest["config"], source=f"{artifact.path}/{MANIFEST}")
    data_dir = Path(data_path or config.data.path)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder {data_dir} not found (give --data)")
    fingerprint = data_fingerprint(sorted(p for p in data_dir.glob("*.*") if p.is_file()))
    prepared = prepare(config, data_path=data_dir)
    models = {name: artifact.models[name] for name in manifest.get("models", [])}
    results = evaluate_models(models, evaluation_segments(prepared), config.evaluation.k)
    return EvaluationReport(
        version=artifact.version,
        k=config.evaluation.k,
        results=results,
        persona_accuracy=persona_accuracy(prepared, data_dir / "truth"),
        data_matches_artifact=fingerprint == manifest.get("data_fingerprint"),
    )
