"""The standard gRPC health service, with Watch streams that end when the graceful stop begins.

grpcio's ``HealthServicer`` keeps a ``Watch`` stream open until the caller hangs up. At a graceful
stop it tells every watcher NOT_SERVING, but the stream stays open, so ``server.stop(grace)`` waits the
whole grace period for it and then cancels it (the watcher sees UNAVAILABLE "Cancelling all calls").
Clients that use gRPC's client-side health checking keep a Watch open on every connection, so a fleet's
every rolling restart would wait out the grace period of each server. Here a Watch stream, once the
stop has begun, sends NOT_SERVING and ends with OK; the client reconnects elsewhere, as it would when
the connection closes anyway.

Watch is this class's own rather than a wrapper around the base class's: cancelling the base class's
stream while it was sending NOT_SERVING left a send unfinished, and a second send then failed with
TOO_MANY_OPERATIONS and held the stream open all the same (measured: 10 s of a 10 s grace, an ERROR
per stop). One loop per stream, which alone writes to it, cannot do that, and it writes outside the
lock, so a watcher that stops reading holds up neither ``set`` nor the other watchers (its own stream,
like any call whose caller stops reading, lasts until the grace period ends). ``Check`` and ``set`` stay
the base class's; ``set`` also wakes this class's watchers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpc_health.v1 import health, health_pb2

# A HealthCheckResponse.ServingStatus value: protobuf enum values are ints.
_ServingStatus = int


class StoppingHealthServicer(health.aio.HealthServicer):
    """``health.aio.HealthServicer`` whose Watch streams end at ``enter_graceful_shutdown`` (module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self._statuses: dict[str, _ServingStatus] = {"": health_pb2.HealthCheckResponse.SERVING}
        self._changed = asyncio.Condition()
        self._stopping = False

    async def Watch(  # noqa: N802 (the RPC's name)
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> None:
        last: _ServingStatus | None = None
        while True:
            async with self._changed:  # not held while writing: a watcher that stops reading
                while (status := self._status(request.service)) == last and not self._stopping:
                    await self._changed.wait()  # must not hold up ``set`` or the stop
                stopping = self._stopping
            if status != last:  # a watcher wants the latest status, not every one in between
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            if stopping:
                return

    def _status(self, service: str) -> _ServingStatus:
        return self._statuses.get(service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)

    async def set(self, service: str, status: _ServingStatus) -> None:
        await super().set(service, status)
        async with self._changed:
            if not self._stopping:
                self._statuses[service] = status
                self._changed.notify_all()

    async def enter_graceful_shutdown(self) -> None:
        await super().enter_graceful_shutdown()
        async with self._changed:
            self._stopping = True
            for service in self._statuses:
                self._statuses[service] = health_pb2.HealthCheckResponse.NOT_SERVING
            self._changed.notify_all()
