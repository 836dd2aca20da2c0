"""Requests whose bytes are not a valid message: INVALID_ARGUMENT, counted, and logged sparingly.

Left alone, grpc runs a method's request deserializer before any interceptor or handler code, and a
``DecodeError`` there ends the call with UNKNOWN ("Unexpected <class DecodeError>", INTERNAL in other
grpc versions), a full traceback in the log for every such call and no trace in the request metrics.
A client sending garbage (a fuzzer, a wrong .proto, a port scanner speaking HTTP/2) could fill the log
with tracebacks and would look like a server fault on every dashboard.

``UndecodableRequestInterceptor`` replaces each method's deserializer with a tolerant one that returns
an ``UndecodableRequest`` (the reason, the message type, the size) instead of raising, and wraps the
method's behaviour so that it answers such a request with INVALID_ARGUMENT, e.g. ``the request is not
a valid persona.v1.ListPersonasRequest message (1 bytes): wire format was corrupt``. That covers every
method of the server, the health and reflection services included, and streaming requests message by
message (reflection's stream of requests). Each one is counted in
``persona_engine_undecodable_requests_total{service,method}``; unary calls are also counted with code
INVALID_ARGUMENT in ``persona_engine_requests_total`` by the observability interceptor, which must come
before this one in the server's interceptor list (it then wraps the guarded handler and sees the
status). The log gets one warning per ``UndecodableRequestLog.interval_s`` with the number of further
undecodable requests since the last line, never a traceback.

Every request's size goes to ``serving.large_request_memory``, which gives the native memory that
large requests leave behind back to the system. Valid requests pay that call and one class comparison;
the guarded handler of each method is built once.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, NoReturn, cast

import grpc

from serving.large_request_memory import LargeRequestMemoryTrim
from serving.metrics import ServingMetrics, split_method

LOGGER: Final = logging.getLogger("persona_engine.undecodable_requests")
DEFAULT_LOG_INTERVAL_S: Final = 60.0

Context = grpc.aio.ServicerContext[Any, Any]
Deserializer = Callable[[bytes], Any]
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable["grpc.RpcMethodHandler[Any, Any] | None"]]


@dataclass(frozen=True, slots=True)
class UndecodableRequest:
    """What a tolerant deserializer returns for bytes that are not a valid message."""

    message_type: str
    size: int
    reason: str

    def describe(self) -> str:
        return f"the request is not a valid {self.message_type} message ({self.size} bytes): {self.reason}"


def _message_type(deserializer: Deserializer) -> str:
    """``persona.v1.ListPersonasRequest`` for ``ListPersonasRequest.FromString``, else its name."""
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    full_name = getattr(descriptor, "full_name", None)
    if isinstance(full_name, str):
        return full_name
    return getattr(deserializer, "__qualname__", type(deserializer).__name__)


def _reason(error: Exception, message_type: str) -> str:
    """protobuf says "Error parsing message with type 'X': Wire format was corrupt"; the type is
    already in the description, so keep what follows it."""
    text = str(error) or type(error).__name__
    prefix = f"Error parsing message with type '{message_type}'"
    if text.startswith(prefix):
        text = text[len(prefix) :].lstrip(": ") or "cannot be parsed"
    return text[:1].lower() + text[1:]


def tolerant_deserializer(
    deserializer: Deserializer, on_size: Callable[[int], None] | None = None
) -> Deserializer:
    """``deserializer``, but an ``UndecodableRequest`` instead of an exception for bad bytes;
    ``on_size`` learns the size of every request (``serving.large_request_memory``)."""
    message_type = _message_type(deserializer)

    def deserialize(data: bytes) -> Any:
        if on_size is not None:
            on_size(len(data))
        try:
            return deserializer(data)
        except Exception as error:  # DecodeError, and anything a custom deserializer raises on bad bytes
            return UndecodableRequest(message_type, len(data), _reason(error, message_type))

    return deserialize


class UndecodableRequestLog:
    """At most one warning per ``interval_s``, saying how many more came since the last one.

    The first undecodable request is logged at once (an operator sees the problem start); the ones
    within the following interval only add to a count that the next line reports.
    """

    def __init__(
        self,
        logger: logging.Logger = LOGGER,
        interval_s: float = DEFAULT_LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.logger = logger
        self.interval_s = interval_s
        self._clock = clock
        self._last_logged: float | None = None
        self.suppressed = 0

    def record(self, full_method: str, request: UndecodableRequest, peer: str) -> bool:
        """Log this request, or count it as suppressed; True when a line was written."""
        now = self._clock()
        if self._last_logged is not None and now - self._last_logged < self.interval_s:
            self.suppressed += 1
            return False
        since = (
            f"; {self.suppressed} more undecodable requests in the last {now - self._last_logged:.0f}s"
            if self._last_logged is not None and self.suppressed
            else ""
        )
        self.logger.warning(
            "undecodable request to %s from %s answered INVALID_ARGUMENT: %s%s (at most one line per %gs)",
            full_method,
            peer,
            request.describe(),
            since,
            self.interval_s,
        )
        self._last_logged = now
        self.suppressed = 0
        return True


class UndecodableRequestInterceptor(grpc.aio.ServerInterceptor):
    """Turns undecodable requests into INVALID_ARGUMENT for every method (module doc)."""

    def __init__(
        self,
        metrics: ServingMetrics,
        log: UndecodableRequestLog | None = None,
        memory: LargeRequestMemoryTrim | None = None,
    ) -> None:
        self.metrics = metrics
        self.log = log or UndecodableRequestLog()
        self.memory = memory or LargeRequestMemoryTrim.for_this_process()
        # Per method: the handler grpc resolved and the guarded handler built around it.
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        full_method = handler_call_details.method
        cached = self._guarded.get(full_method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        guarded = self._guard(handler, full_method)
        self._guarded[full_method] = (handler, guarded)
        return guarded

    def _guard(
        self, handler: grpc.RpcMethodHandler[Any, Any], full_method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        refuse = self._refusal(full_method)
        # grpc's RpcMethodHandler is a namedtuple; the stubs only know the abstract class.
        fields: dict[str, Any] = {
            "request_deserializer": tolerant_deserializer(
                cast(Deserializer, handler.request_deserializer), self.memory.note
            )
        }
        if handler.unary_unary is not None:
            fields["unary_unary"] = _guard_unary_request(handler.unary_unary, refuse)
        if handler.unary_stream is not None:
            fields["unary_stream"] = _guard_unary_request(handler.unary_stream, refuse)
        if handler.stream_unary is not None:
            fields["stream_unary"] = _guard_request_stream(handler.stream_unary, refuse)
        if handler.stream_stream is not None:
            fields["stream_stream"] = _guard_request_stream(handler.stream_stream, refuse)
        replaced: grpc.RpcMethodHandler[Any, Any] = cast(Any, handler)._replace(**fields)
        return replaced

    def _refusal(self, full_method: str) -> Callable[[UndecodableRequest, Context], Awaitable[NoReturn]]:
        service, method = split_method(full_method)
        counter = self.metrics.undecodable_child(service, method)

        async def refuse(request: UndecodableRequest, context: Context) -> NoReturn:
            counter.inc()
            self.log.record(full_method, request, _peer(context))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.describe())
            raise AssertionError("context.abort returned")  # it raises; this line is never reached

        return refuse


_Refuse = Callable[[UndecodableRequest, Context], Awaitable[NoReturn]]


def _guard_unary_request(behaviour: Callable[..., Any], refuse: _Refuse) -> Callable[..., Any]:
    """A behaviour taking one request: refuse an undecodable one, else call ``behaviour``. Keeps the
    kind grpc tells apart: a coroutine function, an async generator function (streamed responses)."""
    if inspect.isasyncgenfunction(behaviour):

        async def guarded_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            if request.__class__ is UndecodableRequest:
                await refuse(request, context)
            async for response in behaviour(request, context):
                yield response

        return guarded_stream

    async def guarded(request: Any, context: Context) -> Any:
        if request.__class__ is UndecodableRequest:
            await refuse(request, context)
        return await behaviour(request, context)

    return guarded


def _guard_request_stream(behaviour: Callable[..., Any], refuse: _Refuse) -> Callable[..., Any]:
    """A behaviour taking a stream of requests: the stream it reads stops the call at the first
    undecodable message (the abort raises inside the servicer's ``async for``)."""

    async def checked(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        async for request in requests:
            if request.__class__ is UndecodableRequest:
                await refuse(request, context)
            yield request

    if inspect.isasyncgenfunction(behaviour):

        async def guarded_stream(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            async for response in behaviour(checked(requests, context), context):
                yield response

        return guarded_stream

    async def guarded(requests: AsyncIterator[Any], context: Context) -> Any:
        return await behaviour(checked(requests, context), context)

    return guarded


def _peer(context: Context) -> str:
    try:
        return context.peer()
    except Exception:  # a context whose call already ended may not know its peer any more
        return "unknown"
