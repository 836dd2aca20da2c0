"""Whether ``serve`` can listen where it was told to, asked before anything slow happens.

A busy port used to be found only when the server bound it, after the artifact had loaded (tens of
seconds for a big one), and then said so as ``[Errno 98] Address already in use`` for the metrics port
and with gRPC core's own ``add_port.cc`` line and a ``GRPC_VERBOSITY`` hint for the gRPC port, neither
naming the flag to change. ``persona-engine serve`` now probes both ports first
(``refuse_ports_in_use``) and the late failures (a port taken between the probe and the bind) use the
same wording (``describe_bind_failure``).

The probe binds without listening and closes at once: SO_REUSEADDR lets it past the connections a
stopped server left in TIME_WAIT (gRPC's listeners and the metrics endpoint set it too), and without
SO_REUSEPORT it cannot bind where anyone listens, including a multi-worker server whose sockets all
have SO_REUSEPORT. A worker of ``--workers N`` must not probe: its supervisor holds the port already.
"""

from __future__ import annotations

import errno
import socket
from typing import Final

from serving.settings import ServeConfigError, bare_host

IN_USE: Final = "address already in use (another server?)"
NO_PERMISSION: Final = "permission denied (ports below 1024 need privileges)"
# What a probe's failure says about the port; other failures (no such local address on one of the
# host's resolved families, say) are left for gRPC to judge, since it binds every family it can.
_REFUSING_ERRORS: Final = {errno.EADDRINUSE: IN_USE, errno.EACCES: NO_PERMISSION}


def why_not_bindable(host: str, port: int) -> str | None:
    """None when ``host:port`` could be listened on now; else why not (``IN_USE``, ``NO_PERMISSION``,
    or that the host does not resolve). Port 0 (any free port) is always bindable."""
    if port == 0:
        return None
    bare = bare_host(host)
    try:
        resolved = socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        return f"cannot resolve host {bare!r}: {error.strerror}"
    for family, kind, protocol, _, where in resolved:
        probe = socket.socket(family, kind, protocol)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(where)
        except OSError as error:
            reason = _REFUSING_ERRORS.get(error.errno or 0)
            if reason is not None:
                return reason
        finally:
            probe.close()
    return None


def refuse_ports_in_use(address: str, address_source: str, metrics_port: int, metrics_source: str) -> None:
    """Raise ``ServeConfigError`` naming the flag (or variable) and the port when the gRPC address or
    the metrics port cannot be listened on; ``*_source`` is where the value came from, e.g.
    ``--address`` or ``PERSONA_ENGINE_ADDRESS``."""
    host, _, port_text = address.rpartition(":")
    reason = why_not_bindable(host, int(port_text))
    if reason is not None:
        raise ServeConfigError(f"{address_source} {address}: {reason}")
    if metrics_port:
        reason = why_not_bindable(host, metrics_port)
        if reason is not None:
            raise ServeConfigError(f"{metrics_source} {metrics_port}: {reason}")


def describe_bind_failure(host: str, port: int, error: object) -> str:
    """Why a bind failed, for the late failures: the probe's reason when it finds one now, else the
    error itself (``error`` is an OSError, or gRPC's RuntimeError whose text only says to turn on its
    debug logging)."""
    reason = why_not_bindable(host, port)
    if reason is not None:
        return reason
    return getattr(error, "strerror", None) or str(error)
