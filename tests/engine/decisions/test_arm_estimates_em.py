"""The compiled E-step of the arm-rate EM against the numpy expressions it replaced."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from engine.decisions.arm_estimates import (
    _RATE_FLOOR,
    ArmEstimates,
    _add_observed_information,
    _expected_counts,
    _fit_rates,
)


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


def _plain_em(
    mix: NDArray[np.float64],
    arms: NDArray[np.int64],
    outcome: NDArray[np.float64],
    n_arms: int,
    tolerance: float,
) -> tuple[NDArray[np.float64], int]:
    """The unaccelerated EM the fit used before, until no rate moves by ``tolerance``; (rates, steps)."""
    rho, steps = np.full((mix.shape[1], n_arms), 0.5), 0
    while steps < 100_000:
        steps += 1
        successes, failures = _expected_counts(mix, arms, outcome, rho)
        updated = (successes + 1.0) / (successes + failures + 2.0)
        moved, rho = float(np.max(np.abs(updated - rho))), updated
        if moved < tolerance:
            break
    return rho, steps


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(20, 400),
    k=st.integers(1, 5),
    n_arms=st.integers(1, 5),
    concentration=st.sampled_from([0.2, 1.0, 5.0]),
    seed=st.integers(0, 2**31),
)
def test_the_accelerated_fit_reaches_the_plain_em_optimum(
    n: int, k: int, n_arms: int, concentration: float, seed: int
) -> None:
    """SQUAREM changes how fast the rates get there, not where: plain EM run long agrees to 1e-5."""
    rng = np.random.default_rng(seed)
    mix = rng.dirichlet(np.full(k, concentration), size=n)
    arms = rng.integers(0, n_arms, size=n)
    outcome = (rng.random(n) < rng.uniform(0.05, 0.6, size=n_arms)[arms]).astype(np.float64)
    fitted = ArmEstimates.fit(mix, arms, outcome, n_arms, iterations=5000, tolerance=1e-10)
    rates, steps, converged = _fit_rates(
        mix, arms, outcome, np.full((k, n_arms), 0.5), (1.0, 1.0), 5000, 1e-10
    )
    assert converged and fitted.converged and fitted.iterations == steps
    assert np.allclose(_plain_em(mix, arms, outcome, n_arms, 1e-13)[0], rates, atol=1e-6)


def test_the_accelerated_fit_takes_fewer_passes_than_plain_em() -> None:
    """Overlapping mixes make plain EM crawl; the extrapolation gets as close in a fraction of the passes."""
    rng = np.random.default_rng(11)
    n, k, n_arms = 20_000, 5, 4
    mix = rng.dirichlet(np.full(k, 0.5), size=n)
    arms = rng.integers(0, n_arms, size=n)
    truth = rng.uniform(0.02, 0.4, size=(k, n_arms))
    outcome = (rng.random(n) < np.einsum("ik,ki->i", mix, truth[:, arms])).astype(np.float64)
    rates, steps, converged = _fit_rates(mix, arms, outcome, np.full((k, n_arms), 0.5), (1.0, 1.0), 500, 1e-6)
    plain, plain_steps = _plain_em(mix, arms, outcome, n_arms, 1e-6)
    best, _ = _plain_em(mix, arms, outcome, n_arms, 1e-13)
    assert converged and steps < plain_steps / 1.5
    assert np.max(np.abs(rates - best)) <= np.max(np.abs(plain - best))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 300), k=st.integers(1, 6), n_arms=st.integers(1, 7), seed=st.integers(0, 2**31))
def test_the_compiled_information_equals_the_numpy_sums_per_arm(
    n: int, k: int, n_arms: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    mix = rng.dirichlet(np.full(k, 0.5), size=n) if n else np.zeros((0, k))
    arms = rng.integers(0, n_arms, size=n)
    rates = rng.uniform(0.0, 1.0, size=(k, n_arms))
    rates[0, 0] = 1.0  # a certain rate: its decisions' p is held off 1 as the fit does
    informations = np.zeros((n_arms, k, k))
    _add_observed_information(mix, arms, rates, informations)
    p = np.clip(np.einsum("ik,ki->i", mix, rates[:, arms]), _RATE_FLOOR, 1 - _RATE_FLOOR)
    weight = 1.0 / (p * (1 - p))
    for arm in range(n_arms):
        rows = mix[arms == arm]
        want = (rows * weight[arms == arm, None]).T @ rows
        assert np.allclose(informations[arm], want, rtol=1e-10, atol=1e-12)
