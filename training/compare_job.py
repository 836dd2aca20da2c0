"""``persona-engine compare``: is the engine worth it, and is it the personas? Models against baselines.

On one data set and one split (the training config's), the same evaluation scores:

- ``popularity`` and ``persona_popularity`` (per-persona popularity) with the config's settings;
- the raw libraries (``training.library_baselines``: implicit ALS and BPR, LightFM WARP without
  features) at their documented defaults, and *tuned*: the same random search, with the same number
  of trials per model and the same validation split carved from the training events, as the engine's
  models (``training.tune_job``), starting from the engine model's values of the shared hyperparameters;
- the engine's persona-conditioned models, tuned by that search from the config's hyperparameters
  (``[models.*]``; the implicit factor models then get their per-activity-level persona weights
  fitted on the same validation split, ``training.persona_weights``), and each one's ablation: the
  tuned model with persona conditioning switched off (``Recommender.without_personas``), everything
  else identical;
- for each engine model whose persona weights are fitted on validation (ALS, BPR), the same model at
  its tuned library counterpart's hyperparameters and seed (ALS with implicit's constant penalty):
  with persona conditioning off it *is* that library model (tests/training/test_ablation_identity.py),
  so its difference to the tuned library is what the personas add on top of the best collaborative
  filtering the search found, rather than on top of the engine's own, perhaps weaker, search result.

Tuning gains and persona gains are thereby separated: the engine's lead over the tuned libraries is
not a tuning lead, and its lead over its own ablation is what the personas add. Every difference the
verdict states carries a paired bootstrap interval over customers (``training.compare_verdict``).

Everything is trained on the same ``TrainingSet`` (``training.prepared_data``), items a customer
engaged with in training are excluded from their list, and metrics come from
``training.evaluation``/``engine.evaluation.ranking_metrics``, so no model is scored by different rules.
Fits run on one thread with fixed seeds (threaded LightFM and BPR are Hogwild, so not reproducible)
and the search budget is a trial count, not seconds: the same seed gives the same figures.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from rich.text import Text

from engine.models.base import Recommender
from engine.models.implicit_factors import ALS_DEFAULT_REGULARIZATION
from engine.models.model_blend import ModelBlend
from engine.models.registry import create_model, model_class
from training.blend_weights import blend_members, fit_blend_weights
from training.compare_verdict import AT_LIBRARY_TUNING, COLD_SEGMENT, WARM_SEGMENT, verdict
from training.config import ConfigError, TrainConfig, load_config
from training.console_output import print_table, progress_bar, stdout_console
from training.evaluation import SegmentResult, evaluate_models
from training.held_out_period import MIN_TEST_CUSTOMERS, held_out_warnings
from training.library_baselines import ENGINE_COUNTERPART, LIBRARY_MODELS, create_library_model
from training.persona_weights import fit_persona_weights, fits_persona_weights
from training.prepared_data import EvaluationSegment, PreparedData, evaluation_segments, prepare
from training.tune_job import (
    LIBRARY_SEARCH_SPACES,
    SearchSpec,
    Trial,
    best_trial,
    random_search,
    search_space,
    validation_data,
    validation_segments,
)

BASELINE_KINDS: tuple[str, ...] = ("popularity", "persona_popularity")
TABLE_METRICS: tuple[str, ...] = ("precision", "recall", "ndcg", "map")
DEFAULT_TRIALS = 10
HEADLINE_KEYS: tuple[str, ...] = ("engine_best", "library_best_tuned", "difference_ci95", "persona_lift_ci95")


@dataclass(frozen=True)
class ComparedModel:
    """One row of the comparison: a model, what it is, its settings, how long it trained, its scores."""

    name: str
    # "baseline", "library default", "library tuned", "engine", "engine ablation" or AT_LIBRARY_TUNING
    family: str
    persona_conditioned: bool
    parameters: dict[str, Any]
    fit_seconds: float
    results: dict[str, SegmentResult]  # segment name -> result
    # the engine row this row is the persona-free twin of (a tuned library row: of the engine's model at
    # its tuning)
    ablation_of: str | None = None
    search: dict[str, Any] | None = None  # trials, validation NDCG of the start and of the winner

    def metric(self, segment: str, metric: str = "ndcg") -> float | None:
        result = self.results.get(segment)
        return result.metrics[metric] if result else None

    def per_user(self, segment: str, metric: str = "ndcg") -> NDArray[np.float64] | None:
        result = self.results.get(segment)
        return result.per_user.get(metric) if result else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "persona_conditioned": self.persona_conditioned,
            "ablation_of": self.ablation_of,
            "parameters": self.parameters,
            "search": self.search,
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
    tuning: dict[str, Any]
    verdict: dict[str, Any] = field(default_factory=dict)
    personas: dict[str, Any] = field(default_factory=dict)  # the catalog compared with: name, ids
    warnings: list[str] = field(default_factory=list)  # samples too thin to judge by (held_out_period)

    def to_dict(self) -> dict[str, Any]:
        return {
            **{key: self.verdict.get(key) for key in HEADLINE_KEYS},
            "config": self.config_source,
            "data": self.data_path,
            "personas": self.personas,
            "split": self.split,
            "k": self.k,
            "users": self.users,
            "tuning": self.tuning,
            "models": [m.to_dict() for m in self.models],
            "verdict": self.verdict,
            "warnings": self.warnings,
        }


def single_threaded(kind: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """``parameters`` with ``num_threads`` 1 where the model has it: threads are not a hyperparameter,
    and LightFM's and BPR's threaded training is Hogwild, which no seed makes reproducible."""
    accepted = inspect.signature(model_class(kind).__init__).parameters
    return {**parameters, "num_threads": 1} if "num_threads" in accepted else dict(parameters)


@dataclass(frozen=True)
class _Candidate:
    name: str
    family: str
    persona_conditioned: bool
    build: Any  # () -> Recommender
    parameters: dict[str, Any]
    ablation_of: str | None = None
    search: dict[str, Any] | None = None


def _engine_builder(kind: str) -> Callable[[dict[str, Any]], Recommender]:
    return lambda parameters: create_model(kind, **parameters)


def _library_builder(kind: str) -> Callable[[dict[str, Any]], Recommender]:
    return lambda parameters: create_library_model(kind, **parameters)


def library_search_start(library: str, config: TrainConfig) -> dict[str, Any]:
    """Where a library's search starts: its engine counterpart's effective values (its defaults where
    the config is silent: those were tuned by hand on the synthetic shop, so a library starting
    elsewhere would hand the engine a tuning lead), for the hyperparameters the two share."""
    engine_kind = ENGINE_COUNTERPART[library]
    engine_values = (
        create_model(engine_kind, **config.models[engine_kind]).get_config()
        if engine_kind in config.models
        else {}
    )
    if engine_values.get("penalty", "constant") != "constant":
        # implicit's ALS has the constant penalty: a per-interaction value means nothing to it, so it
        # starts from the constant form's hand-tuned default instead
        engine_values["regularization"] = ALS_DEFAULT_REGULARIZATION["constant"]
    return {
        name: value
        for name, value in engine_values.items()
        if name in LIBRARY_SEARCH_SPACES[library] or name in ("max_sampled",)
    }


def at_library_tuning(kind: str, library: str, tuned: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
    """The engine's ``kind`` at ``library``'s tuned parameters: its configured settings, the library's
    hyperparameters, seed and thread count, and for ALS implicit's constant penalty. Persona
    conditioning off, this is the library model itself (tests/training/test_ablation_identity.py)."""
    shared = {name: value for name, value in tuned.items() if name in LIBRARY_SEARCH_SPACES[library]}
    parameters = {
        **single_threaded(kind, config.models.get(kind, {})),
        **shared,
        "random_state": tuned["random_state"],
        "num_threads": tuned["num_threads"],
    }
    if kind == "als":
        parameters["penalty"] = "constant"
    return parameters


def _has_persona_weights_twin(library: str, engine_kinds: list[str]) -> bool:
    counterpart = ENGINE_COUNTERPART[library]
    return counterpart in engine_kinds and fits_persona_weights(counterpart)


def _at_library_tuning_candidate(
    library: str, tuned: dict[str, Any], config: TrainConfig, validation: PreparedData, k: int
) -> _Candidate:
    """The engine's counterpart of ``library`` at its tuned parameters, persona weights fitted on
    ``validation``; the tuned library row is its ablation (``ablation_of`` names this row)."""
    kind = ENGINE_COUNTERPART[library]
    weighted = fit_persona_weights(kind, at_library_tuning(kind, library, tuned, config), validation, k)
    return _Candidate(
        f"engine:{kind} at {library}_tuned",
        AT_LIBRARY_TUNING,
        True,
        partial(create_model, kind, **weighted),
        weighted,
    )


def _library_tuning_ablation(library: str, at_tuning: _Candidate) -> _Candidate | None:
    """The ablation row of the engine's model at ``library``'s tuning, or None when the tuned library
    row is that ablation (no prior survives ``without_personas``)."""
    kind = ENGINE_COUNTERPART[library]
    ablated = model_class(kind).without_personas(at_tuning.parameters)
    if ablated is None or not ablated.get("prior_weights"):
        return None
    return _Candidate(
        f"{at_tuning.name} without personas",
        "engine ablation",
        False,
        partial(create_model, kind, **ablated),
        ablated,
        ablation_of=at_tuning.name,
    )


def _search_summary(trials: list[Trial], best: Trial) -> dict[str, Any]:
    return {
        "trials": len(trials),
        "start_validation_ndcg": trials[0].ndcg,
        "best_validation_ndcg": best.ndcg,
        "best_trial": trials.index(best),
        "seconds": sum(t.fit_seconds for t in trials),
    }


def _searched(
    spec: SearchSpec, validation: PreparedData | None, k: int, trials: int, seed: int, advance: Any
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The winning parameters of a search (or the first start when there is no search) and its summary."""
    if validation is None:
        return {**spec.starts[0], **spec.fixed}, None
    found = random_search(spec, validation, k, trials=trials, seed=seed, on_trial=lambda _: advance())
    best = best_trial(found)
    return dict(best.parameters), _search_summary(found, best)


