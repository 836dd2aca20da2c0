"""From a RecordEvents request to the live loop's records, checking each record on its own.

The batch policy of RecordEvents is partial acceptance: a shop's event pipeline sends whatever it has,
and one malformed record (a missing timestamp, a typo in an offer id) must not hold back the hundreds
of good ones beside it, nor make the pipeline retry forever a batch that can never pass. So every record
is checked on its own; the valid ones go on to the event log and each invalid one becomes a
``RecordError`` naming the record (list, index, event id) and the field path
(``events[3].timestamp``). Only what concerns the batch as a whole, its size, fails the call.

Outcomes are also checked against the decision log when it holds their decision: the arm must be one
the decision served, and an outcome that names no arm gets the decision's only arm of its kind. A
decision the log does not hold (yet) is no error: it may have been served by a server without a log, by
another worker whose decision writer has not flushed, or be still in this one's queue (an offer_shown
sent as soon as the page rendered usually is); the reports join outcomes to decisions when they read
the log, so it counts once its decision is there, and never before. What cannot be a decision id at all
is refused (``outcomes[i].decision_id``): every decision id the server issues is a lowercase UUID
(``engine.decisions.decision_draws.new_decision_id``), so an outcome naming anything else
(``no-such-decision``, a request id, an id a pipeline upper-cased) would be stored and never join.

A record that fails a check but whose id the log already holds, or a valid record before it in the
same request has, is a duplicate, not an error: the .proto promises that a retry of an accepted record
is counted as one whatever its other fields, and a check can fail on the retry that passed the first
time (the outcome's decision reached the log in between, or a timestamp that was in range has aged).
Only failing records are looked up, so a batch of good records costs no extra read.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from google.protobuf.timestamp_pb2 import Timestamp

from engine.data.contract import EVENT_TYPES, MAX_AMOUNT
from engine.data.id_cells import id_problem
from engine.invalid_request import InvalidRequestError
from engine.live.arrival_batches import WHOLE_BATCH_EVENTS
from engine.live.events import BehaviorEvent, DecisionOutcome, OutcomeKind, ServedDecision
from serving.generated.persona.v1 import personalization_service_pb2 as pb
from serving.wire_timestamps import MAX_AHEAD, checked_timestamp

MAX_EVENTS: Final = WHOLE_BATCH_EVENTS  # a restart replays each call's events as one batch
MAX_OUTCOMES: Final = 1000
MAX_EVENT_ID_CHARS: Final = 128
MAX_DECISION_ID_CHARS: Final = 128
MAX_ID_CHARS: Final = 256
MAX_LABEL_CHARS: Final = 64
MAX_FUTURE: Final = MAX_AHEAD
# Every decision id the server issues: str(uuid.uuid4()) (engine.decisions.decision_draws).
ISSUED_DECISION_ID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

EVENT_TYPES_BY_VALUE: Final = {pb.EventType.Value(f"EVENT_TYPE_{name.upper()}"): name for name in EVENT_TYPES}
OUTCOME_KINDS_BY_VALUE: Final = {
    pb.OutcomeKind.Value(f"OUTCOME_KIND_{kind.name}"): kind for kind in OutcomeKind
}

DecisionLookup = Callable[[str], Sequence[ServedDecision]]
StoredLookup = Callable[[str, str], bool]  # (kind "event" or "outcome", id) -> already in the log


@dataclass(frozen=True)
class RecordError:
    """Why one record of a batch was rejected."""

    kind: str  # "event" or "outcome"
    index: int
    event_id: str
    field: str
    message: str


@dataclass(frozen=True)
class RecordBatch:
    """The valid records of a request, in request order, and one error per invalid record."""

    events: tuple[BehaviorEvent, ...]
    outcomes: tuple[DecisionOutcome, ...]
    errors: tuple[RecordError, ...]
    # (kind, index) of the records that failed a check but whose id is already accepted: duplicates
    failed_duplicates: tuple[tuple[str, int], ...] = ()

    @property
    def stored_events(self) -> int:
        return sum(kind == "event" for kind, _ in self.failed_duplicates)

    @property
    def stored_outcomes(self) -> int:
        return sum(kind == "outcome" for kind, _ in self.failed_duplicates)

    @property
    def rejected_events(self) -> int:
        return sum(error.kind == "event" for error in self.errors)

    @property
    def rejected_outcomes(self) -> int:
        return sum(error.kind == "outcome" for error in self.errors)


def record_batch(
    request: pb.RecordEventsRequest,
    now: dt.datetime,
    decision: DecisionLookup | None = None,
    stored: StoredLookup | None = None,
) -> RecordBatch:
    """Check every record of ``request``; raises InvalidRequestError only for a batch over the limits.

    ``now`` bounds timestamps from the future; ``decision`` looks a decision up in the log (None when
    outcomes are not to be checked against it); ``stored`` says whether the log holds a record id
    (a failing record it holds is a duplicate, module doc).
    """
    for field, values, limit in (
        ("events", request.events, MAX_EVENTS),
        ("outcomes", request.outcomes, MAX_OUTCOMES),
    ):
        if len(values) > limit:
            raise InvalidRequestError(field, f"at most {limit} records per call, got {len(values)}")
    latest = now + MAX_FUTURE
    events: list[BehaviorEvent] = []
    outcomes: list[DecisionOutcome] = []
    errors: list[RecordError] = []
    already: list[tuple[str, int]] = []
    accepted: dict[str, set[str]] = {"event": set(), "outcome": set()}  # valid ids earlier in the batch

    def refused(kind: str, index: int, record_id: str, field: str, error: InvalidRequestError) -> None:
        if record_id in accepted[kind] or (
            stored is not None and 1 <= len(record_id) <= MAX_EVENT_ID_CHARS and stored(kind, record_id)
        ):
            already.append((kind, index))
        else:
            errors.append(
                RecordError(kind, index, record_id, f"{field}[{index}].{error.field}", error.problem)
            )

    for index, message in enumerate(request.events):
        try:
            events.append(behavior_event(message, latest))
            accepted["event"].add(message.event_id)
        except InvalidRequestError as error:
            refused("event", index, message.event_id, "events", error)
    for index, outcome_message in enumerate(request.outcomes):
        try:
            outcomes.append(decision_outcome(outcome_message, latest, decision))
            accepted["outcome"].add(outcome_message.event_id)
        except InvalidRequestError as error:
            refused("outcome", index, outcome_message.event_id, "outcomes", error)
    return RecordBatch(tuple(events), tuple(outcomes), tuple(errors), tuple(already))


def _id(value: str, field: str, high: int) -> str:
    if not 1 <= len(value) <= high:
        raise InvalidRequestError(field, f"must be 1 to {high} characters, got {len(value)}")
    # The data contract's rule for id cells (engine.data.id_cells): such an id never matches the
    # shop's, and training on the log leaves the record out.
    if (problem := id_problem(value)) is not None:
        raise InvalidRequestError(field, problem)
    return value


def _decision_id(value: str) -> str:
    """A decision id as the server issues them (module doc): one that is not could never join."""
    _id(value, "decision_id", MAX_DECISION_ID_CHARS)
    if not ISSUED_DECISION_ID.fullmatch(value):
        raise InvalidRequestError(
            "decision_id",
            f"{value!r} is not a decision id this server issues: send the decision.decision_id of the "
            "response exactly as returned (a lowercase UUID)",
        )
    return value


def _label(value: str, field: str) -> str | None:
    if len(value) > MAX_LABEL_CHARS:
        raise InvalidRequestError(field, f"at most {MAX_LABEL_CHARS} characters, got {len(value)}")
    return value or None


def _timestamp(message: Timestamp, present: bool, latest: dt.datetime) -> dt.datetime:
    if not present:
        raise InvalidRequestError("timestamp", "required")
    return checked_timestamp(message, "timestamp", latest)


def _non_negative(value: float, field: str, high: float | None = None) -> float:
    if not (math.isfinite(value) and value >= 0 and (high is None or value <= high)):
        expected = f"in [0, {high:g}]" if high is not None else "a finite number >= 0"
        raise InvalidRequestError(field, f"must be {expected}, got {value}")
    return value


def behavior_event(message: pb.BehaviorEvent, latest: dt.datetime) -> BehaviorEvent:
    """One event, its fields checked in declaration order (the first problem is reported)."""
    event_id = _id(message.event_id, "event_id", MAX_EVENT_ID_CHARS)
    customer_id = _id(message.customer_id, "customer_id", MAX_ID_CHARS)
    item_id = _id(message.item_id, "item_id", MAX_ID_CHARS)
    if message.event_type not in EVENT_TYPES_BY_VALUE:
        problem = (
            "required"
            if message.event_type == pb.EVENT_TYPE_UNSPECIFIED
            else f"unknown value {message.event_type}"
        )
        names = ", ".join(pb.EventType.Name(value) for value in EVENT_TYPES_BY_VALUE)
        raise InvalidRequestError("event_type", f"{problem}; one of {names}")
    return BehaviorEvent(
        event_id=event_id,
        customer_id=customer_id,
        item_id=item_id,
        event_type=EVENT_TYPES_BY_VALUE[message.event_type],
        timestamp=_timestamp(message.timestamp, message.HasField("timestamp"), latest),
        price_paid=_non_negative(message.price_paid, "price_paid", MAX_AMOUNT)
        if message.HasField("price_paid")
        else None,
        discount=_non_negative(message.discount, "discount", 1.0) if message.HasField("discount") else None,
        channel=_label(message.channel, "channel"),
        device=_label(message.device, "device"),
    )


def decision_outcome(
    message: pb.DecisionOutcome, latest: dt.datetime, decision: DecisionLookup | None
) -> DecisionOutcome:
    """One outcome; its arm resolved against the logged decision when the log holds it."""
    event_id = _id(message.event_id, "event_id", MAX_EVENT_ID_CHARS)
    decision_id = _decision_id(message.decision_id)
    customer_id = _id(message.customer_id, "customer_id", MAX_ID_CHARS)
    if message.kind not in OUTCOME_KINDS_BY_VALUE:
        problem = (
            "required" if message.kind == pb.OUTCOME_KIND_UNSPECIFIED else f"unknown value {message.kind}"
        )
        names = ", ".join(f"OUTCOME_KIND_{kind.name}" for kind in OutcomeKind)
        raise InvalidRequestError("kind", f"{problem}; one of {names}")
    kind = OUTCOME_KINDS_BY_VALUE[message.kind]
    timestamp = _timestamp(message.timestamp, message.HasField("timestamp"), latest)
    if len(message.arm_id) > MAX_ID_CHARS:
        raise InvalidRequestError("arm_id", f"at most {MAX_ID_CHARS} characters, got {len(message.arm_id)}")
    revenue = _non_negative(message.revenue, "revenue", MAX_AMOUNT) if message.HasField("revenue") else 0.0
    arm_id = message.arm_id or None
    if decision is not None:
        arm_id = _served_arm(decision(decision_id), kind, customer_id, arm_id, decision_id)
    return DecisionOutcome(
        event_id=event_id,
        decision_id=decision_id,
        customer_id=customer_id,
        kind=kind,
        timestamp=timestamp,
        arm_id=arm_id,
        revenue=revenue,
    )


def _served_arm(
    served: Sequence[ServedDecision],
    kind: OutcomeKind,
    customer_id: str,
    arm_id: str | None,
    decision_id: str,
) -> str | None:
    if not served:
        return arm_id
    if served[0].customer_id != customer_id:
        raise InvalidRequestError(
            "customer_id",
            f"decision {decision_id} was made for customer {served[0].customer_id!r}, not {customer_id!r}",
        )
    arms = [entry.arm_id for entry in served if entry.decision_type == kind.decision_type]
    noun = "offers" if kind.decision_type == "offer" else "layout variants"
    if not arms:
        raise InvalidRequestError("kind", f"decision {decision_id} served no {noun}")
    if arm_id is None:
        if len(arms) > 1:
            raise InvalidRequestError(
                "arm_id", f"required: decision {decision_id} served {len(arms)} {noun} ({', '.join(arms)})"
            )
        return arms[0]
    if arm_id not in arms:
        raise InvalidRequestError(
            "arm_id", f"decision {decision_id} served {noun} {', '.join(arms)}; not {arm_id!r}"
        )
    return arm_id


def record_events_response(batch: RecordBatch, new_events: int, new_outcomes: int) -> pb.RecordEventsResponse:
    """The response: counts per list and the rejected records."""
    kinds = {"event": pb.RECORD_KIND_EVENT, "outcome": pb.RECORD_KIND_OUTCOME}
    return pb.RecordEventsResponse(
        accepted_events=new_events,
        duplicate_events=len(batch.events) - new_events + batch.stored_events,
        accepted_outcomes=new_outcomes,
        duplicate_outcomes=len(batch.outcomes) - new_outcomes + batch.stored_outcomes,
        errors=[
            pb.RecordError(
                kind=kinds[error.kind],
                index=error.index,
                event_id=error.event_id,
                field=error.field,
                message=error.message,
            )
            for error in batch.errors
        ],
    )
