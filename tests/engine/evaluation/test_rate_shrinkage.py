"""Empirical-Bayes shrinkage of cell rates: the fitted prior's centre and strength, and the shrunk rates."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.evaluation.rate_shrinkage import MAX_STRENGTH, BetaPrior, fit_beta_prior


def test_rare_outcomes_in_small_cells_are_pulled_to_the_overall_rate() -> None:
    # 240 cells of 40 trials at one true rate of 0.4%: differences between cells are chance alone
    rng = np.random.default_rng(0)
    trials = np.full(240, 40.0)
    successes = rng.binomial(40, 0.004, size=240).astype(float)
    prior = fit_beta_prior(successes, trials)
    rates = prior.rates(successes, trials)
    assert prior.mean == pytest.approx(successes.sum() / trials.sum(), rel=0.05)
    assert prior.strength > 1_000  # near complete pooling
    assert rates.mean() == pytest.approx(0.004, rel=0.5)
    # the Beta(1, 1) smoothing this replaces predicts an order of magnitude more
    assert ((successes + 1) / (trials + 2)).mean() > 5 * rates.mean()


def test_cells_that_truly_differ_keep_their_own_rates() -> None:
    trials = np.full(20, 5_000.0)
    true = np.where(np.arange(20) % 2 == 0, 0.01, 0.2)
    successes = np.round(true * trials)
    prior = fit_beta_prior(successes, trials)
    assert prior.strength < 100
    assert prior.rates(successes, trials) == pytest.approx(true, rel=0.02)


def test_degenerate_inputs_still_give_a_prior() -> None:
    assert fit_beta_prior([0.0, 0.0], [10.0, 10.0]).mean < 0.05  # no success anywhere
    assert fit_beta_prior([], []).strength > 0  # no cells
    assert fit_beta_prior([3.0], [4.0]).strength == pytest.approx(1.0)  # one cell: no spread to learn
    with pytest.raises(ValueError, match="successes <= trials"):
        fit_beta_prior([5.0], [4.0])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), min_size=1, max_size=30))
def test_shrunk_rates_lie_between_the_cell_rate_and_the_prior_mean(cells: list[tuple[int, int]]) -> None:
    successes = np.array([min(s, t) for s, t in cells], dtype=float)
    trials = np.array([t for _, t in cells], dtype=float)
    prior = fit_beta_prior(successes, trials)
    assert 0 < prior.strength <= MAX_STRENGTH * 1.01
    rates = prior.rates(successes, trials)
    raw = np.divide(successes, trials, out=np.full_like(trials, prior.mean), where=trials > 0)
    low, high = np.minimum(raw, prior.mean), np.maximum(raw, prior.mean)
    assert ((rates >= low - 1e-9) & (rates <= high + 1e-9)).all()
    assert isinstance(BetaPrior(1.0, 1.0).rates([1.0], [2.0]), np.ndarray)
