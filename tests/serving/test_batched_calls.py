"""Dynamic batching in the servicer: concurrent calls scored together answer exactly what the same
calls answer one at a time (decision ids from the same sequence, so seeded choices match too)."""

from __future__ import annotations

import argparse
import asyncio
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from prometheus_client import CollectorRegistry

from engine.live.live_loop import LiveLoop
from engine.personalizer import Personalizer
from serving.batched_calls import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_WAIT_MS,
    DEFAULT_PREFERRED_BATCH_SIZE,
    BatchSettings,
    Call,
    PageBatchers,
    _serve_batch,
    _told,
)
from serving.generated.persona.v1 import personalization_service_pb2 as pb
from serving.generated.persona.v1 import types_pb2
from serving.metrics import ServingMetrics
from serving.model_holder import ModelHolder
from serving.personalization_servicer import PersonalizationServicer
from serving.settings import ServeConfigError, add_serve_arguments, settings_from_args
from serving.worker_supervisor import worker_command
from tests.engine.small_artifact import train_small_artifact


class _Context:
    def time_remaining(self) -> float | None:
        return None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise AssertionError(f"aborted {code.name}: {details}")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_artifact(tmp_path_factory.mktemp("batched"))


def _counting_ids() -> Callable[[], str]:
    counter = itertools.count()
    return lambda: f"00000000-0000-4000-8000-{next(counter):012d}"


def _servicer(artifact: Path, batching: BatchSettings) -> tuple[PersonalizationServicer, CollectorRegistry]:
    registry = CollectorRegistry()
    holder = ModelHolder(Personalizer.from_path(artifact, "als"), artifact)
    servicer = PersonalizationServicer(
        holder, ServingMetrics(registry), LiveLoop(decision_ids=_counting_ids()), batching=batching
    )
    return servicer, registry


def _requests(personalizer: Personalizer) -> list[pb.PersonalizeRequest]:
    known = [str(c) for c in personalizer.model_customers.ids[:12]]
    requests = [pb.PersonalizeRequest(customer_id=c, num_results=10, num_offers=3) for c in known[:8]]
    requests += [
        pb.PersonalizeRequest(customer_id="never-seen", num_results=20, num_offers=2),
        pb.PersonalizeRequest(customer_id=known[8], num_results=5, explain=True),
        pb.PersonalizeRequest(
            customer_id=known[9], num_results=7, filters=types_pb2.ItemFilters(price_max=20.0)
        ),
        pb.PersonalizeRequest(
            customer_id=known[10],
            num_results=6,
            persona_mix=types_pb2.PersonaMix(
                weights=[types_pb2.PersonaWeight(persona_id=personalizer.catalog.ids[0], weight=1.0)]
            ),
        ),
        pb.PersonalizeRequest(customer_id=known[11], num_results=30, diversity=0.5, num_offers=5),
    ]
    return requests


def _serialized(responses: Sequence[Any]) -> list[bytes]:
    return [r.SerializeToString() for r in responses]


class _BothWays:
    """The same Personalize requests answered by a batching servicer, all at once, and by one that
    does not batch, one by one; each servicer with its own metrics registry."""

    def __init__(self, artifact: Path) -> None:
        batched, self.batched_registry = _servicer(artifact, BatchSettings(max_size=32, max_wait_s=0.005))
        single, self.single_registry = _servicer(artifact, BatchSettings(max_size=1, max_wait_s=0.0))
        self.requests = _requests(Personalizer.from_path(artifact, "als"))
        context = cast(grpc.aio.ServicerContext, _Context())

        async def concurrently() -> list[pb.PersonalizeResponse]:
            return list(await asyncio.gather(*(batched.Personalize(r, context) for r in self.requests)))

        async def one_by_one() -> list[pb.PersonalizeResponse]:
            return [await single.Personalize(r, context) for r in self.requests]

        self.together = asyncio.run(concurrently())
        self.alone = asyncio.run(one_by_one())


