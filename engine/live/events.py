"""What arrives live from a shop's backend, and what the server decided: the vocabulary of the live loop.

The event log, the live customer state, the online bandits and the experiment reports all consume the
same few record types. They are plain frozen values in the domain core so that each consumer can be
tested without a server, and so that the gRPC layer has exactly one shape to translate into.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True)
class BehaviorEvent:
    """One row of the ``events`` table (engine/data/contract.py), received live rather than from a file."""

    event_id: str
    customer_id: str
    item_id: str
    event_type: str  # one of data_contract.EVENT_TYPES
    timestamp: dt.datetime  # timezone-aware, UTC
    price_paid: float | None = None
    discount: float | None = None
    channel: str | None = None
    device: str | None = None


class OutcomeKind(StrEnum):
    """What a customer did with a served decision; ``*_shown`` confirms exposure, the others are rewards."""

    OFFER_SHOWN = "offer_shown"
    OFFER_REDEEMED = "offer_redeemed"
    LAYOUT_SHOWN = "layout_shown"
    LAYOUT_CONVERTED = "layout_converted"

    @property
    def decision_type(self) -> str:
        return "offer" if self.value.startswith("offer") else "layout"

    @property
    def is_reward(self) -> bool:
        return not self.value.endswith("_shown")


@dataclass(frozen=True)
class DecisionOutcome:
    """An outcome reported for a decision the server returned; the decision id ties it to the arm served."""

    event_id: str
    decision_id: str
    customer_id: str
    kind: OutcomeKind
    timestamp: dt.datetime  # timezone-aware, UTC
    arm_id: str | None = None  # the offer or variant; None when the reporter leaves it to the decision log
    revenue: float = 0.0


@dataclass(frozen=True)
class ServedDecision:
    """One offer or layout choice as served: enough to learn from it online and to evaluate policies later.

    The fields are those of the ``decisions`` table (context, arm, propensity) plus what the choice was
    conditioned on, because off-policy evaluation of another policy needs the same inputs.
    """

    decision_id: str
    customer_id: str
    timestamp: dt.datetime
    context: str  # shopping context, e.g. weekday or weekend_holiday
    decision_type: str  # "offer" or "layout"
    arm_id: str
    propensity: float  # probability the policy gave this arm, in (0, 1]
    persona_mix: tuple[tuple[str, float], ...]
    journey_stage: str = ""
    experiment_arm: str = ""
    model_version: str = ""


class LiveEventObserver(Protocol):
    """Anything that learns from accepted traffic (live customer state, online bandits, metrics).

    Called after the batch is durable in the event log, with only the newly accepted records (retried
    duplicates are filtered out before), so an observer never counts an event twice.
    """

    def observe(self, events: Sequence[BehaviorEvent], outcomes: Sequence[DecisionOutcome]) -> None: ...
