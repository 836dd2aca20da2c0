"""The profile's grouping of py-spy samples into parts of the request path, with and without C frames."""

from __future__ import annotations

import pytest

from benchmarks.server_profile import categorize_profile, profile_category

LOOP = "BaseEventLoop._run_once (asyncio/base_events.py:1922);Handle._run (asyncio/events.py:80)"
CORE = "task_step (_asynciomodule.c:2990);0x7fa494ee6c3a (grpc/_cython/cygrpc.cpython-311-x86_64.so)"
HANDLER = (
    "ObservabilityInterceptor._observer.<locals>.observed (serving/interceptors.py:144);"
    "PersonalizationServicer._handle (serving/personalization_servicer.py:200)"
)


SCORE = "ImplicitFactorsModel.score (engine/models/implicit_factors.py:341)"


def _frames(*parts: str) -> list[str]:
    return ";".join(parts).split(";")


@pytest.mark.parametrize(
    ("stack", "category"),
    [
        # Python frames only (sampled without --native)
        ((LOOP, HANDLER, SCORE), "model scoring"),
        ((LOOP,), "gRPC aio core and the event loop"),
        # with --native: gRPC's Cython core calls into libc
        ((LOOP, CORE, "0x7fa49 (grpc/_cython/cygrpc.so);eventfd_write (libc.so.6);write (libc.so.6)"),
         "system call: gRPC core waking its poller thread (eventfd write)"),
        ((LOOP, CORE, "sendmsg (libc.so.6)"), "system call: sending on the socket (sendmsg)"),
        ((LOOP, CORE, "get_running_loop (_asynciomodule.c:300);getpid (libc.so.6)"),
         "system call: other (getpid, futex, epoll, reads, writes)"),
        ((LOOP, CORE, "recvmsg (libc.so.6)"),
         "system call: other (getpid, futex, epoll, reads, writes)"),
        # a system call made by an enclosing part stays with that part
        ((LOOP, HANDLER, "Counter.inc (prometheus_client/metrics.py:310);getpid (libc.so.6)"), "metrics"),
        # a C frame of numpy under engine code is the engine's
        ((LOOP, HANDLER, "CandidateIndex.search (engine/ranking/candidate_index.py:250);"
                         "ufunc_generic_fastcall (numpy/_core/_umath.so)"), "candidate index search"),
    ],
)  # fmt: skip
def test_samples_go_to_the_part_of_the_request_path_that_spent_them(
    stack: tuple[str, ...], category: str
) -> None:
    assert profile_category(_frames(*stack)) == category


def test_shares_are_sample_weighted_and_sum_to_one() -> None:
    raw = "\n".join(
        [
            f"{LOOP};{CORE};sendmsg (libc.so.6) 3",
            f"{LOOP};{HANDLER};{SCORE} 1",
            "a line without a count",
        ]
    )
    profile = categorize_profile(raw)
    assert profile["samples"] == 4
    assert profile["categories"] == {
        "system call: sending on the socket (sendmsg)": 0.75,
        "model scoring": 0.25,
    }
    assert sum(profile["categories"].values()) == pytest.approx(1.0)
    assert profile["top_functions"][0] == ["sendmsg (libc.so.6)", 0.75]
