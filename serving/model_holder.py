"""Which model a server process answers with, how it is replaced, and how worker processes agree on it.

A request must see one whole model from start to end, and a reload must never make requests wait or
fail. So the serving model is one immutable record behind one reference: a request reads it once
(``ModelHolder.current()``, no lock), a reload verifies and loads the new artifact completely on the
admin call's thread while requests keep using the old record, then replaces the reference in a single
assignment. Requests in flight finish on the model they started with; the old model is freed when the
last of them lets go.

With several worker processes a ReloadModel call reaches one of them, chosen by the kernel. That
worker verifies and loads the artifact and, only if that succeeded, records it as the desired model in
a small state file in the run directory the workers share (``desired-model.json``, with a generation
number that only increases; writes are serialised across workers by ``flock`` on ``reload.lock`` and
made atomic by rename). Every worker polls that file every half second and loads a newer generation;
each reports what it serves in ``workers/<pid>.json``. The worker that took the call answers once every
live worker reports the new generation (or when its wait budget runs out; a peer that cannot load the
artifact keeps its old model, logs the error and counts it in ``persona_engine_model_reloads_total``
with ``trigger="peer"``; repeating the ReloadModel call makes it try again).

Version policy: ReloadModel switches to exactly the artifact it names when it is the same version or
newer. Versions only increase when training writes them, so an older one is a rollback: it is refused
(FAILED_PRECONDITION, naming both versions) unless the request sets ``allow_rollback``, and logged as a
rollback when it happens. An old artifact copied into place by someone who can write to the artifact
folder is so never served by accident, even when it is signed. Asking for what every worker already
serves (same version, same model) changes nothing and answers ``RELOAD_OUTCOME_UNCHANGED``.

Persona catalog: an artifact whose persona ids (in catalog order) differ from the serving one's is
refused (FAILED_PRECONDITION, naming the personas removed and added) unless the request sets
``allow_catalog_change``. Requests' persona mixes name persona ids, the online bandit keeps statistics
per persona and pending decisions' mixes in catalog order, and live drift state is per persona: a
silent switch made all of them wrong at once (the bandit's learning from earlier decisions failed with
a ValueError on every outcome batch). With the flag the switch is logged as a WARNING naming both
catalogs, and the response says the catalog changed.

Trust: with an artifact key (``serve --artifact-key``) every load, at start, on ReloadModel and when a
worker follows a peer, requires a manifest signed with it (``engine.artifact.signing``); without one,
the manifest's digest is still checked and the log says the artifact is unsigned. A refused artifact is
never served: the old model keeps answering.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from engine.artifact import LATEST, MANIFEST, ArtifactVerifier
from engine.artifact.contents import load_artifact
from engine.decisions.experiment import CurrentExperiment
from engine.errors import PersonaEngineError
from engine.live.state_store import StateStoreUnavailableError
from engine.personalizer import Personalizer
from serving.metrics import ServingMetrics

LOGGER = logging.getLogger("persona_engine.model")

MAX_ARTIFACT_PATH_CHARS: Final = 4096
MAX_MODEL_NAME_CHARS: Final = 256  # model kinds are short names; the limit keeps refusals short
STATE_FILE: Final = "desired-model.json"
LOCK_FILE: Final = "reload.lock"
WORKERS_DIR: Final = "workers"
FOLLOW_INTERVAL_S: Final = 0.5
_REPORT_POLL_S: Final = 0.05


@dataclass(frozen=True)
class ServingModel:
    """The model a process serves, with where it came from and what loading it cost."""

    personalizer: Personalizer
    path: Path
    loaded_at: dt.datetime
    load_seconds: float

    @property
    def version(self) -> str:
        return self.personalizer.version

    @property
    def model_name(self) -> str:
        return self.personalizer.model_name


class ModelHolder:
    """The one reference every request reads; replaced atomically by ``swap``.

    Reading is lock-free: ``current()`` returns whatever record the reference points to, and a single
    attribute assignment is atomic in CPython. Writers are serialised by a lock so two swaps never
    interleave their bookkeeping. Read ``snapshot()`` when several attributes must agree (path,
    version and load time of the same model).
    """

    def __init__(
        self,
        personalizer: Personalizer,
        path: Path,
        *,
        load_seconds: float = 0.0,
        loaded_at: dt.datetime | None = None,
        prepare: Callable[[Personalizer], object] | None = None,
    ) -> None:
        """``prepare`` runs on every model before it serves (here and in ``swap``): live state hooks in."""
        self._write_lock = threading.Lock()
        self._prepare = prepare
        if prepare is not None:
            prepare(personalizer)
        self._serving = ServingModel(
            personalizer, Path(path), loaded_at or dt.datetime.now(dt.UTC), float(load_seconds)
        )

    def current(self) -> Personalizer:
        return self._serving.personalizer

    def snapshot(self) -> ServingModel:
        return self._serving

    def swap(self, personalizer: Personalizer, path: Path, *, load_seconds: float = 0.0) -> Personalizer:
        """Serve ``personalizer`` from now on; returns the one it replaces."""
        if self._prepare is not None:
            self._prepare(personalizer)
        replacement = ServingModel(personalizer, Path(path), dt.datetime.now(dt.UTC), float(load_seconds))
        with self._write_lock:
            previous = self._serving
            self._serving = replacement
        return previous.personalizer

    @property
    def path(self) -> Path:
        return self._serving.path

    @property
    def loaded_at(self) -> dt.datetime:
        return self._serving.loaded_at

    @property
    def load_seconds(self) -> float:
        return self._serving.load_seconds


@dataclass(frozen=True)
class LoadedModel:
    personalizer: Personalizer
    path: Path
    load_seconds: float


def resolve_artifact_path(path: Path) -> Path:
    """The versioned folder ``path`` means: ``ROOT`` is ``ROOT/latest``, symlinks are resolved.

    Resolving once, up front, pins the version: ``latest`` may be repointed by training at any moment,
    and every worker must load the same folder.
    """
    path = Path(path)
    if not (path / MANIFEST).exists() and (path / LATEST).exists():
        path = path / LATEST
    return path.resolve()


def load_model(
    path: Path, model_name: str | None = None, verifier: ArtifactVerifier | None = None
) -> LoadedModel:
    """Verify the artifact at ``path`` (its manifest, signed under ``verifier``'s key when given, and
    every checksum) and load it; raises on any problem, and logs what protects the manifest.

    ``model_name`` None or empty picks the artifact's best model. Errors are ``ArtifactError`` (a file
    missing, extra or not matching the manifest; an altered, unsigned or wrongly signed manifest) and
    ``ValueError`` (a model the artifact lacks), each naming the artifact and the file or model.
    """
    started = time.perf_counter()
    resolved = resolve_artifact_path(path)
    artifact = load_artifact(resolved, verifier)
    personalizer = Personalizer(artifact, model_name or None)
    integrity = artifact.integrity
    LOGGER.log(
        logging.INFO if integrity.signed else logging.WARNING,
        "artifact %s: %s",
        artifact.version,
        integrity.describe(),
    )
    return LoadedModel(personalizer, resolved, time.perf_counter() - started)


def decision_arms(personalizer: Personalizer) -> dict[str, tuple[str, ...]]:
    """The offer and layout arms an artifact's decision estimates cover, for the metrics' label sets."""
    estimates = personalizer.artifact.arm_estimates
    return {kind: estimates[kind].arm_ids for kind in ("offer", "layout") if kind in estimates}


def publish_model_metrics(metrics: ServingMetrics, serving: ServingModel) -> None:
    metrics.set_model(
        serving.version,
        serving.model_name,
        serving.load_seconds,
        serving.loaded_at.timestamp(),
        decision_arms(serving.personalizer),
    )


@dataclass(frozen=True)
class DesiredModel:
    """What every worker should serve: a verified artifact folder and model, and its generation."""

    generation: int
    artifact_path: str
    model_name: str  # empty: the artifact's best model
    version: str  # empty until a reload has verified it


@dataclass(frozen=True)
class WorkerReport:
    pid: int
    generation: int
    version: str
    model_name: str


def _write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    temporary.write_text(json.dumps(document, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SharedModelState:
    """The run-directory files through which worker processes agree on the serving model."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.state_file = self.run_dir / STATE_FILE
        self.lock_file = self.run_dir / LOCK_FILE
        self.workers_dir = self.run_dir / WORKERS_DIR

    @classmethod
    def create(cls, run_dir: Path, artifact_path: Path, model_name: str) -> SharedModelState:
        """Start a run: generation 0 is the artifact the server was started with."""
        state = cls(run_dir)
        state.workers_dir.mkdir(parents=True, exist_ok=True)
        for stale in state.workers_dir.glob("*.json"):
            stale.unlink()
        state._write(DesiredModel(0, str(artifact_path), model_name, ""))
        return state

    def _write(self, desired: DesiredModel) -> None:
        _write_json_atomically(
            self.state_file,
            {
                "generation": desired.generation,
                "artifact_path": desired.artifact_path,
                "model_name": desired.model_name,
                "version": desired.version,
            },
        )

    def read(self) -> DesiredModel:
        try:
            document = json.loads(self.state_file.read_text(encoding="utf-8"))
            return DesiredModel(
                generation=int(document["generation"]),
                artifact_path=str(document["artifact_path"]),
                model_name=str(document["model_name"]),
                version=str(document["version"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise RuntimeError(f"{self.state_file}: unreadable shared model state ({error})") from error

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the run's reload lock: one verified publication at a time across all workers."""
        with open(self.lock_file, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def publish(self, artifact_path: Path, model_name: str, version: str) -> DesiredModel:
        """Record a verified artifact as the next generation; call while holding ``exclusive()``."""
        desired = DesiredModel(self.read().generation + 1, str(artifact_path), model_name, version)
        self._write(desired)
        return desired

    def report(self, pid: int, generation: int, serving: ServingModel) -> None:
        """Tell the other workers which generation this one has applied and what it serves."""
        self.workers_dir.mkdir(parents=True, exist_ok=True)
        _write_json_atomically(
            self.workers_dir / f"{pid}.json",
            {
                "pid": pid,
                "generation": generation,
                "version": serving.version,
                "model_name": serving.model_name,
            },
        )

    def reports(self) -> list[WorkerReport]:
        """The reports of workers that are still alive."""
        found: list[WorkerReport] = []
        for path in sorted(self.workers_dir.glob("*.json")):
            try:
                document = json.loads(path.read_text(encoding="utf-8"))
                report = WorkerReport(
                    int(document["pid"]),
                    int(document["generation"]),
                    str(document["version"]),
                    str(document["model_name"]),
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue  # removed while listing; a report is only ever replaced whole
            if _process_alive(report.pid):
                found.append(report)
        return found

    def forget(self, pid: int) -> None:
        """Drop an exited worker's report (the parent calls this when it reaps the worker)."""
        (self.workers_dir / f"{pid}.json").unlink(missing_ok=True)

    def wait_until_applied(self, generation: int, timeout_s: float) -> tuple[int, ...]:
        """Wait until every live worker has applied ``generation`` (loaded it, or failed to); returns the
        pids still behind."""
        deadline = time.monotonic() + max(timeout_s, 0.0)
        while True:
            behind = tuple(r.pid for r in self.reports() if r.generation < generation)
            if not behind or time.monotonic() >= deadline:
                return behind
            time.sleep(_REPORT_POLL_S)


# Control characters as \xNN, for log lines that quote what a request sent.
_CONTROL_ESCAPES: Final = {code: f"\\x{code:02x}" for code in (*range(32), 127)}


class ReloadError(PersonaEngineError):
    """A reload that did not happen; ``outcome`` names why (a ``RELOAD_OUTCOMES`` refusal value)."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message


@dataclass(frozen=True)
class ReloadResult:
    outcome: str  # "reloaded" or "unchanged"
    previous_version: str
    new_version: str
    serving_model: str
    load_seconds: float
    workers_behind: tuple[int, ...] = ()
    previous_persona_ids: tuple[str, ...] = ()  # the catalog served before the call, in catalog order
    persona_ids: tuple[str, ...] = ()  # and after it

    @property
    def persona_catalog_changed(self) -> bool:
        return self.previous_persona_ids != self.persona_ids


def persona_ids(personalizer: Personalizer) -> tuple[str, ...]:
    return tuple(str(persona) for persona in personalizer.catalog.ids)


def catalog_difference(before: tuple[str, ...], after: tuple[str, ...]) -> str:
    """How two catalogs' persona ids differ, for the refusal and the warning: ``removed a, b; added c``,
    or that the same personas come in another order (mixes and bandit statistics are positional)."""
    removed = [p for p in before if p not in after]
    added = [p for p in after if p not in before]
    if not removed and not added:
        return f"the same personas in another order ({', '.join(before)} -> {', '.join(after)})"
    parts = [f"removed {', '.join(removed)}" if removed else "", f"added {', '.join(added)}" if added else ""]
    return "; ".join(part for part in parts if part)


class ModelReloader:
    """Replaces one process's model on request (admin) or when a peer worker published a newer one.

    ``shared`` is None for a single-process server. ``applied_generation`` is the shared generation the
    holder's model corresponds to. ``after_swap`` runs after every swap (the server settles its heap,
    ``serving.heap_freeze``). ``verifier`` is the artifact key every loaded manifest must be signed with.
    """

    def __init__(
        self,
        holder: ModelHolder,
        metrics: ServingMetrics,
        shared: SharedModelState | None = None,
        *,
        applied_generation: int = 0,
        after_swap: Callable[[], object] | None = None,
        verifier: ArtifactVerifier | None = None,
        experiment: CurrentExperiment | None = None,
    ) -> None:
        self.holder = holder
        self.verifier = verifier
        self.experiment = experiment
        self.metrics = metrics
        self.shared = shared
        self._applied = applied_generation
        self._after_swap = after_swap
        self._lock = threading.Lock()

    @property
    def applied_generation(self) -> int:
        return self._applied

    def report(self) -> None:
        if self.shared is not None:
            self.shared.report(os.getpid(), self._applied, self.holder.snapshot())

    def reload(
        self,
        artifact_path: str,
        model_name: str = "",
        *,
        wait_s: float = 0.0,
        allow_rollback: bool = False,
        allow_catalog_change: bool = False,
    ) -> ReloadResult:
        """Verify and load ``artifact_path``, then serve it; raises ``ReloadError`` and keeps the old
        model on any failure. A version older than the one served needs ``allow_rollback``, another
        persona catalog ``allow_catalog_change`` (``_check_catalog``). With workers, waits up to
        ``wait_s`` for the peers to follow."""
        try:
            result = self._reload(artifact_path, model_name, wait_s, allow_rollback, allow_catalog_change)
        except ReloadError as refusal:
            self.metrics.record_reload("admin", refusal.outcome)
            quoted = (
                artifact_path
                if len(artifact_path) <= 300
                else f"{artifact_path[:300]}... ({len(artifact_path)} chars)"
            )
            # The message quotes the request's path: escaped, so a path cannot forge log lines.
            message = refusal.message[:1000].translate(_CONTROL_ESCAPES)
            LOGGER.warning("reload of %r refused (%s): %s", quoted, refusal.outcome, message)
            raise
        self.metrics.record_reload("admin", result.outcome)
        return result

    def _reload(
        self,
        artifact_path: str,
        model_name: str,
        wait_s: float,
        allow_rollback: bool,
        allow_catalog_change: bool,
    ) -> ReloadResult:
        if not artifact_path:
            raise ReloadError("invalid_argument", "artifact_path: required")
        if len(artifact_path) > MAX_ARTIFACT_PATH_CHARS:
            raise ReloadError(
                "invalid_argument",
                f"artifact_path: {len(artifact_path)} characters, at most {MAX_ARTIFACT_PATH_CHARS} allowed",
            )
        if "\x00" in artifact_path:
            raise ReloadError("invalid_argument", "artifact_path: contains a NUL character")
        if len(model_name) > MAX_MODEL_NAME_CHARS:
            raise ReloadError(
                "invalid_argument",
                f"model_name: {len(model_name)} characters, at most {MAX_MODEL_NAME_CHARS} allowed",
            )
        path = Path(artifact_path)
        try:
            exists = path.exists()
        except OSError as error:  # a name too long for the file system, say: no such artifact either
            raise ReloadError(
                "invalid_argument", f"artifact_path: not a usable path ({error.strerror})"
            ) from None
        if not exists:
            raise ReloadError("not_found", f"artifact_path: {artifact_path} does not exist on the server")
        with self._lock, self.shared.exclusive() if self.shared else contextlib.nullcontext():
            previous = self.holder.snapshot()
            try:
                loaded = load_model(path, model_name or None, self.verifier)
            except Exception as error:  # any failure means the artifact cannot be served as it is
                LOGGER.debug("loading %s failed", path, exc_info=True)
                raise ReloadError("failed_precondition", str(error) or type(error).__name__) from error
            candidate = loaded.personalizer
            if candidate.version < previous.version and not allow_rollback:
                raise ReloadError(
                    "failed_precondition",
                    f"artifact_path: version {candidate.version} is older than the serving version "
                    f"{previous.version}; set allow_rollback to roll back",
                )
            self._check_experiment(candidate)
            before, after = persona_ids(previous.personalizer), persona_ids(candidate)
            if before != after and not allow_catalog_change:
                raise ReloadError(
                    "failed_precondition",
                    f"artifact_path: {candidate.version} has another persona catalog than the serving "
                    f"{previous.version} ({catalog_difference(before, after)}); requests' persona mixes, "
                    "the online bandit's statistics and live drift state are per persona, so set "
                    "allow_catalog_change to switch anyway",
                )
            if self._everyone_serves(candidate.version, candidate.model_name):
                return ReloadResult(
                    "unchanged",
                    previous.version,
                    previous.version,
                    previous.model_name,
                    0.0,
                    (),
                    before,
                    before,
                )
            generation = self._applied
            if self.shared is not None:
                generation = self.shared.publish(
                    loaded.path, candidate.model_name, candidate.version
                ).generation
            self._swap(loaded, generation)
        if candidate.version < previous.version:
            LOGGER.warning(
                "rollback: serving %s, older than %s (allow_rollback set)",
                candidate.version,
                previous.version,
            )
        if before != after:
            LOGGER.warning(
                "persona catalog changed (allow_catalog_change set): %s served %s, %s serves %s (%s); "
                "persona mixes naming the old personas are now refused, and the online bandit cannot "
                "learn from outcomes of decisions served before the switch",
                previous.version,
                ", ".join(before),
                candidate.version,
                ", ".join(after),
                catalog_difference(before, after),
            )
        LOGGER.info(
            "reloaded: %s (%s) -> %s (%s) from %s in %.3fs",
            previous.version,
            previous.model_name,
            candidate.version,
            candidate.model_name,
            loaded.path,
            loaded.load_seconds,
        )
        behind: tuple[int, ...] = ()
        if self.shared is not None:
            self.shared.wait_until_applied(generation, wait_s)
            behind = tuple(
                r.pid
                for r in self.shared.reports()
                if (r.version, r.model_name) != (candidate.version, candidate.model_name)
            )
            if behind:
                LOGGER.error(
                    "generation %d (%s): workers %s do not serve it yet (still loading, or failed: see "
                    "their log); calling ReloadModel again retries",
                    generation,
                    candidate.version,
                    ", ".join(map(str, behind)),
                )
        return ReloadResult(
            "reloaded",
            previous.version,
            candidate.version,
            candidate.model_name,
            loaded.load_seconds,
            behind,
            before,
            after,
        )

    def _check_experiment(self, candidate: Personalizer) -> None:
        """Refuse an artifact that lacks a model an arm of the running experiment serves: swapping it
        in would leave that arm's customers without their recommender (they would be served outside
        the experiment, ``LiveDecisions.assign``). A store that cannot be read does not block a reload."""
        if self.experiment is None:
            return
        try:
            running = self.experiment.get()
        except StateStoreUnavailableError as error:
            LOGGER.warning("reload: the running experiment could not be read to check its models: %s", error)
            return
        if running is None:
            return
        for i, arm in enumerate(running.arms):
            if not arm.servable_by(candidate.model_names):
                raise ReloadError(
                    "failed_precondition",
                    f"artifact_path: {candidate.version} has no model {arm.model!r}, which arm "
                    f"{arm.name!r} of the running experiment {running.name!r} serves "
                    f"(experiment.arms[{i}].model; the artifact has {', '.join(candidate.model_names)}); "
                    "change or stop the experiment with SetExperiment first",
                )

    def _everyone_serves(self, version: str, model_name: str) -> bool:
        current = self.holder.snapshot()
        if (current.version, current.model_name) != (version, model_name):
            return False
        if self.shared is None:
            return True
        return all((r.version, r.model_name) == (version, model_name) for r in self.shared.reports())

    def _swap(self, loaded: LoadedModel, generation: int) -> None:
        self.holder.swap(loaded.personalizer, loaded.path, load_seconds=loaded.load_seconds)
        self._applied = generation
        publish_model_metrics(self.metrics, self.holder.snapshot())
        self.report()
        if self._after_swap is not None:
            self._after_swap()

    def follow_once(self) -> bool:
        """Apply a newer generation a peer published; returns whether the model was replaced."""
        if self.shared is None or self.shared.read().generation <= self._applied:
            return False
        with self._lock:
            desired = self.shared.read()
            if desired.generation <= self._applied:
                return False
            current = self.holder.snapshot()
            if (current.version, current.model_name) == (desired.version, desired.model_name):
                self._applied = desired.generation
                self.report()
                return False
            try:
                loaded = load_model(Path(desired.artifact_path), desired.model_name or None, self.verifier)
            except Exception:  # keep serving the old model; the operator sees the log and the metric
                LOGGER.exception(
                    "generation %d: cannot load %s published by a peer worker; still serving %s",
                    desired.generation,
                    desired.artifact_path,
                    current.version,
                )
                self.metrics.record_reload("peer", "failed_precondition")
                self._applied = desired.generation
                self.report()
                return False
            self._swap(loaded, desired.generation)
        self.metrics.record_reload("peer", "reloaded")
        LOGGER.info(
            "followed generation %d: %s (%s) -> %s (%s)",
            desired.generation,
            current.version,
            current.model_name,
            desired.version,
            desired.model_name,
        )
        return True

    def follow(self, stop: threading.Event, interval_s: float = FOLLOW_INTERVAL_S) -> None:
        """Poll the shared state until ``stop`` is set (the body of a worker's follower thread)."""
        while not stop.wait(interval_s):
            try:
                self.follow_once()
            except Exception:  # an unreadable state file must not kill the thread; retry next tick
                LOGGER.exception(
                    "checking %s for a newer model failed", self.shared and self.shared.state_file
                )
