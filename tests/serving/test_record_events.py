"""RecordEvents and decision logging over real gRPC: idempotency, per-record errors, observers, metrics."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest

from engine.live.decision_log_writer import DecisionLogWriter
from engine.live.event_log import EventLog
from engine.live.events import BehaviorEvent, DecisionOutcome, OutcomeKind
from serving.client import PageContext, PersonaEngineClient
from serving.examples import record_events
from serving.generated.persona.v1 import personalization_service_pb2 as pb
from serving.generated.persona.v1 import personalization_service_pb2_grpc as pb_grpc
from tests.engine.live.recording_observers import FailingObserver, RecordingObserver
from tests.serving.server_harness import InProcessServer, in_process_server, trained_artifacts

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass
class LiveServer:
    server: InProcessServer
    client: PersonaEngineClient
    log: EventLog
    writer: DecisionLogWriter
    observer: RecordingObserver

    @property
    def customer(self) -> str:
        return str(self.server.holder.current().model_customers.ids[0])

    @property
    def item(self) -> str:
        return str(self.server.holder.current().item_catalog.ids.ids[0])


@pytest.fixture
def live(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    artifact = trained_artifacts(tmp_path_factory).older
    path = tmp_path / "events.db"
    log = EventLog.open(path)
    writer = DecisionLogWriter(path)
    observer = RecordingObserver()
    with (
        in_process_server(
            artifact,
            event_log=log,
            decision_writer=writer,
            observers=[FailingObserver(), observer],
        ) as server,
        PersonaEngineClient(server.address, timeout_s=10.0) as client,
    ):
        yield LiveServer(server, client, log, writer, observer)
    writer.close()
    log.close()


def events(customer: str, item: str, count: int, prefix: str = "e") -> list[BehaviorEvent]:
    return [
        BehaviorEvent(f"{prefix}{n}", customer, item, "view", NOW - dt.timedelta(minutes=n))
        for n in range(count)
    ]


def test_a_retried_batch_is_stored_and_observed_once(live: LiveServer) -> None:
    batch = events(live.customer, live.item, 5)
    first = live.client.record_events(batch)
    retry = live.client.record_events(batch)
    assert (first.accepted_events, first.duplicate_events, list(first.errors)) == (5, 0, [])
    assert (retry.accepted_events, retry.duplicate_events) == (0, 5)
    assert live.log.counts()["events"] == 5
    assert live.observer.events == batch  # the failing observer before it did not stop it
    assert live.server.metric("persona_engine_live_records_total", record="event", result="accepted") == 5
    assert live.server.metric("persona_engine_live_records_total", record="event", result="duplicate") == 5


def test_invalid_records_get_errors_naming_their_field_and_valid_ones_are_accepted(live: LiveServer) -> None:
    good = pb.BehaviorEvent(
        event_id="ok-1", customer_id=live.customer, item_id=live.item, event_type=pb.EVENT_TYPE_PURCHASE
    )
    good.timestamp.FromDatetime(NOW)
    good.price_paid = 12.5
    no_time = pb.BehaviorEvent(event_id="bad-1", customer_id="c", item_id="i", event_type=pb.EVENT_TYPE_VIEW)
    bad_type = pb.BehaviorEvent(event_id="bad-2", customer_id="c", item_id="i", event_type=7)  # type: ignore[arg-type]
    bad_type.timestamp.FromDatetime(NOW)
    bad_discount = pb.BehaviorEvent()
    bad_discount.CopyFrom(good)
    bad_discount.event_id, bad_discount.discount = "bad-3", 1.5
    future = pb.BehaviorEvent()
    future.CopyFrom(good)
    future.event_id = "bad-4"
    future.timestamp.FromDatetime(NOW + dt.timedelta(days=3))
    new_item = pb.BehaviorEvent()
    new_item.CopyFrom(good)
    new_item.event_id, new_item.item_id = "ok-2", "item-added-after-training"
    no_kind = pb.DecisionOutcome(event_id="bad-o", decision_id=str(uuid.uuid4()), customer_id="c")
    no_kind.timestamp.FromDatetime(NOW)
    stub = pb_grpc.PersonalizationServiceStub(grpc.insecure_channel(live.server.address))
    response = stub.RecordEvents(
        pb.RecordEventsRequest(
            events=[good, no_time, bad_type, bad_discount, future, new_item, pb.BehaviorEvent()],
            outcomes=[no_kind],
        ),
        timeout=10,
    )
    assert (response.accepted_events, response.duplicate_events, response.accepted_outcomes) == (2, 0, 0)
    errors = [(e.kind, e.index, e.event_id, e.field) for e in response.errors]
    assert errors == [
        (pb.RECORD_KIND_EVENT, 1, "bad-1", "events[1].timestamp"),
        (pb.RECORD_KIND_EVENT, 2, "bad-2", "events[2].event_type"),
        (pb.RECORD_KIND_EVENT, 3, "bad-3", "events[3].discount"),
        (pb.RECORD_KIND_EVENT, 4, "bad-4", "events[4].timestamp"),
        (pb.RECORD_KIND_EVENT, 6, "", "events[6].event_id"),
        (pb.RECORD_KIND_OUTCOME, 0, "bad-o", "outcomes[0].kind"),
    ]
    messages = {e.field: e.message for e in response.errors}
    assert messages["events[1].timestamp"] == "required"
    assert "unknown value 7" in messages["events[2].event_type"]
    assert "hours ahead" in messages["events[4].timestamp"]
    assert live.log.event_ids() == {"ok-1", "ok-2"}
    assert live.server.metric("persona_engine_live_records_total", record="event", result="rejected") == 5


def test_the_client_refuses_an_unencodable_record_alone_as_the_server_refuses_an_invalid_one(
    live: LiveServer,
) -> None:
    """An event_type EventType lacks ("wishlist") raised a ValueError naming no record, and nothing of
    the batch was sent; now that record comes back in errors like one the server refused, with the
    caller's index and event id, and the others are stored (README: partial acceptance)."""
    batch = events(live.customer, live.item, 6, prefix="w")
    batch[4] = replace(batch[4], event_id="e9", event_type="wishlist")
    batch[5] = replace(batch[5], customer_id="")  # refused by the server, at index 5 of the caller's list
    outcome = DecisionOutcome("o-bad", "d", live.customer, "clicked", NOW)  # type: ignore[arg-type]
    response = live.client.record_events(batch, [outcome])
    assert [(e.kind, e.index, e.event_id, e.field) for e in response.errors] == [
        (pb.RECORD_KIND_EVENT, 4, "e9", "events[4].event_type"),
        (pb.RECORD_KIND_EVENT, 5, "w5", "events[5].customer_id"),
        (pb.RECORD_KIND_OUTCOME, 0, "o-bad", "outcomes[0].kind"),
    ]
    assert [e.message for e in response.errors] == [
        "unknown value 'wishlist'; one of view, cart, purchase",
        "must be 1 to 256 characters, got 0",
        "unknown value 'clicked'; one of offer_shown, offer_redeemed, layout_shown, layout_converted",
    ]
    assert (response.accepted_events, response.accepted_outcomes) == (4, 0)
    assert live.log.event_ids() == {"w0", "w1", "w2", "w3"}

    wrong_type = replace(batch[0], event_id="e7", price_paid="12.5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^events\[1\] \(event_id 'e7'\): price_paid: must be real number"):
        live.client.record_events([batch[1], wrong_type])  # a bug in the caller: nothing is sent
    assert live.log.counts()["events"] == 4