def _blend_candidates(
    configured: dict[str, Any], searched: dict[str, dict[str, Any]], validation: PreparedData | None, k: int
) -> list[_Candidate]:
    """The blend and its ablation: each member at the parameters its kind was compared with when the
    comparison searched that kind (its config's otherwise) without its personas, one thread each, the
    weights and the blend's persona prior fitted on the validation split (``training.blend_weights``;
    the config's without a search)."""
    members = []
    for member in blend_members(configured, searched):
        kind = member.pop("kind")
        members.append({"kind": kind, **single_threaded(kind, member)})
    parameters: dict[str, Any] = {**configured, "members": members}
    if validation is not None:
        fitted = fit_blend_weights(parameters, validation, validation_segments(validation), k)
        parameters.update(fitted.settings())
    name = f"engine:{ModelBlend.kind}"
    ablated = ModelBlend.without_personas(parameters)
    return [
        _Candidate(name, "engine", True, partial(ModelBlend, **parameters), parameters),
        _Candidate(
            f"{name} without personas",
            "engine ablation",
            False,
            partial(ModelBlend, **ablated),
            ablated,
            ablation_of=name,
        ),
    ]


def compare_prepared(
    prepared: PreparedData,
    config: TrainConfig,
    segments: list[EvaluationSegment],
    *,
    trials: int = DEFAULT_TRIALS,
    search_seed: int = 0,
    show_progress: bool = False,
) -> tuple[list[ComparedModel], dict[str, Any]]:
    """Search, fit and score every compared model on ``prepared`` (the work of ``run_comparison``),
    on its ``evaluation_segments``.

    ``trials`` per searched model (0: no search; the engine runs at the config's values and there
    are no tuned library rows). Returns the rows and a description of the search.
    """
    if trials < 0:
        raise ConfigError(f"--trials must be >= 0, got {trials}")
    warm_segments = [s for s in segments if (s.users.user_index >= 0).all()]
    k = config.evaluation.k
    seed = config.split.seed
    engine_kinds = [kind for kind in config.models if kind not in BASELINE_KINDS and kind != ModelBlend.kind]
    library_fixed = {"random_state": seed, "num_threads": 1}
    specs: list[tuple[str, SearchSpec]] = []
    for kind in engine_kinds:
        configured = single_threaded(kind, config.models[kind])
        spec = SearchSpec(
            name=kind,
            build=_engine_builder(kind),
            starts=(configured, single_threaded(kind, {})),
            space=search_space(kind, configured),
            fixed={"num_threads": 1} if "num_threads" in configured else {},
        )
        specs.append(("engine", spec))
    if trials > 0:
        for library in ENGINE_COUNTERPART:
            shared = library_search_start(library, config)
            spec = SearchSpec(
                name=library,
                build=_library_builder(library),
                starts=(shared, {}) if shared else ({},),
                space=LIBRARY_SEARCH_SPACES[library],
                fixed=library_fixed,
                scores_cold_start=False,
            )
            specs.append(("library tuned", spec))
    searched = [(family, spec) for family, spec in specs if spec.space and trials > 0]
    started = time.perf_counter()
    validation = validation_data(config, prepared.shop, prepared.split) if searched else None
    tuning: dict[str, Any] = {
        "trials_per_model": trials,
        "seed": search_seed,
        "validation": None
        if validation is None
        else {
            "method": validation.split.method,
            "train_events": validation.split.train_events.height,
            "validation_events": validation.split.test_events.height,
        },
    }

    searched_engine: dict[str, dict[str, Any]] = {}  # each engine kind's parameters as compared
    candidates: list[_Candidate] = [
        _Candidate(
            kind,
            "baseline",
            kind != "popularity",
            partial(create_model, kind, **config.models.get(kind, {})),
            config.models.get(kind, {}),
        )
        for kind in BASELINE_KINDS
    ]
    for kind, cls in LIBRARY_MODELS.items():
        defaults = cls(**library_fixed)
        candidates.append(
            _Candidate(
                f"{kind}_defaults",
                "library default",
                False,
                lambda cls=cls: cls(**library_fixed),
                defaults.documented_parameters(),
            )
        )
    with progress_bar(show_progress) as progress:
        total = len(searched) * trials
        task = progress.add_task("searching hyperparameters", total=total)
        for family, spec in specs:
            progress.update(task, description=f"searching {spec.name}")
            parameters, summary = _searched(
                spec,
                validation if spec.space else None,
                k,
                trials,
                search_seed,
                lambda: progress.advance(task),
            )
            if family == "library tuned":
                at_tuning = None
                if validation is not None and _has_persona_weights_twin(spec.name, engine_kinds):
                    progress.update(task, description=f"fitting persona weights at {spec.name}'s tuning")
                    at_tuning = _at_library_tuning_candidate(spec.name, parameters, config, validation, k)
                # the tuned library is the ablation of the engine at its tuning unless that keeps a
                # recency prior without personas (``without_personas``): then the ablation is a row
                twin = None if at_tuning is None else _library_tuning_ablation(spec.name, at_tuning)
                candidates.append(
                    _Candidate(
                        f"{spec.name}_tuned",
                        family,
                        False,
                        lambda spec=spec, parameters=parameters: spec.build(parameters),
                        parameters,
                        ablation_of=None if at_tuning is None or twin is not None else at_tuning.name,
                        search=summary,
                    )
                )
                if at_tuning is not None:
                    candidates.append(at_tuning)
                if twin is not None:
                    candidates.append(twin)
                continue
            if validation is not None and fits_persona_weights(spec.name):
                progress.update(task, description=f"fitting persona weights of {spec.name}")
                parameters = fit_persona_weights(spec.name, parameters, validation, k)
            name = f"engine:{spec.name}"
            searched_engine[spec.name] = parameters
            candidates.append(
                _Candidate(
                    name,
                    "engine",
                    True,
                    lambda spec=spec, parameters=parameters: spec.build(parameters),
                    parameters,
                    search=summary,
                )
            )
            ablated = model_class(spec.name).without_personas(parameters)
            if ablated is not None:
                candidates.append(
                    _Candidate(
                        f"{name} without personas",
                        "engine ablation",
                        False,
                        lambda spec=spec, ablated=ablated: spec.build(ablated),
                        ablated,
                        ablation_of=name,
                    )
                )
        if ModelBlend.kind in config.models:
            progress.update(task, description="fitting the blend's weights")
            candidates.extend(
                _blend_candidates(config.models[ModelBlend.kind], searched_engine, validation, k)
            )
        tuning["seconds"] = time.perf_counter() - started

        rows: list[ComparedModel] = []
        task = progress.add_task("comparing models", total=len(candidates))
        for candidate in candidates:
            progress.update(task, description=f"training {candidate.name}")
            model: Recommender = candidate.build()
            fit_started = time.perf_counter()
            model.fit(prepared.training_set, show_progress=False)
            seconds = time.perf_counter() - fit_started
            # a row at a library's tuning is compared with that library on known customers only, so the
            # cold-start verdict stays about the engine's own models
            scored = (
                segments
                if (candidate.persona_conditioned or candidate.family == "baseline")
                and candidate.family != AT_LIBRARY_TUNING
                else warm_segments
            )
            results = evaluate_models({candidate.name: model}, scored, k)
            rows.append(
                ComparedModel(
                    name=candidate.name,
                    family=candidate.family,
                    persona_conditioned=candidate.persona_conditioned,
                    parameters=candidate.parameters,
                    fit_seconds=seconds,
                    results={r.segment: r for r in results},
                    ablation_of=candidate.ablation_of,
                    search=candidate.search,
                )
            )
            progress.advance(task)
    return rows, tuning


