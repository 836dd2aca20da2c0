"""The calls the serving benchmark makes, each in three forms over the same sampled requests.

A ``Workload`` is one RPC as the benchmark drives it: the serialized requests sent over gRPC, the same
requests through the servicer without any transport, the engine's own call, and a bare numpy top-k
baseline, so the ratios between them say what each layer adds on any machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc
import numpy as np
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry

from engine.artifact.layout import LAYOUT
from engine.live.decisions import LiveDecisions
from engine.live.live_loop import LiveLoop
from engine.live.live_state import LiveState
from engine.live.state_store import MemoryStateStore
from engine.personalizer import Personalizer
from serving import request_validation as validate
from serving.batched_calls import BatchSettings
from serving.client import Filters, PageContext, PersonaEngineClient, Target
from serving.generated.persona.v1 import personalization_service_pb2 as pb
from serving.metrics import ServingMetrics
from serving.model_holder import ModelHolder
from serving.personalization_servicer import PersonalizationServicer

SERVICE: Final = "persona.v1.PersonalizationService"
K: Final = 20
NUM_OFFERS: Final = 3
DISTINCT_REQUESTS: Final = 500
COLD_START_SHARE: Final = 0.05  # anonymous visitors: ids the artifact never saw
RPC_CHOICES: Final = ("Personalize", "RecommendProducts", "GetPersonaProfile")


@dataclass
class Workload:
    """One RPC as the benchmark drives it: the same requests over gRPC, in the servicer and in the engine."""

    name: str
    method: str
    requests: list[Message]
    rate: float  # open-loop arrivals per second
    targets_per_call: int
    engine_call: Callable[[int], object]
    servicer_call: Callable[[int], object]
    baseline_call: Callable[[int], object] | None
    check: Callable[[PersonaEngineClient, int], dict[str, float]]


class _BenchmarkContext:
    """The part of ``grpc.ServicerContext`` the servicer uses, outside a server: no deadline; abort raises."""

    def time_remaining(self) -> float | None:
        return None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise RuntimeError(f"servicer aborted with {code.name}: {details}")


class FactorBaseline:
    """Full-scan numpy top-k over the served model's item factors: the cost floor of scoring."""

    def __init__(self, model_dir: Path, k: int) -> None:
        self.items = np.load(model_dir / "item_factors.npy", allow_pickle=False)
        self.users = np.load(model_dir / "user_factors.npy", allow_pickle=False)
        self.k = k

    @classmethod
    def of(cls, personalizer: Personalizer, k: int) -> FactorBaseline | None:
        model_dir = personalizer.artifact.folder.file(LAYOUT.models.component(personalizer.model_name).path)
        return cls(model_dir, k) if (model_dir / "item_factors.npy").is_file() else None

    def top_k(self, rows: np.ndarray) -> np.ndarray:
        scores = self.users[rows] @ self.items.T
        part = np.argpartition(-scores, self.k - 1, axis=1)[:, : self.k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
        return np.take_along_axis(part, order, axis=1)


def sample_customers(personalizer: Personalizer, n: int, rng: np.random.Generator) -> list[str]:
    known = personalizer.customers.ids
    ids = [str(known[i]) for i in rng.integers(0, len(known), size=n)]
    for i in np.flatnonzero(rng.random(n) < COLD_START_SHARE):
        ids[i] = f"anonymous-{int(i):06d}"
    return ids


def build_workloads(
    personalizer: Personalizer, rng: np.random.Generator, *, batch_size: int, rate: float, batch_rate: float
) -> list[Workload]:
    """The benchmarked calls: Personalize (20 products, 3 offers, a layout), RecommendProducts for one
    target and for a batch, and GetPersonaProfile, each over the same sampled customers."""
    # The live loop `serve` runs by default (in-memory state store: live customer state, journey
    # stages and the decision memories the online bandit learns from), so that the in-process
    # servicer does the same work per call as the server it is compared with.
    store = MemoryStateStore()
    live_state = LiveState(store)
    holder = ModelHolder(
        personalizer, personalizer.artifact.path, load_seconds=0.0, prepare=live_state.attach
    )
    # One call at a time never has company to wait for: a batcher that waited after each call for
    # the next (as a server's does, ``serving.dynamic_batcher``) would time its idle wait, not work.
    servicer = PersonalizationServicer(
        holder,
        ServingMetrics(CollectorRegistry()),
        LiveLoop(decisions=LiveDecisions(store), observers=(live_state,)),
        batching=BatchSettings(max_wait_s=0.0),
    )
    context = _BenchmarkContext()
    items = personalizer.items.ids
    customers = sample_customers(personalizer, DISTINCT_REQUESTS * max(batch_size, 1), rng)
    baseline = FactorBaseline.of(personalizer, K)
    model_rows = personalizer.model_customers.to_internal(customers, strict=False)
    n_users = 0 if baseline is None else len(baseline.users)
    # Customers the model never saw are scored from a stand-in row: the baseline only measures cost.
    baseline_rows = np.where(model_rows >= 0, model_rows, rng.integers(0, max(n_users, 1), len(customers)))

    def page(i: int) -> tuple[PageContext, Filters]:
        viewed = [str(items[j]) for j in rng.integers(0, len(items), size=3)]
        return (
            PageContext(
                page_type="product_detail", channel="search", device="mobile", session_item_ids=viewed
            ),
            Filters(exclude_item_ids=viewed[:1]),
        )

    pages = [page(i) for i in range(DISTINCT_REQUESTS)]
    personalize = [
        pb.PersonalizeRequest(
            customer_id=customers[i],
            context=pages[i][0].to_proto(),
            filters=pages[i][1].to_proto(),
            num_results=K,
            num_offers=NUM_OFFERS,
        )
        for i in range(DISTINCT_REQUESTS)
    ]
    single = [
        pb.RecommendProductsRequest(
            targets=[Target(customers[i]).to_proto()],
            context=PageContext(page_type="home", channel="direct", device="desktop").to_proto(),
            num_results=K,
        )
        for i in range(DISTINCT_REQUESTS)
    ]
    batch_context = PageContext(page_type="email", channel="email").to_proto()
    batches = [
        pb.RecommendProductsRequest(
            targets=[Target(c).to_proto() for c in customers[i * batch_size : (i + 1) * batch_size]],
            context=batch_context,
            num_results=K,
        )
        for i in range(DISTINCT_REQUESTS // 5)
    ]
    profiles = [pb.GetPersonaProfileRequest(customer_id=customers[i]) for i in range(DISTINCT_REQUESTS)]

    personalize_calls = [validate.personalize_call(r, personalizer) for r in personalize]
    single_calls = [validate.recommend_products_call(r, personalizer) for r in single]
    batch_calls = [validate.recommend_products_call(r, personalizer) for r in batches]

    # The servicer's handlers are coroutines (grpc.aio); one loop runs them all, as in a worker.
    loop = asyncio.new_event_loop()

    def served(
        method: Callable[[Any, Any], Awaitable[Message]], requests: Sequence[Message]
    ) -> Callable[[int], object]:
        wire = [r.SerializeToString() for r in requests]
        kind = type(requests[0])
        return lambda i: loop.run_until_complete(
            method(kind.FromString(wire[i]), context)
        ).SerializeToString()

    def baseline_of(rows_per_call: int) -> Callable[[int], object] | None:
        if baseline is None:
            return None
        return lambda i: baseline.top_k(baseline_rows[i * rows_per_call : (i + 1) * rows_per_call])

    def check_personalize(client: PersonaEngineClient, i: int) -> dict[str, float]:
        answer = client.personalize(
            customers[i], context=pages[i][0], filters=pages[i][1], k=K, num_offers=NUM_OFFERS, timeout_s=30
        )
        return {
            "items": len(answer.items),
            "offers": len(answer.offers),
            "layout": float(bool(answer.layout.variant_id)),
            "layout_slots": len(answer.layout.slots),
        }

    def check_single(client: PersonaEngineClient, i: int) -> dict[str, float]:
        answer = client.recommend_products(
            customers[i], context=PageContext(page_type="home", channel="direct", device="desktop"), k=K
        )
        return {"items": len(answer.items)}

    def check_batch(client: PersonaEngineClient, i: int) -> dict[str, float]:
        chunk = customers[i * batch_size : (i + 1) * batch_size]
        answer = client.recommend_products_batch(
            chunk, context=PageContext(page_type="email", channel="email"), k=K, timeout_s=30
        )
        return {
            "results": len(answer.results),
            "items": float(np.mean([len(r.items) for r in answer.results])),
        }

    def check_profile(client: PersonaEngineClient, i: int) -> dict[str, float]:
        answer = client.get_persona_profile(customers[i], timeout_s=30)
        return {"context_mixes": len(answer.context_mixes), "evidence": len(answer.evidence)}

    return [
        Workload(
            "Personalize",
            f"/{SERVICE}/Personalize",
            list(personalize),
            rate,
            1,
            lambda i: personalizer.personalize(
                personalize_calls[i].target,
                personalize_calls[i].products,
                personalize_calls[i].session,
                num_offers=personalize_calls[i].num_offers,
            ),
            served(servicer.Personalize, personalize),
            baseline_of(1),
            check_personalize,
        ),
        Workload(
            "RecommendProducts[1]",
            f"/{SERVICE}/RecommendProducts",
            list(single),
            rate,
            1,
            lambda i: personalizer.recommend_products(
                single_calls[i].targets, single_calls[i].products, single_calls[i].session
            ),
            served(servicer.RecommendProducts, single),
            baseline_of(1),
            check_single,
        ),
        Workload(
            f"RecommendProducts[{batch_size}]",
            f"/{SERVICE}/RecommendProducts",
            list(batches),
            batch_rate,
            batch_size,
            lambda i: personalizer.recommend_products(
                batch_calls[i].targets, batch_calls[i].products, batch_calls[i].session
            ),
            served(servicer.RecommendProducts, batches),
            baseline_of(batch_size),
            check_batch,
        ),
        Workload(
            "GetPersonaProfile",
            f"/{SERVICE}/GetPersonaProfile",
            list(profiles),
            rate,
            1,
            lambda i: personalizer.persona_profile(customers[i]),
            served(servicer.GetPersonaProfile, profiles),
            None,
            check_profile,
        ),
    ]
