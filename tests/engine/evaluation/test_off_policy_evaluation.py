"""IPS, SNIPS and DR against closed-form values, and the candidate policies' probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engine.decisions.arm_estimates import ArmEstimates
from engine.decisions.candidate_policy import CandidatePolicy, CandidatePolicyError, PolicyKind
from engine.evaluation.off_policy_evaluation import (
    Estimator,
    OffPolicyEvaluationError,
    doubly_robust,
    effective_sample_size,
    evaluate_policy,
    importance_weights,
    ips,
    snips,
)

rates = arrays(np.float64, st.integers(2, 40), elements=st.floats(0, 1))


def test_closed_form_small_log() -> None:
    # Two decisions: logged with propensities 0.5 and 0.25, the candidate gives those arms 1 and 0.5.
    rewards = np.array([1.0, 0.0])
    weights = importance_weights([0.5, 0.25], [1.0, 0.5])
    assert weights.tolist() == [2.0, 2.0]
    assert ips(rewards, weights).value == pytest.approx(1.0)
    assert snips(rewards, weights).value == pytest.approx(0.5)
    assert effective_sample_size(weights) == pytest.approx(2.0)
    # DR with q(x, a_logged) = 0.5 and q_pi = 0.4: mean(0.4 + 2 * 0.5, 0.4 + 2 * -0.5) = 0.4.
    assert doubly_robust(rewards, weights, [0.5, 0.5], [0.4, 0.4]).value == pytest.approx(0.4)


@settings(max_examples=50, deadline=None)
@given(rates)
def test_on_policy_weights_reduce_every_estimator_to_the_mean_reward(rewards: np.ndarray) -> None:
    weights = np.ones(len(rewards))
    for estimate in (ips(rewards, weights), snips(rewards, weights)):
        assert estimate.value == pytest.approx(rewards.mean())
        assert estimate.ci_low <= estimate.value <= estimate.ci_high
    assert effective_sample_size(weights) == pytest.approx(len(rewards))


@settings(max_examples=50, deadline=None)
@given(rates, st.data())
def test_dr_with_zero_model_is_ips_and_with_exact_model_is_exact(
    rewards: np.ndarray, data: st.DataObject
) -> None:
    n = len(rewards)
    weights = data.draw(arrays(np.float64, n, elements=st.floats(0, 20)))
    zero = np.zeros(n)
    assert doubly_robust(rewards, weights, zero, zero).value == pytest.approx(ips(rewards, weights).value)
    # A reward model that predicts every reward exactly leaves nothing to correct.
    target = data.draw(arrays(np.float64, n, elements=st.floats(0, 1)))
    assert doubly_robust(rewards, weights, rewards, target).value == pytest.approx(target.mean())


@settings(max_examples=50, deadline=None)
@given(rates, st.data())
def test_snips_stays_within_the_reward_range(rewards: np.ndarray, data: st.DataObject) -> None:
    weights = data.draw(arrays(np.float64, len(rewards), elements=st.floats(0.01, 50)))
    value = snips(rewards, weights).value
    assert rewards.min() - 1e-9 <= value <= rewards.max() + 1e-9
    ess = effective_sample_size(weights)
    assert 1 - 1e-9 <= ess <= len(rewards) + 1e-9


def test_estimators_are_unbiased_and_cover_a_known_value_by_simulation() -> None:
    # Logging: arm 0 with 0.8, arm 1 with 0.2; rates 0.1 and 0.6; the candidate always plays arm 1.
    rng = np.random.default_rng(3)
    n, runs = 4_000, 60
    covered = dict.fromkeys(Estimator, 0)
    values: dict[Estimator, list[float]] = {e: [] for e in Estimator}
    for _ in range(runs):
        arm = (rng.random(n) < 0.2).astype(np.int64)
        reward = (rng.random(n) < np.where(arm == 1, 0.6, 0.1)).astype(float)
        propensity = np.where(arm == 1, 0.2, 0.8)
        target = np.tile([0.0, 1.0], (n, 1))
        model = np.tile([0.12, 0.55], (n, 1))  # a slightly wrong reward model
        evaluation = evaluate_policy(reward, propensity, target, arm, model)
        for estimate in evaluation.estimates:
            covered[estimate.estimator] += estimate.covers(0.6)
            values[estimate.estimator].append(estimate.value)
        assert evaluation.effective_sample_size == pytest.approx(arm.sum(), rel=1e-9)
    for estimator in Estimator:
        assert np.mean(values[estimator]) == pytest.approx(0.6, abs=0.01)
        assert covered[estimator] / runs >= 0.85


def test_bad_inputs_name_the_array_and_row() -> None:
    with pytest.raises(OffPolicyEvaluationError, match=r"logging_propensity\[1\]"):
        importance_weights([0.5, 0.0], [1.0, 1.0])
    with pytest.raises(OffPolicyEvaluationError, match="row 0 does not sum to 1"):
        evaluate_policy([1.0], [0.5], [[0.5, 0.4]], np.array([0]))
    with pytest.raises(OffPolicyEvaluationError, match=r"logged_arm\[0\]"):
        evaluate_policy([1.0], [0.5], [[0.5, 0.5]], np.array([2]))


def _estimates() -> ArmEstimates:
    # Persona 0 loves arm 0, persona 1 loves arm 2; confident posteriors.
    alpha = np.array([[90.0, 10.0, 10.0], [10.0, 20.0, 90.0]])
    return ArmEstimates(("a", "b", "c"), ("p0", "p1"), alpha, 100.0 - alpha)


def test_spec_parsing() -> None:
    assert CandidatePolicy.parse("uniform").kind is PolicyKind.UNIFORM
    assert CandidatePolicy.parse("always:b").arm == "b"
    assert CandidatePolicy.parse("epsilon-greedy:0.25").epsilon == 0.25
    assert CandidatePolicy.parse("thompson:50").draws == 50
    for bad in ("random", "always", "epsilon-greedy:2", "thompson:x", "greedy:3"):
        with pytest.raises(CandidatePolicyError):
            CandidatePolicy.parse(bad)


@settings(max_examples=30, deadline=None)
@given(arrays(np.float64, (5, 2), elements=st.floats(0.001, 1)), st.floats(0, 1))
def test_candidate_probabilities_are_distributions(raw: np.ndarray, epsilon: float) -> None:
    mixes = raw / raw.sum(axis=1, keepdims=True)
    arms = ("a", "b", "c")
    for spec in ("uniform", "always:c", "greedy", f"epsilon-greedy:{epsilon}", "thompson:64"):
        probabilities = CandidatePolicy.parse(spec).probabilities(
            arms, mixes, _estimates(), np.random.default_rng(0)
        )
        assert probabilities.shape == (5, 3)
        assert np.allclose(probabilities.sum(axis=1), 1.0)
        assert (probabilities >= 0).all()


def test_greedy_and_thompson_follow_the_mix() -> None:
    mixes = np.array([[1.0, 0.0], [0.0, 1.0]])
    greedy = CandidatePolicy.parse("greedy").probabilities(("a", "b", "c"), mixes, _estimates())
    assert greedy.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    thompson = CandidatePolicy.parse("thompson").probabilities(
        ("a", "b", "c"), mixes, _estimates(), np.random.default_rng(1)
    )
    assert thompson[0, 0] > 0.95 and thompson[1, 2] > 0.95
    eps = CandidatePolicy.parse("epsilon-greedy:0.3").probabilities(("a", "b", "c"), mixes, _estimates())
    assert eps[0].tolist() == pytest.approx([0.8, 0.1, 0.1])
