"""The standard gRPC health service, with Watch streams that end when the graceful stop begins.

grpcio's ``HealthServicer`` keeps a ``Watch`` stream open until the caller hangs up. At a graceful
stop it tells every watcher NOT_SERVING, but the stream stays open, so ``server.stop(grace)`` waits the
whole grace period for it and then cancels the handler, which grpc logs as an unhandled
``CancelledError`` with a traceback: one ERROR per open watcher and stop (a fuzz pass saw it on every
stop). Clients that use gRPC's client-side health checking keep a Watch open on every connection, so a
fleet's every rolling restart would pay both. Here a Watch stream, once the stop has begun, sends
NOT_SERVING (again, if the base class already did: a repeated status is harmless) and ends with OK; a
client reconnects elsewhere, as it would after the connection closes anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from grpc_health.v1 import health, health_pb2


class StoppingHealthServicer(health.aio.HealthServicer):
    """``health.aio.HealthServicer`` whose Watch streams end at ``enter_graceful_shutdown`` (module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self._stopping = asyncio.Event()

    async def Watch(  # noqa: N802 (the RPC's name)
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> None:
        watch = asyncio.ensure_future(super().Watch(request, context))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({watch, stopping}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the caller hung up: neither task outlives the call
            watch.cancel()
            stopping.cancel()
            raise
        stopping.cancel()
        if watch.done():  # the base class ended the stream itself (it does not, today): its result
            watch.result()
            return
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        await context.write(health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING))

    async def enter_graceful_shutdown(self) -> None:
        await super().enter_graceful_shutdown()
        self._stopping.set()
