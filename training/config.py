"""The training configuration: one TOML file that says which data, which personas, which models.

Validated strictly (unknown keys are errors that name the key and the file), because a misspelt
hyperparameter silently falling back to its default is the classic way to waste a day of training.
The resolved config is stored in the artifact manifest so every model can be traced to its settings.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.data.contract import EVENT_TYPES
from engine.data.interactions import DEFAULT_EVENT_WEIGHTS
from engine.errors import PersonaEngineError
from engine.live.event_store import is_shared_log_location
from engine.models.registry import DEFAULT_KINDS, MODEL_KINDS, create_model, model_settings_schema
from engine.personas.inference.config import PersonaInferenceConfig
from engine.personas.steering import DEFAULT_STEERING

KNOWN_MODEL_KINDS: tuple[str, ...] = tuple(MODEL_KINDS)


class ConfigError(PersonaEngineError, ValueError):
    """An invalid training config; the message names the file and the key."""


@dataclass(frozen=True)
class DataSection:
    path: str = "data/demo"
    skip_invalid: bool = False
    # A server's event log (serve --event-log): its events are added to the shop's, deduplicated by
    # event_id. A SQLite file, or the fleet's shared log as redis://host:port/db?stream=NAME. Empty: the
    # shop's events only.
    event_log: str = ""


@dataclass(frozen=True)
class PersonaSection:
    """``steering``: how strongly a mix given in a request overrides a known customer's history when
    the artifact serves, from 0 (the mix only replaces their persona) to 1 (they are ranked as the mix
    alone ranks); see ``engine.personas.steering``."""

    catalog: str = "default"
    inference: dict[str, Any] = field(default_factory=dict)
    steering: float = DEFAULT_STEERING


SPLIT_METHODS: tuple[str, ...] = ("time", "predefined")


@dataclass(frozen=True)
class SplitSection:
    """``time``: the last ``test_days`` are the test period. ``predefined``: the events listed in
    ``test_events`` (a CSV with an ``event_id`` column, relative to the data folder) are the test set,
    as public benchmarks ship them (MovieLens ua.test)."""

    method: str = "time"
    test_days: int = 28
    test_events: str = "test_events.csv"
    cold_start_share: float = 0.1
    seed: int = 13


@dataclass(frozen=True)
class EvaluationSection:
    k: int = 10


@dataclass(frozen=True)
class TrainingSection:
    """``deterministic``: every model is fitted single-threaded with its seed fixed, so two runs with
    the same config on the same data give identical figures. Off by default for ``train`` (BPR and
    LightFM then fit with several Hogwild threads, faster, and their figures move in the third
    decimal from run to run); ``compare`` and ``evaluate`` turn it on, since they exist to compare
    figures."""

    deterministic: bool = False


@dataclass(frozen=True)
class OutputSection:
    """``refit_on_all_events``: after evaluation on the split, refit every model (and the persona mixes,
    id maps, history and decision estimates) on all events and all customers for the artifact, so the
    served models know the freshest behaviour and the cold-start hold-out. False serves the models
    that were evaluated, fitted on the split's training part only.

    ``fold_in_live_events``: when the artifact serves, a model that can solve a customer's vector from
    their events (ALS, the linear autoencoder, blends of them) folds a known customer's live events
    since the artifact's data into their vector (``engine.ranking.unlearned_events``). False scores
    known customers from their fitted vectors only; their live session then moves their persona mix
    alone."""

    root: str = "artifacts"
    refit_on_all_events: bool = True
    fold_in_live_events: bool = True


@dataclass(frozen=True)
class DriftSection:
    """The threshold the served artifact's live drift test uses, calibrated while training
    (``engine.personas.drift_calibration``): ``target_false_alarm`` is the share of customers without a
    change it may flag, ``calibration_customers`` the customers sampled for it (0: all)."""

    target_false_alarm: float = 0.05
    calibration_customers: int = 20_000


TRAINING_ENGINES: tuple[str, ...] = ("local", "spark")


@dataclass(frozen=True)
class EngineSection:
    """Where training runs. ``local``: this process. ``spark``: Apache Spark (``training.spark``),
    ``master`` any Spark master URL (``local[2]``, ``spark://host:7077``, ``yarn``, ``k8s://...``);
    empty takes the one ``spark-submit`` was given (or local[*] outside spark-submit).
    ``partitions`` is the number of customer partitions of the distributed EM and the shuffle
    partitions of every other stage (0: twice the cluster's default parallelism)."""

    name: str = "local"
    master: str = ""
    partitions: int = 0
    driver_memory: str = "2g"


@dataclass(frozen=True)
class TrainConfig:
    data: DataSection = field(default_factory=DataSection)
    personas: PersonaSection = field(default_factory=PersonaSection)
    split: SplitSection = field(default_factory=SplitSection)
    interactions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    models: dict[str, dict[str, Any]] = field(default_factory=lambda: {kind: {} for kind in DEFAULT_KINDS})
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    output: OutputSection = field(default_factory=OutputSection)
    engine: EngineSection = field(default_factory=EngineSection)
    drift: DriftSection = field(default_factory=DriftSection)
    source: str = "<defaults>"
    # The keys that name a file or folder ("[data] path", ...) and their values as ``source`` gave them
    # (relative paths resolved), so a missing one is reported naming the file and the key, unless a
    # command-line flag has replaced the value since (``from_source``; training/config_references.py).
    source_values: dict[str, str] = field(default_factory=dict, compare=False)

    def from_source(self, key: str, value: str) -> bool:
        """Whether ``value`` of ``key`` ("[data] path") is the one ``source`` gave, not a flag's."""
        return key in self.source_values and self.source_values[key] == value

    def model_settings(self, kind: str) -> dict[str, Any]:
        """The settings ``kind`` is built with: the config's, on one thread in deterministic mode.

        One thread is all it takes: every model's seed is fixed (``random_state``, default 42), and
        with one thread the fits of BPR (implicit) and LightFM (Hogwild SGD) are reproducible. A
        blend's members are models of their own, each put on one thread the same way (a BPR member
        fitted on two Hogwild threads moved the blend's NDCG@10 by 0.0002 between two `evaluate` runs).
        """
        settings = dict(self.models[kind])
        if self.training.deterministic:
            settings = _on_one_thread(kind, settings)
        return settings

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("source")
        out.pop("source_values")
        return out


def _on_one_thread(kind: str, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` of ``kind`` with ``num_threads`` 1 wherever a model has it, members included."""
    settings = dict(settings)
    if "num_threads" in model_settings_schema(kind):
        settings["num_threads"] = 1
    members = settings.get("members")
    if isinstance(members, list):
        settings["members"] = [
            {"kind": member["kind"], **_on_one_thread(str(member["kind"]), member)}
            if isinstance(member, dict) and "kind" in member
            else member
            for member in members
        ]
    return settings


_EXPECTED = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
Schema = dict[str, tuple[Any, Any]]
"""Each key of a table: its declared type and default."""


def _shown(value: Any) -> str:
    """A value as the TOML file spells it: true, "64", 64."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _type_problem(value: Any, expected: Any) -> str | None:
    """Why ``value`` is not of the declared type, or None; types other than these four are the
    constructor's to check."""
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif expected is str:
        ok = isinstance(value, str)
    else:
        return None
    return None if ok else f"expected {_EXPECTED[expected]}, got {_shown(value)}"


def _did_you_mean(name: str, allowed: list[str], brackets: bool = False) -> str:
    close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6) or [
        key for key in allowed if key.startswith(name)
    ]
    if close:
        return f" (did you mean {f'[{close[0]}]' if brackets else repr(close[0])}?)"
    return f"; allowed: {', '.join(allowed)}"


def check_table(raw: Any, schema: Schema, where: str) -> dict[str, Any]:
    """Every key of a config table known to ``schema`` and of its declared type; the first problem
    is raised naming the table and the key (``[models.als] factorz: unknown key (did you mean ...)``)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"[{where}] must be a table")
    for key in raw:
        if key not in schema:
            hint = _did_you_mean(key, list(schema)) if schema else "; this model takes no settings"
            raise ConfigError(f"[{where}] {key}: unknown key{hint}")
    for key, value in raw.items():
        problem = _type_problem(value, schema[key][0])
        if problem is not None:
            raise ConfigError(f"[{where}] {key}: {problem}")
    return raw


def _dataclass_schema(cls: type) -> Schema:
    hints = typing.get_type_hints(cls)
    defaults = cls()
    return {f.name: (hints[f.name], getattr(defaults, f.name)) for f in dataclasses.fields(cls)}


def _section(raw: Any, cls: type, where: str) -> Any:
    return cls(**check_table(raw, _dataclass_schema(cls), where))


def _constructed(where: str, build: Any, params: dict[str, Any]) -> Any:
    """Build from checked settings, the constructor's own range checks reported as config errors."""
    try:
        return build(**params)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"[{where}] {error}") from None


def parse_config(
    document: dict[str, Any], source: str = "<memory>", base_dir: Path | None = None
) -> TrainConfig:
    """Validate a parsed TOML document; relative data/output paths resolve against ``base_dir``.

    Every key of every section is checked here, the models' settings against their constructors,
    so a misspelt or mistyped setting stops the run before any data is read or any model trained.
    """
    try:
        allowed = [
            "data",
            "personas",
            "split",
            "interactions",
            "models",
            "evaluation",
            "training",
            "output",
            "engine",
            "drift",
        ]
        for name in document:
            if name not in allowed:
                raise ConfigError(f"unknown section [{name}]{_did_you_mean(name, allowed, brackets=True)}")
        data = _section(document.get("data", {}), DataSection, "data")
        personas = _section(document.get("personas", {}), PersonaSection, "personas")
        inference_schema = _dataclass_schema(PersonaInferenceConfig)
        check_table(personas.inference, inference_schema, "personas.inference")
        _constructed("personas.inference", PersonaInferenceConfig, personas.inference)
        split = _section(document.get("split", {}), SplitSection, "split")
        evaluation = _section(document.get("evaluation", {}), EvaluationSection, "evaluation")
        training = _section(document.get("training", {}), TrainingSection, "training")
        output = _section(document.get("output", {}), OutputSection, "output")
        engine = _section(document.get("engine", {}), EngineSection, "engine")
        drift = _section(document.get("drift", {}), DriftSection, "drift")
        if not 0 < drift.target_false_alarm < 1:
            raise ConfigError(f"[drift] target_false_alarm must be in (0, 1), got {drift.target_false_alarm}")
        if drift.calibration_customers < 0:
            raise ConfigError(
                f"[drift] calibration_customers must be >= 0 (0: all), got {drift.calibration_customers}"
            )
        if engine.name not in TRAINING_ENGINES:
            raise ConfigError(
                f"[engine] name must be one of {', '.join(TRAINING_ENGINES)}; got {engine.name!r}"
            )
        if engine.partitions < 0:
            raise ConfigError(f"[engine] partitions must be >= 0, got {engine.partitions}")
        if split.method not in SPLIT_METHODS:
            raise ConfigError(
                f"[split] method must be one of {', '.join(SPLIT_METHODS)}; got {split.method!r}"
            )
        if split.test_days < 1:
            raise ConfigError(f"[split] test_days must be >= 1, got {split.test_days}")
        if not 0 <= split.cold_start_share < 1:
            raise ConfigError(f"[split] cold_start_share must be in [0, 1), got {split.cold_start_share}")
        if not 0 <= personas.steering <= 1:
            raise ConfigError(f"[personas] steering must be between 0 and 1, got {personas.steering}")
        if not 1 <= evaluation.k <= 1000:
            raise ConfigError(f"[evaluation] k must be in 1..1000, got {evaluation.k}")
        weights = document.get("interactions", dict(DEFAULT_EVENT_WEIGHTS))
        if isinstance(weights, dict):
            for event_type in weights:
                if event_type not in EVENT_TYPES:
                    hint = _did_you_mean(event_type, list(EVENT_TYPES))
                    raise ConfigError(f"[interactions] {event_type}: unknown event type{hint}")
        if not isinstance(weights, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in weights.values()
        ):
            raise ConfigError("[interactions] must map event types to positive weights, e.g. purchase = 5.0")
        models = document.get("models")
        if models is None:
            models = {kind: {} for kind in DEFAULT_KINDS}
        if not isinstance(models, dict) or not models:
            raise ConfigError("[models] must name at least one model, e.g. [models.als]")
        for name, params in models.items():
            if name not in KNOWN_MODEL_KINDS:
                raise ConfigError(
                    f"[models.{name}] is not a known model; known: {', '.join(KNOWN_MODEL_KINDS)}"
                )
            if not isinstance(params, dict):
                raise ConfigError(f"[models.{name}] must be a table of hyperparameters")
            check_table(params, model_settings_schema(name), f"models.{name}")
            _constructed(f"models.{name}", lambda kind=name, **p: create_model(kind, **p), params)
    except ConfigError as error:
        message = str(error)
        raise ConfigError(
            f"{source}, {message}" if message.startswith("[") else f"{source}: {message}"
        ) from None
    if base_dir is not None:
        data = DataSection(
            path=data.path if "://" in data.path else str(_resolve(data.path, base_dir)),
            skip_invalid=data.skip_invalid,
            event_log=_resolve_event_log(data.event_log, base_dir),
        )
        output = dataclasses.replace(output, root=str(_resolve(output.root, base_dir)))
        catalog = personas.catalog
        if catalog.endswith(".toml"):
            personas = dataclasses.replace(personas, catalog=str(_resolve(catalog, base_dir)))
    return TrainConfig(
        data=data,
        personas=personas,
        split=split,
        interactions={str(k): float(v) for k, v in weights.items()},
        models={str(k): dict(v) for k, v in models.items()},
        evaluation=evaluation,
        training=training,
        output=output,
        engine=engine,
        drift=drift,
        source=source,
        source_values={
            "[data] path": data.path,
            "[data] event_log": data.event_log,
            "[personas] catalog": personas.catalog,
            "[split] test_events": split.test_events,
            "[output] root": output.root,
        },
    )


def _resolve_event_log(location: str, base_dir: Path) -> str:
    """A SQLite log's path is taken relative to ``base_dir``; a shared log's Redis URL is kept as given."""
    if not location or is_shared_log_location(location):
        return location
    return str(_resolve(location, base_dir))


def _resolve(path: str, base_dir: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else (base_dir / p)


def load_config(path: Path) -> TrainConfig:
    """Read a TOML config; relative paths in it are taken relative to the current directory."""
    if not path.is_file():
        raise ConfigError(f"{path}: training config not found")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    return parse_config(document, source=str(path), base_dir=Path.cwd())
