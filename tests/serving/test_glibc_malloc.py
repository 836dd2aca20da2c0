"""The malloc arena cap of server processes (``serving.glibc_malloc``): threads share the capped
arenas; the environment wins.

Each case runs in a fresh interpreter: the cap is process-wide and irreversible, and the test process
must keep glibc's defaults. Arenas are counted from glibc's own ``malloc_info`` report (one ``<heap>``
element per arena).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from serving.glibc_malloc import ENVIRONMENT_VARIABLE, limit_malloc_arenas

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")

# Starts 6 threads that each allocate (outside pymalloc, > 512 bytes) and stay alive until all have,
# so none can inherit another's arena by finishing first; prints the arenas malloc_info reports.
_COUNT_ARENAS = textwrap.dedent(
    """
    import ctypes, os, re, sys, tempfile, threading
    from serving.glibc_malloc import glibc_function, limit_malloc_arenas
    if sys.argv[1] != "none":
        print("cap", limit_malloc_arenas(int(sys.argv[1])))
    barrier = threading.Barrier(7)
    kept = []
    def allocate():
        kept.append(bytearray(200_000))
        barrier.wait()
        barrier.wait()
    threads = [threading.Thread(target=allocate) for _ in range(6)]
    for thread in threads:
        thread.start()
    barrier.wait()
    fopen, malloc_info, fclose = (glibc_function(name) for name in ("fopen", "malloc_info", "fclose"))
    fopen.restype = ctypes.c_void_p
    fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    fclose.argtypes = [ctypes.c_void_p]
    path = os.path.join(tempfile.mkdtemp(), "malloc_info.xml")
    stream = fopen(path.encode(), b"w")
    malloc_info(0, stream)
    fclose(stream)
    barrier.wait()
    for thread in threads:
        thread.join()
    print("arenas", len(re.findall(r"<heap nr=", open(path).read())))
    """
)


def _run(cap: str, **environment: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != ENVIRONMENT_VARIABLE}
    env.update(environment)
    out = subprocess.run(
        [sys.executable, "-c", _COUNT_ARENAS, cap], env=env, capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def test_threads_share_the_capped_arenas() -> None:
    assert int(_run("none")["arenas"]) > 2  # glibc's default gives each of the 6 threads its own arena
    capped = _run("2")
    assert capped == {"cap": "2", "arenas": "2"}


def test_an_arena_limit_in_the_environment_is_left_alone() -> None:
    capped = _run("2", **{ENVIRONMENT_VARIABLE: "3"})
    assert capped == {"cap": "3", "arenas": "3"}


def test_a_cap_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="arenas must be at least 1, got 0"):
        limit_malloc_arenas(0)
