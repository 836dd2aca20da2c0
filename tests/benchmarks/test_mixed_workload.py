"""The mixed workload's open comparison: writes only in every other slice of one phase, reads split by
the slice they were sent in, and the machine's stalls matched with those slices."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import grpc.aio
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.load_generator import PhaseSpec, ProtocolError, _Mix, in_mixed_slice, open_loop
from benchmarks.mixed_workload import interleaved_open_p99, slice_stalls


def test_every_other_slice_carries_the_writes_starting_with_the_second() -> None:
    assert [in_mixed_slice(t, 1.0) for t in (0.0, 0.99, 1.0, 1.5, 2.0, 3.2)] == [
        False, False, True, True, False, True,
    ]  # fmt: skip
    assert in_mixed_slice(0.3, 0.0)  # no slicing: writes may go out at any time


@given(
    offsets=st.lists(st.floats(min_value=0.0, max_value=11.999), max_size=300),
    slice_s=st.sampled_from([0.5, 1.0, 2.0]),
)
def test_every_read_outside_a_guard_counts_once_for_its_slice_kind(
    offsets: list[float], slice_s: float
) -> None:
    latencies = [1.0 + 10.0 * in_mixed_slice(t, slice_s) for t in offsets]  # mixed slices' reads slower
    paired = interleaved_open_p99(latencies, offsets, 12.0, rounds=3, slice_s=slice_s, guard_s=0.1)
    kept = [t for t in offsets if t % slice_s >= 0.1]
    assert paired["read_only_calls"] == sum(not in_mixed_slice(t, slice_s) for t in kept)
    assert paired["mixed_calls"] == sum(in_mixed_slice(t, slice_s) for t in kept)
    assert paired["rounds"] == 3 and len(paired["round_ratios"]) == 3
    if paired["read_only_calls"] and paired["mixed_calls"]:
        assert paired["read_only_p99_ms"] == 1.0 and paired["mixed_p99_ms"] == 11.0
        assert paired["ratio"] == pytest.approx(11.0)


def test_rounds_are_equal_parts_of_the_phase_and_the_guard_is_left_out() -> None:
    # reads at 0.05 s (a guard), 0.5 s (read-only, round 1), 1.5 s (mixed, round 1), 6.5 s (read-only,
    # round 2), 7.5 s (mixed, round 2), and 11.9 s (mixed, round 2: the last part takes the end)
    offsets = [0.05, 0.5, 1.5, 6.5, 7.5, 11.9]
    latencies = [100.0, 2.0, 4.0, 3.0, 3.0, 3.0]
    paired = interleaved_open_p99(latencies, offsets, 12.0, rounds=2)
    assert paired["read_only_calls"] == 2 and paired["mixed_calls"] == 3
    assert paired["round_ratios"] == [pytest.approx(2.0), pytest.approx(1.0)]
    assert paired["slice_s"] == 1.0 and paired["guard_s"] == 0.1


def test_a_stall_counts_for_the_slice_its_middle_fell_in() -> None:
    paired = {"start_epoch_s": 1000.0, "duration_s": 12.0, "rounds": 2, "slice_s": 1.0}
    stalls = [
        [1000.53, 40.0],  # 0.49-0.53 s: read-only slice of round 1
        [1001.61, 20.0],  # 1.59-1.61 s: mixed slice of round 1
        [1007.02, 60.0],  # 6.96-7.02 s, middle at 6.99: read-only slice of round 2
        [999.0, 500.0],  # before the phase
        [1013.0, 30.0],  # after it
    ]
    found = slice_stalls(stalls, paired)
    assert found == [
        [{"count": 1, "longest_ms": 40.0}, {"count": 1, "longest_ms": 20.0}],
        [{"count": 1, "longest_ms": 60.0}, {"count": 0, "longest_ms": 0.0}],
    ]


def test_slices_need_an_open_mixed_phase() -> None:
    base = {"name": "p", "method": "/s/M", "requests_file": "r.bin", "duration_s": 1.0, "max_requests": 10}
    with pytest.raises(ProtocolError, match="mixed_slice_s needs an open mixed phase"):
        PhaseSpec(**base, mode="closed", mixed_slice_s=1.0)
    with pytest.raises(ProtocolError, match="mixed_slice_s needs an open mixed phase"):
        PhaseSpec(**base, mode="open", mixed_slice_s=1.0)
    with pytest.raises(ProtocolError, match="mixed_slice_s must be >= 0, got -1"):
        PhaseSpec(**base, mode="open", mixed_slice_s=-1.0)


@pytest.fixture
def echo_target() -> Iterator[str]:
    """A real gRPC server with two bytes-in, bytes-out methods, /t.S/Read and /t.S/Write."""
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    echo = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("t.S", {"Read": echo, "Write": echo})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def test_an_open_loop_sends_writes_only_in_the_mixed_slices(echo_target: str) -> None:
    async def run() -> tuple[list[float], list[float], int]:
        async with grpc.aio.insecure_channel(echo_target) as channel:
            reads = [channel.unary_unary("/t.S/Read")]
            mixed = _Mix([channel.unary_unary("/t.S/Write")], [b"w"] * 100, share=0.5, seed=1, slice_s=0.2)
            offsets = np.arange(0.005, 0.8, 0.01)  # 80 sends over four slices of 0.2 s
            recorder = await open_loop(reads, [b"r"], offsets, timeout_s=2.0, max_in_flight=100, mixed=mixed)
            return recorder.offsets_s, mixed.recorder.offsets_s, recorder.sent

    read_offsets, write_offsets, sent = asyncio.run(run())
    assert write_offsets and all(in_mixed_slice(t, 0.2) for t in write_offsets)
    assert sent == len(read_offsets) == 80 - len(write_offsets)  # every read answered, with its offset
    assert sum(not in_mixed_slice(t, 0.2) for t in read_offsets) == 40  # read-only slices: reads only
