"""The PersonalizationService RPCs: protobuf in, one engine call, protobuf out, on the event loop.

Each call reads the serving model once (``ModelHolder.current()``) and uses that object from
validation to response, so a reload in the middle of a call never mixes two models. A call is three
steps: translating and validating the request against the wire limits (``serving.request_validation``),
serving it with the engine's live loop (``engine.live.live_loop``: experiment arms, journey stages,
the online bandit, decision logging and event recording all live there), and translating the answer
(``serving.response_translation``). Between the first two the caller's deadline is checked, so a
request whose deadline has already passed is refused with DEADLINE_EXCEEDED before any scoring is done.

The handlers are coroutines run by ``grpc.aio`` on the process's event loop. The engine call is one
awaited step, ``EngineCalls.run`` (``serving.engine_calls``): inline for a page render, in a thread
when it would wait on a network store or score a big batch. RecordEvents always goes to a thread: its
append ends with an fsync, and checking outcomes reads the event log.

Errors: a request outside the documented limits is INVALID_ARGUMENT with the message naming the field
path; a RecommendProducts response over ``serve --max-response-bytes`` is RESOURCE_EXHAUSTED naming the
request fields that made it large; anything unexpected is logged with its traceback and answered
INTERNAL with a generic message, so internal details (paths, array shapes, library messages) never
reach callers. RecordEvents without
an event log is FAILED_PRECONDITION, and a batch the log could not store is UNAVAILABLE (nothing was
stored; a retry is safe).

When the state store (Redis) cannot be reached, every call but RecordEvents is still answered, from
the artifact alone: the response says so (``degraded_reason`` on each decision, or on the profile) and
``persona_engine_calls_without_live_state_total`` counts it (``serving.redis_state_store``). A
RecordEvents batch is refused with UNAVAILABLE before anything is stored while the store does not
answer, so that the client's retry (the contract's "retry on UNAVAILABLE") lands once it is back and
updates live state too; a batch stored in the event log is acknowledged, being durable, even when
Redis went away while its live-state update ran (that update is lost and counted).

Request counts and latency are measured by the server's interceptor; this module records what only
it sees: whether each customer was served cold, which offers and layouts were chosen, how many
records were accepted, drift in the profiles served, and calls answered without live state.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from engine.decisions.page_decision import LayoutDecision, RankedOffer
from engine.invalid_request import InvalidRequestError
from engine.live.live_loop import (
    EventsNotStoredError,
    LiveLoop,
    ServedLayout,
    ServedOffers,
    ServedPage,
    ServedProductLists,
)
from engine.live.state_store import StateStore, StateStoreUnavailableError
from engine.personalization_request import (
    LayoutRequest,
    OfferRankingRequest,
    PageRequest,
    ProductListsRequest,
)
from engine.personalizer import DecisionInfo, Personalizer
from engine.personas.profile import PersonaProfile
from serving import event_translation
from serving import request_validation as validate
from serving import response_translation as translate
from serving.batched_calls import BatchSettings, Call, PageBatchers
from serving.engine_calls import DeadlinePassedError, EngineCalls
from serving.generated.persona.v1 import personalization_service_pb2 as pb
from serving.generated.persona.v1 import personalization_service_pb2_grpc as pb_grpc
from serving.item_messages import prepared_items
from serving.metrics import ServingMetrics
from serving.model_holder import ModelHolder
from serving.redis_state_store import RedisStateStore, tracking_live_state

LOGGER = logging.getLogger("persona_engine.personalization")

Context = grpc.aio.ServicerContext[Any, Any]
_Call = TypeVar("_Call")
_Served = TypeVar("_Served")
_Response = TypeVar("_Response", bound=Message)


def _expired(context: Context) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


class PersonalizationServicer(pb_grpc.PersonalizationServiceServicer):
    """The PersonalizationService RPCs over the model ``holder`` currently serves.

    ``live_loop`` serves every call and records events; the default has no experiment, no decision
    log and no event log (RecordEvents then fails with FAILED_PRECONDITION). ``engine`` decides where
    engine calls run (the default: page renders on the loop, big batches in a thread); page renders on
    the loop are batched with the calls that arrive meanwhile (``serving.batched_calls``, ``batching``).
    ``state_store`` is the live loop's store: RecordEvents checks that it answers before storing, and a
    Redis store's availability is exported as a metric. A RecommendProducts response whose encoding
    is over ``max_response_bytes`` is refused with RESOURCE_EXHAUSTED (None: no limit).
    """

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
        self._holder = holder
        self._max_response_bytes = max_response_bytes
        self._metrics = metrics
        self._loop = live_loop or LiveLoop()
        self._engine = engine or EngineCalls()
        self._batches = PageBatchers(
            self._loop,
            batching or BatchSettings(),
            metrics.record_batch,
            on_pages=self._count_pages,
            on_product_lists=self._count_product_lists,
        )
        self._loop.prepare(holder.current())
        self._redis = state_store if isinstance(state_store, RedisStateStore) else None
        if self._redis is not None:
            self._redis.add_listener(metrics.record_state_store_available)
            metrics.record_state_store_available(self._redis.available)

    async def _handle(
        self,
        method: str,
        context: Context,
        parse: Callable[[Personalizer], _Call],
        serve: Callable[[Personalizer, _Call], Awaitable[_Served]],
        respond: Callable[[Personalizer, _Served], _Response],
    ) -> _Response:
        """Validate, check the deadline, await the engine step, translate; abort with the right code."""
        personalizer = self._holder.current()
        try:
            call = parse(personalizer)
            if _expired(context):
                raise DeadlinePassedError("the deadline passed before serving")
            with tracking_live_state() as state:  # marked by the store if Redis cannot be reached
                served = await serve(personalizer, call)
            response = respond(personalizer, served)
            if not state.complete:
                translate.mark_without_live_state(response)
                self._metrics.record_without_live_state(method)
            return response
        except InvalidRequestError as error:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(error)
        except DeadlinePassedError as error:
            code, message = grpc.StatusCode.DEADLINE_EXCEEDED, f"{method}: {error}"
        except translate.ResponseTooLargeError as error:
            code, message = grpc.StatusCode.RESOURCE_EXHAUSTED, f"{method}: {error}"
        except Exception:  # never leak internals to callers; the log keeps the traceback
            LOGGER.exception(
                "%s failed on model %s (%s)", method, personalizer.version, personalizer.model_name
            )
            code, message = (
                grpc.StatusCode.INTERNAL,
                f"{method}: internal error; the server log has the details",
            )
        await context.abort(code, message)

    def _count(
        self,
        decisions: Iterable[DecisionInfo],
        offers: Iterable[RankedOffer] = (),
        layouts: Iterable[LayoutDecision | None] = (),
    ) -> None:
        """Customers and decisions served (a batch's, or one call's), one metric update per label."""
        self._metrics.record_customers(decision.cold_start for decision in decisions)
        self._metrics.record_decisions("offer", (offer.offer_id for offer in offers))
        chosen = (layout.variant_id for layout in layouts if layout is not None)
        self._metrics.record_decisions("layout", chosen)

    def _count_pages(self, pages: Sequence[ServedPage]) -> None:
        self._count(
            (served.page.decision for served in pages),
            (offer for served in pages for offer in served.page.offers),
            (served.page.layout for served in pages),
        )

    def _count_product_lists(self, served: Sequence[ServedProductLists]) -> None:
        self._count(products.decision for lists in served for products in lists.lists)

    # ------------------------------------------------------------------ responses
    # Personalize and RecommendProducts calls are counted where they are scored (``_count_pages``,
    # ``_count_product_lists``: per batch on the loop, per call on a thread), not here.

    def _page_response(self, personalizer: Personalizer, served: ServedPage) -> pb.PersonalizeResponse:
        return translate.page_response(served, prepared_items(personalizer))

    def _product_lists_response(
        self, personalizer: Personalizer, served: ServedProductLists
    ) -> pb.RecommendProductsResponse:
        return translate.product_lists_response(
            served, prepared_items(personalizer), max_bytes=self._max_response_bytes
        )

    def _offers_response(self, _personalizer: Personalizer, served: ServedOffers) -> pb.RankOffersResponse:
        self._count((served.ranking.decision,), served.ranking.offers)
        return translate.offers_response(served)

    def _layout_response(self, _personalizer: Personalizer, served: ServedLayout) -> pb.SelectLayoutResponse:
        self._count((served.selection.decision,), layouts=(served.selection.layout,))
        return translate.layout_response(served)

    def _profile_response(
        self, _personalizer: Personalizer, profile: PersonaProfile
    ) -> pb.GetPersonaProfileResponse:
        if profile.drift is not None:
            self._metrics.record_drift_profile(profile.drift.drifting)
        return translate.profile_to_proto(profile)

    # ------------------------------------------------------------------ RPCs

    async def Personalize(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.PersonalizeRequest, context: Context
    ) -> pb.PersonalizeResponse:
        async def serve(personalizer: Personalizer, call: PageRequest) -> ServedPage:
            if self._engine.runs_inline(1):  # scored with the calls that arrive meanwhile
                return await self._batches.pages.submit(Call(personalizer, call))
            served = await self._engine.run(context, self._loop.personalize, personalizer, call)
            self._count_pages((served,))
            return served

        return await self._handle(
            "Personalize",
            context,
            lambda p: validate.personalize_call(request, p),
            serve,
            self._page_response,
        )

    async def RecommendProducts(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.RecommendProductsRequest, context: Context
    ) -> pb.RecommendProductsResponse:
        async def serve(personalizer: Personalizer, call: ProductListsRequest) -> ServedProductLists:
            if self._engine.runs_inline(len(call.targets)):
                return await self._batches.product_lists.submit(Call(personalizer, call))
            served = await self._engine.run(
                context, self._loop.recommend_products, personalizer, call, targets=len(call.targets)
            )
            self._count_product_lists((served,))
            return served

        return await self._handle(
            "RecommendProducts",
            context,
            lambda p: validate.recommend_products_call(request, p),
            serve,
            self._product_lists_response,
        )

    async def RankOffers(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.RankOffersRequest, context: Context
    ) -> pb.RankOffersResponse:
        async def serve(personalizer: Personalizer, call: OfferRankingRequest) -> ServedOffers:
            return await self._engine.run(context, self._loop.rank_offers, personalizer, call)

        return await self._handle(
            "RankOffers",
            context,
            lambda p: validate.rank_offers_call(request, p),
            serve,
            self._offers_response,
        )

    async def SelectLayout(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.SelectLayoutRequest, context: Context
    ) -> pb.SelectLayoutResponse:
        async def serve(personalizer: Personalizer, call: LayoutRequest) -> ServedLayout:
            return await self._engine.run(context, self._loop.select_layout, personalizer, call)

        return await self._handle(
            "SelectLayout",
            context,
            lambda p: validate.select_layout_call(request, p),
            serve,
            self._layout_response,
        )

    async def GetPersonaProfile(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.GetPersonaProfileRequest, context: Context
    ) -> pb.GetPersonaProfileResponse:
        async def serve(personalizer: Personalizer, customer_id: str) -> PersonaProfile:
            return await self._engine.run(context, _persona_profile, personalizer, customer_id)

        return await self._handle(
            "GetPersonaProfile",
            context,
            lambda p: validate.customer_id(request.customer_id),
            serve,
            self._profile_response,
        )

    async def ListPersonas(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.ListPersonasRequest, context: Context
    ) -> pb.ListPersonasResponse:
        async def serve(personalizer: Personalizer, _: None) -> pb.ListPersonasResponse:
            return pb.ListPersonasResponse(
                personas=[translate.persona_to_proto(persona) for persona in personalizer.catalog.personas],
                model_version=personalizer.version,
            )

        return await self._handle(
            "ListPersonas", context, lambda p: None, serve, lambda p, response: response
        )

    async def RecordEvents(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.RecordEventsRequest, context: Context
    ) -> pb.RecordEventsResponse:
        if not self._loop.records_events:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "RecordEvents: this server has no event log; start it with --event-log PATH",
            )
        try:  # reading logged decisions, the fsynced append and the observers all wait: off the loop
            return await asyncio.to_thread(self._record_events, request, context)
        except InvalidRequestError as error:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(error)
        except DeadlinePassedError as error:
            code, message = grpc.StatusCode.DEADLINE_EXCEEDED, f"RecordEvents: {error}"
        except (EventsNotStoredError, StateStoreUnavailableError) as error:
            code, message = grpc.StatusCode.UNAVAILABLE, f"RecordEvents: {error}"
        except Exception:  # never leak internals to callers; the log keeps the traceback
            LOGGER.exception("RecordEvents failed")
            code, message = (
                grpc.StatusCode.INTERNAL,
                "RecordEvents: internal error; the server log has the details",
            )
        await context.abort(code, message)

    def _record_events(self, request: pb.RecordEventsRequest, context: Context) -> pb.RecordEventsResponse:
        """RecordEvents' work, on a blocking-work thread: translate, check the deadline, store, count."""
        batch = event_translation.record_batch(
            request, dt.datetime.now(dt.UTC), self._loop.logged_decision, self._loop.stored_record
        )
        if _expired(context):
            raise DeadlinePassedError("the deadline passed before storing")
        if self._redis is not None:
            self._redis.check_reachable()  # refuse before storing: the retry then updates live state too
        with tracking_live_state() as state:
            stored = self._loop.record_events(batch.events, batch.outcomes)
        if not state.complete:
            LOGGER.warning(
                "RecordEvents: %d events and %d outcomes stored in the event log missed their live-state "
                "update (the state store went away during the call)",
                len(stored.new_events),
                len(stored.new_outcomes),
            )
            self._metrics.record_without_live_state("RecordEvents")
        self._metrics.record_live_records(
            "event",
            len(stored.new_events),
            stored.duplicate_events + batch.stored_events,
            batch.rejected_events,
        )
        self._metrics.record_live_records(
            "outcome",
            len(stored.new_outcomes),
            stored.duplicate_outcomes + batch.stored_outcomes,
            batch.rejected_outcomes,
        )
        return event_translation.record_events_response(
            batch, len(stored.new_events), len(stored.new_outcomes)
        )


def _persona_profile(personalizer: Personalizer, customer_id: str) -> PersonaProfile:
    return personalizer.persona_profile(customer_id)


def add_to_server(servicer: PersonalizationServicer, server: grpc.aio.Server) -> None:
    pb_grpc.add_PersonalizationServiceServicer_to_server(servicer, server)