def test_ids_the_data_contract_refuses_are_refused_per_record(live: LiveServer) -> None:
    """A NUL or padded id was accepted, and training on the log then stopped with a traceback in the id
    map (helper's bad-input pass); ids follow the data contract's rule (engine.data.id_cells)."""
    batch = events(live.customer, live.item, 4, prefix="n")
    batch[1] = replace(batch[1], customer_id="c\x00001")
    batch[2] = replace(batch[2], item_id=f" {live.item}")
    batch[3] = replace(batch[3], event_id="n3\t")
    response = live.client.record_events(batch)
    assert [(e.field, e.message) for e in response.errors] == [
        ("events[1].customer_id", "'c\\x00001' contains a control character (U+0000)"),
        ("events[2].item_id", f"' {live.item}' has leading or trailing whitespace"),
        ("events[3].event_id", "'n3\\t' contains a control character (U+0009)"),
    ]
    assert response.accepted_events == 1 and live.log.event_ids() == {"n0"}


def test_a_batch_over_the_limit_is_refused_whole_naming_the_field(live: LiveServer) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        live.client.record_events(events(live.customer, live.item, 1001))
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (raised.value.details() or "").startswith("events: at most 1000")
    assert live.log.counts()["events"] == 0


def test_served_decisions_are_logged_and_outcomes_resolve_their_arm(live: LiveServer) -> None:
    page = live.client.personalize(
        live.customer, context=PageContext(timestamp=NOW, basket_value=500.0), num_offers=3
    )
    layout = live.client.select_layout(live.customer, context=PageContext(timestamp=NOW))
    live.writer.flush()
    logged = live.log.decision(page.decision.decision_id)
    assert [(d.decision_type, d.arm_id) for d in logged] == [
        *(("offer", o.offer_id) for o in page.offers),
        ("layout", page.layout.variant_id),
    ]
    assert [d.propensity for d in logged] == pytest.approx(
        [*(o.propensity for o in page.offers), page.layout.propensity]
    )
    assert all(d.customer_id == live.customer and d.timestamp == NOW for d in logged)
    assert dict(logged[0].persona_mix) == pytest.approx(
        {w.persona_id: w.weight for w in page.decision.persona_mix.weights}
    )
    assert len(live.log.decision(layout.decision.decision_id)) == 1
    assert len(page.offers) >= 2  # the basket value makes several offers eligible

    def outcome(event_id: str, kind: OutcomeKind, arm: str | None, decision: str = "") -> DecisionOutcome:
        return DecisionOutcome(
            event_id, decision or page.decision.decision_id, live.customer, kind, NOW, arm, revenue=3.0
        )

    response = live.client.record_events(
        outcomes=[
            outcome("o1", OutcomeKind.LAYOUT_CONVERTED, None),  # the decision's one layout is filled in
            outcome("o2", OutcomeKind.OFFER_REDEEMED, page.offers[1].offer_id),
            outcome("o3", OutcomeKind.OFFER_REDEEMED, None),  # ambiguous: several offers
            outcome("o4", OutcomeKind.OFFER_SHOWN, "not-served"),
            outcome("o5", OutcomeKind.OFFER_SHOWN, None, decision=str(uuid.uuid4())),  # not (yet) logged
        ]
    )
    assert response.accepted_outcomes == 3
    served_offers = ", ".join(o.offer_id for o in page.offers)
    decision_id = page.decision.decision_id
    assert {e.field: e.message for e in response.errors} == {
        "outcomes[2].arm_id": f"required: decision {decision_id} served {len(page.offers)} offers "
        f"({served_offers})",
        "outcomes[3].arm_id": f"decision {decision_id} served offers {served_offers}; not 'not-served'",
    }
    assert [(o.event_id, o.arm_id) for o in live.observer.outcomes] == [
        ("o1", page.layout.variant_id),
        ("o2", page.offers[1].offer_id),
        ("o5", None),
    ]
    frame = live.log.decisions_frame()
    rewarded = set(frame.filter(frame["outcome"] == 1.0)["decision_id"].to_list())
    assert rewarded == {
        f"{decision_id}:layout:{page.layout.variant_id}",
        f"{decision_id}:offer:{page.offers[1].offer_id}",
    }


