"""check_numeric_settings: bools, non-finite and non-numbers fail whatever the range says."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.numeric_settings import check_numeric_settings


@dataclass(frozen=True)
class Knobs:
    rate: object = 0.5
    count: object = 3


def check(knobs: Knobs) -> None:
    """The checks a config's ``__post_init__`` would run; the range test only for real numbers."""
    rate, count = knobs.rate, knobs.count
    number = (int, float)
    check_numeric_settings(
        knobs,
        [
            ("rate", isinstance(rate, number) and 0 < rate < 1, "in (0, 1)"),
            ("count", isinstance(count, number) and count >= 1, "an integer >= 1"),
        ],
    )


@pytest.mark.parametrize("rate", [0.5, 1e-9, 0.999])
@pytest.mark.parametrize("count", [1, 7, 2.0])
def test_values_in_range_pass(rate: float, count: float) -> None:
    check(Knobs(rate, count))


@pytest.mark.parametrize(
    ("rate", "shown"),
    [
        (True, "True"),
        (math.nan, "nan"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        ("0.5", "'0.5'"),
        (None, "None"),
        (0.0, "0.0"),
        (1.5, "1.5"),
    ],
)
def test_a_bad_value_is_refused_with_owner_field_requirement_and_value(rate: object, shown: str) -> None:
    with pytest.raises(ValueError) as raised:
        check(Knobs(rate=rate))
    assert str(raised.value) == f"Knobs.rate must be in (0, 1), got {shown}"


def test_a_bool_fails_even_when_the_range_check_says_ok() -> None:
    assert True >= 1  # so the range check alone would let it through
    with pytest.raises(ValueError, match=r"^Knobs\.count must be an integer >= 1, got True$"):
        check(Knobs(count=True))


def test_the_first_failing_field_is_the_one_named() -> None:
    with pytest.raises(ValueError, match=r"^Knobs\.rate "):
        check(Knobs(rate=2.0, count=0))
    with pytest.raises(ValueError, match=r"^Knobs\.count must be an integer >= 1, got 0$"):
        check(Knobs(rate=0.5, count=0))


def test_the_range_verdict_is_the_callers_and_no_checks_pass_anything() -> None:
    with pytest.raises(ValueError, match=r"^Knobs\.rate must be whatever, got 0\.5$"):
        check_numeric_settings(Knobs(), [("rate", False, "whatever")])
    check_numeric_settings(Knobs(rate=math.nan), [])


# Integers of any size (code and flags can pass more than TOML's 64 bits; they are finite).
@given(st.floats(allow_nan=False, allow_infinity=False) | st.integers())
def test_every_finite_number_passes_when_in_range(value: float) -> None:
    check_numeric_settings(Knobs(rate=value), [("rate", True, "anything")])


def test_numpy_floats_count_as_numbers_and_their_nan_is_refused() -> None:
    check_numeric_settings(Knobs(rate=np.float64(0.25)), [("rate", True, "in (0, 1)")])
    with pytest.raises(ValueError, match=r"^Knobs\.rate must be in \(0, 1\), got "):
        check_numeric_settings(Knobs(rate=np.float64("nan")), [("rate", True, "in (0, 1)")])


def test_numpy_integers_count_as_numbers_and_numpy_bools_do_not() -> None:
    check_numeric_settings(Knobs(count=np.int64(14)), [("count", True, "an integer >= 1")])
    with pytest.raises(ValueError, match=r"^Knobs\.count must be an integer >= 1, got "):
        check_numeric_settings(Knobs(count=np.bool_(True)), [("count", True, "an integer >= 1")])