def _median_items(prepared: PreparedData) -> float:
    """Median number of distinct training-period items of the cold-start customers (0 without any)."""
    cold = list(prepared.split.cold_customers)
    if not cold:
        return 0.0
    history = prepared.history[prepared.customer_rows(cold)]
    return float(np.median(np.diff(history.indptr)))


def run_comparison(
    config_path: Path | TrainConfig,
    *,
    data_path: Path | None = None,
    show_progress: bool = True,
    prepared: PreparedData | None = None,
    trials: int = DEFAULT_TRIALS,
    search_seed: int = 0,
) -> ComparisonReport:
    """Compare on the config's data and split; ``prepared`` reuses data already prepared from it."""
    config = config_path if isinstance(config_path, TrainConfig) else load_config(config_path)
    data_dir = Path(data_path or config.data.path)
    if prepared is None:
        prepared = prepare(config, data_path=data_dir)
    segments = evaluation_segments(prepared)
    models, tuning = compare_prepared(
        prepared, config, segments, trials=trials, search_seed=search_seed, show_progress=show_progress
    )
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
        # what a cold-start customer brings: their training-period items (ALS folds them in)
        "cold_start_items_median": _median_items(prepared),
        "seed": config.split.seed,
    }
    return ComparisonReport(
        config_source=config.source,
        data_path=str(data_dir),
        split=split,
        k=config.evaluation.k,
        users=users,
        models=models,
        tuning=tuning,
        verdict=verdict(models, config.evaluation.k, seed=config.split.seed),
        personas={"catalog": config.personas.catalog, "ids": list(prepared.catalog.ids)},
        warnings=_thin_samples(prepared, segments, users),
    )


