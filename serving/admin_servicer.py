"""AdminService: what the server serves, and switching it to another artifact, behind a bearer token.

The token is compared with ``hmac.compare_digest`` so the time a wrong guess takes says nothing about
how much of it was right, and it is never logged or echoed. Status codes follow the contract
(``admin_service.proto``): no ``authorization: Bearer <token>`` entry -> UNAUTHENTICATED, any other
token -> PERMISSION_DENIED, and a server started without an admin token answers every call
PERMISSION_DENIED (the service exists, so reflection and clients see it, but it is switched off).

ReloadModel's semantics (verification and the artifact key, atomic swap, the rollback flag, several
workers) live in ``serving.model_holder``; this module maps them onto the contract's status codes. The
handlers are coroutines on the server's event loop, and everything that waits runs in a thread: a
reload (verifying and loading an artifact takes seconds, then waiting for the peer workers) on a thread
of its own, so it never holds a thread that calls need, and the experiment calls, which read and write
the state store (Redis, possibly), on the loop's blocking-work threads.

GetExperiment and SetExperiment read and replace the running experiment (``engine.decisions.experiment``),
which lives in the server's state store: every replica sharing the store applies a change within
about a second, without a restart. A definition is validated whole before anything changes. While
the store (Redis) cannot be reached both answer UNAVAILABLE rather than "no experiment" or a change
that was not stored.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, NoReturn

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from engine.decisions.experiment import (
    MAX_NAME_CHARS,
    NAME_PATTERN,
    ArmPolicy,
    CurrentExperiment,
    Experiment,
    ExperimentArm,
    ExperimentError,
)
from serving.generated.persona.v1 import admin_service_pb2, admin_service_pb2_grpc
from serving.model_holder import MAX_MODEL_NAME_CHARS, ModelHolder, ModelReloader, ReloadError
from serving.redis_state_store import tracking_live_state

LOGGER = logging.getLogger("persona_engine.admin")
AUTHORIZATION_KEY: Final = "authorization"
BEARER_SCHEME: Final = "bearer"
# A reload waits at most this long for peer workers to follow, and never past the caller's deadline.
MAX_PEER_WAIT_S: Final = 30.0
_DEADLINE_MARGIN_S: Final = 0.25
_STORE_UNREACHABLE: Final = "the state store (Redis) is unreachable"

_REFUSAL_CODES: Final = {
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "failed_precondition": grpc.StatusCode.FAILED_PRECONDITION,
}
_OUTCOMES: Final = {
    "reloaded": admin_service_pb2.RELOAD_OUTCOME_RELOADED,
    "unchanged": admin_service_pb2.RELOAD_OUTCOME_UNCHANGED,
}


Context = grpc.aio.ServicerContext[Any, Any]


# gRPC sends a status message percent-encoded in a trailer, where a byte outside printable ASCII
# takes three; past the trailers' 8 KiB soft limit the caller gets RESOURCE_EXHAUSTED instead of the
# status (a ReloadModel path of 4,095 bytes of "é", quoted in NOT_FOUND, did; fuzz pass).
MAX_MESSAGE_WIRE_BYTES: Final = 2_048


def wire_fitted(message: str, limit: int = MAX_MESSAGE_WIRE_BYTES) -> str:
    """``message`` cut at a character boundary so that its percent-encoded form fits ``limit`` bytes."""
    size = 0
    for end, character in enumerate(message):
        size += sum(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in character.encode("utf-8"))
        if size > limit:
            return f"{message[:end]}... ({len(message)} characters)"
    return message


async def _abort(context: Context, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, wire_fitted(message))


def _timestamp(moment: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _duration(seconds: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration


def parse_created_utc(value: object, where: str) -> dt.datetime:
    """The manifest's ``created_utc`` (``2026-01-05T10:15:00Z``) as an aware datetime."""
    if not isinstance(value, str):
        raise ValueError(f"{where}: created_utc is missing or not a string")
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


_ARM_POLICIES: Final = {
    admin_service_pb2.ARM_POLICY_UNSPECIFIED: ArmPolicy.ARTIFACT,
    admin_service_pb2.ARM_POLICY_ARTIFACT: ArmPolicy.ARTIFACT,
    admin_service_pb2.ARM_POLICY_ONLINE_BANDIT: ArmPolicy.ONLINE_BANDIT,
}
_ARM_POLICY_PROTOS: Final = {
    ArmPolicy.ARTIFACT: admin_service_pb2.ARM_POLICY_ARTIFACT,
    ArmPolicy.ONLINE_BANDIT: admin_service_pb2.ARM_POLICY_ONLINE_BANDIT,
}


