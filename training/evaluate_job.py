"""``persona-engine evaluate``: score an artifact's models, as trained, on the split its config defines.

Evaluation rebuilds the split, id maps and mixes from the stored config (deterministic) and checks
that the data is the data the artifact was trained on, so a number printed here can be compared with
the one in the manifest.

Which models it scores depends on what the artifact serves (``training.served_models``):

- models fitted on the split (``[output] refit_on_all_events = false``, or artifacts written before
  the refit existed) are loaded from the artifact and scored as they are;
- models refit on all events have seen the test period and the cold-start customers, so scoring
  them there would measure memory, not prediction. Evaluate then fits the split's models again from
  the stored config (same data, same hyperparameters, same seeds) and scores those: the models whose
  figures the manifest holds. That fit runs in deterministic mode (``[training] deterministic``: one
  thread, fixed seeds), so evaluate's figures are the same on every run, and equal train's when train
  ran deterministic too; otherwise BPR and LightFM, trained with several Hogwild threads, differ
  slightly. ``matches_manifest`` says, model by model, which reproduced them.

It never prints figures of a model scored on events it was trained on.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.artifact import MANIFEST, ArtifactError
from engine.artifact.contents import LoadedArtifact, load_artifact
from engine.models.base import Recommender
from training.config import TrainingSection, parse_config
from training.data_match import other_data_warning
from training.drift_evaluation import drift_evaluation
from training.evaluation import (
    ContextMixResult,
    ScoredLists,
    SegmentResult,
    evaluate_context_mixes,
    evaluate_models,
)
from training.held_out_period import held_out_warnings
from training.persona_report import persona_accuracy
from training.prepared_data import (
    PreparedData,
    context_segments,
    evaluation_segments,
    prepare,
    require_something_to_evaluate,
)
from training.served_models import ServedModels
from training.session_evaluation import session_evaluation
from training.steering_evaluation import SteeringResult, steering_results
from training.train_job import fit_models

ARTIFACT_MODELS = "artifact"  # the artifact's own models, fitted on the split
# The artifact's models were refit on all events: the split's models, fitted again from the config.
SPLIT_REFIT = "split models fitted again"
# Figures this close to the manifest's count as reproduced (floating-point summation order only).
_REPRODUCED = 1e-9


@dataclass(frozen=True)
class EvaluationReport:
    version: str
    k: int
    results: list[SegmentResult]
    persona_accuracy: dict[str, Any] | None
    data_matches_artifact: bool
    models_scored: str = ARTIFACT_MODELS  # ARTIFACT_MODELS or SPLIT_REFIT
    served_models: ServedModels = field(default_factory=lambda: ServedModels(refit_on_all_events=False))
    matches_manifest: dict[str, bool] = field(default_factory=dict)  # model -> every figure equals train's
    context_results: list[ContextMixResult] = field(default_factory=list)  # context mix vs overall mix
    steering_results: list[SteeringResult] = field(default_factory=list)  # requested personas per setting
    drift_evaluation: dict[str, Any] | None = None  # flagged customers: recent mix vs overall mix
    session_evaluation: dict[str, Any] | None = None  # first held-out day folded in vs fitted vector
    warnings: list[str] = field(default_factory=list)  # a test period too thin to judge by

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "k": self.k,
            "models_scored": self.models_scored,
            "served_models_refit_on_all_events": self.served_models.refit_on_all_events,
            "matches_manifest": self.matches_manifest,
            "metrics": [r.to_dict() for r in self.results],
            "context_evaluation": [r.to_dict() for r in self.context_results],
            "steering_evaluation": [r.to_dict() for r in self.steering_results],
            "drift_evaluation": self.drift_evaluation,
            "session_evaluation": self.session_evaluation,
            "persona_accuracy": self.persona_accuracy,
            "data_matches_artifact": self.data_matches_artifact,
            "warnings": self.warnings,
        }


def run_evaluation(
    artifact_path: Path,
    *,
    data_path: Path | None = None,
    show_progress: bool = False,
    stage: Callable[[str], None] | None = None,
) -> EvaluationReport:
    """Score the artifact's models on its split; ``stage`` is told what runs next (for progress)."""
    announce = stage or (lambda _: None)
    announce("verifying the artifact")
    artifact = load_artifact(artifact_path)
    manifest = artifact.manifest
    if "config" not in manifest:
        raise ArtifactError(f"{artifact.path}: manifest has no training config; cannot rebuild its split")
    config = parse_config(manifest["config"], source=f"{artifact.path}/{MANIFEST}")
    data_dir = Path(data_path or config.data.path)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder {data_dir} not found (give --data)")
    other = other_data_warning(data_dir, manifest, artifact.version)  # the files as read, before the work
    announce(f"loading {data_dir}, splitting it, inferring persona mixes")
    prepared = prepare(config, data_path=data_dir)
    segments = evaluation_segments(prepared)
    require_something_to_evaluate(prepared, segments)
    served = ServedModels.of(manifest)
    kinds = list(manifest.get("models", []))
    models: Mapping[str, Recommender]
    if served.refit_on_all_events:
        # The config's order, as train scored them; only the kinds the artifact holds.
        held = {kind: params for kind, params in config.models.items() if kind in kinds}
        split_config = dataclasses.replace(config, models=held, training=TrainingSection(deterministic=True))
        announce("fitting the split's models again (deterministic mode)")
        models, _ = fit_models(prepared, split_config, show_progress=show_progress, label="fitting split")
        scored = SPLIT_REFIT
    else:
        _require_the_models_rows(artifact, prepared, data_dir)
        models = {name: artifact.models[name] for name in kinds}
        scored = ARTIFACT_MODELS
    announce("scoring the models on the test period")
    lists: dict[str, ScoredLists] = {}  # as train scores them: the context evaluation reuses these
    results = evaluate_models(models, segments, config.evaluation.k, scored_lists=lists)
    announce("scoring the models by shopping context")
    by_context = evaluate_context_mixes(
        models, context_segments(prepared), config.evaluation.k, scored_lists=lists
    )
    announce("scoring the customers who drift with their recent mix")
    drift = drift_evaluation(prepared, models, segments, config, scored_lists=lists)
    del lists
    announce("folding known customers' first held-out day into their vectors")
    session = session_evaluation(prepared, models, segments, config)
    announce("measuring steering towards requested mixes")
    steering = steering_results(prepared, models, config.evaluation.k, segments=segments)
    announce("checking persona mixes against planted truth")
    return EvaluationReport(
        version=artifact.version,
        k=config.evaluation.k,
        results=results,
        persona_accuracy=persona_accuracy(prepared, data_dir / "truth"),
        data_matches_artifact=other is None,
        models_scored=scored,
        served_models=served,
        matches_manifest=matches_manifest(results, manifest.get("metrics", [])),
        context_results=by_context,
        steering_results=steering,
        drift_evaluation=drift,
        session_evaluation=session,
        warnings=held_out_warnings(prepared, segments) + ([] if other is None else [other]),
    )


