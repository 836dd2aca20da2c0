"""``persona-engine compare``: is the engine worth it? Its models against the baselines, on one split.

On one data set and one split (the training config's), the same evaluation scores:

- ``popularity`` and ``persona_popularity`` (per-persona popularity) with their default settings;
- the raw libraries with their documented defaults (``training.library_baselines``): implicit ALS and
  BPR, LightFM WARP without features;
- the engine's persona-conditioned models with the config's hyperparameters (``[models.*]``).

Everything is trained on the same ``TrainingSet`` (``training.prepared_data``), items a customer
engaged with in training are excluded from their list, and metrics come from
``training.evaluation``/``engine.evaluation.ranking_metrics``, so no model is scored by different rules. The
verdict compares the engine's best model with the best library default and with popularity on the
known customers, and the best persona-conditioned model with popularity on the cold-start customers
(held out of model training; scored from the mix their history gives).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.models.base import Recommender
from engine.models.registry import create_model
from training.config import TrainConfig, load_config
from training.console_output import print_table, progress_bar, stdout_console
from training.evaluation import SegmentResult, evaluate_models
from training.library_baselines import LIBRARY_DEFAULTS
from training.prepared_data import PreparedData, evaluation_segments, prepare

BASELINE_KINDS: tuple[str, ...] = ("popularity", "persona_popularity")
WARM_SEGMENT = "all"
COLD_SEGMENT = "cold_start"
TABLE_METRICS: tuple[str, ...] = ("precision", "recall", "ndcg", "map")


@dataclass(frozen=True)
class ComparedModel:
    """One row of the comparison: a model, what it is, its settings, how long it trained, its scores."""

    name: str
    family: str  # "baseline", "library default" or "engine"
    persona_conditioned: bool
    parameters: dict[str, Any]
    fit_seconds: float
    results: dict[str, SegmentResult]  # segment name -> result

    def metric(self, segment: str, metric: str = "ndcg") -> float | None:
        result = self.results.get(segment)
        return result.metrics[metric] if result else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "persona_conditioned": self.persona_conditioned,
            "parameters": self.parameters,
            "fit_seconds": self.fit_seconds,
            "segments": {s: r.to_dict() for s, r in self.results.items()},
        }


@dataclass(frozen=True)
class ComparisonReport:
    config_source: str
    data_path: str
    split: dict[str, Any]
    k: int
    users: dict[str, int]
    models: list[ComparedModel]
    verdict: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config_source,
            "data": self.data_path,
            "split": self.split,
            "k": self.k,
            "users": self.users,
            "models": [m.to_dict() for m in self.models],
            "verdict": self.verdict,
        }


def _fit(model: Recommender, prepared: PreparedData) -> float:
    started = time.perf_counter()
    model.fit(prepared.training_set, show_progress=False)
    return time.perf_counter() - started


def compare_prepared(
    prepared: PreparedData, config: TrainConfig, *, show_progress: bool = False
) -> list[ComparedModel]:
    """Fit and score every compared model on ``prepared`` (the work of ``run_comparison``)."""
    segments = evaluation_segments(prepared)
    warm_segments = [s for s in segments if (s.users.user_index >= 0).all()]
    k = config.evaluation.k
    seed = config.split.seed
    engine_kinds = [kind for kind in config.models if kind not in BASELINE_KINDS]
    candidates: list[tuple[str, str, bool, Recommender, dict[str, Any]]] = [
        (kind, "baseline", kind != "popularity", create_model(kind), {}) for kind in BASELINE_KINDS
    ]
    for cls in LIBRARY_DEFAULTS:
        library_model = cls(random_state=seed)
        candidates.append(
            (cls.kind, "library default", False, library_model, library_model.documented_parameters())
        )
    for kind in engine_kinds:
        engine_model = create_model(kind, **config.models[kind])
        candidates.append((f"engine:{kind}", "engine", True, engine_model, engine_model.get_config()))

    rows: list[ComparedModel] = []
    with progress_bar(show_progress) as progress:
        task = progress.add_task("comparing models", total=len(candidates))
        for name, family, conditioned, model, parameters in candidates:
            progress.update(task, description=f"training {name}")
            seconds = _fit(model, prepared)
            scored = segments if conditioned or family == "baseline" else warm_segments
            results = evaluate_models({name: model}, scored, k)
            rows.append(
                ComparedModel(
                    name=name,
                    family=family,
                    persona_conditioned=conditioned,
                    parameters=parameters,
                    fit_seconds=seconds,
                    results={r.segment: r for r in results},
                )
            )
            progress.advance(task)
    return rows


def _best(models: list[ComparedModel], segment: str) -> ComparedModel | None:
    scored = [m for m in models if m.metric(segment) is not None]
    return max(scored, key=lambda m: m.metric(segment) or 0.0, default=None)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def verdict(models: list[ComparedModel]) -> dict[str, Any]:
    """The three questions of the comparison, answered with the numbers behind each answer."""
    engine = _best([m for m in models if m.family == "engine"], WARM_SEGMENT)
    library = _best([m for m in models if m.family == "library default"], WARM_SEGMENT)
    popularity = next((m for m in models if m.name == "popularity"), None)
    cold = _best([m for m in models if m.persona_conditioned], COLD_SEGMENT)
    out: dict[str, Any] = {"metric": "ndcg"}
    if engine is not None:
        e = engine.metric(WARM_SEGMENT)
        lib = library.metric(WARM_SEGMENT) if library else None
        pop = popularity.metric(WARM_SEGMENT) if popularity else None
        out["engine_best"] = {"model": engine.name, "ndcg": e}
        if library is not None:
            out["library_best"] = {"model": library.name, "ndcg": lib}
            out["engine_beats_library_defaults"] = bool(e is not None and lib is not None and e > lib)
            out["engine_to_library_ratio"] = _ratio(e, lib)
        if popularity is not None:
            out["popularity_ndcg"] = pop
            out["engine_at_least_popularity"] = bool(e is not None and pop is not None and e >= pop)
            out["engine_to_popularity_ratio"] = _ratio(e, pop)
    if cold is not None and popularity is not None:
        c, p = cold.metric(COLD_SEGMENT), popularity.metric(COLD_SEGMENT)
        out["cold_start"] = {
            "best_persona_conditioned": cold.name,
            "ndcg": c,
            "popularity_ndcg": p,
            "beats_popularity": bool(c is not None and p is not None and c > p),
            "ratio_to_popularity": _ratio(c, p),
        }
    return out


def run_comparison(
    config_path: Path | TrainConfig,
    *,
    data_path: Path | None = None,
    show_progress: bool = True,
    prepared: PreparedData | None = None,
) -> ComparisonReport:
    """Compare on the config's data and split; ``prepared`` reuses data already prepared from it."""
    config = config_path if isinstance(config_path, TrainConfig) else load_config(config_path)
    data_dir = Path(data_path or config.data.path)
    if prepared is None:
        prepared = prepare(config, data_path=data_dir)
    models = compare_prepared(prepared, config, show_progress=show_progress)
    users = {
        name: r.users for m in models for name, r in m.results.items() if name in (WARM_SEGMENT, COLD_SEGMENT)
    }
    split = {
        "method": prepared.split.method,
        "train_events": prepared.split.train_events.height,
        "test_events": prepared.split.test_events.height,
        "model_customers": len(prepared.model_customers),
        "cold_start_customers": len(prepared.split.cold_customers),
        "cold_start_share": config.split.cold_start_share,
        "seed": config.split.seed,
    }
    return ComparisonReport(
        config_source=config.source,
        data_path=str(data_dir),
        split=split,
        k=config.evaluation.k,
        users=users,
        models=models,
        verdict=verdict(models),
    )


