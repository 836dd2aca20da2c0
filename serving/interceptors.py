"""What happens around every unary gRPC call: deadline check, request id, metrics and an access log line.

One interceptor does all of it so the order is fixed and nothing is counted twice:

1. A call whose deadline has already passed when a handler thread picks it up (it waited in the
   queue behind others) is answered DEADLINE_EXCEEDED without running the handler: the caller has
   given up, and doing the work anyway only delays the calls behind it.
2. The caller's ``x-request-id`` metadata is kept when it is a sane token (1 to 128 characters of
   letters, digits and ``-_.:``), otherwise a new one is generated. It is sent back as initial
   metadata, so clients can quote it, and exposed to handlers through ``current_request_id()`` for
   their own log lines.
3. The call is counted in flight, timed in a ``finally`` block, and counted by method and status
   code, whatever the handler did (returned, aborted, or raised).
4. One log line per call: method, status code, duration, request id and peer address. Never
   metadata (it carries the admin token) and never message contents (they carry customer data).
   With ``access_log_every`` N > 1 only every N-th successful call is logged (failed calls and calls
   slower than ``SLOW_CALL_SECONDS`` always are): at a thousand calls a second a line per call costs
   a measurable share of the interpreter lock and says nothing the request metrics do not, while
   errors and outliers are what an operator reads the log for.

Streaming methods (health ``Watch``, server reflection) pass through untouched: they live as long as
the client keeps them open, which would make nonsense of a latency histogram, and wrapping them would
also defeat the health servicer's non-blocking ``Watch``.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any, Final, TypeVar

import grpc

from serving.metrics import ServingMetrics, split_method

REQUEST_ID_KEY: Final = "x-request-id"
REQUEST_LOGGER: Final = logging.getLogger("persona_engine.requests")
_REQUEST_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Calls at least this slow are logged even when successful calls are sampled.
SLOW_CALL_SECONDS: Final = 0.1
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("persona_engine_request_id", default="")

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


def current_request_id() -> str:
    """The request id of the call being handled on this thread ("" outside a call)."""
    return _request_id.get()


def request_id_from(metadata: Any) -> str:
    """The caller's ``x-request-id`` if it is a sane token, else a fresh random one."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and _REQUEST_ID_PATTERN.match(value):
            return value
    return uuid.uuid4().hex


class ObservabilityInterceptor(grpc.ServerInterceptor):
    """Deadline check, request id, metrics and access log for every unary-unary call (module doc)."""

    def __init__(
        self, metrics: ServingMetrics, logger: logging.Logger = REQUEST_LOGGER, *, access_log_every: int = 1
    ) -> None:
        if access_log_every < 1:
            raise ValueError(f"access_log_every must be at least 1, got {access_log_every}")
        self.metrics = metrics
        self.logger = logger
        self.access_log_every = access_log_every
        # itertools.count's next() is atomic under the GIL: no lock needed between handler threads.
        self._successes = itertools.count()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[_Request, _Response] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Request, _Response] | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.response_streaming:
            return handler
        behaviour = handler.unary_unary
        if behaviour is None:
            return handler
        service, method = split_method(handler_call_details.method)
        full_method = handler_call_details.method

        def observed(request: _Request, context: grpc.ServicerContext) -> _Response:
            return self._observe(behaviour, request, context, full_method, service, method)

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _observe(
        self,
        behaviour: Callable[[_Request, grpc.ServicerContext], _Response],
        request: _Request,
        context: grpc.ServicerContext,
        full_method: str,
        service: str,
        method: str,
    ) -> _Response:
        started = time.perf_counter()
        request_id = request_id_from(context.invocation_metadata())
        token = _request_id.set(request_id)
        code = grpc.StatusCode.UNKNOWN
        try:
            with self.metrics.track_in_flight(service, method):
                if context.time_remaining() <= 0:
                    code = grpc.StatusCode.DEADLINE_EXCEEDED
                    context.abort(code, f"{full_method}: the deadline passed before the call was handled")
                context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
                response = behaviour(request, context)
                code = _outcome(context, grpc.StatusCode.OK)
                return response
        except BaseException:
            code = _outcome(context, code)
            raise
        finally:
            seconds = time.perf_counter() - started
            self.metrics.observe_request(service, method, code, seconds)
            if self._logs(code, seconds):
                self.logger.info(
                    "%s %s %.2fms request_id=%s peer=%s",
                    full_method,
                    code.name,
                    seconds * 1000.0,
                    request_id,
                    _peer(context),
                )
            _request_id.reset(token)

    def _logs(self, code: grpc.StatusCode, seconds: float) -> bool:
        if code is not grpc.StatusCode.OK or seconds >= SLOW_CALL_SECONDS or self.access_log_every == 1:
            return True
        return next(self._successes) % self.access_log_every == 0


def _outcome(context: grpc.ServicerContext, otherwise: grpc.StatusCode) -> grpc.StatusCode:
    """The status the caller sees: the code the handler set or aborted with; else, when the call has
    ended under the handler (deadline passed, client cancelled), that; else ``otherwise``."""
    code = context.code()  # type: ignore[attr-defined]  # grpc's server context has code() since 1.38
    if isinstance(code, grpc.StatusCode):
        return code
    if not context.is_active():
        return (
            grpc.StatusCode.DEADLINE_EXCEEDED if context.time_remaining() <= 0 else grpc.StatusCode.CANCELLED
        )
    return otherwise


def _peer(context: grpc.ServicerContext) -> str:
    try:
        return context.peer()
    except Exception:  # a context whose call already ended may not know its peer any more
        return "unknown"
