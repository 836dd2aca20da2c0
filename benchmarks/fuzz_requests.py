"""The fuzz benchmark's requests: every RPC of the server, and request bytes that try to break it.

``fuzz_targets()`` lists every method the server registers (PersonalizationService, AdminService,
health ``Check`` and ``Watch``, server reflection) with its request type, read from the generated
descriptors so a new RPC is fuzzed without a change here. ``RequestFuzzer`` makes one request as raw
bytes for a target, by one of the ``KINDS``:

- ``valid``: a well-formed request naming ids the artifact knows (the pools of ``IdPools``);
- ``fields``: every field filled, or not, from values chosen to hurt: empty and NUL strings, unicode
  of every plane, strings past each length limit, NaN, infinities, -0.0, extreme and negative
  numbers, unknown enum values, timestamps out of range, unknown ids;
- ``mutated``: the bytes of a valid request with bytes flipped, inserted, deleted, truncated,
  duplicated or spliced with another request;
- ``random``: random bytes (0 to 2 KiB); ``empty``: no bytes at all (every field its default);
- ``unknown_fields``: a valid request followed by fields of numbers the schema does not have;
- ``oversized``: every repeated field holding one more entry than any limit allows (1,001 and more);
- ``huge_1mb``, ``huge_4mb``: a string field of 1 MiB or 4,000,000 bytes (under the 4 MiB request
  cap, so the server decodes it), ``over_cap``: a request of the cap plus one byte.

Generation is seeded (``random.Random``), so a run or a failing request can be made again from its
seed, and cheap: huge payloads are built once per target and reused.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from google.protobuf import descriptor as pb_descriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2  # type: ignore[import-untyped]  # no stubs in dev deps

from engine.personalizer import Personalizer
from serving.generated.persona.v1 import admin_service_pb2, personalization_service_pb2, types_pb2
from serving.model_holder import decision_arms
from serving.settings import DEFAULT_MAX_REQUEST_BYTES

if TYPE_CHECKING:
    from google._upb import _message as upb

    # A field as the descriptors hand it out: the upb runtime's own type, or the pure-Python one.
    _FieldDescriptor = pb_descriptor.FieldDescriptor | upb.FieldDescriptor

# Request kinds and how often each is drawn (relative weights).
KIND_WEIGHTS: Final = {
    "valid": 20.0,
    "fields": 30.0,
    "mutated": 20.0,
    "random": 10.0,
    "empty": 4.0,
    "unknown_fields": 6.0,
    "oversized": 4.0,
    "huge_1mb": 0.5,
    "huge_4mb": 0.25,
    "over_cap": 0.25,
}
KINDS: Final = tuple(KIND_WEIGHTS)
HUGE_SIZES: Final = {"huge_1mb": 1 << 20, "huge_4mb": 4_000_000, "over_cap": DEFAULT_MAX_REQUEST_BYTES + 1}
# More entries than any repeated field of the API allows (the largest limit is 1,000).
OVERSIZED_COUNT: Final = 1001
OVERSIZED_VARIANTS: Final = 4
STREAMING_UNARY: Final = "unary_stream"
STREAMING_BOTH: Final = "stream_stream"
UNARY: Final = "unary"

_INT32: Final = (0, 1, -1, 2, 3, 5, 10, 20, 21, 100, 200, 201, 1000, 1001, 2**31 - 1, -(2**31))
_INT64: Final = (*_INT32, 2**53, 2**62, 2**63 - 1, -(2**63), 253_402_300_800, -62_135_596_801)
_UINT32: Final = (*(v for v in _INT32 if v >= 0), 2**32 - 1)
_UINT64: Final = (*(v for v in _INT64 if v >= 0), 2**64 - 1)
_FLOATS: Final = (
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    1e-9,
    100.0,
    math.nan,
    math.inf,
    -math.inf,
    1e308,
    -1e308,
    5e-324,
)
_NASTY_STRINGS: Final = (
    "",
    "\x00",
    "a\x00b",
    " ",
    "\u202e\u0645\u0631\u062d\u0628\u0627",  # right-to-left override, Arabic
    "\U0001f600\U0001f9d1\u200d\U0001f4bb",  # emoji, zero-width joiner
    "e\u0301\u0301\u0301",  # combining marks
    "\ufeff\ufffe\uffff",
    "../../../etc/passwd",
    "%s%n%x{0}${x}",
    "'; DROP TABLE events; --",
    "\U0010ffff",
)


@dataclass(frozen=True)
class FuzzTarget:
    """One RPC: ``rpc`` is its short name (``Personalize``, ``Health/Check``), ``path`` the full one."""

    rpc: str
    path: str
    request_type: type[Message]
    streaming: str = UNARY
    admin: bool = False


def fuzz_targets() -> list[FuzzTarget]:
    """Every method the server registers, from the generated descriptors."""
    targets = []
    files = (
        (personalization_service_pb2.DESCRIPTOR, False),
        (admin_service_pb2.DESCRIPTOR, True),
        (health_pb2.DESCRIPTOR, False),
        (reflection_pb2.DESCRIPTOR, False),
    )
    for file, admin in files:
        for service in file.services_by_name.values():
            for method in service.methods:
                streaming = (
                    STREAMING_BOTH
                    if method.client_streaming
                    else STREAMING_UNARY
                    if method.server_streaming
                    else UNARY
                )
                short = method.name if file in (files[0][0], files[1][0]) else f"{service.name}/{method.name}"
                # The upb runtime's descriptors pass this check too (protobuf's descriptor metaclass
                # counts them as ``Descriptor``), and GetMessageClass takes either kind.
                if not isinstance(method.input_type, pb_descriptor.Descriptor):
                    raise TypeError(f"{method.full_name}: unexpected descriptor {method.input_type!r}")
                targets.append(
                    FuzzTarget(
                        short,
                        f"/{service.full_name}/{method.name}",
                        GetMessageClass(method.input_type),
                        streaming,
                        admin,
                    )
                )
    return targets


@dataclass(frozen=True)
class IdPools:
    """Ids the artifact knows, so that valid requests reach the engine, not only the validation."""

    customers: tuple[str, ...]
    items: tuple[str, ...]
    personas: tuple[str, ...]
    offers: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    artifact_path: str = ""

    @classmethod
    def from_artifact(cls, artifact: Path, model: str | None = None, size: int = 500) -> IdPools:
        """Up to ``size`` ids of each kind from a loaded artifact (loaded here, then dropped)."""
        personalizer = Personalizer.from_path(artifact, model)
        rng = random.Random(0)

        def sample(values: Iterable[Any]) -> tuple[str, ...]:
            names = [str(v) for v in values]
            return tuple(rng.sample(names, min(size, len(names))))

        arms = decision_arms(personalizer)
        return cls(
            customers=sample(personalizer.customers.ids),
            items=sample(personalizer.items.ids),
            personas=tuple(personalizer.catalog.ids),
            offers=tuple(arms.get("offer", ())),
            variants=tuple(arms.get("layout", ())),
            models=tuple(personalizer.artifact.models),
            categories=sample(sorted({str(c) for c in personalizer.item_catalog.categories})),
            artifact_path=str(Path(artifact).resolve()),
        )


@dataclass
class RequestFuzzer:
    """Seeded maker of fuzzed requests (module doc); ``request(target)`` -> ``(kind, payload)``."""

    pools: IdPools
    seed: int = 0
    weights: dict[str, float] = field(default_factory=lambda: dict(KIND_WEIGHTS))
    rng: random.Random = field(init=False)
    _huge: dict[tuple[str, str], bytes] = field(init=False, default_factory=dict)
    _kinds: list[str] = field(init=False)
    _cumulative: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._kinds = list(self.weights)
        total = 0.0
        self._cumulative = []
        for kind in self._kinds:
            total += self.weights[kind]
            self._cumulative.append(total)

    def kind(self) -> str:
        return self.rng.choices(self._kinds, cum_weights=self._cumulative)[0]

    def request(self, target: FuzzTarget, kind: str | None = None) -> tuple[str, bytes]:
        kind = kind or self.kind()
        maker: Callable[[FuzzTarget], bytes] = getattr(self, f"_{kind}")
        return kind, maker(target)

    # -- kinds --------------------------------------------------------------------------------------

    def _valid(self, target: FuzzTarget) -> bytes:
        return self.valid_message(target).SerializeToString()

    def _fields(self, target: FuzzTarget) -> bytes:
        message = target.request_type()
        self._fill(message, depth=0, fill_share=self.rng.choice((0.3, 0.6, 1.0)))
        return message.SerializeToString()

    def _mutated(self, target: FuzzTarget) -> bytes:
        data = bytearray(self._valid(target))
        for _ in range(self.rng.randint(1, 4)):
            action = self.rng.randrange(6)
            at = self.rng.randrange(len(data) + 1)
            if action == 0 and data:  # flip a byte
                data[min(at, len(data) - 1)] ^= 1 << self.rng.randrange(8)
            elif action == 1:  # insert random bytes
                data[at:at] = self.rng.randbytes(self.rng.randint(1, 8))
            elif action == 2:  # delete a run
                del data[at : at + self.rng.randint(1, 8)]
            elif action == 3:  # truncate
                del data[at:]
            elif action == 4:  # duplicate a slice (a repeated field twice, a length prefix wrong)
                end = min(len(data), at + self.rng.randint(1, 16))
                data[end:end] = data[at:end]
            else:  # splice with another valid request of the same type (protobuf merges them)
                data += self._valid(target)
        return bytes(data)

    def _random(self, target: FuzzTarget) -> bytes:
        return self.rng.randbytes(self.rng.choice((1, 2, 3, 8, 64, 512, 2048)))

    def _empty(self, target: FuzzTarget) -> bytes:
        return b""

    def _unknown_fields(self, target: FuzzTarget) -> bytes:
        extra = bytearray()
        for _ in range(self.rng.randint(1, 5)):
            number = self.rng.choice((99, 1000, 12345, 536_870_911))
            wire = self.rng.choice((0, 1, 2, 5))
            extra += _varint(number << 3 | wire)
            if wire == 0:
                extra += _varint(self.rng.getrandbits(64))
            elif wire == 1:
                extra += self.rng.randbytes(8)
            elif wire == 5:
                extra += self.rng.randbytes(4)
            else:
                payload = self.rng.randbytes(self.rng.randint(0, 64))
                extra += _varint(len(payload)) + payload
        return self._valid(target) + bytes(extra)

    def _oversized(self, target: FuzzTarget) -> bytes:
        """One of ``OVERSIZED_VARIANTS`` grown requests per target, built once each (they are large)."""
        key = (target.path, f"oversized{self.rng.randrange(OVERSIZED_VARIANTS)}")
        cached = self._huge.get(key)
        if cached is None:
            message = self.valid_message(target)
            if _grow_repeated(message, self):
                cached = message.SerializeToString()
            else:  # no repeated field anywhere: unknown fields make it bigger instead
                cached = self._unknown_fields(target)
            self._huge[key] = cached
        return cached

    def _huge_1mb(self, target: FuzzTarget) -> bytes:
        return self._huge_payload(target, "huge_1mb")

    def _huge_4mb(self, target: FuzzTarget) -> bytes:
        return self._huge_payload(target, "huge_4mb")

    def _over_cap(self, target: FuzzTarget) -> bytes:
        return self._huge_payload(target, "over_cap")

    def _huge_payload(self, target: FuzzTarget, kind: str) -> bytes:
        """A message whose first string field holds the bytes (or one unknown field, for a message
        without strings), exactly ``HUGE_SIZES[kind]`` bytes long in all; built once per target."""
        key = (target.path, kind)
        cached = self._huge.get(key)
        if cached is not None:
            return cached
        size = HUGE_SIZES[kind]
        string_field = next(
            (
                f
                for f in target.request_type.DESCRIPTOR.fields
                if f.type == pb_descriptor.FieldDescriptor.TYPE_STRING
            ),
            None,
        )
        number = string_field.number if string_field is not None else 1000
        header_guess = len(_varint(number << 3 | 2)) + len(_varint(size))
        body = b"x" * (size - header_guess)
        payload = _varint(number << 3 | 2) + _varint(len(body)) + body
        self._huge[key] = payload
        return payload

    # -- valid requests -----------------------------------------------------------------------------

    def valid_message(self, target: FuzzTarget) -> Message:
        """A well-formed request of ``target``'s type with known ids (and some unknown ones)."""
        builder = _VALID.get(target.request_type.DESCRIPTOR.full_name)
        if builder is None:
            return target.request_type()
        return builder(self)

    def pick(self, values: Sequence[str], unknown_share: float = 0.1) -> str:
        if not values or self.rng.random() < unknown_share:
            return f"unknown-{self.rng.randrange(1_000_000)}"
        return self.rng.choice(values)

    def context(self) -> types_pb2.RequestContext:
        return types_pb2.RequestContext(
            page_type=self.rng.choice(list(types_pb2.PageType.values())),
            channel=self.rng.choice(("direct", "search", "email", "")),
            device=self.rng.choice(("desktop", "mobile", "")),
            session_item_ids=[self.pick(self.pools.items) for _ in range(self.rng.randrange(4))],
            cart_item_ids=[self.pick(self.pools.items) for _ in range(self.rng.randrange(3))],
        )

    def mix(self) -> types_pb2.PersonaMix:
        chosen = self.rng.sample(self.pools.personas, min(len(self.pools.personas), self.rng.randint(1, 3)))
        return types_pb2.PersonaMix(
            weights=[types_pb2.PersonaWeight(persona_id=p, weight=self.rng.random() + 0.01) for p in chosen]
        )

    # -- field filling ------------------------------------------------------------------------------

    def _fill(self, message: Message, depth: int, fill_share: float) -> None:
        for fd in message.DESCRIPTOR.fields:
            if self.rng.random() > fill_share:
                continue
            try:
                if fd.is_repeated:
                    container = getattr(message, fd.name)
                    count = self.rng.choice((0, 1, 2, 3))
                    if fd.message_type is not None:
                        for _ in range(count if depth < 2 else 0):
                            self._fill(container.add(), depth + 1, fill_share)
                    elif depth == 0 and self.rng.random() < 0.01:  # one past the limits, cheaply
                        container.extend([self._scalar(fd)] * OVERSIZED_COUNT)
                    else:
                        container.extend(self._scalar(fd) for _ in range(count))
                elif fd.message_type is not None:
                    if depth < 3:
                        self._fill(getattr(message, fd.name), depth + 1, fill_share)
                        if not getattr(message, fd.name).ListFields():
                            getattr(message, fd.name).SetInParent()
                else:
                    setattr(message, fd.name, self._scalar(fd))
            except (ValueError, TypeError, OverflowError):
                continue  # a value the field's type cannot hold (e.g. 1e308 in a float): skip it

    def _scalar(self, fd: _FieldDescriptor) -> Any:
        kind = fd.cpp_type
        rng = self.rng
        if kind == pb_descriptor.FieldDescriptor.CPPTYPE_STRING:
            if fd.type == pb_descriptor.FieldDescriptor.TYPE_BYTES:
                return rng.randbytes(rng.randrange(16))
            return self._string(fd.name)
        if kind == pb_descriptor.FieldDescriptor.CPPTYPE_BOOL:
            return rng.random() < 0.5
        if kind in (
            pb_descriptor.FieldDescriptor.CPPTYPE_DOUBLE,
            pb_descriptor.FieldDescriptor.CPPTYPE_FLOAT,
        ):
            return rng.choice(_FLOATS) if rng.random() < 0.7 else rng.uniform(-1e6, 1e6)
        if kind == pb_descriptor.FieldDescriptor.CPPTYPE_ENUM:
            if fd.enum_type is None:  # never: protobuf sets it on every enum field
                raise TypeError(f"enum field {fd.full_name} without its enum type")
            values = [v.number for v in fd.enum_type.values]
            return rng.choice((*values, -1, 99, 2**31 - 1))
        table = {
            pb_descriptor.FieldDescriptor.CPPTYPE_INT32: _INT32,
            pb_descriptor.FieldDescriptor.CPPTYPE_INT64: _INT64,
            pb_descriptor.FieldDescriptor.CPPTYPE_UINT32: _UINT32,
            pb_descriptor.FieldDescriptor.CPPTYPE_UINT64: _UINT64,
        }[kind]
        return rng.choice(table)

    def _string(self, name: str) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.45:
            pools = self.pools
            for hint, values in (
                ("customer", pools.customers),
                ("item", pools.items),
                ("persona", pools.personas),
                ("offer", pools.offers),
                ("variant", pools.variants),
                ("arm", pools.offers + pools.variants),
                ("model", pools.models),
                ("categor", pools.categories),
                ("path", (pools.artifact_path, str(Path(pools.artifact_path).parent), "/", "/nonexistent")),
                ("symbol", ("persona.v1.PersonalizationService", "grpc.health.v1.Health", "no.Such")),
                ("service", ("", "persona.v1.PersonalizationService", "grpc.health.v1.Health")),
            ):
                if hint in name:
                    return self.pick(values, unknown_share=0.2)
            return f"v{rng.randrange(1000)}"
        if roll < 0.75:
            return rng.choice(_NASTY_STRINGS)
        if roll < 0.9:
            return "".join(chr(_codepoint(rng)) for _ in range(rng.randint(1, 40)))
        return "z" * rng.choice((65, 129, 257, 300, 4097)) if rng.random() < 0.95 else "z" * 70_000


