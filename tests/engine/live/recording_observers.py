"""Event observers for tests of the live loop and RecordEvents: one that keeps what it was told (the
live state and the bandits plug in the same way) and one that fails, to show a broken observer
never loses an accepted batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.live.events import BehaviorEvent, DecisionOutcome


@dataclass
class RecordingObserver:
    events: list[BehaviorEvent] = field(default_factory=list)
    outcomes: list[DecisionOutcome] = field(default_factory=list)

    def observe(self, events: Sequence[BehaviorEvent], outcomes: Sequence[DecisionOutcome]) -> None:
        self.events += events
        self.outcomes += outcomes


class FailingObserver:
    def observe(self, events: Sequence[BehaviorEvent], outcomes: Sequence[DecisionOutcome]) -> None:
        raise RuntimeError("observer bug")
