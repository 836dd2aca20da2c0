from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.models.persona_attribution import attributed_counts, membership_counts, smoothed_distributions
from tests.engine.models.test_popularity import SHOP


def test_zero_steps_are_the_membership_counts() -> None:
    seen = sp.csr_matrix(SHOP.interactions > 0, dtype=np.float64)
    np.testing.assert_array_equal(
        attributed_counts(seen, SHOP.user_mix, 0), membership_counts(seen, SHOP.user_mix)
    )


def test_given_starting_counts_are_used_as_they_are() -> None:
    # a distributed engine sums the membership counts elsewhere and hands them over
    seen = sp.csr_matrix(SHOP.interactions > 0, dtype=np.float64)
    start = membership_counts(seen, SHOP.user_mix)
    np.testing.assert_allclose(
        attributed_counts(seen, SHOP.user_mix, 3, start),
        attributed_counts(seen, SHOP.user_mix, 3),
        rtol=1e-12,
    )


def test_negative_steps_are_refused() -> None:
    seen = sp.csr_matrix(SHOP.interactions > 0, dtype=np.float64)
    with pytest.raises(ValueError, match="iterations"):
        attributed_counts(seen, SHOP.user_mix, -1)


def test_smoothing_leaves_a_persona_without_customers_at_global_popularity() -> None:
    counts = np.array([[3.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    share = np.array([0.5, 0.25, 0.25])
    smoothed = smoothed_distributions(counts, share, prior_strength=2.0)
    np.testing.assert_allclose(smoothed[0], (counts[0] + 2.0 * share) / 6.0)
    np.testing.assert_allclose(smoothed[1], share)


def test_attribution_keeps_each_interaction_worth_one_vote() -> None:
    seen = sp.csr_matrix(SHOP.interactions > 0, dtype=np.float64)
    for iterations in (0, 1, 5):
        counts = attributed_counts(seen, SHOP.user_mix, iterations)
        assert counts.sum() == pytest.approx(seen.nnz)
        np.testing.assert_allclose(counts.sum(axis=0), np.asarray(seen.sum(axis=0)).ravel(), rtol=1e-9)


def _interaction_log_likelihood(seen: sp.csr_matrix, mix: np.ndarray, counts: np.ndarray) -> float:
    distribution = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1e-300)
    rows, cols = seen.nonzero()
    return float(np.log(np.einsum("nk,kn->n", mix[rows], distribution[:, cols])).sum())


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=2, max_value=8),
    st.integers(min_value=2, max_value=9),
    st.integers(min_value=2, max_value=4),
    st.integers(min_value=0, max_value=2**31 - 1),
)
def test_each_attribution_step_raises_the_likelihood_of_the_interactions(
    n_users: int, n_items: int, n_personas: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < 0.5).astype(np.float64)
    dense[np.arange(n_users), rng.integers(0, n_items, n_users)] = 1.0  # everyone has an interaction
    seen = sp.csr_matrix(dense)
    mix = rng.dirichlet(np.full(n_personas, 0.5), size=n_users)
    likelihoods = [
        _interaction_log_likelihood(seen, mix, attributed_counts(seen, mix, steps)) for steps in range(6)
    ]
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(likelihoods))
