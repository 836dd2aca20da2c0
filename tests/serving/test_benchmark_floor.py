"""``serve --benchmark-floor``: Personalize answers one prepared page; the rest of the server is as usual."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from serving.benchmark_floor import FLOOR_OFFERS, FLOOR_PRODUCTS, floor_request
from serving.model_holder import load_model
from serving.server_process import running_server
from serving.settings import ENV_BENCHMARK_FLOOR, ServeConfigError, add_serve_arguments, settings_from_args
from tests.serving.server_harness import TrainedArtifacts, trained_artifacts


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> TrainedArtifacts:
    return trained_artifacts(tmp_path_factory)


def test_a_floor_server_answers_personalize_without_calling_the_engine(
    artifacts: TrainedArtifacts, tmp_path: Path
) -> None:
    with running_server(artifacts.older, tmp_path, extra_args=["--benchmark-floor"]) as server:
        with server.client() as client:
            pages = [client.personalize(customer) for customer in ("c0000001", "c0000002", "someone-new")]
            lists = [client.recommend_products(customer, k=5) for customer in ("c0000001", "c0000002")]
        assert server.metric("persona_engine_requests_total", method="Personalize", code="OK") == 3
        customers_served = server.metric("persona_engine_customers_total")
    first = pages[0]
    assert len(first.items) == FLOOR_PRODUCTS and len({i.item_id for i in first.items}) == FLOOR_PRODUCTS
    assert len(first.offers) == FLOOR_OFFERS and first.layout.variant_id and first.layout.slots
    # One prepared message: the engine makes a fresh decision id for every call it serves.
    assert all(page == first for page in pages)
    assert len({page.decision.decision_id for page in pages}) == 1
    assert len({products.decision.decision_id for products in lists}) == 2  # other RPCs use the engine
    assert customers_served == 2  # the two RecommendProducts calls; no Personalize reached the engine
    assert "benchmark floor: Personalize answers one response prepared at start" in server.log()


def test_the_floor_request_is_the_benchmarks_page(artifacts: TrainedArtifacts) -> None:
    personalizer = load_model(artifacts.older).personalizer
    request = floor_request(personalizer)
    assert request.customer_id == str(personalizer.model_customers.ids[0])
    assert (request.num_results, request.num_offers) == (20, 3)
    assert len(request.context.session_item_ids) == 3
    assert list(request.filters.exclude_item_ids) == list(request.context.session_item_ids[:1])


def test_the_floor_is_off_unless_the_flag_or_its_variable_says_so(artifacts: TrainedArtifacts) -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    base = ["--artifact", str(artifacts.root)]
    assert not settings_from_args(parser.parse_args(base), {}).benchmark_floor
    assert settings_from_args(parser.parse_args([*base, "--benchmark-floor"]), {}).benchmark_floor
    assert settings_from_args(parser.parse_args(base), {ENV_BENCHMARK_FLOOR: "1"}).benchmark_floor
    assert not settings_from_args(parser.parse_args(base), {ENV_BENCHMARK_FLOOR: "0"}).benchmark_floor
    with pytest.raises(ServeConfigError, match=f"{ENV_BENCHMARK_FLOOR}='maybe'"):
        settings_from_args(parser.parse_args(base), {ENV_BENCHMARK_FLOOR: "maybe"})
