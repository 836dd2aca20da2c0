"""ServingMetrics and the interceptor: names, label sets, what traffic adds, the /metrics page."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any, NoReturn, cast

import grpc
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from serving.client import PersonaEngineClient
from serving.event_loop import EventLoopThread
from serving.interceptors import REQUEST_ID_KEY, ObservabilityInterceptor, current_request_id, request_id_from
from serving.metrics import (
    RELOAD_OUTCOMES,
    RELOAD_TRIGGERS,
    REQUEST_LATENCY_BUCKETS,
    MetricsEndpoint,
    ServingMetrics,
)
from serving.model_holder import decision_arms
from serving.server_process import metric_value, scrape_metrics
from tests.serving.server_harness import TrainedArtifacts, in_process_server, trained_artifacts

EXPECTED_FAMILIES = {
    "persona_engine_requests": "counter",
    "persona_engine_request_duration_seconds": "histogram",
    "persona_engine_batch_size": "histogram",
    "persona_engine_batch_cpu_seconds": "counter",
    "persona_engine_requests_in_flight": "gauge",
    "persona_engine_undecodable_requests": "counter",
    "persona_engine_customers": "counter",
    "persona_engine_decisions": "counter",
    "persona_engine_model_info": "gauge",
    "persona_engine_model_load_seconds": "gauge",
    "persona_engine_model_loaded_timestamp_seconds": "gauge",
    "persona_engine_model_reloads": "counter",
    "persona_engine_live_events": "counter",
    "persona_engine_drift_started": "counter",
    "persona_engine_drift_ended": "counter",
    "persona_engine_drift_profiles": "counter",
    "persona_engine_live_records": "counter",
    "persona_engine_decisions_logged": "counter",
    "persona_engine_state_store_available": "gauge",
    "persona_engine_calls_without_live_state": "counter",
}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> TrainedArtifacts:
    return trained_artifacts(tmp_path_factory)


def _raw(message: bytes) -> bytes:
    return message


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_names_follow_prometheus_conventions_and_known_series_start_at_zero() -> None:
    registry = CollectorRegistry()
    ServingMetrics(registry, methods=["/persona.v1.PersonalizationService/Personalize"])
    families = {family.name: family for family in registry.collect()}
    assert {name: family.type for name, family in families.items()} == EXPECTED_FAMILIES
    for family in families.values():
        for sample in family.samples:
            if family.type == "counter" and not sample.name.endswith("_created"):
                assert sample.name.endswith("_total"), sample.name
    personalize = {"service": "persona.v1.PersonalizationService", "method": "Personalize"}
    assert _value(registry, "persona_engine_requests_total", code="OK", **personalize) == 0
    assert _value(registry, "persona_engine_requests_in_flight", **personalize) == 0
    assert _value(registry, "persona_engine_request_duration_seconds_count", **personalize) == 0
    assert _value(registry, "persona_engine_live_records_total", record="outcome", result="rejected") == 0
    assert _value(registry, "persona_engine_decisions_logged_total", result="failed") == 0
    buckets = {
        float(s.labels["le"])
        for s in families["persona_engine_request_duration_seconds"].samples
        if s.name.endswith("_bucket")
    }
    assert buckets == {*REQUEST_LATENCY_BUCKETS, float("inf")}
    assert min(buckets) == 0.00025 and max(REQUEST_LATENCY_BUCKETS) == 1.0
    for cold_start in ("true", "false"):
        assert _value(registry, "persona_engine_customers_total", cold_start=cold_start) == 0
    for trigger in RELOAD_TRIGGERS:
        for outcome in RELOAD_OUTCOMES:
            assert (
                _value(registry, "persona_engine_model_reloads_total", trigger=trigger, outcome=outcome) == 0
            )


def test_model_gauges_follow_swaps_and_unknown_labels_are_refused() -> None:
    registry = CollectorRegistry()
    metrics = ServingMetrics(registry)
    metrics.set_model("20260101T000000Z", "als", 1.5, 1_700_000_000.0, {"offer": ["free_ship"]})
    metrics.set_model("20260102T000000Z", "als", 0.5, 1_700_000_100.0)
    assert _value(registry, "persona_engine_model_info", version="20260101T000000Z", model="als") == 0
    assert _value(registry, "persona_engine_model_info", version="20260102T000000Z", model="als") == 1
    assert _value(registry, "persona_engine_model_load_seconds") == 0.5
    assert _value(registry, "persona_engine_model_loaded_timestamp_seconds") == 1_700_000_100.0
    assert _value(registry, "persona_engine_decisions_total", kind="offer", arm="free_ship") == 0
    with pytest.raises(ValueError, match="decision kind 'banner'"):
        metrics.record_decisions("banner", ("x",))
    with pytest.raises(ValueError, match="reload outcome 'maybe'"):
        metrics.record_reload("admin", "maybe")
    with pytest.raises(ValueError, match="reload trigger 'cron'"):
        metrics.record_reload("cron", "reloaded")


def test_traffic_shows_up_on_the_metrics_page(artifacts: TrainedArtifacts) -> None:
    with in_process_server(artifacts.older) as server:
        personalizer = server.holder.current()
        arms = decision_arms(personalizer)
        assert set(arms) == {"offer", "layout"} and all(arms.values())
        server.metrics.declare_arms(arms)  # the server process does this when it loads the artifact
        known = str(personalizer.customers.ids[0])
        endpoint = MetricsEndpoint(server.registry, "127.0.0.1", 0)
        try:
            before = scrape_metrics(endpoint.port)
            for arm in arms["layout"]:
                assert metric_value(before, "persona_engine_decisions_total", kind="layout", arm=arm) == 0
            with PersonaEngineClient(server.address, timeout_s=10) as client:
                pages = [client.personalize(customer) for customer in (known, "new-1", "new-2")]
                with pytest.raises(grpc.RpcError) as invalid:
                    client.personalize(known, k=1000)
                assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            # An aborted call's status reaches the client before the interceptor, unwinding from the
            # abort, counts it (the count first, then the duration): scrape until the last of the four
            # durations is there rather than racing the server.
            deadline = time.monotonic() + 10.0
            after = scrape_metrics(endpoint.port)
            while (
                metric_value(after, "persona_engine_request_duration_seconds_count", method="Personalize") < 4
            ):
                assert time.monotonic() < deadline, "the rejected call was never counted"
                time.sleep(0.05)
                after = scrape_metrics(endpoint.port)
        finally:
            endpoint.close()
    personalize = {"service": "persona.v1.PersonalizationService", "method": "Personalize"}
    assert metric_value(after, "persona_engine_requests_total", code="OK", **personalize) == 3
    assert metric_value(after, "persona_engine_requests_total", code="INVALID_ARGUMENT", **personalize) == 1
    assert metric_value(after, "persona_engine_request_duration_seconds_count", **personalize) == 4
    assert metric_value(after, "persona_engine_request_duration_seconds_sum", **personalize) > 0
    assert metric_value(after, "persona_engine_requests_in_flight", **personalize) == 0
    assert metric_value(after, "persona_engine_customers_total", cold_start="false") == 1
    assert metric_value(after, "persona_engine_customers_total", cold_start="true") == 2
    for page in pages:
        assert (
            metric_value(after, "persona_engine_decisions_total", kind="layout", arm=page.layout.variant_id)
            >= 1
        )
    assert metric_value(after, "persona_engine_decisions_total", kind="layout") == 3


# -- the interceptor on its own -------------------------------------------------------------------------


async def _start_probe(
    metrics: ServingMetrics, handlers: dict[str, Any], access_log_every: int
) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(
        interceptors=[ObservabilityInterceptor(metrics, access_log_every=access_log_every)],
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Probe", {n: grpc.unary_unary_rpc_method_handler(h) for n, h in handlers.items()}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


@contextlib.contextmanager
def _test_server(
    metrics: ServingMetrics, handlers: dict[str, Any], *, access_log_every: int = 1
) -> Iterator[str]:
    """The interceptor in front of coroutine ``handlers`` of a ``test.Probe`` service, on an aio server."""
    loop = EventLoopThread(threads=2, name="probe-server")
    try:
        server, port = loop.run(_start_probe(metrics, handlers, access_log_every))
        try:
            yield f"127.0.0.1:{port}"
        finally:
            loop.run(server.stop(0))
    finally:
        loop.close()


def test_every_outcome_is_counted_and_handlers_see_the_request_id(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    metrics = ServingMetrics(registry)
    seen_ids: list[str] = []

    async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        seen_ids.append(current_request_id())
        return request

    async def refuse(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no")

    async def crash(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        raise RuntimeError("boom")

    caplog.set_level(logging.INFO, logger="persona_engine.requests")
    with (
        _test_server(metrics, {"Echo": echo, "Refuse": refuse, "Crash": crash}) as address,
        grpc.insecure_channel(address) as channel,
    ):
        assert (
            channel.unary_unary("/test.Probe/Echo", _raw, _raw)(
                b"x", timeout=5, metadata=((REQUEST_ID_KEY, "req-7"),)
            )
            == b"x"
        )
        for method, code in (
            ("Refuse", grpc.StatusCode.FAILED_PRECONDITION),
            ("Crash", grpc.StatusCode.UNKNOWN),
        ):
            with pytest.raises(grpc.RpcError) as failure:
                channel.unary_unary(f"/test.Probe/{method}", _raw, _raw)(b"x", timeout=5)
            assert failure.value.code() is code
    assert seen_ids == ["req-7"]
    assert current_request_id() == ""
    counts = {
        (method, code): _value(
            registry, "persona_engine_requests_total", service="test.Probe", method=method, code=code
        )
        for method, code in (("Echo", "OK"), ("Refuse", "FAILED_PRECONDITION"), ("Crash", "UNKNOWN"))
    }
    assert set(counts.values()) == {1.0}, counts
    lines = [r.getMessage() for r in caplog.records if r.name == "persona_engine.requests"]
    assert len(lines) == 3
    assert lines[0].startswith("/test.Probe/Echo OK ") and "request_id=req-7" in lines[0]


def test_a_sampled_access_log_keeps_every_failure_and_every_nth_success(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    metrics = ServingMetrics(registry)

    async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return request

    async def refuse(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no")

    caplog.set_level(logging.INFO, logger="persona_engine.requests")
    with (
        _test_server(metrics, {"Echo": echo, "Refuse": refuse}, access_log_every=3) as address,
        grpc.insecure_channel(address) as channel,
    ):
        for _ in range(7):
            channel.unary_unary("/test.Probe/Echo", _raw, _raw)(b"x", timeout=5)
        for _ in range(2):
            with pytest.raises(grpc.RpcError):
                channel.unary_unary("/test.Probe/Refuse", _raw, _raw)(b"x", timeout=5)
    lines = [r.getMessage() for r in caplog.records if r.name == "persona_engine.requests"]
    assert sum(line.startswith("/test.Probe/Echo OK ") for line in lines) == 3  # calls 1, 4 and 7
    assert sum(" FAILED_PRECONDITION " in line for line in lines) == 2
    echoed = {"service": "test.Probe", "method": "Echo", "code": "OK"}
    assert _value(registry, "persona_engine_requests_total", **echoed) == 7
    with pytest.raises(ValueError, match="access_log_every"):
        ObservabilityInterceptor(metrics, access_log_every=0)


class _ExpiredContext:
    """The parts of a server context the interceptor touches, for a call whose deadline has passed."""

    def __init__(self) -> None:
        self.status: grpc.StatusCode | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def time_remaining(self) -> float:
        return 0.0

    def is_active(self) -> bool:
        return False

    def code(self) -> grpc.StatusCode | None:
        return self.status

    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        self.status = code
        raise RuntimeError(details)

    def set_trailing_metadata(self, metadata: object) -> None:
        raise AssertionError("an expired call must not start answering")

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


def test_a_call_already_past_its_deadline_is_refused_without_running_the_handler() -> None:
    registry = CollectorRegistry()
    metrics = ServingMetrics(registry)
    ran: list[bytes] = []

    async def handler(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        ran.append(request)
        return request

    details: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(handler)
    call = cast(
        grpc.HandlerCallDetails,
        type("Details", (), {"method": "/test.Probe/Echo", "invocation_metadata": ()})(),
    )

    async def resolve(_: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[bytes, bytes]:
        return details

    wrapped = asyncio.run(ObservabilityInterceptor(metrics).intercept_service(resolve, call))
    assert wrapped is not None and wrapped.unary_unary is not None
    context = _ExpiredContext()
    with pytest.raises(RuntimeError, match="deadline passed before the call was handled"):
        asyncio.run(wrapped.unary_unary(b"x", cast(grpc.ServicerContext, context)))
    assert ran == []
    assert context.status is grpc.StatusCode.DEADLINE_EXCEEDED
    labels = {"service": "test.Probe", "method": "Echo"}
    assert _value(registry, "persona_engine_requests_total", code="DEADLINE_EXCEEDED", **labels) == 1
    assert _value(registry, "persona_engine_requests_in_flight", **labels) == 0


@given(st.text(max_size=200))
@example("0\n")  # a trailing newline once passed (``$`` matches before it)
@example("x" * 128 + "\n")
def test_request_ids_are_kept_when_sane_and_replaced_otherwise(candidate: str) -> None:
    chosen = request_id_from([(REQUEST_ID_KEY, candidate)])
    sane = 1 <= len(candidate) <= 128 and all(c.isascii() and (c.isalnum() or c in "._:-") for c in candidate)
    if sane:
        assert chosen == candidate
    else:
        assert len(chosen) == 32 and all(c in "0123456789abcdef" for c in chosen)