def _require_the_models_rows(artifact: LoadedArtifact, prepared: PreparedData, data_dir: Path) -> None:
    """The artifact's own models index customers, items and demographic features as its split did;
    scored on data that splits into other ones they would score the wrong rows, or fail inside a model
    ("user_index 274 is outside the 274 customers it was fitted on": a fuzz finding). Refused here,
    naming the first difference.

    The demographic features come from the customers table: one emptied to its header (no rows: no
    demographics, which train accepts) failed inside a model as "demographics has 0 columns, the model
    knows 15", and one with a region renamed gave the models the same number of columns meaning other
    values, scored without a word. Both are refused naming the customers file."""
    for noun, stored, rebuilt in (
        ("customers", artifact.model_customers.ids.tolist(), prepared.model_customers.ids.tolist()),
        ("items", artifact.item_catalog.ids.ids.tolist(), prepared.items.ids.tolist()),
    ):
        if stored != rebuilt:
            raise ArtifactError(
                f"{artifact.path}: its models were fitted on other {noun} than the split of {data_dir} "
                f"gives ({len(stored)} against {len(rebuilt)}; {_first_difference(stored, rebuilt)}); "
                "score them on the data they were trained on, or train on this data"
            )
    stored = list(artifact.demographic_space.names)
    rebuilt = list(prepared.demographic_space.names)
    if stored != rebuilt:
        raise ArtifactError(
            f"{artifact.path}: its models were fitted on {len(stored)} demographic features from the "
            f"customers table, while {_customers_source(prepared, data_dir, stored, rebuilt)}; score them "
            "on the data they were trained on, or train on this data"
        )


def _first_difference(stored: list[str], rebuilt: list[str]) -> str:
    extra = sorted(set(rebuilt) - set(stored))[:3]
    missing = sorted(set(stored) - set(rebuilt))[:3]
    if extra:
        return f"new: {', '.join(map(repr, extra))}"
    if missing:
        return f"missing: {', '.join(map(repr, missing))}"
    return "the same ones in another order"


def _customers_source(prepared: PreparedData, data_dir: Path, stored: list[str], rebuilt: list[str]) -> str:
    """What the data's customers table gives instead, naming its file: none (no file, or a header with
    no rows) or other features."""
    found = [data_dir / f"customers{suffix}" for suffix in (".csv", ".parquet")]
    path = next((p for p in found if p.is_file()), None)
    if path is None:
        return f"{data_dir} has no customers table (no demographics)"
    customers = prepared.shop.customers
    if customers is None or customers.height == 0:
        return f"{path} has a header but no data rows (no demographics)"
    new = ", ".join(map(repr, sorted(set(rebuilt) - set(stored))[:3])) or "none"
    missing = ", ".join(map(repr, sorted(set(stored) - set(rebuilt))[:3])) or "none"
    return f"{path} gives {len(rebuilt)} (new: {new}; missing: {missing})"


def matches_manifest(results: list[SegmentResult], stored: list[dict[str, Any]]) -> dict[str, bool]:
    """Per model: whether every figure of every segment equals the one train stored in the manifest."""
    by_key = {(m.get("model"), m.get("segment")): m for m in stored}
    out: dict[str, bool] = {}
    for result in results:
        before = by_key.get((result.model, result.segment))
        same = before is not None and before.get("users") == result.users
        if same and before is not None:
            figures = {**result.metrics, "coverage": result.coverage}
            same = all(_same_figure(before.get(name), value) for name, value in figures.items())
        out[result.model] = out.get(result.model, True) and same
    return out


def _same_figure(stored: Any, value: float) -> bool:
    if stored is None or (isinstance(stored, float) and math.isnan(stored)):
        return math.isnan(value)
    return isinstance(stored, int | float) and math.isclose(stored, value, rel_tol=_REPRODUCED, abs_tol=1e-12)