def _codepoint(rng: random.Random) -> int:
    """Any Unicode scalar value (no surrogates: protobuf strings must be valid UTF-8)."""
    while True:
        value = rng.choice(
            (rng.randrange(0x80), rng.randrange(0x800), rng.randrange(0x10000), rng.randrange(0x110000))
        )
        if not 0xD800 <= value <= 0xDFFF:
            return value


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _grow_repeated(message: Message, fuzzer: RequestFuzzer, depth: int = 0) -> bool:
    """Give every repeated field of ``message`` (and of its set sub-messages) OVERSIZED_COUNT entries."""
    grown = False
    for fd in message.DESCRIPTOR.fields:
        if fd.is_repeated:
            container = getattr(message, fd.name)
            if fd.message_type is not None:
                template = container[0] if len(container) else None
                while len(container) < OVERSIZED_COUNT:
                    added = container.add()
                    if template is not None:
                        added.CopyFrom(template)
            else:
                value = container[0] if len(container) else fuzzer._scalar(fd)
                container.extend([value] * (OVERSIZED_COUNT - len(container)))
            grown = True
        elif fd.message_type is not None and depth < 2 and message.HasField(fd.name):
            grown = _grow_repeated(getattr(message, fd.name), fuzzer, depth + 1) or grown
    return grown


