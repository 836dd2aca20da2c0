"""What happens around every unary gRPC call: deadline check, request id, metrics and an access log line.

One ``grpc.aio`` interceptor does all of it so the order is fixed and nothing is counted twice:

1. A call whose deadline has already passed when its handler starts (it waited behind others on the
   event loop) is answered DEADLINE_EXCEEDED without running the handler: the caller has given up,
   and doing the work anyway only delays the calls behind it.
2. The caller's ``x-request-id`` metadata is kept when it is a sane token (1 to 128 characters of
   letters, digits and ``-_.:``), otherwise a new one is made (this process's random prefix and a
   counter: unique, and cheaper than a fresh UUID per call). It is sent back as trailing metadata, so
   clients can quote it (on success and on error alike), and exposed to handlers through
   ``current_request_id()`` (a context variable: each call is its own asyncio task, and engine calls
   sent to threads take it along). Trailing, not initial: sending initial metadata on its own is one
   more operation through gRPC's core per call (about a tenth of a Personalize call's GIL time in the
   py-spy profile), while trailing metadata leaves with the status in the call's last operation.
3. The call is counted in flight (in the metrics, and for the graceful stop in
   ``serving.response_drain``), timed in a ``finally`` block, and counted by method and status
   code, whatever the handler did (returned, aborted, raised, or was cancelled by the client or its
   deadline). A method the servicer leaves to its generated base class, which raises
   ``NotImplementedError`` (the health service's ``List``), is answered UNIMPLEMENTED without the
   traceback grpc would log for every such call.
4. One log line per call: method, status code, duration, request id and peer address. Never
   metadata (it carries the admin token) and never message contents (they carry customer data).
   With ``access_log_every`` N > 1 only every N-th successful call is logged (failed calls and calls
   slower than ``SLOW_CALL_SECONDS`` always are): at a thousand calls a second a line per call costs
   a measurable share of the CPU and says nothing the request metrics do not, while errors and
   outliers are what an operator reads the log for. Requests whose bytes were not a valid message
   are the exception: ``serving.undecodable_requests`` logs those at most once a minute (a fuzzer or
   a misconfigured client sends thousands), and this interceptor only counts them.

The wrapped handler of each method is built once and kept, so a call costs a dictionary lookup here,
not a new handler object. Handlers must be coroutine functions (every servicer of this server is).

Streaming methods (health ``Watch``, server reflection) pass through untouched: they live as long as
the client keeps them open, which would make nonsense of a latency histogram.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

import grpc

from serving.metrics import ServingMetrics, split_method
from serving.response_drain import ResponseDrain
from serving.undecodable_requests import UndecodableRequest

REQUEST_ID_KEY: Final = "x-request-id"
REQUEST_LOGGER: Final = logging.getLogger("persona_engine.requests")
# Matched whole (``fullmatch``): with ``match`` and ``$``, a trailing newline would pass into the log.
_REQUEST_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Calls at least this slow are logged even when successful calls are sampled.
SLOW_CALL_SECONDS: Final = 0.1
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("persona_engine_request_id", default="")

# Generated request ids: 64 random bits per process, then a counter (32 hex characters in all).
_ID_PREFIX: Final = os.urandom(8).hex()
_id_counter = itertools.count()

Context = grpc.aio.ServicerContext[Any, Any]
_Behaviour = Callable[[Any, Context], Awaitable[Any]]


def current_request_id() -> str:
    """The request id of the call being handled ("" outside a call)."""
    return _request_id.get()


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


def request_id_from(metadata: Any) -> str:
    """The caller's ``x-request-id`` if it is a sane token, else a fresh one."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and _REQUEST_ID_PATTERN.fullmatch(value):
            return value
    return new_request_id()


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    """Deadline check, request id, metrics and access log for every unary-unary call (module doc)."""

    def __init__(
        self,
        metrics: ServingMetrics,
        logger: logging.Logger = REQUEST_LOGGER,
        *,
        access_log_every: int = 1,
        drain: ResponseDrain | None = None,
    ) -> None:
        if access_log_every < 1:
            raise ValueError(f"access_log_every must be at least 1, got {access_log_every}")
        self.metrics = metrics
        self.drain = drain or ResponseDrain()
        self.logger = logger
        self.access_log_every = access_log_every
        self._successes = itertools.count()
        # Per method: the handler grpc resolved and the observed handler built around it.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        # grpc's handler types are the sync stack's; on this aio server every unary behaviour is a
        # coroutine function (the servicers', health's Check), hence the cast below.
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.response_streaming:
            return handler
        full_method = handler_call_details.method
        cached = self._wrapped.get(full_method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        behaviour = handler.unary_unary
        if behaviour is None:
            return handler
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._observer(cast(_Behaviour, behaviour), full_method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[full_method] = (handler, wrapped)
        return wrapped

    def _observer(self, behaviour: _Behaviour, full_method: str) -> _Behaviour:
        service, method = split_method(full_method)
        requests, durations, in_flight = self.metrics.method_children(service, method)
        drain = self.drain

        async def observed(request: Any, context: Context) -> Any:
            started = time.perf_counter()
            request_id = request_id_from(context.invocation_metadata())
            token = _request_id.set(request_id)
            code = grpc.StatusCode.UNKNOWN
            in_flight.inc()
            drain.handlers_running += 1
            try:
                remaining = context.time_remaining()
                if remaining is not None and remaining <= 0:
                    code = grpc.StatusCode.DEADLINE_EXCEEDED
                    await context.abort(
                        code, f"{full_method}: the deadline passed before the call was handled"
                    )
                context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
                response = await behaviour(request, context)
                code = _outcome(context, grpc.StatusCode.OK)
                return response
            except asyncio.CancelledError:  # the client hung up, or its deadline passed, mid-call
                code = _cancelled(context)
                raise
            except NotImplementedError:  # a generated base-class method (health List): no traceback
                code = grpc.StatusCode.UNIMPLEMENTED
                await context.abort(code, f"{full_method} is not implemented by this server")
            except BaseException:
                code = _outcome(context, code)
                raise
            finally:
                in_flight.dec()
                ended = time.perf_counter()
                drain.handler_ended(context, started, ended)
                seconds = ended - started
                requests(code).inc()
                durations.observe(seconds)
                if self._logs(code, seconds) and (
                    code is not grpc.StatusCode.INVALID_ARGUMENT
                    or request.__class__ is not UndecodableRequest
                ):
                    self.logger.info(
                        "%s %s %.2fms request_id=%s peer=%s",
                        full_method,
                        code.name,
                        seconds * 1000.0,
                        request_id,
                        _peer(context),
                    )
                _request_id.reset(token)

        return observed

    def _logs(self, code: grpc.StatusCode, seconds: float) -> bool:
        if code is not grpc.StatusCode.OK or seconds >= SLOW_CALL_SECONDS or self.access_log_every == 1:
            return True
        return next(self._successes) % self.access_log_every == 0


def _outcome(context: Context, otherwise: grpc.StatusCode) -> grpc.StatusCode:
    """The status the caller sees: the code the handler set or aborted with, else ``otherwise``."""
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else otherwise


def _cancelled(context: Context) -> grpc.StatusCode:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


def _peer(context: Context) -> str:
    try:
        return context.peer()
    except Exception:  # a context whose call already ended may not know its peer any more
        return "unknown"
