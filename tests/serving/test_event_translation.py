"""RecordEvents translation over arbitrary input: every record is either accepted within the contract
or answered with one error naming its own field path; nothing raises, nothing is counted twice."""

from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.data.contract import EVENT_TYPES, MAX_AMOUNT
from engine.live.events import OutcomeKind, ServedDecision
from serving.event_translation import MAX_FUTURE, record_batch
from serving.generated.persona.v1 import personalization_service_pb2 as pb
from serving.wire_timestamps import EARLIEST

NOW = dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC)
ids = st.text(min_size=0, max_size=140)
numbers = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
moments = st.one_of(
    st.none(),
    st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2100, 1, 1)).map(
        lambda moment: moment.replace(tzinfo=dt.UTC)
    ),
    st.just(NOW + MAX_FUTURE + dt.timedelta(seconds=1)),
)


@st.composite
def behavior_events(draw: st.DrawFn) -> pb.BehaviorEvent:
    event = pb.BehaviorEvent(
        event_id=draw(ids),
        customer_id=draw(ids),
        item_id=draw(ids),
        event_type=draw(st.integers(0, 5)),  # type: ignore[arg-type]  # unknown values too
        channel=draw(st.text(max_size=70)),
        device=draw(st.text(max_size=70)),
    )
    moment = draw(moments)
    if moment is not None:
        event.timestamp.FromDatetime(moment)
    price, discount = draw(numbers), draw(numbers)
    if price is not None:
        event.price_paid = price
    if discount is not None:
        event.discount = discount
    return event


# Decision ids as the server issues them (lowercase UUIDs): two logged, one not (yet)
OFFERS, LAYOUT, UNKNOWN = (f"00000000-0000-4000-8000-00000000000{n}" for n in range(3))


@st.composite
def decision_outcomes(draw: st.DrawFn) -> pb.DecisionOutcome:
    outcome = pb.DecisionOutcome(
        event_id=draw(ids),
        decision_id=draw(st.sampled_from([OFFERS, LAYOUT, UNKNOWN, "d-not-a-uuid", OFFERS.upper(), ""])),
        customer_id=draw(st.sampled_from(["c1", "c2"])),
        kind=draw(st.integers(0, 6)),  # type: ignore[arg-type]
        arm_id=draw(st.sampled_from(["", "o1", "o2", "grid", "nope"])),
    )
    moment = draw(moments)
    if moment is not None:
        outcome.timestamp.FromDatetime(moment)
    revenue = draw(numbers)
    if revenue is not None:
        outcome.revenue = revenue
    return outcome


def _served(decision_id: str, decision_type: str, arm: str) -> ServedDecision:
    return ServedDecision(decision_id, "c1", NOW, "weekday", decision_type, arm, 0.5, (("p", 1.0),))


LOGGED = {
    OFFERS: (_served(OFFERS, "offer", "o1"), _served(OFFERS, "offer", "o2")),
    LAYOUT: (_served(LAYOUT, "layout", "grid"),),
}


@settings(max_examples=100, deadline=None)
@given(st.lists(behavior_events(), max_size=8), st.lists(decision_outcomes(), max_size=8))
def test_every_record_is_accepted_within_the_contract_or_rejected_naming_its_field(
    events: list[pb.BehaviorEvent], outcomes: list[pb.DecisionOutcome]
) -> None:
    batch = record_batch(
        pb.RecordEventsRequest(events=events, outcomes=outcomes), NOW, lambda d: LOGGED.get(d, ())
    )
    # Each record is valid, rejected, or a failing copy of a valid record before it (a duplicate).
    assert len(batch.events) + batch.rejected_events + batch.stored_events == len(events)
    assert len(batch.outcomes) + batch.rejected_outcomes + batch.stored_outcomes == len(outcomes)
    rejected = {(error.kind, error.index) for error in batch.errors}
    assert len(rejected) == len(batch.errors)  # one error per rejected record
    for kind, index in batch.failed_duplicates:
        sent = events if kind == "event" else outcomes
        assert sent[index].event_id in {m.event_id for m in sent[:index]}
    skipped = rejected | set(batch.failed_duplicates)
    for error in batch.errors:
        sent = events[error.index] if error.kind == "event" else outcomes[error.index]
        assert error.field.startswith(f"{error.kind}s[{error.index}].")
        assert error.event_id == sent.event_id and error.message
    accepted_events = [e for i, e in enumerate(events) if ("event", i) not in skipped]
    for message, event in zip(accepted_events, batch.events, strict=True):
        assert event.event_id == message.event_id and 1 <= len(event.event_id) <= 128
        assert event.event_type in EVENT_TYPES
        assert EARLIEST <= event.timestamp <= NOW + MAX_FUTURE and event.timestamp.tzinfo is not None
        assert event.price_paid is None or 0 <= event.price_paid <= MAX_AMOUNT
        assert event.discount is None or 0 <= event.discount <= 1
    for outcome in batch.outcomes:
        assert outcome.decision_id in {OFFERS, LAYOUT, UNKNOWN}  # never one the server cannot have issued
        assert isinstance(outcome.kind, OutcomeKind)
        assert 0 <= outcome.revenue <= MAX_AMOUNT and outcome.timestamp >= EARLIEST
        served = LOGGED.get(outcome.decision_id, ())
        if served:  # a logged decision: the arm is one it served, of the outcome's kind
            arms = {d.arm_id for d in served if d.decision_type == outcome.kind.decision_type}
            assert outcome.arm_id in arms and outcome.customer_id == "c1"


def _event(event_id: str, **fields: object) -> pb.BehaviorEvent:
    event = pb.BehaviorEvent(event_id=event_id, customer_id="c1", item_id="i1", event_type=pb.EVENT_TYPE_VIEW)
    event.timestamp.FromDatetime(NOW)
    for name, value in fields.items():
        if name == "timestamp":
            event.timestamp.CopyFrom(value)  # type: ignore[arg-type]
        else:
            setattr(event, name, value)
    return event


def test_mistakes_a_client_in_another_language_makes_are_named_in_its_terms() -> None:
    """What a Node backend sent (protobuf.js): a Date object encodes as the zero Timestamp, a string
    event type as 0; the errors say what was wrong in the .proto's names."""
    events = [
        _event("zero", timestamp=Timestamp()),
        _event("1900", timestamp=Timestamp(seconds=-2208988800)),
        _event("nanos", timestamp=Timestamp(seconds=1_800_000_000, nanos=1_000_000_000)),
        _event("unset-type", event_type=pb.EVENT_TYPE_UNSPECIFIED),
        _event("huge-price", price_paid=1e308),
        _event("fine", timestamp=Timestamp(seconds=int(NOW.timestamp()) - 60, nanos=999_999_999)),
    ]
    batch = record_batch(pb.RecordEventsRequest(events=events), NOW)
    assert [event.event_id for event in batch.events] == ["fine"]
    assert [(error.field, error.message) for error in batch.errors] == [
        (
            "events[0].timestamp",
            "1970-01-01T00:00:00Z is before 2000-01-01 (the zero Timestamp: seconds left unset, or a "
            "JavaScript Date object, which protobuf.js encodes as an empty message; send {seconds, nanos})",
        ),
        ("events[1].timestamp", "1900-01-01T00:00:00Z is before 2000-01-01"),
        ("events[2].timestamp", "nanos must be 0 to 999,999,999, got 1000000000"),
        (
            "events[3].event_type",
            "required; one of EVENT_TYPE_VIEW, EVENT_TYPE_CART, EVENT_TYPE_PURCHASE",
        ),
        ("events[4].price_paid", "must be in [0, 1e+15], got 1e+308"),
    ]