def test_an_outcome_naming_no_decision_the_server_could_have_issued_is_refused(live: LiveServer) -> None:
    """'no-such-decision' came back accepted, was stored and could never join a decision: every report
    and the bandit ignore it, so whoever sent it never learned. A decision id is a lowercase UUID."""
    page = live.client.personalize(live.customer, context=PageContext(timestamp=NOW, basket_value=500.0))
    live.writer.flush()
    offer = page.offers[0].offer_id

    def shown(event_id: str, decision_id: str) -> DecisionOutcome:
        return DecisionOutcome(event_id, decision_id, live.customer, OutcomeKind.OFFER_SHOWN, NOW, offer)

    response = live.client.record_events(
        outcomes=[
            shown("o-1", "no-such-decision"),
            shown("o-2", page.decision.decision_id.upper()),  # a pipeline that upper-cases ids
            shown("o-3", page.decision.decision_id),
        ]
    )
    assert response.accepted_outcomes == 1
    assert [(e.index, e.event_id, e.field) for e in response.errors] == [
        (0, "o-1", "outcomes[0].decision_id"),
        (1, "o-2", "outcomes[1].decision_id"),
    ]
    assert response.errors[0].message == (
        "'no-such-decision' is not a decision id this server issues: send the decision.decision_id of "
        "the response exactly as returned (a lowercase UUID)"
    )
    assert [o.event_id for o in live.log.outcomes()] == ["o-3"]
    assert live.server.metric("persona_engine_live_records_total", record="outcome", result="rejected") == 2


def test_an_outcome_sent_before_its_decision_is_logged_counts_once_the_decision_is(live: LiveServer) -> None:
    """Why a well-formed decision id the log does not hold is accepted: the decision writer logs off the
    request path, so an offer_shown sent as the page renders often arrives first (or at another worker).
    Reports join when they read the log; one whose decision never arrives is counted nowhere."""
    page = live.client.personalize(live.customer, context=PageContext(timestamp=NOW))
    assert live.log.decision(page.decision.decision_id) == ()  # still in the writer's queue
    never_served = str(uuid.uuid4())
    response = live.client.record_events(
        outcomes=[
            DecisionOutcome(
                "early", page.decision.decision_id, live.customer, OutcomeKind.LAYOUT_CONVERTED, NOW
            ),
            DecisionOutcome("stray", never_served, live.customer, OutcomeKind.LAYOUT_CONVERTED, NOW),
        ]
    )
    assert (response.accepted_outcomes, list(response.errors)) == (2, [])
    live.writer.flush()
    frame = live.log.decisions_frame()
    assert frame.filter(frame["outcome"] == 1.0)["decision_id"].to_list() == [
        f"{page.decision.decision_id}:layout:{page.layout.variant_id}"
    ]
    assert never_served not in set(frame["served_decision_id"].to_list())


