"""Size caps: a whole request above ``--max-request-bytes`` is RESOURCE_EXHAUSTED before it is decoded,
and every string of a request has a length limit whose error names the field (never quoting it); a
RecommendProducts response above ``--max-response-bytes`` is RESOURCE_EXHAUSTED naming what made it
large; the memory large requests leave behind is given back (``serving.large_request_memory``)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.invalid_request import InvalidRequestError
from engine.personalizer import Personalizer
from serving import request_validation as validate
from serving.generated.persona.v1 import personalization_service_pb2 as pb
from serving.generated.persona.v1 import personalization_service_pb2_grpc as pb_grpc
from serving.generated.persona.v1 import types_pb2
from serving.glibc_malloc import glibc_malloc_trim
from serving.large_request_memory import LARGE_REQUEST_BYTES, LargeRequestMemoryTrim
from serving.settings import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    ServeConfigError,
    add_serve_arguments,
    settings_from_args,
)
from serving.worker_supervisor import worker_command
from tests.serving.server_harness import (
    InProcessServer,
    TrainedArtifacts,
    in_process_server,
    trained_artifacts,
)

SMALL_CAP = 64 * 1024


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> TrainedArtifacts:
    return trained_artifacts(tmp_path_factory)


@pytest.fixture(scope="module")
def personalizer(artifacts: TrainedArtifacts) -> Personalizer:
    return Personalizer.from_path(artifacts.older, "als")


@pytest.fixture(scope="module")
def capped_server(artifacts: TrainedArtifacts) -> Iterator[InProcessServer]:
    with in_process_server(artifacts.older, max_request_bytes=SMALL_CAP) as running:
        yield running


def _personalize(address: str, request: pb.PersonalizeRequest) -> grpc.RpcError:
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as raised:
        pb_grpc.PersonalizationServiceStub(channel).Personalize(request, timeout=10)
    error = raised.value
    assert isinstance(error, grpc.RpcError)
    return error


def test_a_request_over_the_cap_is_resource_exhausted(capped_server: InProcessServer) -> None:
    huge = pb.PersonalizeRequest(customer_id="c" * (SMALL_CAP + 1))
    error = _personalize(capped_server.address, huge)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(SMALL_CAP) in (error.details() or "")


def test_a_request_under_the_cap_is_checked_field_by_field(capped_server: InProcessServer) -> None:
    long_id = pb.PersonalizeRequest(customer_id="c" * (SMALL_CAP // 2))
    error = _personalize(capped_server.address, long_id)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == f"customer_id: must be 1 to 256 characters, got {SMALL_CAP // 2}"


@pytest.mark.parametrize(
    ("request_message", "field"),
    [
        (
            pb.PersonalizeRequest(
                customer_id="c", filters=types_pb2.ItemFilters(exclude_item_ids=["i", "x" * 300])
            ),
            "filters.exclude_item_ids[1]: at most 256 characters, got 300",
        ),
        (
            pb.PersonalizeRequest(
                customer_id="c", context=types_pb2.RequestContext(session_item_ids=["x" * 257])
            ),
            "context.session_item_ids[0]: at most 256 characters, got 257",
        ),
        (
            pb.PersonalizeRequest(
                customer_id="c", filters=types_pb2.ItemFilters(include_categories=["ok", "c" * 129])
            ),
            "filters.include_categories[1]: at most 128 characters, got 129",
        ),
        (
            pb.PersonalizeRequest(
                customer_id="c",
                promotions=types_pb2.Promotions(pins=[types_pb2.PinnedItem(item_id="p" * 5000, position=1)]),
            ),
            "promotions.pins[0].item_id: must be 0 to 256 characters, got 5000",
        ),
        (
            pb.PersonalizeRequest(
                customer_id="c",
                persona_mix=types_pb2.PersonaMix(
                    weights=[types_pb2.PersonaWeight(persona_id="q" * 10_000, weight=1)]
                ),
            ),
            "persona_mix.weights[0].persona_id: at most 64 characters, got 10000",
        ),
    ],
)
def test_each_string_field_has_a_length_cap_named_in_the_error(
    personalizer: Personalizer, request_message: pb.PersonalizeRequest, field: str
) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        validate.personalize_call(request_message, personalizer)
    assert str(raised.value) == field


def test_candidate_ids_and_batch_targets_have_caps(personalizer: Personalizer) -> None:
    with pytest.raises(InvalidRequestError, match=r"^candidate_offer_ids\[0\]: at most 256 characters"):
        validate.rank_offers_call(
            pb.RankOffersRequest(customer_id="c", candidate_offer_ids=["o" * 300]), personalizer
        )
    with pytest.raises(InvalidRequestError, match=r"^candidate_variant_ids\[0\]: at most 256 characters"):
        validate.select_layout_call(
            pb.SelectLayoutRequest(customer_id="c", candidate_variant_ids=["v" * 300]), personalizer
        )
    oversized = pb.RecommendProductsRequest(
        targets=[pb.CustomerTarget(customer_id="c")] * (validate.MAX_TARGETS + 1)
    )
    with pytest.raises(InvalidRequestError, match=r"^targets: must hold 1 to 1000 targets, got 1001"):
        validate.recommend_products_call(oversized, personalizer)
    target = pb.CustomerTarget(customer_id="c", exclude_item_ids=["z" * 999])
    with pytest.raises(InvalidRequestError, match=r"^targets\[0\]\.exclude_item_ids\[0\]: at most 256"):
        validate.recommend_products_call(pb.RecommendProductsRequest(targets=[target]), personalizer)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ids=st.lists(st.text(min_size=0, max_size=400), max_size=8),
    categories=st.lists(st.text(min_size=0, max_size=200), max_size=4),
)
def test_an_error_never_quotes_more_than_a_capped_value(
    personalizer: Personalizer, ids: list[str], categories: list[str]
) -> None:
    request = pb.PersonalizeRequest(
        customer_id="c",
        filters=types_pb2.ItemFilters(exclude_item_ids=ids, include_categories=categories),
    )
    try:
        validate.personalize_call(request, personalizer)
    except InvalidRequestError as error:
        assert len(str(error)) < 400
    else:
        assert all(len(value) <= validate.MAX_ITEM_ID_CHARS for value in ids)
        assert all(len(value) <= validate.MAX_NAME_CHARS for value in categories)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(argv)


def test_the_request_cap_flag_has_a_default_and_refuses_silly_values(artifacts: TrainedArtifacts) -> None:
    base = ["--artifact", str(artifacts.root)]
    assert (
        settings_from_args(_parse(base), {}).max_request_bytes == DEFAULT_MAX_REQUEST_BYTES == 4 * 1024 * 1024
    )
    assert settings_from_args(_parse([*base, "--max-request-bytes", "65536"]), {}).max_request_bytes == 65536
    for silly in ("0", "100", str(2**40)):
        with pytest.raises(ServeConfigError, match="--max-request-bytes"):
            settings_from_args(_parse([*base, "--max-request-bytes", silly]), {})


SMALL_RESPONSE_CAP = 16 * 1024


@pytest.fixture(scope="module")
def response_capped_server(artifacts: TrainedArtifacts) -> Iterator[InProcessServer]:
    with in_process_server(artifacts.older, max_response_bytes=SMALL_RESPONSE_CAP) as running:
        yield running


def _product_lists(address: str, request: pb.RecommendProductsRequest) -> pb.RecommendProductsResponse:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.PersonalizationServiceStub(channel)
        response: pb.RecommendProductsResponse = stub.RecommendProducts(request, timeout=30)
    return response


def _code_count(running: InProcessServer, code: str) -> float:
    return running.metric("persona_engine_requests_total", method="RecommendProducts", code=code)


def test_a_response_over_the_cap_is_refused_naming_what_made_it_large(
    response_capped_server: InProcessServer, artifacts: TrainedArtifacts
) -> None:
    targets = [pb.CustomerTarget(customer_id=f"c{n:03d}") for n in range(1, 41)]
    small = pb.RecommendProductsRequest(targets=targets[:2], num_results=5)
    answered = _product_lists(response_capped_server.address, small)
    assert [len(result.items) for result in answered.results] == [5, 5]

    large = pb.RecommendProductsRequest(targets=targets, num_results=50, explain=True)
    refused_before = _code_count(response_capped_server, "RESOURCE_EXHAUSTED")
    with pytest.raises(grpc.RpcError) as raised:
        _product_lists(response_capped_server.address, large)
    error = raised.value
    assert isinstance(error, grpc.RpcError)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    details = error.details() or ""
    assert details.startswith("RecommendProducts: the response would be ")
    assert f"over the server's limit of {SMALL_RESPONSE_CAP:,} (serve --max-response-bytes)" in details
    assert "fewer targets (this call has 40), a smaller num_results (50) or explain = false" in details
    # counted once the call has ended, which may be just after its status arrived here
    assert _wait_for(lambda: _code_count(response_capped_server, "RESOURCE_EXHAUSTED") == refused_before + 1)

    # The size stated is the size the response has: an uncapped server sends exactly that many bytes.
    stated = int(details.split("would be ")[1].split(" bytes")[0].replace(",", ""))
    with in_process_server(artifacts.older, max_response_bytes=None) as uncapped:
        assert _product_lists(uncapped.address, large).ByteSize() == stated > SMALL_RESPONSE_CAP


def test_the_response_cap_flag_has_a_default_reaches_the_workers_and_refuses_silly_values(
    artifacts: TrainedArtifacts, tmp_path: Path
) -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    base = ["--artifact", str(artifacts.root)]
    assert settings_from_args(parser.parse_args(base), {}).max_response_bytes == DEFAULT_MAX_RESPONSE_BYTES
    asked = settings_from_args(parser.parse_args([*base, "--max-response-bytes", "65536"]), {})
    command = worker_command(asked, "127.0.0.1:0", tmp_path, 0)
    assert settings_from_args(parser.parse_args([*base, *command[3:]]), {}).max_response_bytes == 65536
    for silly in ("0", "100", str(2**40)):
        with pytest.raises(ServeConfigError, match=f"--max-response-bytes {silly}: must be between"):
            settings_from_args(parser.parse_args([*base, "--max-response-bytes", silly]), {})


def _wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _released() -> int:
    return 1  # what malloc_trim returns when it gave memory back


def test_small_requests_never_start_a_memory_trim() -> None:
    memory = LargeRequestMemoryTrim(trim=_released, delay_s=0.0, idle_s=0.02)
    for _ in range(10_000):
        memory.note(LARGE_REQUEST_BYTES - 1)
    time.sleep(0.1)
    assert memory.trims == 0


def test_large_requests_are_followed_by_a_trim_once_they_add_up_or_stop() -> None:
    memory = LargeRequestMemoryTrim(trim_after_bytes=4 << 20, trim=_released, delay_s=0.0, idle_s=0.05)
    for _ in range(4):
        memory.note(1 << 20)  # 4 MiB in all: the threshold
    assert _wait_for(lambda: memory.trims >= 1)
    done = memory.trims
    memory.note(1 << 20)  # below the threshold: trimmed once large requests stop (idle_s later)
    assert _wait_for(lambda: memory.trims == done + 1)
    time.sleep(0.2)
    assert memory.trims == done + 1  # and not again while nothing large arrives


def test_malloc_trim_is_found_on_glibc() -> None:
    trim = glibc_malloc_trim()
    if trim is None:
        pytest.skip("not a glibc system")
    assert trim() in (0, 1)