def comparison_rows(report: ComparisonReport) -> tuple[list[str], list[list[Any]]]:
    k = report.k
    columns = ["model", "family", f"P@{k}", f"R@{k}", f"NDCG@{k}", f"MAP@{k}", "coverage", "train s"]
    rows = []
    for m in report.models:
        r = m.results[WARM_SEGMENT]
        rows.append([m.name, m.family, *(r.metrics[x] for x in TABLE_METRICS), r.coverage, m.fit_seconds])
    return columns, rows


def print_comparison(report: ComparisonReport) -> None:
    k = report.k
    split = report.split
    columns, rows = comparison_rows(report)
    print_table(
        f"known customers: {report.users.get(WARM_SEGMENT, 0):,} scored, {split['method']} split, "
        f"training positives excluded ({report.data_path})",
        columns,
        rows,
    )
    cold_rows = [
        [
            m.name,
            m.family,
            m.metric(COLD_SEGMENT, "ndcg"),
            m.metric(COLD_SEGMENT, "recall"),
            m.results[COLD_SEGMENT].coverage,
        ]
        for m in report.models
        if COLD_SEGMENT in m.results
    ]
    if cold_rows:
        print_table(
            f"cold-start customers: {report.users.get(COLD_SEGMENT, 0):,} held out of model training "
            f"({split['cold_start_share']:.0%} of customers by seeded hash), scored from their persona mix",
            ["model", "family", f"NDCG@{k}", f"R@{k}", "coverage"],
            cold_rows,
        )
    v = report.verdict
    if "engine_best" in v:
        e = v["engine_best"]
        line = f"engine best: [bold]{e['model']}[/bold] NDCG@{k} {e['ndcg']:.4f}"
        if "library_best" in v:
            lib = v["library_best"]
            line += (
                f"; best library default {lib['model']} {lib['ndcg']:.4f} "
                f"(x{v['engine_to_library_ratio']:.2f}, "
                f"{'beaten' if v['engine_beats_library_defaults'] else 'NOT beaten'})"
            )
        if "popularity_ndcg" in v:
            line += (
                f"; popularity {v['popularity_ndcg']:.4f} "
                f"(x{v['engine_to_popularity_ratio']:.2f}, "
                f"{'at least popularity' if v['engine_at_least_popularity'] else 'WORSE than popularity'})"
            )
        stdout_console.print(line, highlight=False)
    if "cold_start" in v:
        c = v["cold_start"]
        stdout_console.print(
            f"cold start: {c['best_persona_conditioned']} NDCG@{k} {c['ndcg']:.4f} vs popularity "
            f"{c['popularity_ndcg']:.4f} (x{c['ratio_to_popularity']:.2f}, "
            f"{'beats' if c['beats_popularity'] else 'does NOT beat'} popularity)",
            highlight=False,
        )