def test_without_an_event_log_record_events_is_refused(tmp_path_factory: pytest.TempPathFactory) -> None:
    with (
        in_process_server(trained_artifacts(tmp_path_factory).older) as server,
        PersonaEngineClient(server.address, timeout_s=10.0) as client,
    ):
        with pytest.raises(grpc.RpcError) as raised:
            client.record_events(events("c", "i", 1))
        assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "--event-log" in (raised.value.details() or "")
        client.personalize("c")  # serving without a log logs no decisions and works as before


def test_the_pipeline_example_delivers_retries_as_duplicates_and_reports_rejections(
    live: LiveServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--target", live.server.address, "--customer", live.customer]
    assert record_events.main([*argv, "--item", live.item, "--event-type", "purchase", "--price", "3"]) == 0
    assert "accepted 1, duplicates 0, rejected 0" in capsys.readouterr().out
    (stored,) = live.log.behavior_events()
    assert (stored.event_type, stored.price_paid) == ("purchase", 3.0)

    batch = events(live.customer, live.item, 1500, prefix="bulk-")  # two calls of at most 1000
    first = record_events.deliver(live.client, batch[:1200])
    again = record_events.deliver(live.client, batch)  # a pipeline resending after a crash
    assert (first.accepted, first.duplicates, again.accepted, again.duplicates) == (1200, 0, 300, 1200)

    page = live.client.select_layout(live.customer, context=PageContext(timestamp=NOW))
    live.writer.flush()
    outcome = [*argv, "--decision-id", page.decision.decision_id, "--outcome", "layout_converted"]
    assert record_events.main(outcome) == 0
    assert record_events.main([*outcome, "--arm", "not-a-variant"]) == 2
    assert "outcomes[0].arm_id: decision" in capsys.readouterr().err


def test_an_accepted_record_retried_after_its_check_would_fail_is_a_duplicate(live: LiveServer) -> None:
    """The .proto: a record whose id was accepted is a duplicate whatever its other fields. An outcome
    accepted before its decision reached the log fails the arm check on its retry (fuzz pass): it
    must come back a duplicate, not a rejection of a record the log holds."""
    page = live.client.personalize(
        live.customer, context=PageContext(timestamp=NOW, basket_value=500.0), num_offers=3
    )
    stray = DecisionOutcome(
        "late-arm", page.decision.decision_id, live.customer, OutcomeKind.OFFER_SHOWN, NOW, "not-an-offer"
    )
    # Sent before the decision writer flushes, the decision is unknown and the outcome is accepted.
    assert live.log.decision(page.decision.decision_id) == ()
    first = live.client.record_events(outcomes=[stray])
    assert (first.accepted_outcomes, first.duplicate_outcomes, list(first.errors)) == (1, 0, [])
    live.writer.flush()
    assert live.log.decision(page.decision.decision_id)
    event = events(live.customer, live.item, 1, prefix="aged")[0]
    assert live.client.record_events([event]).accepted_events == 1
    future = NOW + dt.timedelta(days=30)  # the same event id with a timestamp no record may have
    retry = live.client.record_events(
        [BehaviorEvent(event.event_id, event.customer_id, event.item_id, "view", future)], outcomes=[stray]
    )
    assert (retry.accepted_outcomes, retry.duplicate_outcomes, list(retry.errors)) == (0, 1, [])
    assert (retry.accepted_events, retry.duplicate_events) == (0, 1)
    # A copy that fails the checks after a valid record with its id in the same request: a duplicate.
    twice = live.client.record_events(
        [replace(event, event_id="twice"), replace(event, event_id="twice", timestamp=future)]
    )
    assert (twice.accepted_events, twice.duplicate_events, list(twice.errors)) == (1, 1, [])
    # A new record failing the same check is still refused, naming its field.
    fresh = live.client.record_events(outcomes=[replace(stray, event_id="never-seen")])
    assert [e.field for e in fresh.errors] == ["outcomes[0].arm_id"]
    assert live.log.counts()["outcomes"] == 1 and live.log.counts()["events"] == 2
    assert live.server.metric("persona_engine_live_records_total", record="outcome", result="duplicate") == 1
    assert live.server.metric("persona_engine_live_records_total", record="outcome", result="rejected") == 1
