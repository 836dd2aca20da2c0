"""Paired bootstrap intervals on cases whose answer is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.evaluation import paired_bootstrap
from engine.evaluation.paired_bootstrap import bootstrap_means, paired_difference


def test_a_constant_difference_has_a_zero_width_interval_whatever_the_users_spread() -> None:
    rng = np.random.default_rng(1)
    b = rng.uniform(0.0, 1.0, size=500)  # users differ a lot from each other
    result = paired_difference(b + 0.1, b, seed=3)
    # pairing cancels the between-user spread: every resample's mean difference is exactly 0.1
    assert result.mean == pytest.approx(0.1)
    assert result.low == pytest.approx(0.1) and result.high == pytest.approx(0.1)
    assert result.excludes_zero


def test_interval_of_a_symmetric_coin_matches_the_normal_approximation() -> None:
    # differences of +1 and -1, half each: mean 0, standard deviation 1, so the 95% interval of the
    # mean of n users is about +-1.96 / sqrt(n)
    n = 10_000
    difference = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    result = paired_difference(difference, np.zeros(n), resamples=4000, seed=7)
    half_width = 1.96 / np.sqrt(n)
    assert result.mean == 0.0
    assert result.low == pytest.approx(-half_width, rel=0.1)
    assert result.high == pytest.approx(half_width, rel=0.1)
    assert not result.excludes_zero


def test_same_seed_same_interval_and_blocks_do_not_change_the_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    a, b = rng.uniform(size=300), rng.uniform(size=300)
    first = paired_difference(a, b, resamples=500, seed=11)
    assert paired_difference(a, b, resamples=500, seed=11) == first
    monkeypatch.setattr(paired_bootstrap, "MAX_CELLS_PER_BLOCK", 7 * 300)  # 7 resamples per block
    assert paired_difference(a, b, resamples=500, seed=11) == first


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60), st.integers(0, 2**31))
def test_bootstrap_means_stay_within_the_values(values: list[float], seed: int) -> None:
    means = bootstrap_means(np.array(values), resamples=50, seed=seed)
    assert means.shape == (50,)
    assert (means >= min(values) - 1e-12).all() and (means <= max(values) + 1e-12).all()


def test_unpaired_or_unscored_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="same users"):
        paired_difference(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        paired_difference(np.array([0.1, np.nan]), np.zeros(2))
    with pytest.raises(ValueError, match="non-empty"):
        paired_difference(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="confidence"):
        paired_difference(np.zeros(2), np.zeros(2), confidence=1.0)