def _now_timestamp(fuzzer: RequestFuzzer) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    stamp = Timestamp()
    stamp.FromDatetime(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=fuzzer.rng.randrange(3600)))
    return stamp


def _personalize(f: RequestFuzzer) -> Message:
    request = personalization_service_pb2.PersonalizeRequest(
        customer_id=f.pick(f.pools.customers, 0.2),
        num_results=f.rng.choice((0, 5, 10, 20)),
        num_offers=f.rng.choice((0, 1, 3)),
        diversity=f.rng.choice((0.0, 0.3)),
        explain=f.rng.random() < 0.2,
        context=f.context(),
    )
    if f.rng.random() < 0.3:
        request.persona_mix.CopyFrom(f.mix())
    if f.rng.random() < 0.3:
        request.filters.exclude_item_ids.extend(f.pick(f.pools.items) for _ in range(3))
    return request


def _recommend(f: RequestFuzzer) -> Message:
    return personalization_service_pb2.RecommendProductsRequest(
        targets=[
            personalization_service_pb2.CustomerTarget(customer_id=f.pick(f.pools.customers, 0.2))
            for _ in range(f.rng.randint(1, 8))
        ],
        num_results=f.rng.choice((0, 10)),
    )


def _rank_offers(f: RequestFuzzer) -> Message:
    return personalization_service_pb2.RankOffersRequest(
        customer_id=f.pick(f.pools.customers, 0.2),
        num_offers=f.rng.choice((0, 2)),
        candidate_offer_ids=f.rng.sample(f.pools.offers, min(len(f.pools.offers), f.rng.randrange(3))),
    )


