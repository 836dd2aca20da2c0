"""The gRPC floor of the serving benchmark: the same server stack answering Personalize without the engine.

A Personalize call's end-to-end cost is the engine plus everything around it: gRPC's C core and its
Python layer, the worker processes, the interceptors (access log, metrics), request parsing and
response serialization. The floor measures the second part alone, in the same run, on the same
machine, with the same load generator: the server started with ``--benchmark-floor`` answers every
Personalize call with a response prepared once at start (20 products, 3 offers, a layout, built by one
real engine call), so its closed-loop calls/s are the ceiling any Python server of this stack reaches
here and now, and Personalize is reported as a share of it (``ratios`` in the result document). Both
servers are up at once, and each floor phase runs right after Personalize's with the same settings
(``load_phases.run_server_phases``, ``paired``): the machine's speed moves by tens of percent from
minute to minute, and a floor measured after all of Personalize's phases, minutes later, read
2,935-4,475 calls/s under 16 callers across runs of the same code.

The flag belongs to the server (``persona-engine serve --benchmark-floor``, environment variable
``PERSONA_ENGINE_BENCHMARK_FLOOR=1``). The benchmark passes the flag, never the variable: the harness
(``serving.server_process``) takes flags, and a server without the flag then stops at once with a
usage error, which is how an older server is told apart. Such a server, or any floor server that
fails to start, skips the floor with the reason printed and recorded, and ``null`` figures; the rest
of the run goes on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from rich.text import Text

from benchmarks.load_phases import LoadSettings, ServerSession, server_session
from benchmarks.serving_workloads import Workload
from serving.server_process import ServerStartError, ServerTimeoutError
from training.console_output import stderr_console

FLOOR_FLAG: Final = "--benchmark-floor"
# The server's equivalent variable, documented for people starting a floor server by hand; the
# benchmark itself passes the flag (module docstring).
FLOOR_ENV: Final = "PERSONA_ENGINE_BENCHMARK_FLOOR"
FLOOR_RESPONSE: Final = (
    "Personalize: 20 products, 3 offers, a layout, prepared once at start by one engine call"
)
# How much of a failed floor server's log a skip reason quotes.
_REASON_LOG_CHARS: Final = 300


def floor_start_failure(message: str) -> str:
    """Why the floor was skipped, from the error of a server that stopped before it was ready.

    An ``unrecognized arguments`` usage error naming the flag means a server from before the floor
    existed; anything else is quoted (the last lines of its log) so that it can be fixed.
    """
    if "unrecognized arguments" in message and FLOOR_FLAG in message:
        return (
            f"the server does not support {FLOOR_FLAG} (it exited with a usage error); the floor "
            "needs a server with that flag"
        )
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    tail = " | ".join(lines[-3:])
    if len(tail) > _REASON_LOG_CHARS:
        tail = "..." + tail[-_REASON_LOG_CHARS:]
    return f"the floor server did not start: {tail or 'no message'}"


def skipped_floor(workers: int, reason: str) -> dict[str, Any]:
    """A floor run that did not happen: its reason, and null figures so that no ratio is made up."""
    return {
        "workers": workers,
        "skipped": reason,
        "calls_per_s": None,
        "server_cpu_ms_per_call": None,
        "server_p99_ms": None,
        "response_bytes": None,
        "phases": {},
    }


def floor_figures(run: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of a floor run that happened, beside its phases (null where not measured)."""
    closed = run["phases"].get("Personalize|closed")
    opened = run["phases"].get("Personalize|open")
    return {
        **run,
        "skipped": None,
        "calls_per_s": closed["client"].get("calls_per_s") if closed else None,
        "server_cpu_ms_per_call": closed["server_cpu_ms_per_call_with_supervisor"] if closed else None,
        "server_p99_ms": opened["server"].get("p99_ms") if opened else None,
        "response_bytes": run["responses"].get("Personalize", {}).get("response_bytes"),
    }


@dataclass
class FloorSide:
    """The floor of one worker count: its running session, or why there is none."""

    workers: int
    threads: int
    session: ServerSession | None
    skipped: str | None = None

    def result(self) -> dict[str, Any]:
        """The floor run of the result document: its phases and headline figures, or the skip."""
        if self.session is None:
            return skipped_floor(self.workers, self.skipped or "not run")
        return floor_figures(self.session.figures(self.workers, self.threads))


@contextlib.contextmanager
def floor_side(
    artifact: Path,
    model: str,
    workers: int,
    threads: int,
    workloads: Sequence[Workload],
    load: LoadSettings,
    workdir: Path,
) -> Iterator[FloorSide]:
    """A floor server running beside the Personalize server for the length of the block, to be passed
    as ``run_server_phases(paired=side.session)``, so that each floor phase runs right after
    Personalize's with the same settings; never raises for a server that cannot start one (module
    docstring): the side then carries the reason, and no session."""
    personalize = [w for w in workloads if w.name == "Personalize"]
    if not personalize:
        yield FloorSide(workers, threads, None, "Personalize is not among --rpcs")
        return
    floor_args = (artifact, model, workers, threads, personalize, load, workdir)
    stack = contextlib.ExitStack()
    try:
        session = stack.enter_context(
            server_session(*floor_args, extra_args=[FLOOR_FLAG], label="gRPC floor")
        )
    except (ServerStartError, ServerTimeoutError) as error:
        reason = floor_start_failure(str(error))
        stderr_console.print(Text(f"gRPC floor ({workers} worker(s)) skipped: {reason}", style="yellow"))
        yield FloorSide(workers, threads, None, reason)
        return
    with stack:
        yield FloorSide(workers, threads, session)


def floor_section(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The result document's ``floor``: how the floor server is started, and one run per worker count.

    ``skipped`` at the top is the reason when no floor run happened (the first run's reason), else null.
    """
    happened = [r for r in runs if r.get("skipped") is None]
    reason = None if happened or not runs else runs[0]["skipped"]
    return {
        "server_flag": FLOOR_FLAG,
        "server_env": f"{FLOOR_ENV}=1",
        "response": FLOOR_RESPONSE,
        "skipped": reason,
        "runs": list(runs),
    }
