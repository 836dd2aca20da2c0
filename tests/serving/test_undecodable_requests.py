"""Request bytes that are not a valid message: INVALID_ARGUMENT naming the type, counted, logged sparingly.

Before the guard, ``ListPersonas`` or ``Health/Check`` with the single byte 0xff got UNKNOWN
("Unexpected <class DecodeError>"), a traceback per call in the log and no count in the metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from serving.client import PersonaEngineClient
from serving.generated.persona.v1 import personalization_service_pb2 as pb
from serving.server_process import running_server
from serving.undecodable_requests import UndecodableRequest, UndecodableRequestLog, tolerant_deserializer
from tests.serving.server_harness import (
    InProcessServer,
    TrainedArtifacts,
    in_process_server,
    trained_artifacts,
)

LIST_PERSONAS = "/persona.v1.PersonalizationService/ListPersonas"
PERSONALIZE = "/persona.v1.PersonalizationService/Personalize"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
GET_MODEL_INFO = "/persona.v1.AdminService/GetModelInfo"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
# A field 1 string (customer_id) whose single byte is not UTF-8: proto3 refuses to decode it.
BAD_UTF8_CUSTOMER = b"\x0a\x01\xff"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> TrainedArtifacts:
    return trained_artifacts(tmp_path_factory)


@pytest.fixture(scope="module")
def server(artifacts: TrainedArtifacts) -> Iterator[InProcessServer]:
    with in_process_server(artifacts.older, admin_token="t" * 32) as running:
        yield running


def _raw_unary(address: str, method: str, payload: bytes) -> grpc.RpcError:
    """Send ``payload`` as the request bytes (identity serializers) and return the error it got."""
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as raised:
            call(payload, timeout=10)
    error = raised.value
    assert isinstance(error, grpc.RpcError)
    return error


@pytest.mark.parametrize(
    ("method", "message_type"),
    [
        (LIST_PERSONAS, "persona.v1.ListPersonasRequest"),
        (HEALTH_CHECK, "grpc.health.v1.HealthCheckRequest"),
        (GET_MODEL_INFO, "persona.v1.GetModelInfoRequest"),
    ],
)
def test_the_byte_0xff_gets_invalid_argument_naming_the_message_type(
    server: InProcessServer, method: str, message_type: str
) -> None:
    error = _raw_unary(server.address, method, b"\xff")
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert (
        error.details()
        == f"the request is not a valid {message_type} message (1 bytes): wire format was corrupt"
    )


def test_a_string_field_that_is_not_utf8_is_invalid_argument(server: InProcessServer) -> None:
    error = _raw_unary(server.address, PERSONALIZE, BAD_UTF8_CUSTOMER)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "persona.v1.PersonalizeRequest" in (error.details() or "")


def test_undecodable_requests_are_counted_per_method_and_code(server: InProcessServer) -> None:
    labels = {"service": "persona.v1.PersonalizationService", "method": "ListPersonas"}

    def settled_counts() -> tuple[float, float]:
        """(undecodable, INVALID_ARGUMENT) once equal: the request counter is updated when the call's
        handler ends, which may be just after the client has its answer."""
        deadline = time.monotonic() + 5.0
        while True:
            undecodable = server.metric("persona_engine_undecodable_requests_total", **labels)
            invalid = server.metric("persona_engine_requests_total", code="INVALID_ARGUMENT", **labels)
            if undecodable == invalid or time.monotonic() > deadline:
                return undecodable, invalid
            time.sleep(0.01)

    undecodable_before, invalid_before = settled_counts()
    for _ in range(3):
        _raw_unary(server.address, LIST_PERSONAS, b"\xff")
    assert settled_counts() == (undecodable_before + 3, invalid_before + 3)


def test_streaming_methods_refuse_undecodable_requests_too(server: InProcessServer) -> None:
    with grpc.insecure_channel(server.address) as channel:
        watch = channel.unary_stream(HEALTH_WATCH, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as watched:
            list(watch(b"\xff", timeout=10))
        reflect = channel.stream_stream(REFLECTION, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as reflected:
            list(reflect(iter([b"\xff"]), timeout=10))
    for raised, message_type in (
        (watched, "grpc.health.v1.HealthCheckRequest"),
        (reflected, "grpc.reflection.v1alpha.ServerReflectionRequest"),
    ):
        error = raised.value
        assert isinstance(error, grpc.RpcError)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert message_type in (error.details() or "")
    reflection_labels = {
        "service": "grpc.reflection.v1alpha.ServerReflection",
        "method": "ServerReflectionInfo",
    }
    assert server.metric("persona_engine_undecodable_requests_total", **reflection_labels) >= 1


def test_valid_calls_still_work_after_undecodable_ones(server: InProcessServer) -> None:
    _raw_unary(server.address, LIST_PERSONAS, b"\xff")
    with PersonaEngineClient(server.address) as client:
        assert client.list_personas()
        client.wait_until_serving(5.0)


def test_the_log_gets_one_line_per_interval_with_the_count_of_the_others() -> None:
    now = [0.0]
    logger = logging.getLogger("test.undecodable")
    log = UndecodableRequestLog(logger, interval_s=60.0, clock=lambda: now[0])
    request = UndecodableRequest("persona.v1.ListPersonasRequest", 1, "wire format was corrupt")
    assert log.record(LIST_PERSONAS, request, "peer") is True
    for second in range(1, 50):
        now[0] = float(second)
        assert log.record(LIST_PERSONAS, request, "peer") is False
    assert log.suppressed == 49
    now[0] = 61.0
    assert log.record(LIST_PERSONAS, request, "peer") is True
    assert log.suppressed == 0


def test_the_logged_line_reports_the_suppressed_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = UndecodableRequestLog(
        logging.getLogger("test.undecodable.count"), interval_s=10.0, clock=lambda: now[0]
    )
    request = UndecodableRequest("persona.v1.ListPersonasRequest", 1, "wire format was corrupt")
    with caplog.at_level(logging.WARNING, logger="test.undecodable.count"):
        for second in range(25):
            now[0] = float(second)
            log.record(LIST_PERSONAS, request, "ipv4:127.0.0.1:1")
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 3  # at 0 s, 10 s and 20 s
    assert "9 more undecodable requests in the last 10s" in lines[1]
    assert all(
        record.exc_info is None and "Traceback" not in record.getMessage() for record in caplog.records
    )


def test_tolerant_deserializer_keeps_valid_messages_and_describes_bad_bytes() -> None:
    deserialize = tolerant_deserializer(pb.PersonalizeRequest.FromString)
    valid = pb.PersonalizeRequest(customer_id="c1", num_results=5)
    assert deserialize(valid.SerializeToString()) == valid
    refused = deserialize(BAD_UTF8_CUSTOMER)
    assert isinstance(refused, UndecodableRequest)
    assert refused.message_type == "persona.v1.PersonalizeRequest"
    assert refused.size == 3


def test_a_server_subprocess_logs_no_traceback_for_a_flood_of_bad_bytes(
    artifacts: TrainedArtifacts, tmp_path: Path
) -> None:
    with running_server(artifacts.older, tmp_path, workers=2) as running:
        for method in (LIST_PERSONAS, HEALTH_CHECK, PERSONALIZE) * 20:
            assert _raw_unary(running.address, method, b"\xff").code() is grpc.StatusCode.INVALID_ARGUMENT
        assert running.metric("persona_engine_undecodable_requests_total") == 60
        assert running.metric("persona_engine_requests_total", code="INVALID_ARGUMENT") == 60
        with running.client() as client:
            client.wait_until_serving(5.0)
        log = running.log()
    assert "Traceback" not in log
    assert "DecodeError" not in log
    # One line per worker that saw one (the first), the rest suppressed within the minute.
    assert 1 <= log.count("undecodable request to") <= 2
