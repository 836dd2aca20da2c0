"""glibc's allocator, as far as a server process steers it: ``malloc_trim`` (memory freed back to the
system; its callers are ``serving.heap_freeze`` and ``serving.large_request_memory``) and fewer malloc
arenas, so that a process's resident memory levels off early.

glibc gives each new thread that allocates its own heap ("arena"), up to 8 per core, and each arena
keeps its own freed chunks and slack resident. A worker's threads (gRPC's, the event loop's, the pool
that commits the event log and reloads models) start as load first needs them: in the 30-minute soak
(``benchmarks/soak.py``) the original workers had started 32 during the prefill, before the clock,
while a worker replacing a killed one started with 10 and took on more for minutes under load. With
glibc's default those replacement workers grew 8-10 MB in their first 10 minutes in three soaks of
five (the soak's leak criterion is 5); with two arenas the same soak passed, both replacements flat
within two minutes of their start (slopes 4.8 and -6.1 MB per 10 minutes, the long-lived worker 1.1,
p99 and failures as in the runs before). Python objects do not use these arenas (pymalloc maps its
own); what does is everything over 512 bytes (protobuf messages, live-state values, arrays) and
native code, nearly all of it made and freed under the interpreter lock, so two arenas leave little
to contend for.

``MALLOC_ARENA_MAX`` in the environment of the server's start still wins: glibc has read it before
any Python runs, and this module then leaves the setting alone. Forked workers inherit the limit.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
from collections.abc import Callable
from typing import Any, Final

LOGGER: Final = logging.getLogger(__name__)
# glibc's mallopt parameter number for the arena limit (malloc.h: #define M_ARENA_MAX -8).
M_ARENA_MAX: Final = -8
DEFAULT_MALLOC_ARENAS: Final = 2
ENVIRONMENT_VARIABLE: Final = "MALLOC_ARENA_MAX"


@functools.cache
def _c_library() -> ctypes.CDLL | None:
    """The C library, looked up once per process (``find_library`` runs ``ldconfig``; forked workers
    inherit the handle)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def glibc_function(name: str) -> Any:
    """The C library's function ``name`` (a ctypes function), or None where the C library has none
    (it is not glibc, or cannot be found)."""
    return getattr(_c_library(), name, None)


def glibc_malloc_trim() -> Callable[[], int] | None:
    """``malloc_trim(0)`` of the C library when it is glibc, else None."""
    trim = glibc_function("malloc_trim")
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: int(trim(0))


def limit_malloc_arenas(arenas: int = DEFAULT_MALLOC_ARENAS) -> int | None:
    """Cap this process's malloc arenas at ``arenas`` unless ``MALLOC_ARENA_MAX`` set it already;
    returns the cap in force, or None where the C library is not glibc (nothing to cap)."""
    if arenas < 1:
        raise ValueError(f"arenas must be at least 1, got {arenas}")
    configured = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    mallopt = glibc_function("mallopt")
    if mallopt is None:
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(M_ARENA_MAX, arenas) != 1:  # mallopt returns 1 on success
        LOGGER.warning("mallopt(M_ARENA_MAX, %d) was refused; glibc's default arena limit stays", arenas)
        return None
    return arenas
