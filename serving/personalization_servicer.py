"""The PersonalizationService RPCs: protobuf in, one engine call, protobuf out.

Each call reads the serving model once (``ModelHolder.current()``) and uses that object from
validation to response, so a reload in the middle of a call never mixes two models. A call is three
steps: translating and validating the request against the wire limits (``serving.request_validation``),
serving it with the engine's live loop (``engine.live.live_loop``: experiment arms, journey stages,
the online bandit, decision logging and event recording all live there), and translating the answer
(``serving.response_translation``). Between the first two the caller's deadline is checked, so a
request whose deadline has already passed is refused with DEADLINE_EXCEEDED before any scoring is done.

Errors: a request outside the documented limits is INVALID_ARGUMENT with the message naming the field
path; anything unexpected is logged with its traceback and answered INTERNAL with a generic message,
so internal details (paths, array shapes, library messages) never reach callers. RecordEvents without
an event log is FAILED_PRECONDITION, and a batch the log could not store is UNAVAILABLE (nothing was
stored; a retry is safe). Request counts and latency are measured by the server's interceptor; this
module records what only it sees: whether each customer was served cold, which offers and layouts
were chosen, how many records were accepted, and drift in the profiles served.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import grpc

from engine.decisions.page_decision import LayoutDecision, RankedOffer
from engine.invalid_request import InvalidRequestError
from engine.live.live_loop import EventsNotStoredError, LiveLoop
from engine.personalization_request import (
    LayoutRequest,
    OfferRankingRequest,
    PageRequest,
    ProductListsRequest,
)
from engine.personalizer import DecisionInfo, Personalizer
from serving import event_translation
from serving import request_validation as validate
from serving import response_translation as translate
from serving.generated.persona.v1 import personalization_service_pb2 as pb
from serving.generated.persona.v1 import personalization_service_pb2_grpc as pb_grpc
from serving.metrics import ServingMetrics
from serving.model_holder import ModelHolder

LOGGER = logging.getLogger("persona_engine.personalization")

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class PersonalizationServicer(pb_grpc.PersonalizationServiceServicer):
    """The PersonalizationService RPCs over the model ``holder`` currently serves.

    ``live_loop`` serves every call and records events; the default has no experiment, no decision
    log and no event log (RecordEvents then fails with FAILED_PRECONDITION).
    """

    def __init__(
        self, holder: ModelHolder, metrics: ServingMetrics, live_loop: LiveLoop | None = None
    ) -> None:
        self._holder = holder
        self._metrics = metrics
        self._loop = live_loop or LiveLoop()
        self._loop.prepare(holder.current())

    def _handle(
        self,
        method: str,
        context: grpc.ServicerContext,
        parse: Callable[[Personalizer], _Request],
        serve: Callable[[Personalizer, _Request], _Response],
    ) -> _Response:
        personalizer = self._holder.current()
        try:
            call = parse(personalizer)
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                code, message = (
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"{method}: the deadline passed before serving",
                )
            else:
                return serve(personalizer, call)
        except InvalidRequestError as error:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(error)
        except Exception:  # never leak internals to callers; the log keeps the traceback
            LOGGER.exception(
                "%s failed on model %s (%s)", method, personalizer.version, personalizer.model_name
            )
            code, message = (
                grpc.StatusCode.INTERNAL,
                f"{method}: internal error; the server log has the details",
            )
        context.abort(code, message)

    def _count(
        self, decision: DecisionInfo, offers: Sequence[RankedOffer] = (), layout: LayoutDecision | None = None
    ) -> None:
        self._metrics.record_customer(decision.cold_start)
        for offer in offers:
            self._metrics.record_decision("offer", offer.offer_id)
        if layout is not None:
            self._metrics.record_decision("layout", layout.variant_id)

    # ------------------------------------------------------------------ RPCs

    def Personalize(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.PersonalizeRequest, context: grpc.ServicerContext
    ) -> pb.PersonalizeResponse:
        def serve(personalizer: Personalizer, call: PageRequest) -> pb.PersonalizeResponse:
            served = self._loop.personalize(personalizer, call)
            self._count(served.page.decision, served.page.offers, served.page.layout)
            return translate.page_response(served)

        return self._handle("Personalize", context, lambda p: validate.personalize_call(request, p), serve)

    def RecommendProducts(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.RecommendProductsRequest, context: grpc.ServicerContext
    ) -> pb.RecommendProductsResponse:
        def serve(personalizer: Personalizer, call: ProductListsRequest) -> pb.RecommendProductsResponse:
            served = self._loop.recommend_products(personalizer, call)
            for products in served.lists:
                self._count(products.decision)
            return translate.product_lists_response(served)

        return self._handle(
            "RecommendProducts", context, lambda p: validate.recommend_products_call(request, p), serve
        )

    def RankOffers(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.RankOffersRequest, context: grpc.ServicerContext
    ) -> pb.RankOffersResponse:
        def serve(personalizer: Personalizer, call: OfferRankingRequest) -> pb.RankOffersResponse:
            served = self._loop.rank_offers(personalizer, call)
            self._count(served.ranking.decision, served.ranking.offers)
            return translate.offers_response(served)

        return self._handle("RankOffers", context, lambda p: validate.rank_offers_call(request, p), serve)

    def SelectLayout(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.SelectLayoutRequest, context: grpc.ServicerContext
    ) -> pb.SelectLayoutResponse:
        def serve(personalizer: Personalizer, call: LayoutRequest) -> pb.SelectLayoutResponse:
            served = self._loop.select_layout(personalizer, call)
            self._count(served.selection.decision, layout=served.selection.layout)
            return translate.layout_response(served)

        return self._handle("SelectLayout", context, lambda p: validate.select_layout_call(request, p), serve)

    def GetPersonaProfile(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.GetPersonaProfileRequest, context: grpc.ServicerContext
    ) -> pb.GetPersonaProfileResponse:
        def serve(personalizer: Personalizer, customer_id: str) -> pb.GetPersonaProfileResponse:
            profile = personalizer.persona_profile(customer_id)
            if profile.drift is not None:
                self._metrics.record_drift_profile(profile.drift.drifting)
            return translate.profile_to_proto(profile)

        return self._handle(
            "GetPersonaProfile", context, lambda p: validate.customer_id(request.customer_id), serve
        )

    def ListPersonas(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.ListPersonasRequest, context: grpc.ServicerContext
    ) -> pb.ListPersonasResponse:
        return self._handle(
            "ListPersonas",
            context,
            lambda p: None,
            lambda personalizer, _: pb.ListPersonasResponse(
                personas=[translate.persona_to_proto(persona) for persona in personalizer.catalog.personas],
                model_version=personalizer.version,
            ),
        )

    def RecordEvents(  # noqa: N802 (servicer methods are named after the RPCs)
        self, request: pb.RecordEventsRequest, context: grpc.ServicerContext
    ) -> pb.RecordEventsResponse:
        if not self._loop.records_events:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "RecordEvents: this server has no event log; start it with --event-log PATH",
            )
        try:
            batch = event_translation.record_batch(
                request, dt.datetime.now(dt.UTC), self._loop.logged_decision
            )
        except InvalidRequestError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED, "RecordEvents: the deadline passed before storing"
            )
        try:
            stored = self._loop.record_events(batch.events, batch.outcomes)
        except EventsNotStoredError as error:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"RecordEvents: {error}")
        self._metrics.record_live_records(
            "event", len(stored.new_events), stored.duplicate_events, batch.rejected_events
        )
        self._metrics.record_live_records(
            "outcome", len(stored.new_outcomes), stored.duplicate_outcomes, batch.rejected_outcomes
        )
        return event_translation.record_events_response(
            batch, len(stored.new_events), len(stored.new_outcomes)
        )


def add_to_server(servicer: PersonalizationServicer, server: grpc.Server) -> None:
    pb_grpc.add_PersonalizationServiceServicer_to_server(servicer, server)
