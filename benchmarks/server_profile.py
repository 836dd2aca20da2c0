"""Where a served call's time goes: the server's workers sampled with py-spy during a load phase, and
the samples grouped into parts of the request path.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

# Where a sample's time goes. py-spy samples only the thread holding the GIL (``--gil``): a worker runs
# Python one thread at a time, so GIL time per call is what bounds its throughput (numpy kernels and
# gRPC's C core run outside it). Categories of the first group own everything below them (building a
# response's protobuf calls small engine helpers, which still count as protobuf building); the
# others go to the first one matched walking from the innermost frame outwards.
PROFILE_RATE_HZ: Final = 100
#
# With ``--native`` py-spy also sees C frames, so the opaque part of the loop's time (gRPC's Cython
# core) splits into what it does: the system calls that hand work to gRPC's own threads and send the
# response. They are held with the GIL, so they cost the worker throughput like Python does.
PROFILE_ENCLOSING: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("access log", ("logging/",)),
    ("metrics", ("prometheus_client/",)),
    ("request validation", ("serving/request_validation.py",)),
    ("protobuf building", ("_to_proto (",)),
    ("system call: gRPC core waking its poller thread (eventfd write)", ("eventfd_write (",)),
    ("system call: sending on the socket (sendmsg)", ("sendmsg (",)),
)
PROFILE_INNERMOST: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    (
        "system call: other (getpid, futex, epoll, reads, writes)",
        tuple(
            f"{call} (libc"
            for call in ("getpid", "syscall", "epoll_wait", "read", "recvmsg", "recvfrom", "write")
        ),
    ),
    (
        "protobuf building",
        (
            "google/protobuf/",
            "serving/protobuf_wire.py",
            "serving/item_messages.py",
            "serving/response_translation.py",
        ),
    ),
    ("interceptor (request id, metrics, access log)", ("serving/interceptors.py",)),
    ("dynamic batching", ("serving/dynamic_batcher.py", "serving/batched_calls.py")),
    ("live state and bandit memory", ("engine/live/", "engine/decisions/online_bandit.py")),
    ("decision id and its seeded RNG", ("decision_rng (", "new_decision_id (")),
    ("mix resolution", ("engine/personas/mix_resolution.py", "engine/personas/mix.py")),
    ("model scoring", ("engine/models/",)),
    ("candidate index search", ("engine/ranking/candidate_index.py",)),
    ("filters", ("engine/ranking/filters.py",)),
    (
        "top-k and list assembly",
        ("engine/ranking/list_assembly.py", "engine/ranking/diversity.py", "engine/ranking/promotions.py"),
    ),
    (
        "offers and layout",
        (
            "engine/decisions/page_decision.py",
            "engine/decisions/decision_policy.py",
            "engine/decisions/offer_eligibility.py",
            "engine/decisions/arm_estimates.py",
        ),
    ),
    ("result item objects", ("Personalizer._item (", "Personalizer._items (")),
    ("persona profile", ("engine/personas/profile.py", "engine/personas/explanations.py")),
    ("engine, other", ("engine/",)),
    ("servicer, other", ("serving/",)),
    # grpc.aio's Cython core runs its callbacks from the event loop, and py-spy does not see Cython
    # frames: a sample whose innermost Python frame is the loop's ``Handle._run`` is gRPC's own work.
    ("gRPC aio core and the event loop", ("asyncio/", "uvloop", "grpc/aio/", "grpc/_cython")),
    ("gRPC Python layer", ("grpc/",)),
)


def profile_category(frames: Sequence[str]) -> str:
    for name, keys in PROFILE_ENCLOSING:
        if any(key in frame for frame in frames for key in keys):
            return name
    for frame in reversed(frames):
        for name, keys in PROFILE_INNERMOST:
            if any(key in frame for key in keys):
                return name
    return "other (interpreter, threads)"


def py_spy_path() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


def categorize_profile(raw: str, top: int = 15) -> dict[str, Any]:
    """Sample shares by category and the hottest innermost functions, from py-spy's raw output."""
    by_category: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        by_leaf[frames[-1]] += count
        by_category[profile_category(frames)] += count
    return {
        "samples": total,
        "categories": {name: n / total for name, n in by_category.most_common()} if total else {},
        "top_functions": [[name, n / total] for name, n in by_leaf.most_common(top)] if total else [],
    }


@contextlib.contextmanager
def profiling(
    pids: Sequence[int], seconds: float, folder: Path, *, native: bool = False
) -> Iterator[list[Path]]:
    """py-spy records every worker for ``seconds`` while the block runs.

    Non-blocking sampling by default; ``native`` adds C frames, which py-spy can only unwind in a
    paused process, so the workers are stopped for each sample and serve more slowly meanwhile (the
    shares stay meaningful, the phase's latencies do not)."""
    executable = py_spy_path()
    if executable is None:
        raise RuntimeError("--profile needs py-spy: pip install py-spy (into the venv; not a dependency)")
    outputs = [folder / f"py-spy-{pid}.txt" for pid in pids]
    recorders = [
        subprocess.Popen(
            [
                executable, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
                "--rate", str(PROFILE_RATE_HZ), "--gil", "--native" if native else "--nonblocking",
                "--format", "raw",
                "--output", str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid, out in zip(pids, outputs, strict=True)
    ]  # fmt: skip
    try:
        yield outputs
    finally:
        for recorder in recorders:
            try:
                recorder.wait(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                recorder.kill()
                recorder.wait()