def _select_layout(f: RequestFuzzer) -> Message:
    return personalization_service_pb2.SelectLayoutRequest(
        customer_id=f.pick(f.pools.customers, 0.2),
        context=f.context(),
        candidate_variant_ids=f.rng.sample(f.pools.variants, min(len(f.pools.variants), f.rng.randrange(3))),
    )


def _profile(f: RequestFuzzer) -> Message:
    return personalization_service_pb2.GetPersonaProfileRequest(customer_id=f.pick(f.pools.customers, 0.3))


def _record_events(f: RequestFuzzer) -> Message:
    """New events (fresh ids) of known customers and items: the event log and live state grow."""
    pb = personalization_service_pb2
    return pb.RecordEventsRequest(
        events=[
            pb.BehaviorEvent(
                event_id=f"fuzz-{f.seed}-{f.rng.getrandbits(48):x}",
                customer_id=f.pick(f.pools.customers, 0.2),
                item_id=f.pick(f.pools.items),
                event_type=f.rng.choice((pb.EVENT_TYPE_VIEW, pb.EVENT_TYPE_CART, pb.EVENT_TYPE_PURCHASE)),
                timestamp=_now_timestamp(f),
            )
            for _ in range(f.rng.randint(1, 5))
        ]
    )


def _set_experiment(f: RequestFuzzer) -> Message:
    models = f.pools.models or ("als",)
    arms = [
        admin_service_pb2.ExperimentArm(
            name=f"arm{i}",
            share=0.5,
            policy=f.rng.choice(
                (admin_service_pb2.ARM_POLICY_ARTIFACT, admin_service_pb2.ARM_POLICY_ONLINE_BANDIT)
            ),
            model=f.rng.choice(models),
        )
        for i in range(2)
    ]
    experiment = admin_service_pb2.Experiment(
        name=f"fuzz{f.rng.randrange(100)}", control_arm="arm0", arms=arms
    )
    return admin_service_pb2.SetExperimentRequest(experiment=experiment)


