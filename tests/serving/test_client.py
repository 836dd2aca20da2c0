"""PersonaEngineClient against a real gRPC server started in the test on a free loopback port.

The server implements the generated servicers with scripted answers (fixed responses, injected status
codes, delays), so the client's deadlines, retries, metadata and request building are exercised over
real gRPC transport without needing a trained artifact.
"""

from __future__ import annotations

import datetime as dt
import math
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from hypothesis import given
from hypothesis import strategies as st

from engine.live.events import BehaviorEvent, DecisionOutcome, OutcomeKind
from serving.client import (
    PERSONALIZATION_SERVICE,
    RETRYABLE_METHODS,
    Filters,
    PageContext,
    PersonaEngineClient,
    Promotion,
    Target,
    persona_mix_to_proto,
)
from serving.examples import personalize_page
from serving.generated.persona.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    personalization_service_pb2,
    personalization_service_pb2_grpc,
    types_pb2,
)


@dataclass
class Script:
    """What the fake server does: per method, status codes to fail with before answering, and a delay."""

    failures: dict[str, list[grpc.StatusCode]] = field(default_factory=dict)
    delay_s: float = 0.0
    calls: list[tuple[str, Message, dict[str, str]]] = field(default_factory=list)

    def count(self, method: str) -> int:
        return sum(1 for name, _, _ in self.calls if name == method)

    def last_request(self, method: str) -> Message:
        return [request for name, request, _ in self.calls if name == method][-1]

    def serve(self, method: str, request: Message, context: grpc.ServicerContext) -> None:
        metadata = {key: str(value) for key, value in context.invocation_metadata()}
        self.calls.append((method, request, metadata))
        pending = self.failures.get(method)
        if pending:
            code = pending.pop(0)
            _abort(context, code)
        if self.delay_s:
            time.sleep(self.delay_s)


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode) -> NoReturn:
    context.abort(code, f"scripted {code.name}")
    raise AssertionError("context.abort returned")


def _decision(customer_id: str) -> types_pb2.DecisionInfo:
    return types_pb2.DecisionInfo(
        decision_id=f"d-{customer_id}",
        persona_mix=types_pb2.PersonaMix(
            weights=[types_pb2.PersonaWeight(persona_id="bargain_hunter", weight=1.0)]
        ),
        persona_mix_source=types_pb2.PERSONA_MIX_SOURCE_INFERRED,
        model_version="20260105T101500Z",
        model_name="als",
    )


def _items(count: int) -> list[types_pb2.RecommendedItem]:
    return [
        types_pb2.RecommendedItem(
            item_id=f"i{n:03d}",
            rank=n + 1,
            score=1.0 - n / 100,
            title=f"Item {n}",
            category="groceries",
            price=2.5,
            reason=types_pb2.REASON_CODE_PERSONALIZED,
            persona_contributions=[types_pb2.PersonaContribution(persona_id="bargain_hunter", share=1.0)],
        )
        for n in range(count)
    ]


