"""``persona-engine tune``: a time-boxed random search of the engine's hyperparameters.

The search never looks at the test set. It carves a validation split out of the *training* events
and scores every trial there, in the same way the real split is carved:

- time split: the last ``test_days`` of the training period become validation (the future, again);
- predefined split: each customer's training events lose a seeded random handful, as many as the
  median customer has in the test file (MovieLens ua.test: 10), mirroring the benchmark's protocol.

Cold-start hold-out customers stay held out (the same seeded hash). Each model kind starts from the
config's own parameters, so the best trial is never worse on validation than where the search began;
further trials draw from ``search_space`` (log-uniform for rates and strengths). Kinds take turns,
and a trial starts only if the kind's last fit time still fits in the budget. The winner per kind is
written into a copy of the config (the kinds not searched as the config sets them; an existing file
is replaced only with ``--overwrite``), so ``persona-engine train`` or ``compare`` use it directly; the
implicit factor models' per-activity-level persona weights are fitted for the winner on the same
validation split (``training.persona_weights``) and written with it.

``compare`` reuses the pieces with a budget counted in trials instead of seconds (reproducible):
``validation_data``, ``SearchSpec``/``random_search`` (a start or two, then seeded random draws, the
same for every model at the same trial and hyperparameter name: ``search_draw``), and
``LIBRARY_SEARCH_SPACES`` (the engine's ranges without the persona knobs) for the raw
libraries.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
import tomllib
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from engine.data.loading import load_shop
from engine.data.shop_data import ShopData
from engine.models.base import Recommender, TrainingSet
from engine.models.model_blend import ModelBlend
from engine.models.registry import create_model
from training.blend_weights import blend_members, fit_blend_weights
from training.config import ConfigError, TrainConfig, load_config
from training.config_references import check_references
from training.console_output import print_table, progress_bar, stderr_console, stdout_console
from training.evaluation import evaluate_models
from training.flag_error import FlagError
from training.library_baselines import ENGINE_COUNTERPART, library_parameters
from training.persona_weights import fit_persona_weights, fits_persona_weights
from training.prepared_data import (
    EvaluationSegment,
    PreparedData,
    evaluation_segments,
    prepare_split,
    split_for,
)
from training.split import TimeSplit, split_events

# Maps a uniform draw in [0, 1) to a value of the hyperparameter (``search_draw`` makes the draws).
Sampler = Callable[[float], Any]
# A cheap model with one knob (persona popularity) would otherwise spend its whole share of the
# budget re-sampling that knob; 20 draws per dimension cover a small space well enough.
MAX_TRIALS_PER_DIMENSION = 20


def _round(value: float) -> float:
    """Four significant digits: finer differences are noise, and the written config stays readable."""
    return float(f"{value:.4g}")


def _log_uniform(low: float, high: float) -> Sampler:
    return lambda u: _round(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))


def _uniform(low: float, high: float) -> Sampler:
    return lambda u: _round(low + u * (high - low))


def _choice(*values: Any) -> Sampler:
    return lambda u: values[min(int(u * len(values)), len(values) - 1)]


SEARCH_SPACES: dict[str, dict[str, Sampler]] = {
    "persona_popularity": {
        "prior_strength": _log_uniform(1.0, 1000.0),
        "attribution_iterations": _choice(0, 1, 2, 3, 5, 10),
    },
    "als": {
        "factors": _choice(32, 64, 100, 128, 192),
        "regularization": _log_uniform(0.01, 100.0),
        "alpha": _log_uniform(0.5, 50.0),
        "iterations": _choice(10, 15, 20, 30),
        "persona_blend": _uniform(0.0, 0.6),
        "demographic_weight": _uniform(0.0, 0.6),
    },
    "bpr": {
        "factors": _choice(32, 64, 100, 128),
        "learning_rate": _log_uniform(0.005, 0.1),
        "regularization": _log_uniform(1e-4, 0.1),
        "iterations": _choice(50, 100, 200),
        "persona_blend": _uniform(0.0, 1.0),
    },
    "lightfm_hybrid": {
        "no_components": _choice(16, 32, 64),
        "learning_rate": _log_uniform(0.01, 0.1),
        "epochs": _choice(10, 20, 30, 50),
        "persona_weight": _uniform(0.0, 2.0),
        "demographic_weight": _uniform(0.0, 1.0),
        "item_attribute_weight": _uniform(0.0, 1.0),
        "item_alpha": _log_uniform(1e-8, 1e-5),
        "user_alpha": _log_uniform(1e-8, 1e-5),
    },
    # MovieLens 100K's validation optimum sits near dropout 0.5-0.75 and regularization 200-700; the
    # ranges reach well past it both ways. The rank is not searched: larger only costs memory.
    "linear_autoencoder": {
        "dropout": _uniform(0.0, 0.9),
        "regularization": _log_uniform(1.0, 3000.0),
        "zero_diagonal": _choice(False, True),
        "persona_blend": _uniform(0.0, 0.6),
        "demographic_weight": _uniform(0.0, 0.6),
    },
}


# ALS with the per-interaction penalty (its default) weighs ``regularization`` once per interaction, so
# its useful values sit about a hundred times below the constant penalty's (0.2 against 20 on the shops
# measured); this range replaces SEARCH_SPACES' when the search starts from that form.
PER_INTERACTION_REGULARIZATION: Sampler = _log_uniform(0.001, 10.0)


def search_space(kind: str, start: Mapping[str, Any]) -> dict[str, Sampler]:
    """The ranges a search of ``kind`` draws from when its trials start from ``start`` (a config's
    parameters): SEARCH_SPACES, with the regularization range of the ALS penalty form in force."""
    space = dict(SEARCH_SPACES.get(kind, {}))
    if kind == "als" and create_model(kind, **start).get_config().get("penalty") == "per_interaction":
        space["regularization"] = PER_INTERACTION_REGULARIZATION
    return space


# The raw libraries search the same ranges as their engine counterparts, without the persona knobs
# (implicit's ALS has the constant penalty, so its range is SEARCH_SPACES' own).
LIBRARY_SEARCH_SPACES: dict[str, dict[str, Sampler]] = {
    library: {
        name: draw for name, draw in SEARCH_SPACES[engine].items() if name in library_parameters(library)
    }
    for library, engine in ENGINE_COUNTERPART.items()
}


def search_draw(seed: int, trial: int, dimension: str) -> float:
    """The uniform draw behind hyperparameter ``dimension`` at random trial ``trial`` of a search.

    Seeded by the search seed, the trial and the hyperparameter's *name*, not the model's: every model
    that searches a hyperparameter of that name tries the same quantile of its range at the same trial
    (common random numbers). So the engine's models and their raw libraries (``compare``) try the same
    factors, learning rates and iterations, and the difference between their winners is the models',
    not the luck of two draws: on MovieLens 100K with independent draws per model the tuned library's
    ALS scored 0.3168 at one search seed and 0.3051 at the next two, which moved the engine-library
    difference by more than its interval was wide. A model's trials still do not change when other
    models join or leave the search.
    """
    return float(np.random.default_rng([seed, zlib.crc32(dimension.encode("utf-8")), trial]).random())


@dataclass(frozen=True)
class SearchSpec:
    """One model's search: how to build it, the parameters to try first, and the ranges to draw from.

    ``starts`` are tried in order before any random draw (the config's values, then the model's own
    defaults), so the winner is never worse on validation than either.
    """

    name: str
    build: Callable[[dict[str, Any]], Recommender]
    starts: tuple[dict[str, Any], ...]
    space: Mapping[str, Sampler]
    fixed: Mapping[str, Any] = field(default_factory=dict)  # set on every trial (seed, threads)
    scores_cold_start: bool = True  # False: a model with no way to place unseen customers


def trial_parameters(spec: SearchSpec, index: int, seed: int) -> dict[str, Any]:
    """The parameters of trial ``index`` of a search: a start, or the first start with drawn values."""
    if index < len(spec.starts):
        return {**spec.starts[index], **spec.fixed}
    drawn = {name: draw(search_draw(seed, index, name)) for name, draw in spec.space.items()}
    return {**spec.starts[0], **drawn, **spec.fixed}


def run_trial(
    spec: SearchSpec,
    parameters: dict[str, Any],
    training_set: TrainingSet,
    segments: list[EvaluationSegment],
    k: int,
    *,
    started_from_config: bool,
) -> Trial:
    """Fit one set of parameters on the validation training set and score it on the validation events."""
    model = spec.build(parameters)
    fit_started = time.perf_counter()
    model.fit(training_set, show_progress=False)
    seconds = time.perf_counter() - fit_started
    scores = {r.segment: r.metrics["ndcg"] for r in evaluate_models({spec.name: model}, segments, k)}
    return Trial(
        kind=spec.name,
        parameters=model.get_config(),
        ndcg=scores.get("all", float("nan")),
        cold_start_ndcg=scores.get("cold_start"),
        fit_seconds=seconds,
        started_from_config=started_from_config,
    )


def random_search(
    spec: SearchSpec,
    validation: PreparedData,
    k: int,
    *,
    trials: int,
    seed: int,
    on_trial: Callable[[Trial], None] | None = None,
) -> list[Trial]:
    """``trials`` trials of one model on a validation split: a budget counted in fits, so reproducible."""
    if trials < 1:
        raise ConfigError(f"a search needs at least one trial, got {trials}")
    segments = [s for s in validation_segments(validation) if spec.scores_cold_start or s.name == "all"]
    out = []
    for index in range(trials):
        trial = run_trial(
            spec,
            trial_parameters(spec, index, seed),
            validation.training_set,
            segments,
            k,
            started_from_config=index == 0,
        )
        out.append(trial)
        if on_trial is not None:
            on_trial(trial)
    return out


def best_trial(trials: list[Trial]) -> Trial:
    """The trial with the highest validation NDCG; the earliest one on ties (a start before a draw)."""
    return max(trials, key=lambda t: (t.ndcg if math.isfinite(t.ndcg) else -1.0, -trials.index(t)))


def validation_data(config: TrainConfig, shop: ShopData, split: TimeSplit) -> PreparedData:
    """The data a search scores on: a validation split carved from ``split``'s training events, with
    id maps, features and persona mixes rebuilt from the carved training part (the test set unseen)."""
    carved = validation_split(
        split,
        test_days=config.split.test_days,
        cold_start_share=config.split.cold_start_share,
        seed=config.split.seed,
    )
    training_only = dataclasses.replace(shop, events=split.train_events)
    return prepare_split(config, training_only, carved)


def validation_segments(validation: PreparedData) -> list[EvaluationSegment]:
    return [s for s in evaluation_segments(validation) if s.name in ("all", "cold_start")]


@dataclass(frozen=True)
class Trial:
    kind: str
    parameters: dict[str, Any]
    ndcg: float
    cold_start_ndcg: float | None
    fit_seconds: float
    started_from_config: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TuningResult:
    config_path: Path
    written_config: Path
    budget_seconds: float
    seconds: float
    validation: dict[str, Any]
    trials: list[Trial] = field(default_factory=list)
    best: dict[str, Trial] = field(default_factory=dict)
    blend: dict[str, Any] | None = None  # [models.blend] as written: members at the winners, fitted weights
    blend_ndcg: float | None = None  # its validation NDCG
    # The config's other models, written with the settings --config gives them (not searched this run).
    kept: list[str] = field(default_factory=list)
    replaced_existing: bool = False  # --overwrite replaced a file that was there
    # Kept models whose settings in the replaced file differed from --config's: those are lost.
    settings_replaced: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": str(self.config_path),
            "written_config": str(self.written_config),
            "replaced_existing": self.replaced_existing,
            "tuned": list(self.best),
            "kept": self.kept,
            "settings_replaced": self.settings_replaced,
            "budget_seconds": self.budget_seconds,
            "seconds": self.seconds,
            "validation": self.validation,
            "best": {kind: t.to_dict() for kind, t in self.best.items()},
            "blend": None if self.blend is None else {**self.blend, "validation_ndcg": self.blend_ndcg},
            "trials": [t.to_dict() for t in self.trials],
        }


def _rank_key(seed: int) -> pl.Expr:
    """A seeded pseudo-random number per event, stable across runs and row orders."""
    return (
        pl.col("event_id")
        .cast(pl.Utf8)
        .map_elements(
            lambda event_id: int.from_bytes(
                hashlib.blake2b(f"{seed}:{event_id}".encode(), digest_size=8).digest(), "big"
            ),
            return_dtype=pl.UInt64,
        )
    )


def validation_split(split: TimeSplit, *, test_days: int, cold_start_share: float, seed: int) -> TimeSplit:
    """A validation split carved from ``split.train_events`` only (see the module docstring)."""
    train = split.train_events
    if split.method != "predefined":
        return split_events(train, test_days=test_days, cold_start_share=cold_start_share, seed=seed)
    per_customer = split.test_events.group_by("customer_id").len()["len"]
    median = per_customer.median()
    holdout = max(1, int(median)) if isinstance(median, int | float) else 1
    ranked = train.with_columns(_rank_key(seed).alias("_key")).with_columns(
        pl.col("_key").rank("ordinal").over("customer_id").alias("_rank"),
        pl.len().over("customer_id").alias("_n"),
    )
    # Keep at least half of every customer's history for training.
    is_validation = pl.col("_rank") <= pl.min_horizontal(pl.lit(holdout), pl.col("_n") // 2)
    validation = ranked.filter(is_validation).drop("_key", "_rank", "_n")
    kept = ranked.filter(~is_validation).drop("_key", "_rank", "_n")
    warm_set = set(split.warm_customers)
    first = validation["timestamp"].min()
    return TimeSplit(
        test_start=first if first is not None else split.test_start,  # type: ignore[arg-type]
        train_events=kept,
        test_events=validation,
        warm_customers=tuple(c for c in kept["customer_id"].unique(maintain_order=True) if c in warm_set),
        cold_customers=split.cold_customers,
        method="predefined",
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):  # an inline table (a blend's members); TOML has no null: None is left out
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None) + "}"
    raise TypeError(f"cannot write {value!r} to TOML")


def to_toml(document: Mapping[str, Any], header: str = "") -> str:
    """A config document as TOML: scalars first in each table, then its sub-tables."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]

    def table(name: str, body: Mapping[str, Any]) -> None:
        # TOML has no null: a None parameter is its default, so it is left out
        scalars = {k: v for k, v in body.items() if not isinstance(v, Mapping) and v is not None}
        tables = {k: v for k, v in body.items() if isinstance(v, Mapping)}
        if name and (scalars or not tables):
            lines.append("")
            lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
        for key, sub in tables.items():
            table(f"{name}.{key}" if name else key, sub)

    table("", document)
    return "\n".join(lines).lstrip("\n") + "\n"


