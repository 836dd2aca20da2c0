"""Paired bootstrap: known answers, coverage of a known mean difference, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.paired_bootstrap import paired_bootstrap


def test_a_constant_difference_has_a_zero_width_interval() -> None:
    base = np.random.default_rng(1).random(200)
    result = paired_bootstrap(base + 0.1, base)
    assert result.mean == pytest.approx(0.1)
    assert result.low == pytest.approx(0.1) and result.high == pytest.approx(0.1)
    assert result.n == 200


def test_pairing_removes_the_spread_shared_by_both_figures() -> None:
    """Customers differ a lot, the change helps each a little: the paired interval is tight and above 0."""
    rng = np.random.default_rng(2)
    customers = rng.random(500) * 10
    result = paired_bootstrap(customers + 0.05 + rng.normal(0, 0.01, 500), customers)
    assert 0.04 < result.low < 0.05 < result.high < 0.06


def test_interval_matches_the_normal_approximation_of_a_mean() -> None:
    rng = np.random.default_rng(3)
    difference = rng.normal(0.2, 1.0, 2000)
    result = paired_bootstrap(difference, np.zeros(2000), resamples=4000)
    half_width = 1.96 * difference.std() / math.sqrt(2000)
    assert result.low == pytest.approx(difference.mean() - half_width, abs=0.01)
    assert result.high == pytest.approx(difference.mean() + half_width, abs=0.01)


def test_same_seed_same_interval_and_few_pairs_are_handled() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.random(50), rng.random(50)
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    one = paired_bootstrap(np.array([0.3]), np.array([0.1]))
    assert one.low == one.high == pytest.approx(0.2)
    assert math.isnan(paired_bootstrap(np.array([]), np.array([])).mean)


def test_unpaired_input_is_refused() -> None:
    with pytest.raises(ValueError, match="one length"):
        paired_bootstrap(np.zeros(3), np.zeros(4))