def _thin_samples(
    prepared: PreparedData, segments: Sequence[EvaluationSegment], users: dict[str, int]
) -> list[str]:
    """``train``'s and ``evaluate``'s warnings on the test period, and one on the cold-start sample,
    which the cold-start verdict rests on alone (a walkthrough on 50 MovieLens users got "met" from
    6 cold-start customers, with no word on how few they were)."""
    warnings = held_out_warnings(prepared, segments)
    cold = users.get(COLD_SEGMENT, 0)
    if 0 < cold < MIN_TEST_CUSTOMERS:
        warnings.append(
            f"the cold-start figures rest on {cold:,} held-out customer(s) (fewer than "
            f"{MIN_TEST_CUSTOMERS}): their interval is wide; raise [split] cold_start_share or use more data"
        )
    return warnings


def comparison_rows(report: ComparisonReport) -> tuple[list[str], list[list[Any]]]:
    k = report.k
    columns = ["model", "family", f"P@{k}", f"R@{k}", f"NDCG@{k}", f"MAP@{k}", "coverage", "train s"]
    rows = []
    for m in report.models:
        r = m.results[WARM_SEGMENT]
        rows.append([m.name, m.family, *(r.metrics[x] for x in TABLE_METRICS), r.coverage, m.fit_seconds])
    return columns, rows


