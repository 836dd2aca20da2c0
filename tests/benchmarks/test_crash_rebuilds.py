"""The crash benchmark reads each restart's live-state rebuild from the workers' start-up lines."""

from __future__ import annotations

from benchmarks.crash import rebuilds

HEAD = "2026-12-06 23:01:04,101 INFO persona_engine.server: "
REBUILT = (
    "live state rebuilt in {s}s: 5000 customers from the snapshot through event 206420, "
    "then {n} logged events replayed"
)
LOG = "\n".join(
    [
        HEAD + "loaded model als from /tmp/a",
        HEAD + REBUILT.format(s="2.4", n=11120),
        HEAD + REBUILT.format(s="2.7", n=11120),
        HEAD + "serving on 127.0.0.1:50051",
    ]
)


def test_each_workers_rebuild_is_read_with_its_seconds_and_replayed_events() -> None:
    assert rebuilds(LOG) == [(2.4, 11120), (2.7, 11120)]
    assert max(rebuilds(LOG)) == (2.7, 11120)


def test_a_log_without_a_rebuild_gives_none() -> None:
    assert rebuilds(HEAD + "serving on 127.0.0.1:50051\n") == []