class ScriptedPersonalization(personalization_service_pb2_grpc.PersonalizationServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    def Personalize(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: personalization_service_pb2.PersonalizeRequest, context: grpc.ServicerContext
    ) -> personalization_service_pb2.PersonalizeResponse:
        self.script.serve("Personalize", request, context)
        items = _items(request.num_results)
        return personalization_service_pb2.PersonalizeResponse(
            items=items,
            offers=[
                types_pb2.RankedOffer(offer_id="free_ship", kind=types_pb2.OFFER_KIND_FREE_SHIPPING, rank=1)
            ],
            layout=types_pb2.LayoutDecision(
                variant_id="grid",
                propensity=0.9,
                slots=[types_pb2.LayoutSlot(name="hero", item_ids=[items[0].item_id] if items else [])],
            ),
            decision=_decision(request.customer_id),
        )

    def RecommendProducts(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: personalization_service_pb2.RecommendProductsRequest, context: grpc.ServicerContext
    ) -> personalization_service_pb2.RecommendProductsResponse:
        self.script.serve("RecommendProducts", request, context)
        return personalization_service_pb2.RecommendProductsResponse(
            results=[
                personalization_service_pb2.ProductRecommendation(
                    customer_id=target.customer_id,
                    items=_items(request.num_results),
                    decision=_decision(target.customer_id),
                )
                for target in request.targets
            ]
        )

    def RankOffers(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: personalization_service_pb2.RankOffersRequest, context: grpc.ServicerContext
    ) -> personalization_service_pb2.RankOffersResponse:
        self.script.serve("RankOffers", request, context)
        return personalization_service_pb2.RankOffersResponse(decision=_decision(request.customer_id))

    def SelectLayout(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: personalization_service_pb2.SelectLayoutRequest, context: grpc.ServicerContext
    ) -> personalization_service_pb2.SelectLayoutResponse:
        self.script.serve("SelectLayout", request, context)
        return personalization_service_pb2.SelectLayoutResponse(
            layout=types_pb2.LayoutDecision(variant_id="grid"), decision=_decision(request.customer_id)
        )

    def GetPersonaProfile(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: personalization_service_pb2.GetPersonaProfileRequest, context: grpc.ServicerContext
    ) -> personalization_service_pb2.GetPersonaProfileResponse:
        self.script.serve("GetPersonaProfile", request, context)
        return personalization_service_pb2.GetPersonaProfileResponse(
            customer_id=request.customer_id, cold_start=True
        )

    def ListPersonas(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: personalization_service_pb2.ListPersonasRequest, context: grpc.ServicerContext
    ) -> personalization_service_pb2.ListPersonasResponse:
        self.script.serve("ListPersonas", request, context)
        return personalization_service_pb2.ListPersonasResponse(
            personas=[personalization_service_pb2.Persona(persona_id="bargain_hunter", name="Bargain Hunter")]
        )

    def RecordEvents(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: personalization_service_pb2.RecordEventsRequest, context: grpc.ServicerContext
    ) -> personalization_service_pb2.RecordEventsResponse:
        self.script.serve("RecordEvents", request, context)
        return personalization_service_pb2.RecordEventsResponse(
            accepted_events=len(request.events), accepted_outcomes=len(request.outcomes)
        )


class ScriptedAdmin(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    def GetModelInfo(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: admin_service_pb2.GetModelInfoRequest, context: grpc.ServicerContext
    ) -> admin_service_pb2.GetModelInfoResponse:
        self.script.serve("GetModelInfo", request, context)
        return admin_service_pb2.GetModelInfoResponse(
            artifact_version="20260105T101500Z", serving_model="als"
        )

    def ReloadModel(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: admin_service_pb2.ReloadModelRequest, context: grpc.ServicerContext
    ) -> admin_service_pb2.ReloadModelResponse:
        self.script.serve("ReloadModel", request, context)
        return admin_service_pb2.ReloadModelResponse(outcome=admin_service_pb2.RELOAD_OUTCOME_RELOADED)


@dataclass
class FakeServer:
    address: str
    script: Script
    health: health.HealthServicer


def _start(
    script: Script, credentials: grpc.ServerCredentials | None = None
) -> tuple[grpc.Server, FakeServer]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    personalization_service_pb2_grpc.add_PersonalizationServiceServicer_to_server(
        ScriptedPersonalization(script), server
    )
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(ScriptedAdmin(script), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
        host = "127.0.0.1"
    else:
        port = server.add_secure_port("localhost:0", credentials)
        host = "localhost"
    server.start()
    return server, FakeServer(f"{host}:{port}", script, health_servicer)


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server, running = _start(Script())
    yield running
    server.stop(None)


def _code(excinfo: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    error = excinfo.value
    assert isinstance(error, grpc.Call)
    return error.code()


def test_plain_values_become_the_documented_request_fields(fake: FakeServer) -> None:
    with PersonaEngineClient(fake.address, timeout_s=2) as engine:
        page = engine.personalize(
            "c42",
            persona_mix={"bargain_hunter": 0.7, "tech_savvy": 0.3},
            context=PageContext(
                timestamp=dt.datetime(2026, 1, 3, 10, 30),
                shopping_context="weekend_holiday",
                channel="email",
                device="mobile",
                page_type="product_detail",
                session_item_ids=["i1"],
                cart_item_ids=["i2", "i3"],
                basket_value=12.5,
            ),
            filters=Filters(exclude_categories=["toys"], price_max=50.0),
            promotions=[Promotion("spring", 0.25, brands=["acme"])],
            pins={1: "i9"},
            k=5,
            explain=True,
        )
    assert [item.rank for item in page.items] == [1, 2, 3, 4, 5]
    assert page.decision.decision_id == "d-c42"
    request = fake.script.last_request("Personalize")
    assert isinstance(request, personalization_service_pb2.PersonalizeRequest)
    assert request.customer_id == "c42" and request.num_results == 5 and request.explain
    assert {w.persona_id: w.weight for w in request.persona_mix.weights} == {
        "bargain_hunter": 0.7,
        "tech_savvy": 0.3,
    }
    context = request.context
    assert context.timestamp.ToDatetime(tzinfo=dt.UTC) == dt.datetime(2026, 1, 3, 10, 30, tzinfo=dt.UTC)
    assert context.shopping_context == types_pb2.SHOPPING_CONTEXT_WEEKEND_HOLIDAY
    assert context.page_type == types_pb2.PAGE_TYPE_PRODUCT_DETAIL
    assert list(context.cart_item_ids) == ["i2", "i3"] and context.HasField("basket_value")
    filters = request.filters
    assert list(filters.exclude_categories) == ["toys"]
    assert filters.HasField("price_max") and not filters.HasField("price_min")
    assert not filters.include_purchased and not filters.include_out_of_stock  # the safe defaults
    assert request.promotions.rules[0].share == 0.25 and list(request.promotions.rules[0].brands) == ["acme"]
    assert (request.promotions.pins[0].item_id, request.promotions.pins[0].position) == ("i9", 1)


def test_omitted_optional_values_stay_unset_on_the_wire(fake: FakeServer) -> None:
    with PersonaEngineClient(fake.address, timeout_s=2) as engine:
        engine.personalize("c1", context=PageContext())
    request = fake.script.last_request("Personalize")
    assert isinstance(request, personalization_service_pb2.PersonalizeRequest)
    # No mix means "use the inferred one"; no basket value means "sum of the cart's prices".
    assert not request.HasField("persona_mix") and not request.HasField("promotions")
    assert not request.context.HasField("basket_value") and not request.context.HasField("timestamp")


def test_batch_results_come_back_in_target_order(fake: FakeServer) -> None:
    targets: list[str | Target] = ["c3", Target("c1", {"luxury": 1.0}, exclude_item_ids=["i7"]), "c2"]
    with PersonaEngineClient(fake.address, timeout_s=2) as engine:
        response = engine.recommend_products_batch(targets, k=2)
        single = engine.recommend_products("c9", k=3)
    assert [r.customer_id for r in response.results] == ["c3", "c1", "c2"]
    assert [len(r.items) for r in response.results] == [2, 2, 2]
    assert single.customer_id == "c9" and len(single.items) == 3
    request = fake.script.calls[0][1]
    assert isinstance(request, personalization_service_pb2.RecommendProductsRequest)
    assert [t.HasField("persona_mix") for t in request.targets] == [False, True, False]
    assert list(request.targets[1].exclude_item_ids) == ["i7"]


def test_every_rpc_is_reachable_through_the_client(fake: FakeServer) -> None:
    with PersonaEngineClient(fake.address, timeout_s=2, admin_token="s3cret") as engine:
        assert engine.rank_offers("c1", candidate_offer_ids=["o1"]).decision.decision_id == "d-c1"
        assert engine.select_layout("c1").layout.variant_id == "grid"
        assert engine.get_persona_profile("c1").cold_start
        assert engine.list_personas().personas[0].name == "Bargain Hunter"
        assert engine.get_model_info().serving_model == "als"
        assert engine.reload_model("artifacts/latest").outcome == admin_service_pb2.RELOAD_OUTCOME_RELOADED
    assert [name for name, _, _ in fake.script.calls] == [
        "RankOffers",
        "SelectLayout",
        "GetPersonaProfile",
        "ListPersonas",
        "GetModelInfo",
        "ReloadModel",
    ]


def test_the_deadline_is_applied_and_not_retried(fake: FakeServer) -> None:
    fake.script.delay_s = 0.6
    with PersonaEngineClient(fake.address, timeout_s=0.2, retries=3) as engine:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as excinfo:
            engine.get_persona_profile("c1")
        elapsed = time.monotonic() - started
    assert _code(excinfo) is grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 0.5
    assert fake.script.count("GetPersonaProfile") == 1


def test_unavailable_is_retried_with_backoff_until_it_succeeds(fake: FakeServer) -> None:
    fake.script.failures["Personalize"] = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    with PersonaEngineClient(fake.address, timeout_s=3, retries=2, backoff_s=0.05) as engine:
        started = time.monotonic()
        page = engine.personalize("c1", k=2)
        elapsed = time.monotonic() - started
    assert len(page.items) == 2
    assert fake.script.count("Personalize") == 3
    assert elapsed >= 0.025 + 0.05  # two pauses: at least half of 0.05 s, then half of 0.1 s (jitter)


def test_record_events_sends_every_field_and_is_retried_on_unavailable(fake: FakeServer) -> None:
    moment = dt.datetime(2026, 3, 2, 9, 30, 15, 250_000, tzinfo=dt.UTC)
    fake.script.failures["RecordEvents"] = [grpc.StatusCode.UNAVAILABLE]
    with PersonaEngineClient(fake.address, timeout_s=3, retries=2, backoff_s=0.01) as engine:
        response = engine.record_events(
            [
                BehaviorEvent(
                    "e1", "c1", "i1", "purchase", moment, price_paid=9.5, discount=0.0, channel="email"
                ),
                BehaviorEvent("e2", "c1", "i2", "view", moment),
            ],
            [DecisionOutcome("o1", "d1", "c1", OutcomeKind.OFFER_REDEEMED, moment, "free_ship", revenue=4.0)],
        )
    assert (response.accepted_events, response.accepted_outcomes) == (2, 1)
    assert fake.script.count("RecordEvents") == 2
    request = fake.script.last_request("RecordEvents")
    assert isinstance(request, personalization_service_pb2.RecordEventsRequest)
    purchase, view = request.events
    assert purchase.event_type == personalization_service_pb2.EVENT_TYPE_PURCHASE
    assert purchase.timestamp.ToDatetime(tzinfo=dt.UTC) == moment
    assert (purchase.price_paid, purchase.HasField("discount"), purchase.discount) == (9.5, True, 0.0)
    assert not view.HasField("price_paid") and view.channel == ""
    (outcome,) = request.outcomes
    assert outcome.kind == personalization_service_pb2.OUTCOME_KIND_OFFER_REDEEMED
    assert (outcome.arm_id, outcome.revenue) == ("free_ship", 4.0)


def test_retries_stop_after_the_configured_number(fake: FakeServer) -> None:
    fake.script.failures["ListPersonas"] = [grpc.StatusCode.UNAVAILABLE] * 5
    with (
        PersonaEngineClient(fake.address, timeout_s=3, retries=2, backoff_s=0.01) as engine,
        pytest.raises(grpc.RpcError) as excinfo,
    ):
        engine.list_personas()
    assert _code(excinfo) is grpc.StatusCode.UNAVAILABLE
    assert fake.script.count("ListPersonas") == 3


def test_retries_stop_when_the_deadline_leaves_no_room(fake: FakeServer) -> None:
    fake.script.failures["ListPersonas"] = [grpc.StatusCode.UNAVAILABLE] * 5
    with (
        PersonaEngineClient(fake.address, timeout_s=0.3, retries=4, backoff_s=1.0) as engine,
        pytest.raises(grpc.RpcError) as excinfo,
    ):
        engine.list_personas()
    assert _code(excinfo) is grpc.StatusCode.UNAVAILABLE
    assert fake.script.count("ListPersonas") == 1


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INTERNAL]
)
def test_errors_other_than_unavailable_are_not_retried(fake: FakeServer, code: grpc.StatusCode) -> None:
    fake.script.failures["RankOffers"] = [code, code, code]
    with (
        PersonaEngineClient(fake.address, timeout_s=2, retries=2, backoff_s=0.01) as engine,
        pytest.raises(grpc.RpcError) as excinfo,
    ):
        engine.rank_offers("c1")
    assert _code(excinfo) is code
    assert fake.script.count("RankOffers") == 1


def test_reload_is_never_retried_because_it_is_not_idempotent(fake: FakeServer) -> None:
    assert f"/{PERSONALIZATION_SERVICE}/Personalize" in RETRYABLE_METHODS
    assert "/persona.v1.AdminService/ReloadModel" not in RETRYABLE_METHODS
    fake.script.failures["ReloadModel"] = [grpc.StatusCode.UNAVAILABLE]
    with (
        PersonaEngineClient(fake.address, timeout_s=2, retries=2, admin_token="s3cret") as engine,
        pytest.raises(grpc.RpcError) as excinfo,
    ):
        engine.reload_model("artifacts/latest")
    assert _code(excinfo) is grpc.StatusCode.UNAVAILABLE
    assert fake.script.count("ReloadModel") == 1


def test_admin_token_is_sent_as_bearer_metadata_on_admin_calls_only(fake: FakeServer) -> None:
    with PersonaEngineClient(fake.address, timeout_s=2, admin_token="s3cret") as engine:
        engine.get_model_info()
        engine.list_personas()
    (_, _, admin_metadata), (_, _, public_metadata) = fake.script.calls
    assert admin_metadata["authorization"] == "Bearer s3cret"
    assert "authorization" not in public_metadata


def test_admin_calls_without_a_token_fail_before_reaching_the_server(fake: FakeServer) -> None:
    with (
        PersonaEngineClient(fake.address, timeout_s=2) as engine,
        pytest.raises(PermissionError, match="admin_token"),
    ):
        engine.get_model_info()
    assert fake.script.calls == []


def test_wait_until_serving_returns_once_the_health_service_says_serving(fake: FakeServer) -> None:
    fake.health.set(PERSONALIZATION_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    timer = threading.Timer(
        0.3, fake.health.set, args=(PERSONALIZATION_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    )
    timer.start()
    try:
        with PersonaEngineClient(fake.address, backoff_s=0.02, max_backoff_s=0.05) as engine:
            started = time.monotonic()
            engine.wait_until_serving(timeout_s=5)
            elapsed = time.monotonic() - started
    finally:
        timer.cancel()
    assert 0.2 < elapsed < 2.0


def test_wait_until_serving_times_out_naming_the_last_status(fake: FakeServer) -> None:
    fake.health.set(PERSONALIZATION_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    with (
        PersonaEngineClient(fake.address, backoff_s=0.02) as engine,
        pytest.raises(TimeoutError, match="NOT_SERVING"),
    ):
        engine.wait_until_serving(timeout_s=0.3)


def test_wait_until_serving_times_out_when_nothing_listens() -> None:
    server, running = _start(Script())
    server.stop(None)  # the port was real a moment ago and now refuses connections
    with (
        PersonaEngineClient(running.address, backoff_s=0.02) as engine,
        pytest.raises(TimeoutError, match="UNAVAILABLE"),
    ):
        engine.wait_until_serving(timeout_s=0.3)


def test_tls_with_a_given_root_certificate(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *(
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
            ),
            *("-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    server, running = _start(Script(), credentials)
    try:
        with PersonaEngineClient(running.address, timeout_s=5, root_certificates=cert.read_bytes()) as engine:
            assert engine.list_personas().personas[0].persona_id == "bargain_hunter"
        with (
            PersonaEngineClient(running.address, timeout_s=1, retries=0) as plaintext,
            pytest.raises(grpc.RpcError) as excinfo,
        ):
            plaintext.list_personas()
        assert _code(excinfo) is grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(None)


def test_invalid_plain_values_are_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="page_type: unknown value 'landing'"):
        PageContext(page_type="landing").to_proto()
    with pytest.raises(ValueError, match="shopping_context"):
        PageContext(shopping_context="unspecified").to_proto()
    with pytest.raises(ValueError, match="persona_mix is empty"):
        persona_mix_to_proto({})
    with pytest.raises(ValueError, match="timeout_s"):
        PersonaEngineClient("localhost:1", timeout_s=0)


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=20),
        st.floats(min_value=0, max_value=1e6, allow_nan=False),
        min_size=1,
        max_size=8,
    )
)
def test_persona_mix_survives_the_wire_format(mix: dict[str, float]) -> None:
    encoded = persona_mix_to_proto(mix).SerializeToString()
    decoded = types_pb2.PersonaMix.FromString(encoded)
    assert [(w.persona_id, w.weight) for w in decoded.weights] == list(mix.items())
    assert all(math.isfinite(w.weight) for w in decoded.weights)


def test_example_script_renders_a_page(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    fake.health.set(PERSONALIZATION_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    argv = ["--target", fake.address, "--customer", "c42", "--mix", "bargain_hunter=0.7,tech_savvy=0.3"]
    assert personalize_page.main([*argv, "-k", "3", "--timeout", "2"]) == 0
    out = capsys.readouterr().out
    assert "decision d-c42" in out and "hero: i000" in out and "1. i000 'Item 0'" in out
    request = fake.script.last_request("Personalize")
    assert isinstance(request, personalization_service_pb2.PersonalizeRequest)
    assert request.context.page_type == types_pb2.PAGE_TYPE_HOME and request.num_results == 3


def test_example_script_falls_back_when_the_engine_fails(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.health.set(PERSONALIZATION_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    fake.script.failures["Personalize"] = [grpc.StatusCode.INTERNAL]
    assert personalize_page.main(["--target", fake.address, "--customer", "c42", "--timeout", "2"]) == 0
    assert "engine failed (INTERNAL" in capsys.readouterr().out
    fake.script.failures["Personalize"] = [grpc.StatusCode.INVALID_ARGUMENT]  # a bug: no fallback
    assert personalize_page.main(["--target", fake.address, "--customer", "c42", "--timeout", "2"]) == 2
    assert "error: INVALID_ARGUMENT: scripted INVALID_ARGUMENT" in capsys.readouterr().err
