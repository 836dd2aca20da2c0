from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.data.id_map import IdMap
from engine.decisions.arm_estimates import ArmEstimateError, ArmEstimates, _first_row_off_simplex

# True response rates: 5 personas x 6 arms, each persona with its own favourite arm.
RHO = np.array(
    [
        [0.30, 0.05, 0.10, 0.08, 0.04, 0.15],
        [0.06, 0.35, 0.08, 0.12, 0.10, 0.05],
        [0.08, 0.10, 0.40, 0.05, 0.06, 0.12],
        [0.12, 0.06, 0.05, 0.30, 0.10, 0.20],
        [0.04, 0.15, 0.10, 0.06, 0.45, 0.08],
    ]
)
K, A = RHO.shape


def simulate(n: int, seed: int, concentration: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mixed customers (Dirichlet mixes), uniformly logged arms, outcomes from sum_k m_k rho[k, a]."""
    rng = np.random.default_rng(seed)
    mix = rng.dirichlet(np.full(K, concentration), size=n)
    arms = rng.integers(0, A, size=n)
    outcome = (rng.random(n) < (mix * RHO[:, arms].T).sum(axis=1)).astype(np.float64)
    return mix, arms, outcome


@pytest.fixture(scope="module")
def fitted_logs() -> list[ArmEstimates]:
    """Four independent simulated logs of 20k decisions each."""
    arm_ids = [f"offer_{a}" for a in range(A)]
    return [ArmEstimates.fit(*simulate(20_000, seed=seed), A, arm_ids=arm_ids) for seed in (7, 8, 9, 10)]


@pytest.fixture(scope="module")
def fitted(fitted_logs: list[ArmEstimates]) -> ArmEstimates:
    return fitted_logs[0]


def test_posterior_means_recover_true_rates(fitted: ArmEstimates) -> None:
    # 20k decisions over 6 arms leave ~3300 per arm, shared by 5 personas through Dirichlet(0.5) mixes:
    # the posterior sd per rate is 0.019-0.029 here. Over 40 simulated logs the largest error was
    # 0.067 and the largest |error| / sd was 2.8, so 4 sd and a mean error of 0.035 leave room for noise
    # while still failing for a fit that ignores the mixes (attributing every outcome to the dominant
    # persona biases rates by ~0.05-0.1) or confuses personas.
    assert fitted.converged
    error = fitted.mean() - RHO
    sd = np.sqrt(
        fitted.alpha * fitted.beta / ((fitted.alpha + fitted.beta) ** 2 * (fitted.alpha + fitted.beta + 1))
    )
    assert np.abs(error).mean() < 0.035
    assert np.all(np.abs(error) < 4 * sd), np.abs(error) / sd
    # each persona's best arm is found
    np.testing.assert_array_equal(fitted.mean().argmax(axis=1), RHO.argmax(axis=1))


def test_credible_intervals_cover_most_true_values(fitted_logs: list[ArmEstimates]) -> None:
    # The 30 rates of one log share its decisions, so one log's coverage is noisy: over 40 simulated
    # logs the 90% intervals covered 67%-100% of the rates (mean 90.6%). Pooled over 4 logs the minimum
    # was 82.5%, while Beta(alpha0 + expected successes, beta0 + expected failures) without the
    # information correction reached at most 72% (mean 65%), so 78% tells the two apart.
    def coverage(level: float) -> float:
        covered = []
        for estimates in fitted_logs:
            low, high = estimates.credible_interval(level)
            covered.append((low <= RHO) & (high >= RHO))
        return float(np.mean(covered))

    assert coverage(0.9) >= 0.78
    assert coverage(0.99) >= 0.9


def test_pure_customers_give_plain_beta_counts() -> None:
    # With one-hot mixes there is nothing to attribute: alpha - alpha0 and beta - beta0 are the raw
    # success and failure counts of each (persona, arm), up to the tiny share lost to the prior.
    rng = np.random.default_rng(3)
    persona = rng.integers(0, K, size=6000)
    arms = rng.integers(0, A, size=6000)
    outcome = (rng.random(6000) < RHO[persona, arms]).astype(float)
    est = ArmEstimates.fit(np.eye(K)[persona], arms, outcome, A, prior=(2.0, 3.0))
    successes = np.zeros((K, A))
    trials = np.zeros((K, A))
    np.add.at(successes, (persona, arms), outcome)
    np.add.at(trials, (persona, arms), 1.0)
    np.testing.assert_allclose(est.alpha - 2.0, successes, rtol=0.02, atol=0.05)
    np.testing.assert_allclose(est.beta - 3.0, trials - successes, rtol=0.02, atol=0.05)


def test_mixed_customers_widen_intervals_versus_pure_ones() -> None:
    # Same number of decisions, but mixed customers carry less information per decision.
    mixed = ArmEstimates.fit(*simulate(6000, seed=11, concentration=1.0), A)
    pure_mix, arms, outcome = simulate(6000, seed=11, concentration=0.02)
    pure = ArmEstimates.fit(pure_mix, arms, outcome, A)
    assert np.median(mixed.alpha + mixed.beta) < 0.8 * np.median(pure.alpha + pure.beta)


def test_unused_arm_and_absent_persona_stay_at_the_prior() -> None:
    mix = np.tile([0.5, 0.5, 0.0], (200, 1))
    arms = np.zeros(200, dtype=np.int64)
    outcome = np.tile([1.0, 0.0], 100)
    est = ArmEstimates.fit(mix, arms, outcome, 2, prior=(1.0, 4.0))
    np.testing.assert_allclose([est.alpha[2, 0], est.beta[2, 0]], [1.0, 4.0])  # persona 2 never seen
    np.testing.assert_allclose(est.alpha[:, 1], 1.0)  # arm 1 never logged
    np.testing.assert_allclose(est.beta[:, 1], 4.0)


def test_fractional_outcomes_count_as_partial_successes() -> None:
    mix = np.ones((400, 1))
    est = ArmEstimates.fit(mix, np.zeros(400, dtype=np.int64), np.full(400, 0.25), 1)
    np.testing.assert_allclose(est.alpha[0, 0], 1 + 100, rtol=1e-6)
    np.testing.assert_allclose(est.beta[0, 0], 1 + 300, rtol=1e-6)


def test_expected_response_and_thompson_sampling(fitted: ArmEstimates) -> None:
    mix = np.array([0.6, 0.1, 0.1, 0.1, 0.1])
    expected = fitted.expected_response(mix)
    assert expected.shape == (A,)
    np.testing.assert_allclose(expected, mix @ fitted.mean())
    batch = np.stack([mix, np.eye(K)[4]])
    assert fitted.expected_response(batch).shape == (2, A)
    rng = np.random.default_rng(0)
    assert fitted.sample(rng, mix).shape == (A,)
    draws = fitted.sample(rng, batch, n_draws=4000)
    assert draws.shape == (4000, 2, A)
    # the mean of many Thompson draws is the posterior mean, within 4 Monte Carlo standard errors
    standard_error = draws.std(axis=0) / np.sqrt(4000)
    assert np.all(np.abs(draws.mean(axis=0) - fitted.expected_response(batch)) < 4 * standard_error)
    # deterministic given the seed
    np.testing.assert_array_equal(
        fitted.sample(np.random.default_rng(5), mix), fitted.sample(np.random.default_rng(5), mix)
    )


def test_save_load_round_trip(fitted: ArmEstimates, tmp_path: Path) -> None:
    files = fitted.save(tmp_path / "offers")
    assert sorted(p.name for p in files) == ["alpha.npy", "arm_estimates.json", "beta.npy"]
    for path in files:
        if path.suffix == ".npy":
            np.load(path, allow_pickle=False)
    loaded = ArmEstimates.load(tmp_path / "offers")
    assert loaded.arm_ids == fitted.arm_ids and loaded.persona_ids == fitted.persona_ids
    np.testing.assert_array_equal(loaded.alpha, fitted.alpha)
    np.testing.assert_array_equal(loaded.beta, fitted.beta)
    assert (loaded.prior, loaded.iterations, loaded.converged) == (fitted.prior, fitted.iterations, True)
    (tmp_path / "offers" / "beta.npy").unlink()
    with pytest.raises(ArmEstimateError, match=r"missing array file beta\.npy"):
        ArmEstimates.load(tmp_path / "offers")


def test_fit_from_decisions_table_uses_each_contexts_mix() -> None:
    # Customer c1 is a pure persona-0 shopper on weekdays and pure persona-1 on weekends; arm "x"
    # converts on weekdays only, so all of its successes belong to persona 0.
    decisions = pl.DataFrame(
        {
            "decision_id": [f"d{i}" for i in range(8)],
            "customer_id": ["c1"] * 8,
            "context": ["weekday", "weekend_holiday"] * 4,
            "decision_type": ["offer"] * 6 + ["layout"] * 2,
            "arm_id": ["x"] * 6 + ["grid", "grid"],
            "outcome": [1.0, 0.0] * 4,
        }
    )
    mixes = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # (contexts, customers, personas)
    est = ArmEstimates.fit_decisions(
        decisions,
        decision_type="offer",
        arm_ids=["x", "y"],
        customers=IdMap(["c1"], kind="customer"),
        mixes=mixes,
        persona_ids=["saver", "spender"],
    )
    assert est.arm_ids == ("x", "y")
    np.testing.assert_allclose(est.alpha[:, 0], [1 + 3, 1], atol=1e-3)
    np.testing.assert_allclose(est.beta[:, 0], [1, 1 + 3], atol=1e-3)
    with pytest.raises(ArmEstimateError, match=r"unknown offer arm id.*'x'"):
        ArmEstimates.fit_decisions(
            decisions,
            decision_type="offer",
            arm_ids=["y"],
            customers=IdMap(["c1"], kind="customer"),
            mixes=mixes,
            persona_ids=["saver", "spender"],
        )
    with pytest.raises(ArmEstimateError, match=r"unknown customer id.*'c1'"):
        ArmEstimates.fit_decisions(
            decisions,
            decision_type="layout",
            arm_ids=["grid"],
            customers=IdMap(["c2"], kind="customer"),
            mixes=mixes,
            persona_ids=["saver", "spender"],
        )


def test_a_revenue_like_outcome_above_one_counts_as_a_conversion() -> None:
    """The contract lets a decision's outcome exceed 1 (revenue); train stopped on one with "outcome[2] =
    2.0 is not in [0, 1]", naming neither file nor row. It now fits as a conversion, as evaluate-policy
    fits it."""
    decisions = pl.DataFrame(
        {
            "customer_id": ["c1"] * 4,
            "context": ["weekday"] * 4,
            "decision_type": ["offer"] * 4,
            "arm_id": ["x", "x", "y", "y"],
            "outcome": [1.0, 0.0, 1.0, 0.0],
        }
    )
    common: dict[str, Any] = {
        "decision_type": "offer",
        "arm_ids": ["x", "y"],
        "customers": IdMap(["c1"], kind="customer"),
        "mixes": np.array([[[1.0, 0.0]], [[1.0, 0.0]]]),
        "persona_ids": ["saver", "spender"],
    }
    converted = ArmEstimates.fit_decisions(decisions, **common)
    revenue = ArmEstimates.fit_decisions(decisions.with_columns(pl.col("outcome") * 49.5), **common)
    np.testing.assert_array_equal(revenue.alpha, converted.alpha)
    np.testing.assert_array_equal(revenue.beta, converted.beta)


def test_customer_rows_looked_up_by_the_caller_give_the_same_fit() -> None:
    """Training looks each decision's customer up once for the whole log; the fit must not change."""
    rng = np.random.default_rng(3)
    n, customers = 400, IdMap([f"c{i}" for i in range(30)], kind="customer")
    rows = rng.integers(0, 30, size=n)
    decisions = pl.DataFrame(
        {
            "customer_id": [f"c{i}" for i in rows],
            "context": rng.choice(["weekday", "weekend_holiday"], size=n).tolist(),
            "decision_type": rng.choice(["offer", "layout"], size=n).tolist(),
            "arm_id": rng.choice(["x", "y"], size=n).tolist(),
            "outcome": (rng.random(n) < 0.3).astype(float),
        }
    )
    mixes = rng.dirichlet(np.ones(3), size=(2, 30))
    common = {"decision_type": "offer", "arm_ids": ["x", "y"], "customers": customers, "mixes": mixes}
    looked_up = ArmEstimates.fit_decisions(decisions, persona_ids=["a", "b", "c"], **common)
    given = ArmEstimates.fit_decisions(decisions, persona_ids=["a", "b", "c"], customer_rows=rows, **common)
    np.testing.assert_array_equal(given.alpha, looked_up.alpha)
    np.testing.assert_array_equal(given.beta, looked_up.beta)
    with pytest.raises(ArmEstimateError, match=r"customer_rows has shape \(3,\), expected \(400,\)"):
        ArmEstimates.fit_decisions(decisions, persona_ids=["a", "b", "c"], customer_rows=rows[:3], **common)
    with pytest.raises(ArmEstimateError, match="customer_rows must be indices into the 30 customers"):
        ArmEstimates.fit_decisions(
            decisions, persona_ids=["a", "b", "c"], customer_rows=np.full(n, 30), **common
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mix": np.array([[0.5, 0.6]])}, r"mix row 0 is not on the simplex"),
        ({"arm_index": np.array([3])}, r"arm_index\[0\] = 3 is outside \[0, 2\)"),
        ({"outcome": np.array([1.5])}, r"outcome\[0\] = 1.5 is not in \[0, 1\]"),
        ({"prior": (0.0, 1.0)}, "prior must be two positive numbers"),
        ({"arm_ids": ["only_one"]}, "1 arm_ids for n_arms=2"),
    ],
)
def test_invalid_inputs_are_named(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {
        "mix": np.array([[0.5, 0.5]]),
        "arm_index": np.array([0]),
        "outcome": np.array([1.0]),
        "n_arms": 2,
    }
    args.update(kwargs)
    with pytest.raises(ArmEstimateError, match=message):
        ArmEstimates.fit(**args)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 6),
    st.lists(
        st.sampled_from([0.0, 0.1, 0.2, 0.25, 0.5, 1.0, -0.1, 1.5, float("nan"), float("inf")]),
        min_size=1,
        max_size=60,
    ),
)
def test_the_first_row_off_the_simplex_is_the_one_numpy_finds(k: int, cells: list[float]) -> None:
    """The compiled one-pass check flags the same first row as the rule written with numpy arrays."""
    n = max(1, len(cells) // k)
    rows = np.resize(np.asarray(cells), (n, k))
    rows[n // 2] = np.full(k, 1.0 / k)  # a valid row among them
    finite = np.all(np.isfinite(rows) & (rows >= 0), axis=1)
    with np.errstate(invalid="ignore"):
        bad = ~finite | (np.abs(rows.sum(axis=1) - 1.0) > 1e-6)
    want = int(np.flatnonzero(bad)[0]) if bad.any() else -1
    assert _first_row_off_simplex(rows, 1e-6) == want
