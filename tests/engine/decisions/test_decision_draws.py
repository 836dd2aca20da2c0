"""Decision draws: replayable from the id alone, uniform, and exploring with exactly the logged odds."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from scipy import stats

from engine.decisions.arm_estimates import ArmEstimates
from engine.decisions.decision_draws import DecisionDraws, new_decision_id
from engine.decisions.decision_policy import DecisionPolicy, PolicyMode

# A fixed set of ids (UUID5s, so the test never depends on a random source) for the statistics.
IDS = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"persona-engine/decision/{i}")) for i in range(10_000)]


def test_the_same_id_and_stream_always_give_the_same_draws() -> None:
    first = DecisionDraws("d-1", "offer")
    again = DecisionDraws("d-1", "offer")
    # Past one block of eight words, so the counter's later blocks are replayed too.
    assert [first.random() for _ in range(20)] == [again.random() for _ in range(20)]
    assert DecisionDraws("d-1", "offer").integers(7) == DecisionDraws("d-1", "offer").integers(7)
    assert (
        DecisionDraws("d-1", "offer").generator().random(3).tolist()
        == DecisionDraws("d-1", "offer").generator().random(3).tolist()
    )


def test_ids_and_streams_give_different_draws() -> None:
    offer = [DecisionDraws("d-1", "offer").random() for _ in range(1)]
    assert offer != [DecisionDraws("d-1", "layout").random()]
    assert offer != [DecisionDraws("d-2", "offer").random()]
    assert len({DecisionDraws(i, "offer").random() for i in IDS[:1000]}) == 1000


def test_draws_are_uniform_over_many_ids() -> None:
    values = np.array([DecisionDraws(i, "offer").random() for i in IDS])
    assert values.min() >= 0.0 and values.max() < 1.0
    assert stats.kstest(values, "uniform").pvalue > 1e-3
    # the second word of a stream is uniform too, and not correlated with the first
    pairs = [(d.random(), d.random()) for d in (DecisionDraws(i, "offer") for i in IDS)]
    first, second = np.array(pairs).T
    assert stats.kstest(second, "uniform").pvalue > 1e-3
    assert abs(np.corrcoef(first, second)[0, 1]) < 4 / np.sqrt(len(IDS))
    counts = np.bincount([DecisionDraws(i, "layout").integers(5) for i in IDS], minlength=5)
    assert counts.size == 5
    assert stats.chisquare(counts).pvalue > 1e-3
    with pytest.raises(ValueError, match="high"):
        DecisionDraws("d", "offer").integers(0)


def test_a_stream_name_must_fit_blake2b_personalisation() -> None:
    with pytest.raises(ValueError, match="longer than 16"):
        DecisionDraws("d", "a-very-long-stream-name")


def test_new_ids_are_uuid4_strings() -> None:
    assert uuid.UUID(new_decision_id()).version == 4


PERSONAS = ("a", "b")
ARMS = ("x", "y", "z", "w")
MEANS = np.array([[0.3, 0.1, 0.2, 0.05], [0.1, 0.4, 0.1, 0.05]])
ESTIMATES = ArmEstimates(ARMS, PERSONAS, MEANS * 50, (1 - MEANS) * 50)


def test_epsilon_greedy_choices_over_many_ids_match_their_propensities() -> None:
    """Per position the policy explores with probability epsilon, uniformly over the arms left; the
    observed frequencies of the first and second offers over 10,000 ids match the propensities the
    policy reports (chi-square), and each logged propensity is the exact one."""
    policy = DecisionPolicy.for_offers(ESTIMATES, mode=PolicyMode.EPSILON_GREEDY, epsilon=0.3)
    mix = np.array([0.6, 0.4])
    eligible = np.array([True, True, True, False])
    ranked = [policy.rank_offers(mix, eligible, 2, DecisionDraws(i, "offer")) for i in IDS]
    pi = policy.propensities(mix, eligible)
    first = np.bincount([ARMS.index(r[0].arm_id) for r in ranked], minlength=4)
    assert first[3] == 0
    assert stats.chisquare(first[:3], pi[:3] * len(IDS)).pvalue > 1e-3
    for arm in range(3):
        logged = {r[0].propensity for r in ranked if r[0].arm_id == ARMS[arm]}
        assert len(logged) == 1 and logged.pop() == pytest.approx(pi[arm], abs=1e-15)
    # Second position, given the greedy first: the best of the two left with 1 - eps + eps / 2.
    greedy = int(np.argmax(np.where(eligible, mix @ MEANS, -np.inf)))
    after_greedy = [r[1] for r in ranked if r[0].arm_id == ARMS[greedy]]
    left = [a for a in range(3) if a != greedy]
    best_left = max(left, key=lambda a: float(mix @ MEANS[:, a]))
    expected = np.array([0.7 + 0.15 if a == best_left else 0.15 for a in left])
    observed = np.array([sum(r.arm_id == ARMS[a] for r in after_greedy) for a in left])
    assert stats.chisquare(observed, expected * len(after_greedy)).pvalue > 1e-3
    logged = {r.propensity for r in after_greedy if r.arm_id == ARMS[best_left]}
    assert len(logged) == 1 and logged.pop() == pytest.approx(0.85)


def test_the_same_id_always_makes_the_same_choice() -> None:
    policy = DecisionPolicy.for_offers(ESTIMATES, mode=PolicyMode.EPSILON_GREEDY, epsilon=0.5)
    mix = np.array([0.5, 0.5])
    for decision_id in IDS[:200]:
        once = policy.rank_offers(mix, np.ones(4, dtype=bool), 3, DecisionDraws(decision_id, "offer"))
        again = policy.rank_offers(mix, np.ones(4, dtype=bool), 3, DecisionDraws(decision_id, "offer"))
        assert once == again


def test_thompson_mode_draws_from_the_decisions_own_generator() -> None:
    policy = DecisionPolicy.for_offers(ESTIMATES, mode=PolicyMode.THOMPSON, thompson_draws=100)
    mix = np.array([0.5, 0.5])
    chosen = [policy.rank_offers(mix, np.ones(4, dtype=bool), 2, DecisionDraws(i, "offer")) for i in IDS[:50]]
    assert chosen == [
        policy.rank_offers(mix, np.ones(4, dtype=bool), 2, DecisionDraws(i, "offer")) for i in IDS[:50]
    ]
    assert len({tuple(r.arm_id for r in ranking) for ranking in chosen}) > 1