def _reload(f: RequestFuzzer) -> Message:
    path = f.rng.choice((f.pools.artifact_path, "/nonexistent/artifact", ""))
    return admin_service_pb2.ReloadModelRequest(artifact_path=path)


def _health(f: RequestFuzzer) -> Message:
    return health_pb2.HealthCheckRequest(
        service=f.rng.choice(("", "persona.v1.PersonalizationService", "no.Such"))
    )


def _reflection(f: RequestFuzzer) -> Message:
    request = reflection_pb2.ServerReflectionRequest()
    choice = f.rng.randrange(3)
    if choice == 0:
        request.list_services = ""
    elif choice == 1:
        request.file_containing_symbol = f.rng.choice(("persona.v1.PersonalizationService", "no.Such.Symbol"))
    else:
        request.file_by_filename = f.rng.choice(("persona/v1/types.proto", "nope.proto"))
    return request


_VALID: Final[dict[str, Callable[[RequestFuzzer], Message]]] = {
    "persona.v1.PersonalizeRequest": _personalize,
    "persona.v1.RecommendProductsRequest": _recommend,
    "persona.v1.RankOffersRequest": _rank_offers,
    "persona.v1.SelectLayoutRequest": _select_layout,
    "persona.v1.GetPersonaProfileRequest": _profile,
    "persona.v1.RecordEventsRequest": _record_events,
    "persona.v1.SetExperimentRequest": _set_experiment,
    "persona.v1.ReloadModelRequest": _reload,
    "grpc.health.v1.HealthCheckRequest": _health,
    "grpc.reflection.v1alpha.ServerReflectionRequest": _reflection,
}