def tuned_config_path(config_path: Path, write_config: Path | None) -> Path:
    """Where the tuned config goes: ``--write-config``, or CONFIG's name with ``-tuned``."""
    return write_config or config_path.with_name(f"{config_path.stem}-tuned.toml")


def refuse_to_replace(path: Path, *, flag_given: bool) -> None:
    """Refuse before the search when ``path`` exists: a tuned config may hold an hour of search for
    models this run does not tune, and an accidental rerun with a short budget must not erase it."""
    if not path.exists():
        return
    where = str(path) if flag_given else f"{path} (the default: CONFIG with -tuned)"
    raise FlagError(
        "--write-config",
        f"{where} already exists and tune never replaces a file silently: name a new file with "
        "--write-config NEW.toml, or pass --overwrite to replace it (models not tuned in this run are "
        "then written as --config sets them)",
    )


def settings_overwritten(config_path: Path, written: Path, tuned: Sequence[str]) -> list[str]:
    """The models not tuned this run whose settings in ``written`` (about to be replaced under
    ``--overwrite``) differ from ``config_path``'s: their earlier tuning would be lost, since the new
    file takes them from ``--config``. Empty when there is no such file, or it is not a TOML config."""
    if not written.exists() or written.resolve() == config_path.resolve():
        return []
    try:
        before = tomllib.loads(written.read_text(encoding="utf-8")).get("models", {})
        given = tomllib.loads(config_path.read_text(encoding="utf-8")).get("models", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    return [
        kind
        for kind in before
        if kind not in tuned and kind != ModelBlend.kind and before.get(kind) != given.get(kind)
    ]


def _replaced_text(kinds: Sequence[str], config_path: Path, written: Path) -> str:
    return (
        f"{written} sets {', '.join(kinds)} otherwise than {config_path}; --overwrite writes them as "
        f"{config_path} sets them (an earlier tuning of them is lost). To re-tune other models and keep "
        f"these, pass --config {written}"
    )


def tuned_document(original: Mapping[str, Any], best: Mapping[str, Trial]) -> dict[str, Any]:
    """The original config document with each tuned kind's parameters replaced by its best trial's."""
    document = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in original.items()}
    models = {k: dict(v) for k, v in document.get("models", {}).items()}
    for kind, trial in best.items():
        models[kind] = {**models.get(kind, {}), **trial.parameters}
    document["models"] = models
    return document