def _interval(values: list[float] | None) -> str:
    return f"[{values[0]:+.4f}, {values[1]:+.4f}]" if values else "-"


def print_comparison(report: ComparisonReport) -> None:
    k = report.k
    split = report.split
    columns, rows = comparison_rows(report)
    print_table(
        f"known customers: {report.users.get(WARM_SEGMENT, 0):,} scored, {split['method']} split, "
        f"training positives excluded ({report.data_path}); searched models: "
        f"{report.tuning['trials_per_model']} trials each on one validation split",
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
            f"({split['cold_start_share']:.0%} of customers by seeded hash), scored from their persona mix; "
            f"ALS also folds in their training-period items "
            f"(median {split.get('cold_start_items_median', 0):g} per customer)",
            ["model", "family", f"NDCG@{k}", f"R@{k}", "coverage"],
            cold_rows,
        )
    v = report.verdict
    print_table(
        f"differences in NDCG@{k}, paired bootstrap over customers "
        f"({v['bootstrap']['resamples']:,} resamples, 95% interval)",
        ["difference", "a", "b", "segment", "users", "mean", "95% interval", "above 0"],
        [
            [
                d["name"],
                d["a"],
                d["b"],
                d["segment"],
                d["users"],
                d["mean"],
                _interval(d["ci95"]),
                "yes" if d["above_zero"] else "no",
            ]
            for d in v["differences"]
        ],
    )
    engine, tuned = v.get("engine_best"), v.get("library_best_tuned")
    if engine:
        line = Text.assemble(
            "engine best: ", (engine["model"], "bold"), f" NDCG@{k} {engine[f'ndcg_at_{k}']:.4f}"
        )
        if tuned:
            line.append(
                f"; library best tuned {tuned['model']} {tuned[f'ndcg_at_{k}']:.4f}, difference "
                f"{_interval(v['difference_ci95'])} "
                f"({'beaten' if v['engine_beats_library_tuned'] else 'NOT beaten'} at 95%)"
            )
        lift = v["persona_lift_ci95"]
        said = (
            "above 0"
            if v["persona_lift_above_zero"]
            else "below 0: the personas cost accuracy"
            if lift is not None and lift[1] < 0
            else "NOT above 0"
        )
        line.append(f"; persona lift {_interval(lift)} ({said})")
        stdout_console.print(line, highlight=False)
    if "cold_start" in v:
        c = v["cold_start"]
        stdout_console.print(
            f"cold start: {c['best_persona_conditioned']} NDCG@{k} {c[f'ndcg_at_{k}']:.4f} vs popularity "
            f"{c[f'popularity_ndcg_at_{k}']:.4f} (x{c['ratio_to_popularity']:.2f}; target "
            f"x{c['target_ratio']:g} {'met' if c['meets_target'] else 'NOT met'} at 95%; difference to the "
            f"target {_interval(c['difference_to_target_ci95'])})",
            highlight=False,
        )
    for warning in report.warnings:
        stdout_console.print(Text.assemble(("warning:", "yellow"), " ", warning))
