"""The compiled E-step of the arm-rate EM against the numpy expressions it replaced."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from engine.decisions.arm_estimates import _RATE_FLOOR, _expected_counts


def _numpy_expected_counts(
    mix: NDArray[np.float64], arms: NDArray[np.int64], outcome: NDArray[np.float64], rho: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    n = mix.shape[0]
    by_arm = sp.csr_matrix((np.ones(n), (arms, np.arange(n))), shape=(rho.shape[1], n))
    rates = np.clip(rho, _RATE_FLOOR, 1 - _RATE_FLOOR).T[arms]
    joint_success = mix * rates
    p_success = joint_success.sum(axis=1)
    success_share = joint_success * (outcome / p_success)[:, None]
    failure_share = (mix - joint_success) * ((1 - outcome) / (1 - p_success))[:, None]
    return np.asarray((by_arm @ success_share).T), np.asarray((by_arm @ failure_share).T)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 300),
    k=st.integers(1, 6),
    n_arms=st.integers(1, 7),
    fractional=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_the_compiled_step_equals_the_numpy_step(
    n: int, k: int, n_arms: int, fractional: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    mix = rng.dirichlet(np.full(k, 0.5), size=n) if n else np.zeros((0, k))
    arms = rng.integers(0, n_arms, size=n)
    outcome = rng.random(n) if fractional else (rng.random(n) < 0.3).astype(np.float64)
    rho = rng.random((k, n_arms))
    rho[0, 0] = 0.0  # clipped to the floor, as the EM's rates never are exactly 0 or 1
    successes, failures = _expected_counts(mix, arms, outcome, rho)
    want_successes, want_failures = _numpy_expected_counts(mix, arms, outcome, rho)
    assert successes.shape == failures.shape == (k, n_arms)
    assert np.allclose(successes, want_successes, rtol=1e-12, atol=1e-12)
    assert np.allclose(failures, want_failures, rtol=1e-12, atol=1e-12)
    # every decision's whole mix goes to its arm: successes + failures per arm = its mixes' sum
    assert np.allclose((successes + failures).sum(axis=0), np.bincount(arms, minlength=n_arms))


def test_a_large_log_counted_in_parts_on_threads_equals_the_numpy_step() -> None:
    """Above the part size the log is split across threads; the sums must not change beyond rounding."""
    rng = np.random.default_rng(5)
    n, k, arms_count = 130_000, 4, 6
    mix = rng.dirichlet(np.ones(k), size=n)
    arms = rng.integers(0, arms_count, size=n)
    outcome = (rng.random(n) < 0.3).astype(np.float64)
    rho = rng.uniform(0.05, 0.6, size=(k, arms_count))
    successes, failures = _expected_counts(mix, arms, outcome, rho)
    want_successes, want_failures = _numpy_expected_counts(mix, arms, outcome, rho)
    assert np.allclose(successes, want_successes, rtol=1e-10) and np.allclose(
        failures, want_failures, rtol=1e-10
    )
    again = _expected_counts(mix, arms, outcome, rho)
    assert np.array_equal(again[0], successes) and np.array_equal(
        again[1], failures
    )  # same parts, same order
