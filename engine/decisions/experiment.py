"""A/B experiments: named arms with traffic shares, each customer in one arm by a stable hash of their id.

An experiment compares model versions or decision policies on live traffic. Assignment must be
stable (a customer sees one arm for the whole experiment, on every replica and after restarts) and
independent of anything the arms could influence, so it is a hash of the experiment name and the
customer id: SHA-256, first 8 bytes read as a number u in [0, 1), and the arm is the first whose
cumulative share exceeds u. Python's ``hash()`` would differ between processes; the experiment name
in the hash gives each new experiment a fresh split, so one experiment's control group is not the
next one's control group too.

Changing the shares of a running experiment (through the admin service) moves only the customers
whose u falls in the part of [0, 1) that changed arm: widening the treatment from 10% to 20% keeps
the first 10% where they were.

Config, strictly validated (``persona-engine serve --experiment FILE``)::

    [experiment]
    name = "bandit-vs-static"
    control = "static"

    [experiment.arms.static]
    share = 0.5
    policy = "artifact"         # the artifact's decision policy (epsilon-greedy by default)

    [experiment.arms.bandit]
    share = 0.5
    policy = "online-bandit"    # engine/decisions/online_bandit.py
    model = "als"               # optional: the recommender for this arm (default: the serving one)
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from engine.errors import PersonaEngineError
from engine.live.state_store import StateStore

MAX_NAME_CHARS = 64
# Experiment and arm names (the config file's and the admin API's rule): they go into logs and reports.
NAME_PATTERN = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_NAME_CHARS - 1}}}$")
_SHARE_TOLERANCE = 1e-9
_EXPERIMENT_KEYS = {"name", "control", "arms"}
_ARM_KEYS = {"share", "policy", "model"}


class ExperimentError(PersonaEngineError, ValueError):
    """An invalid experiment; the message names the file (when there is one) and the key at fault."""


class ArmPolicy(StrEnum):
    ARTIFACT = "artifact"
    ONLINE_BANDIT = "online-bandit"


@dataclass(frozen=True)
class ExperimentArm:
    name: str
    share: float
    policy: ArmPolicy = ArmPolicy.ARTIFACT
    model: str = ""  # empty: the serving model

    def servable_by(self, model_names: Collection[str]) -> bool:
        """Whether an artifact holding ``model_names`` can serve this arm (every check of an arm's
        model against an artifact: SetExperiment, ReloadModel, start-up and each request)."""
        return not self.model or self.model in model_names


@dataclass(frozen=True)
class Experiment:
    name: str
    control: str
    arms: tuple[ExperimentArm, ...]

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ExperimentError(
                f"experiment.name {self.name!r} must be 1-64 letters, digits, '_', '-' or '.'"
            )
        if not self.arms:
            raise ExperimentError("experiment.arms: an experiment needs at least one arm")
        seen: set[str] = set()
        for arm in self.arms:
            where = f"experiment.arms.{arm.name}"
            if not NAME_PATTERN.match(arm.name):
                raise ExperimentError(f"{where}: arm names must be 1-64 letters, digits, '_', '-' or '.'")
            if arm.name in seen:
                raise ExperimentError(f"{where}: the arm is named twice")
            seen.add(arm.name)
            if not (0 < arm.share <= 1):
                raise ExperimentError(f"{where}.share must be in (0, 1], got {arm.share}")
        total = sum(arm.share for arm in self.arms)
        if abs(total - 1.0) > _SHARE_TOLERANCE:
            raise ExperimentError(f"experiment.arms: the shares must sum to 1, they sum to {total:.6g}")
        if self.control not in seen:
            raise ExperimentError(
                f"experiment.control {self.control!r} is not one of the arms ({', '.join(sorted(seen))})"
            )

    def arm(self, name: str) -> ExperimentArm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)

    def assign(self, customer_id: str) -> ExperimentArm:
        """The customer's arm: stable for this experiment name, independent of everything else."""
        u = assignment_point(self.name, customer_id)
        cumulative = 0.0
        for arm in self.arms:
            cumulative += arm.share
            if u < cumulative:
                return arm
        return self.arms[-1]  # u within rounding of 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "control": self.control,
            "arms": {
                arm.name: {"share": arm.share, "policy": arm.policy.value, "model": arm.model}
                for arm in self.arms
            },
        }


