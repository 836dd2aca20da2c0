"""``persona-engine serve --benchmark-floor``: the server without the engine, for benchmarks only.

A load test of the real server measures the engine and everything around it at once. To know what
"everything around it" costs, and so the ceiling any Python server can reach on the machine, the
benchmark starts the same server stack (workers, event loop, interceptor, metrics, health, TLS when
asked) with this flag: PersonalizationService.Personalize then returns one PersonalizeResponse built
once at start and does nothing else per call (no validation, no engine, no metrics of its own; gRPC
still deserializes the request and serializes the response, as for any call).

The response is real and of the benchmark's size: the engine serves one known customer of the
artifact once, with the request ``benchmarks.serving_workloads`` sends (a product page from search on
mobile, three items viewed, one excluded, 20 products and 3 offers), so the bytes on the wire match.
Every other RPC behaves as usual. The prepared response keeps its decision id and model version:
it is not a decision, is not logged, and does not follow reloads.
"""

from __future__ import annotations

from typing import Final

from engine.live.live_loop import LiveLoop
from engine.live.state_store import StateStore
from engine.personalizer import Personalizer
from serving import request_validation as validate
from serving import response_translation as translate
from serving.batched_calls import BatchSettings
from serving.client import Filters, PageContext
from serving.engine_calls import EngineCalls
from serving.generated.persona.v1 import personalization_service_pb2 as pb
from serving.metrics import ServingMetrics
from serving.model_holder import ModelHolder
from serving.personalization_servicer import Context, PersonalizationServicer

FLOOR_PRODUCTS: Final = 20
FLOOR_OFFERS: Final = 3
_VIEWED_ITEMS: Final = 3


def floor_request(personalizer: Personalizer) -> pb.PersonalizeRequest:
    """The benchmark's Personalize request for the artifact's first known customer."""
    customer = str(personalizer.model_customers.ids[0])
    viewed = [str(item) for item in personalizer.items.ids[:_VIEWED_ITEMS]]
    return pb.PersonalizeRequest(
        customer_id=customer,
        context=PageContext(
            page_type="product_detail", channel="search", device="mobile", session_item_ids=viewed
        ).to_proto(),
        filters=Filters(exclude_item_ids=viewed[:1]).to_proto(),
        num_results=FLOOR_PRODUCTS,
        num_offers=FLOOR_OFFERS,
    )


def prepared_response(personalizer: Personalizer) -> pb.PersonalizeResponse:
    """Serve ``floor_request`` once with the real engine (a bare live loop: nothing is logged)."""
    call = validate.personalize_call(floor_request(personalizer), personalizer)
    return translate.page_response(LiveLoop().personalize(personalizer, call))


class FloorPersonalizationServicer(PersonalizationServicer):
    """PersonalizationService whose Personalize answers the prepared response (module doc)."""

    def __init__(
        self,
        holder: ModelHolder,
        metrics: ServingMetrics,
        live_loop: LiveLoop | None = None,
        engine: EngineCalls | None = None,
        batching: BatchSettings | None = None,
        state_store: StateStore | None = None,
        max_response_bytes: int | None = None,
    ) -> None:
        super().__init__(holder, metrics, live_loop, engine, batching, state_store, max_response_bytes)
        self.prepared = prepared_response(holder.current())

    async def Personalize(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.PersonalizeRequest, context: Context
    ) -> pb.PersonalizeResponse:
        return self.prepared
