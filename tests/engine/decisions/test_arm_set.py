"""Arm sets: declared arms crossed with positions, logged arms mapped to them, and errors naming rows."""

from __future__ import annotations

import numpy as np
import pytest

from engine.decisions.arm_estimates import ArmEstimates
from engine.decisions.arm_set import ArmSet, ArmSetError


def test_arms_cross_positions_and_logged_pairs_map_to_their_index() -> None:
    arms = ArmSet(("a", "b"), ("1", "2", "3"))
    assert arms.ids == ("a@1", "a@2", "a@3", "b@1", "b@2", "b@3")
    assert arms.index(["b", "a"], ["3", "1"]).tolist() == [5, 0]
    assert arms.base_arm("b@3") == "b"
    assert ArmSet(("a", "b")).index(["b"], None).tolist() == [1]


def test_the_log_infers_sets_in_natural_order() -> None:
    inferred = ArmSet.from_log(["b", "a", "b"], ["10", "9", "1"])
    assert inferred.arm_ids == ("a", "b") and inferred.positions == ("1", "9", "10")
    assert inferred.inferred and inferred.positions_inferred and inferred.source == "the log"


def test_outside_the_set_is_an_error_naming_the_row() -> None:
    arms = ArmSet(("a",), ("1",), source="offers.csv")
    with pytest.raises(
        ArmSetError, match=r"row 7, column 'arm_id': 'z' is not one of the arms from offers\.csv"
    ):
        arms.index(["a", "z"], ["1", "1"], rows=[3, 7])
    with pytest.raises(ArmSetError, match=r"row 1, column 'position': '2'"):
        arms.index(["a"], ["2"])
    with pytest.raises(ArmSetError, match="distinct"):
        ArmSet(("a", "a"))


def test_estimates_per_arm_become_equal_across_positions() -> None:
    alpha = np.array([[2.0, 5.0]])
    estimates = ArmEstimates(("a", "b"), ("p",), alpha, np.array([[8.0, 5.0]]))
    expanded = ArmSet(("b", "a"), ("1", "2")).expand(estimates)
    assert expanded.arm_ids == ("b@1", "b@2", "a@1", "a@2")
    assert expanded.alpha.tolist() == [[5.0, 5.0, 2.0, 2.0]]
    with pytest.raises(ArmSetError, match="no arm 'c'"):
        ArmSet(("c",), ("1",)).expand(estimates)