def experiment_to_proto(experiment: Experiment) -> admin_service_pb2.Experiment:
    return admin_service_pb2.Experiment(
        name=experiment.name,
        control_arm=experiment.control,
        arms=[
            admin_service_pb2.ExperimentArm(
                name=arm.name, share=arm.share, policy=_ARM_POLICY_PROTOS[arm.policy], model=arm.model
            )
            for arm in experiment.arms
        ],
    )


def experiment_from_proto(message: admin_service_pb2.Experiment, available_models: list[str]) -> Experiment:
    """The engine's experiment; ExperimentError names the field (``experiment.arms[i].policy``...).

    The .proto's rules for names and shares are checked here first, with the request's field paths:
    the engine's own checks speak in the config file's terms (``experiment.arms.<name>``) and quote a
    name whole, which for a 20,000-character name made an error too long for gRPC's status header.
    """
    _proto_name(message.name, "experiment.name")
    _proto_name(message.control_arm, "experiment.control_arm")
    arms = []
    first_named: dict[str, int] = {}
    for i, arm in enumerate(message.arms):
        _proto_name(arm.name, f"experiment.arms[{i}].name")
        if arm.name in first_named:
            raise ExperimentError(
                f"experiment.arms[{i}].name: {arm.name!r} is the name of arms[{first_named[arm.name]}] too"
            )
        first_named[arm.name] = i
        if not 0 < arm.share <= 1:  # NaN fails too
            raise ExperimentError(f"experiment.arms[{i}].share: must be in (0, 1], got {arm.share}")
        if len(arm.model) > MAX_MODEL_NAME_CHARS:
            raise ExperimentError(
                f"experiment.arms[{i}].model: at most {MAX_MODEL_NAME_CHARS} characters, got {len(arm.model)}"
            )
        if arm.policy not in _ARM_POLICIES:
            raise ExperimentError(f"experiment.arms[{i}].policy: unknown value {arm.policy}")
        engine_arm = ExperimentArm(arm.name, arm.share, _ARM_POLICIES[arm.policy], arm.model)
        if not engine_arm.servable_by(available_models):
            raise ExperimentError(
                f"experiment.arms[{i}].model: the artifact has no model {arm.model!r} "
                f"(it has {', '.join(available_models)})"
            )
        arms.append(engine_arm)
    if message.arms and message.control_arm not in first_named:
        raise ExperimentError(
            f"experiment.control_arm: {message.control_arm!r} is not the name of one of the arms "
            f"({', '.join(first_named)})"
        )
    return Experiment(message.name, message.control_arm, tuple(arms))


