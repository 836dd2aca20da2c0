"""The live vocabulary: what each outcome kind means, and records that are values."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from engine.live.events import BehaviorEvent, DecisionOutcome, OutcomeKind, ServedDecision

NOW = dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("kind", "decision_type", "is_reward"),
    [
        (OutcomeKind.OFFER_SHOWN, "offer", False),
        (OutcomeKind.OFFER_REDEEMED, "offer", True),
        (OutcomeKind.LAYOUT_SHOWN, "layout", False),
        (OutcomeKind.LAYOUT_CONVERTED, "layout", True),
    ],
)
def test_each_outcome_kind_names_its_decision_type_and_whether_it_rewards(
    kind: OutcomeKind, decision_type: str, is_reward: bool
) -> None:
    assert kind.decision_type == decision_type
    assert kind.is_reward is is_reward
    assert OutcomeKind(kind.value) is kind  # the wire and the log store the plain value


def test_the_kinds_are_exactly_the_four_wire_values() -> None:
    assert [k.value for k in OutcomeKind] == [
        "offer_shown",
        "offer_redeemed",
        "layout_shown",
        "layout_converted",
    ]
    assert OutcomeKind.OFFER_REDEEMED == "offer_redeemed"  # usable wherever a string is expected
    with pytest.raises(ValueError):
        OutcomeKind("offer_clicked")


def test_optional_fields_default_to_unknown_and_no_revenue() -> None:
    event = BehaviorEvent("e1", "c1", "i1", "view", NOW)
    assert (event.price_paid, event.discount, event.channel, event.device) == (None, None, None, None)
    outcome = DecisionOutcome("o1", "d1", "c1", OutcomeKind.OFFER_SHOWN, NOW)
    assert (outcome.arm_id, outcome.revenue) == (None, 0.0)
    served = ServedDecision("d1", "c1", NOW, "weekday", "offer", "free_shipping", 0.25, (("p0", 1.0),))
    assert (served.journey_stage, served.experiment_arm, served.model_version) == ("", "", "")


def test_records_are_frozen_hashable_values() -> None:
    event = BehaviorEvent("e1", "c1", "i1", "purchase", NOW, price_paid=9.5, discount=0.1)
    same = BehaviorEvent("e1", "c1", "i1", "purchase", NOW, price_paid=9.5, discount=0.1)
    assert event == same and hash(event) == hash(same)
    assert event != dataclasses.replace(event, price_paid=10.0)
    served = ServedDecision("d1", "c1", NOW, "weekday", "layout", "v1", 0.5, (("p0", 0.7), ("p1", 0.3)))
    assert len({served, dataclasses.replace(served)}) == 1  # persona_mix is a tuple, so it hashes
    outcome = DecisionOutcome("o1", "d1", "c1", OutcomeKind.LAYOUT_CONVERTED, NOW, "v1", 12.0)
    for record, field in ((event, "item_id"), (served, "propensity"), (outcome, "revenue")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(record, field, None)