def run_tuning(
    config_path: Path,
    *,
    budget_seconds: float,
    data_path: Path | None = None,
    models: list[str] | None = None,
    seed: int = 0,
    write_config: Path | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> TuningResult:
    """Search each kind's hyperparameters for ``budget_seconds`` and write the winners into a copy of
    the config (``write_config``, default CONFIG-tuned.toml); an existing file is replaced only with
    ``overwrite``, and the config's models not searched this run are written as the config sets them."""
    if not budget_seconds > 0:
        raise ConfigError(f"--budget-seconds must be positive, got {budget_seconds}")
    started = time.perf_counter()
    written_config = tuned_config_path(config_path, write_config)
    config = load_config(config_path)
    kinds = models or [kind for kind in config.models if kind in SEARCH_SPACES]
    unknown = [kind for kind in kinds if kind not in SEARCH_SPACES]
    if unknown:
        raise FlagError(
            "--models", f"cannot tune {', '.join(unknown)}; tunable kinds: {', '.join(SEARCH_SPACES)}"
        )
    if not kinds:
        raise ConfigError(f"{config_path}: no tunable model in [models]; tunable: {', '.join(SEARCH_SPACES)}")
    check_references(config, data_path=data_path)
    if not overwrite:  # before the search, not after an hour of it
        refuse_to_replace(written_config, flag_given=write_config is not None)
    replaced = settings_overwritten(config_path, written_config, kinds)
    if replaced:  # said before the search, so that it can be stopped while nothing is lost yet
        stderr_console.print(
            f"warning: {_replaced_text(replaced, config_path, written_config)}", highlight=False
        )
    data_dir = Path(data_path or config.data.path)
    shop = load_shop(data_dir, skip_invalid=config.data.skip_invalid)
    split = split_for(config, shop, data_dir)
    prepared = validation_data(config, shop, split)  # the test set stays unseen
    carved = prepared.split
    segments = validation_segments(prepared)
    k = config.evaluation.k
    spaces = {kind: search_space(kind, config.models.get(kind, {})) for kind in kinds}
    result = TuningResult(
        config_path=config_path,
        written_config=written_config,
        budget_seconds=budget_seconds,
        seconds=0.0,
        validation={
            "method": carved.method,
            "train_events": carved.train_events.height,
            "validation_events": carved.test_events.height,
            "customers_scored": next((s.relevant.shape[0] for s in segments if s.name == "all"), 0),
        },
    )
    last_fit: dict[str, float] = {}
    spent: dict[str, float] = {}
    tried: dict[str, int] = {}
    first_trial = {kind: True for kind in kinds}
    search_started = time.perf_counter()
    result.validation["preparation_seconds"] = search_started - started
    # The budget is for the search; loading and persona inference run once before it, whatever it is.
    deadline = search_started + budget_seconds
    with progress_bar(show_progress) as progress:
        task = progress.add_task("tuning", total=budget_seconds)
        while True:
            runnable = [
                kind
                for kind in kinds
                if first_trial[kind]
                or (
                    time.perf_counter() + last_fit.get(kind, 0.0) <= deadline
                    and tried.get(kind, 0) < MAX_TRIALS_PER_DIMENSION * len(SEARCH_SPACES[kind])
                )
            ]
            if not runnable or (time.perf_counter() >= deadline and not any(first_trial.values())):
                break
            # Each kind gets an equal share of the search time: the one with least time so far goes next.
            kind = min(runnable, key=lambda name: (not first_trial[name], spent.get(name, 0.0)))
            if first_trial[kind]:
                parameters = dict(config.models.get(kind, {}))
            else:
                parameters = {
                    **config.models.get(kind, {}),
                    **{
                        name: draw(search_draw(seed, tried[kind], name))
                        for name, draw in spaces[kind].items()
                    },
                }
            model = create_model(kind, **parameters)
            fit_started = time.perf_counter()
            model.fit(prepared.training_set, show_progress=False)
            last_fit[kind] = time.perf_counter() - fit_started
            spent[kind] = spent.get(kind, 0.0) + last_fit[kind]
            scores = {r.segment: r.metrics["ndcg"] for r in evaluate_models({kind: model}, segments, k)}
            spent[kind] += time.perf_counter() - fit_started - last_fit[kind]
            tried[kind] = tried.get(kind, 0) + 1
            trial = Trial(
                kind=kind,
                parameters=model.get_config(),
                ndcg=scores.get("all", float("nan")),
                cold_start_ndcg=scores.get("cold_start"),
                fit_seconds=last_fit[kind],
                started_from_config=first_trial[kind],
            )
            first_trial[kind] = False
            result.trials.append(trial)
            if kind not in result.best or trial.ndcg > result.best[kind].ndcg:
                result.best[kind] = trial
            progress.update(
                task,
                completed=min(budget_seconds, time.perf_counter() - search_started),
                description=f"tuning ({len(result.trials)} trials, {kind})",
            )
    # The implicit factor models' per-activity-level persona weights are fitted once, on the same
    # validation split, for the winning factors (training.persona_weights) and written with them.
    for kind, trial in list(result.best.items()):
        if fits_persona_weights(kind):
            weighted = fit_persona_weights(kind, trial.parameters, prepared, k)
            result.best[kind] = dataclasses.replace(trial, parameters=weighted)
    if ModelBlend.kind in config.models:  # its members at the winners, its weights fitted on the same split
        members = blend_members(
            config.models[ModelBlend.kind], {k: t.parameters for k, t in result.best.items()}
        )
        blend = {**config.models[ModelBlend.kind], "members": members}
        fitted = fit_blend_weights(blend, prepared, segments, k)
        result.blend = {**blend, **fitted.settings()}
        result.blend_ndcg = fitted.ndcg
    original = tomllib.loads(Path(config_path).read_text(encoding="utf-8"))
    result.kept = [
        kind for kind in original.get("models", {}) if kind not in result.best and kind != ModelBlend.kind
    ]
    kept = f"\nNot tuned in this run, as {config_path} sets them:\n  {', '.join(result.kept)}"
    searched = "" if data_path is None else f" --data {data_path}"
    header = (
        f"Tuned by `persona-engine tune --config {config_path}{searched} --budget-seconds "
        f"{budget_seconds:g}`:\n"
        f"{len(result.trials)} trials, NDCG@{k} on a validation split carved from the training events\n"
        f"({carved.method}; the test events were never used). Best validation NDCG@{k} per model:\n"
        + "\n".join(f"  {kind}: {t.ndcg:.4f}" for kind, t in result.best.items())
        + (kept if result.kept else "")
    )
    document = tuned_document(original, result.best)
    if data_path is not None:  # the settings were searched on that data: train on it too
        document["data"] = {**document.get("data", {}), "path": str(data_path)}
        given = original.get("data", {}).get("path", "unset")
        header += f"\n[data] path is the --data searched ({given} in {config_path})"
    if result.blend is not None:
        document["models"][ModelBlend.kind] = result.blend
    result.replaced_existing = result.written_config.exists()
    result.settings_replaced = settings_overwritten(config_path, result.written_config, list(result.best))
    if not overwrite:
        refuse_to_replace(result.written_config, flag_given=write_config is not None)  # made meanwhile?
    result.written_config.write_text(to_toml(document, header), encoding="utf-8")
    load_config(result.written_config)  # what we wrote must be a valid config
    result.seconds = time.perf_counter() - started
    return result


def print_tuning(result: TuningResult) -> None:
    v = result.validation
    rows = []
    for kind, best in result.best.items():
        start = next(t for t in result.trials if t.kind == kind and t.started_from_config)
        n = sum(1 for t in result.trials if t.kind == kind)
        rows.append([kind, n, start.ndcg, best.ndcg, best.cold_start_ndcg, best.fit_seconds])
    print_table(
        f"hyperparameter search: {len(result.trials)} trials, {result.seconds:.0f} s in all "
        f"(search budget {result.budget_seconds:g} s); validation = {v['validation_events']:,} of the "
        f"training events ({v['method']}), {v['customers_scored']:,} customers",
        ["model", "trials", "NDCG start", "NDCG best", "cold NDCG", "fit s"],
        rows,
    )
    for kind, best in result.best.items():
        settings = ", ".join(
            f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
            for name, value in best.parameters.items()
            if name in SEARCH_SPACES[kind]
        )
        stdout_console.print(f"{kind}: {settings}", highlight=False)
    if result.blend is not None:
        members = ", ".join(
            f"{m['kind']} {w:g}"
            for m, w in zip(result.blend["members"], result.blend["weights"], strict=True)
        )
        stdout_console.print(f"blend: {members} (validation NDCG {result.blend_ndcg:.4f})", highlight=False)
    stdout_console.print(f"tuned in this run: {', '.join(result.best)}", highlight=False)
    if result.kept:
        stdout_console.print(
            f"kept as {result.config_path} sets them: {', '.join(result.kept)}", highlight=False
        )
    if result.settings_replaced:
        replaced = _replaced_text(result.settings_replaced, result.config_path, result.written_config)
        stdout_console.print(f"warning: {replaced}", highlight=False)
    verb = "replaced (--overwrite)" if result.replaced_existing else "written to"
    stdout_console.print(f"tuned config {verb} {result.written_config}", highlight=False)