def _proto_name(value: str, field: str) -> None:
    """The engine's rule for names (``NAME_PATTERN``), said with the request's field path; the length
    first, so a long name is never quoted."""
    if len(value) > MAX_NAME_CHARS:
        raise ExperimentError(f"{field}: at most {MAX_NAME_CHARS} characters, got {len(value)}")
    if not NAME_PATTERN.fullmatch(value):
        raise ExperimentError(f"{field}: must be 1 to 64 letters, digits, '_', '-' or '.', got {value!r}")


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    """AdminService over one process's model holder; ``admin_token`` None switches the service off.

    ``experiment`` is the deployment's running experiment; without it the experiment calls answer
    FAILED_PRECONDITION.
    """

    def __init__(
        self,
        holder: ModelHolder,
        reloader: ModelReloader,
        admin_token: str | None,
        experiment: CurrentExperiment | None = None,
    ) -> None:
        if admin_token is not None and not admin_token:
            raise ValueError("admin_token is empty; pass None to switch the admin service off")
        self.holder = holder
        self.reloader = reloader
        self.experiment = experiment
        self._token = None if admin_token is None else admin_token.encode("utf-8")
        # Reloads are serialised by the reloader anyway; one thread keeps them off the shared pool.
        self._reloads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="persona-reload")

    async def _authorize(self, context: Context) -> None:
        if self._token is None:
            await _abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                "the admin service is disabled: the server was started without an admin token",
            )
        values = [value for key, value in (context.invocation_metadata() or ()) if key == AUTHORIZATION_KEY]
        if not values:
            await _abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                "missing 'authorization: Bearer <token>' metadata",
            )
        scheme, _, presented = str(values[0]).partition(" ")
        if scheme.lower() != BEARER_SCHEME or not presented.strip():
            await _abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                "the authorization metadata must have the form 'Bearer <token>'",
            )
        if not hmac.compare_digest(presented.strip().encode("utf-8"), self._token):
            await _abort(context, grpc.StatusCode.PERMISSION_DENIED, "the admin token is not valid")

    async def GetModelInfo(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: admin_service_pb2.GetModelInfoRequest, context: Context
    ) -> admin_service_pb2.GetModelInfoResponse:
        await self._authorize(context)
        serving = self.holder.snapshot()
        personalizer = serving.personalizer
        manifest = personalizer.artifact.manifest
        return admin_service_pb2.GetModelInfoResponse(
            artifact_version=personalizer.version,
            artifact_path=str(serving.path),
            artifact_created_at=_timestamp(
                parse_created_utc(manifest.get("created_utc"), str(serving.path / "manifest.json"))
            ),
            available_models=[str(name) for name in manifest.get("models", [])],
            serving_model=personalizer.model_name,
            persona_ids=list(personalizer.catalog.ids),
            num_items=len(personalizer.items),
            num_customers=len(personalizer.customers),
            loaded_at=_timestamp(serving.loaded_at),
            load_duration=_duration(serving.load_seconds),
        )

    async def ReloadModel(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: admin_service_pb2.ReloadModelRequest, context: Context
    ) -> admin_service_pb2.ReloadModelResponse:
        await self._authorize(context)
        remaining = context.time_remaining()
        wait_s = MAX_PEER_WAIT_S
        if remaining is not None:
            wait_s = min(wait_s, remaining - _DEADLINE_MARGIN_S)
        try:
            result = await asyncio.get_running_loop().run_in_executor(
                self._reloads,
                lambda: self.reloader.reload(
                    request.artifact_path,
                    request.model_name,
                    wait_s=wait_s,
                    allow_rollback=request.allow_rollback,
                    allow_catalog_change=request.allow_catalog_change,
                ),
            )
        except ReloadError as refusal:
            await _abort(context, _REFUSAL_CODES[refusal.outcome], refusal.message)
        return admin_service_pb2.ReloadModelResponse(
            outcome=_OUTCOMES[result.outcome],
            previous_version=result.previous_version,
            new_version=result.new_version,
            serving_model=result.serving_model,
            load_duration=_duration(result.load_seconds),
            persona_catalog_changed=result.persona_catalog_changed,
            previous_persona_ids=result.previous_persona_ids,
            persona_ids=result.persona_ids,
        )

    async def _current_experiment(self, context: Context) -> CurrentExperiment:
        if self.experiment is None:
            await _abort(
                context, grpc.StatusCode.FAILED_PRECONDITION, "this server runs no live decision loop"
            )
        return self.experiment

    async def GetExperiment(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: admin_service_pb2.GetExperimentRequest, context: Context
    ) -> admin_service_pb2.GetExperimentResponse:
        await self._authorize(context)
        current = await self._current_experiment(context)
        with tracking_live_state() as state:
            running = await asyncio.to_thread(current.get)
        if not state.complete:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, f"GetExperiment: {_STORE_UNREACHABLE}")
        response = admin_service_pb2.GetExperimentResponse()
        if running is not None:
            response.experiment.CopyFrom(experiment_to_proto(running))
        return response

    async def SetExperiment(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: admin_service_pb2.SetExperimentRequest, context: Context
    ) -> admin_service_pb2.SetExperimentResponse:
        await self._authorize(context)
        current = await self._current_experiment(context)
        new: Experiment | None = None
        if request.HasField("experiment"):
            models = [str(m) for m in self.holder.current().artifact.manifest.get("models", [])]
            try:
                new = experiment_from_proto(request.experiment, models)
            except ExperimentError as error:
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error))
        with tracking_live_state() as state:  # a write Redis did not take must not be answered OK
            previous = await asyncio.to_thread(_replace, current, new)
        if not state.complete:
            await _abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                f"SetExperiment: {_STORE_UNREACHABLE}; the experiment may not have changed, retry",
            )
        LOGGER.info("experiment %s -> %s", previous.name if previous else "none", new.name if new else "none")
        response = admin_service_pb2.SetExperimentResponse()
        if previous is not None:
            response.previous.CopyFrom(experiment_to_proto(previous))
        if new is not None:
            response.experiment.CopyFrom(experiment_to_proto(new))
        return response


def _replace(current: CurrentExperiment, new: Experiment | None) -> Experiment | None:
    """Set the running experiment; returns the one it replaced (both read the state store)."""
    previous = current.get()
    current.set(new)
    return previous