def test_concurrent_calls_batched_answer_what_single_calls_answer(artifact: Path) -> None:
    both = _BothWays(artifact)
    requests, registry = both.requests, both.batched_registry
    assert _serialized(both.together) == _serialized(both.alone)
    batches = registry.get_sample_value("persona_engine_batch_size_count", {"method": "Personalize"})
    calls = registry.get_sample_value("persona_engine_batch_size_sum", {"method": "Personalize"})
    assert calls == len(requests) and batches is not None and batches < len(requests), "calls were batched"
    scoring = registry.get_sample_value("persona_engine_batch_cpu_seconds_total", {"method": "Personalize"})
    assert scoring is not None and scoring > 0, "the batches' scoring CPU is counted"


def test_a_call_that_breaks_its_batch_fails_alone(artifact: Path) -> None:
    """When the batch entry point raises, the group is served call by call: only the bad call fails."""
    personalizer = Personalizer.from_path(artifact, "als")
    other = Personalizer.from_path(artifact, "als")  # a reload between arrivals: a second group

    def many(_: Personalizer, requests: Sequence[int]) -> list[int]:
        if any(r < 0 for r in requests):
            raise ValueError("a bad request in the batch")
        return [r * 10 for r in requests]

    def one(_: Personalizer, request: int) -> int:
        if request < 0:
            raise ValueError(f"bad request {request}")
        return request * 10

    calls = [Call(personalizer, 1), Call(personalizer, -2), Call(other, 3), Call(personalizer, 4)]
    results = _serve_batch(calls, many, one)
    assert results[0] == 10 and results[2] == 30 and results[3] == 40
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad request -2"


def _counts(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every customers and decisions sample that is not zero, by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        if family.name in ("persona_engine_customers", "persona_engine_decisions")
        for sample in family.samples
        if sample.name.endswith("_total") and sample.value
    }


def test_a_batch_counts_the_customers_and_decisions_that_one_by_one_calls_count(artifact: Path) -> None:
    """Batches are counted with one update per label; the totals are those of calls counted singly,
    and they are there when the callers get their answers."""
    both = _BothWays(artifact)
    counts = _counts(both.batched_registry)
    assert counts == _counts(both.single_registry)
    customers = sum(v for (name, _), v in counts.items() if name == "persona_engine_customers_total")
    assert customers == len(both.requests)
    offers = sum(v for (name, labels), v in counts.items() if ("kind", "offer") in labels)
    assert offers == sum(len(page.offers) for page in both.together) > 0


def test_a_failing_count_is_logged_and_the_calls_keep_their_results(caplog: pytest.LogCaptureFixture) -> None:
    told: list[list[int]] = []

    def broken(served: Sequence[int]) -> None:
        told.append(list(served))
        raise RuntimeError("metrics down")

    failure = ValueError("bad call")
    results: list[int | BaseException] = [10, failure, 30]
    assert _told(results, broken) == [10, failure, 30]
    assert told == [[10, 30]], "the listener hears the served calls only"
    assert "counting a served batch failed" in caplog.text


def _batching(tmp_path: Path, flags: list[str]) -> BatchSettings:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    settings = settings_from_args(parser.parse_args(["--artifact", str(tmp_path), *flags]), {})
    command = worker_command(settings, "127.0.0.1:0", tmp_path, 0)
    worker = settings_from_args(parser.parse_args(["--artifact", str(tmp_path), *command[3:]]), {})
    assert worker.batching == settings.batching, "the workers batch as their supervisor was told"
    return settings.batching


def test_batching_settings_reach_the_workers_and_bad_ones_are_refused(tmp_path: Path) -> None:
    assert _batching(tmp_path, []) == BatchSettings(
        DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_WAIT_MS / 1000, DEFAULT_PREFERRED_BATCH_SIZE
    )
    asked = ["--batch-max-size", "16", "--batch-preferred-size", "4", "--batch-wait-ms", "2"]
    assert _batching(tmp_path, asked) == BatchSettings(16, 0.002, 4)
    with pytest.raises(ServeConfigError, match="--batch-preferred-size 0: must be at least 1"):
        _batching(tmp_path, ["--batch-preferred-size", "0"])


def test_a_preferred_size_above_the_largest_batch_is_lowered_to_it() -> None:
    """``--batch-max-size 1`` alone turns batching off although the preferred size defaults to more
    (the batcher itself refuses a preferred size above its largest batch)."""
    batchers = PageBatchers(LiveLoop(), BatchSettings(max_size=1))
    assert batchers.pages._preferred_batch_size == batchers.product_lists._preferred_batch_size == 1