def assignment_point(experiment_name: str, customer_id: str) -> float:
    """u in [0, 1) from SHA-256 of name and id; uniform over customers, identical on every process."""
    digest = hashlib.sha256(f"{experiment_name}\x00{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def parse_experiment(document: Mapping[str, Any], source: str = "<config>") -> Experiment:
    """The ``[experiment]`` section of a parsed TOML document; unknown keys and bad values are errors."""
    where = f"{source}: " if source else ""
    section = document.get("experiment")
    if not isinstance(section, Mapping):
        raise ExperimentError(f"{where}no [experiment] section")
    unknown = sorted(set(document) - {"experiment"}) + sorted(set(section) - _EXPERIMENT_KEYS)
    if unknown:
        raise ExperimentError(f"{where}unknown key(s) {', '.join(map(repr, unknown))}")
    name, control, arms = section.get("name"), section.get("control"), section.get("arms")
    if not isinstance(name, str):
        raise ExperimentError(f"{where}experiment.name must be a string")
    if not isinstance(control, str):
        raise ExperimentError(f"{where}experiment.control must be a string naming the control arm")
    if not isinstance(arms, Mapping) or not arms:
        raise ExperimentError(f"{where}experiment.arms must be a table of [experiment.arms.<name>] tables")
    parsed = []
    for arm_name, arm in arms.items():
        key = f"experiment.arms.{arm_name}"
        if not isinstance(arm, Mapping):
            raise ExperimentError(f"{where}{key} must be a table")
        extra = sorted(set(arm) - _ARM_KEYS)
        if extra:
            raise ExperimentError(f"{where}{key}: unknown key(s) {', '.join(map(repr, extra))}")
        share = arm.get("share")
        if isinstance(share, bool) or not isinstance(share, int | float):
            raise ExperimentError(f"{where}{key}.share must be a number in (0, 1]")
        policy = arm.get("policy", ArmPolicy.ARTIFACT.value)
        try:
            arm_policy = ArmPolicy(policy)
        except ValueError:
            known = ", ".join(p.value for p in ArmPolicy)
            raise ExperimentError(f"{where}{key}.policy {policy!r} is not one of {known}") from None
        model = arm.get("model", "")
        if not isinstance(model, str):
            raise ExperimentError(f"{where}{key}.model must be a string")
        parsed.append(ExperimentArm(str(arm_name), float(share), arm_policy, model))
    try:
        return Experiment(name, control, tuple(parsed))
    except ExperimentError as error:
        raise ExperimentError(f"{where}{error}") from None


def load_experiment(path: Path) -> Experiment:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExperimentError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as error:
        raise ExperimentError(f"{path}: not valid TOML ({error})") from None
    return parse_experiment(document, str(path))


def experiment_from_dict(document: Mapping[str, Any], source: str = "") -> Experiment:
    """The inverse of ``Experiment.as_dict`` (what the state store and the admin service carry)."""
    return parse_experiment({"experiment": dict(document)}, source)


class CurrentExperiment:
    """The running experiment of a deployment, kept in the StateStore so every replica assigns alike.

    The admin service replaces it without a restart; each replica re-reads it at most every
    ``refresh_seconds`` (so a change reaches all replicas within that time, and a request costs no
    store round trip). With the in-memory store "every replica" is the one process.
    """

    KEY = "experiment:current"

    def __init__(
        self,
        store: StateStore,
        *,
        refresh_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._refresh = refresh_seconds
        self._clock = clock
        self._cached: Experiment | None = None
        self._read_at = -math.inf
        self._lock = threading.Lock()

    def set(self, experiment: Experiment | None) -> None:
        """Start, change or (with None) stop the experiment, for every replica sharing the store."""
        document = {} if experiment is None else experiment.as_dict()
        # Not sort_keys: the order of the arms decides which part of [0, 1) each covers.
        self._store.set(self.KEY, json.dumps(document).encode("utf-8"))
        with self._lock:
            self._cached, self._read_at = experiment, self._clock()

    def get(self) -> Experiment | None:
        now = self._clock()
        with self._lock:
            if now - self._read_at < self._refresh:
                return self._cached
        raw = self._store.get(self.KEY)
        document = json.loads(raw) if raw else {}
        experiment = experiment_from_dict(document, self.KEY) if document else None
        with self._lock:
            self._cached, self._read_at = experiment, now
        return experiment

    def assign(self, customer_id: str) -> str:
        """The customer's arm name, or "" when no experiment runs."""
        experiment = self.get()
        return experiment.assign(customer_id).name if experiment is not None else ""
