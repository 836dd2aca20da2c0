from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.decisions.arm_estimates import ArmEstimates
from engine.decisions.decision_draws import DecisionDraws
from engine.decisions.decision_policy import (
    ArmKind,
    DecisionPolicy,
    DecisionPolicyError,
    NoEligibleArmError,
    PolicyMode,
)
from engine.personas.mix import PersonaMix

PERSONAS = ("bargain_hunter", "brand_loyalist", "luxury")
NAMES = ("Bargain Hunter", "Brand Loyalist", "Luxury Enthusiast")
ARMS = ("pct20", "points", "free_ship", "early_access")
# Posterior means (alpha / (alpha + beta)) with 100 pseudo-trials each: every persona has its own best arm.
MEANS = np.array(
    [
        [0.30, 0.05, 0.20, 0.02],
        [0.04, 0.25, 0.10, 0.08],
        [0.02, 0.06, 0.05, 0.40],
    ]
)
ESTIMATES = ArmEstimates(arm_ids=ARMS, persona_ids=PERSONAS, alpha=MEANS * 100, beta=(1 - MEANS) * 100)
COSTS = {"pct20": 9.0, "points": 1.0, "free_ship": 2.0, "early_access": 0.5}


def offer_policy(mode: PolicyMode = PolicyMode.EPSILON_GREEDY, epsilon: float = 0.1) -> DecisionPolicy:
    return DecisionPolicy.for_offers(ESTIMATES, mode=mode, epsilon=epsilon, persona_names=NAMES)


mixes = st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3).filter(lambda w: sum(w) > 1e-3)
masks = st.lists(st.booleans(), min_size=4, max_size=4).filter(any)


@settings(max_examples=150, deadline=None)
@given(
    weights=mixes,
    mask=masks,
    mode=st.sampled_from(list(PolicyMode)),
    epsilon=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_propensities_are_a_distribution_over_eligible_arms_with_a_floor(
    weights: list[float], mask: list[bool], mode: PolicyMode, epsilon: float, seed: int
) -> None:
    mix = np.asarray(weights) / sum(weights)
    eligible = np.asarray(mask)
    policy = DecisionPolicy.for_offers(ESTIMATES, mode=mode, epsilon=epsilon, thompson_draws=200)
    rng = np.random.default_rng(seed)
    pi = policy.propensities(mix, eligible, rng)
    assert pi.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(pi[~eligible] == 0)
    assert np.all(pi[eligible] >= epsilon / eligible.sum() - 1e-12)
    ranked = policy.rank_offers(mix, eligible, n=4, rng=rng)
    chosen = [ARMS.index(r.arm_id) for r in ranked]
    assert len(chosen) == eligible.sum() == len(set(chosen))
    assert all(eligible[chosen])
    assert all(0 < r.propensity <= 1 for r in ranked)


def test_pure_persona_mix_picks_that_personas_best_arm_when_greedy() -> None:
    policy = offer_policy(epsilon=0.0)
    for k, persona in enumerate(PERSONAS):
        mix = PersonaMix.pure(persona, PERSONAS)
        choice = policy.rank_offers(mix, np.ones(4, dtype=bool), n=1, rng=np.random.default_rng(k))[0]
        assert choice.arm_id == ARMS[int(MEANS[k].argmax())]
        assert choice.propensity == 1.0
        assert choice.score == pytest.approx(MEANS[k].max())
    # with exploration the greedy arm keeps 1 - eps + eps/|E|, the others eps/|E|
    pi = offer_policy(epsilon=0.2).propensities(np.array([1.0, 0.0, 0.0]))
    np.testing.assert_allclose(pi, [0.8 + 0.05, 0.05, 0.05, 0.05])


def test_ineligible_best_arm_is_never_chosen() -> None:
    policy = offer_policy(epsilon=0.3)
    mask = np.array([False, True, True, True])  # the bargain hunter's favourite is excluded
    rng = np.random.default_rng(1)
    picks = {policy.rank_offers(np.array([1.0, 0, 0]), mask, 1, rng)[0].arm_id for _ in range(500)}
    assert "pct20" not in picks and picks == {"points", "free_ship", "early_access"}


@pytest.mark.parametrize("mode", list(PolicyMode))
def test_observed_choice_frequencies_match_propensities(mode: PolicyMode) -> None:
    # Thompson calls use few draws here to stay fast; their chosen arm is drawn from their own Monte Carlo
    # estimate, which is unbiased, so frequencies must still match the ideal propensities (taken from a
    # 200k-draw estimate) up to binomial noise.
    policy = DecisionPolicy.for_offers(ESTIMATES, mode=mode, epsilon=0.2, thompson_draws=200)
    reference = DecisionPolicy.for_offers(ESTIMATES, mode=mode, epsilon=0.2, thompson_draws=200_000)
    mix = np.array([0.5, 0.2, 0.3])
    mask = np.array([True, True, True, False])
    rng = np.random.default_rng(42)
    n = 2000
    chosen = [policy.rank_offers(mix, mask, 1, rng)[0] for _ in range(n)]
    pi = reference.propensities(mix, mask, np.random.default_rng(7))
    for a, arm in enumerate(ARMS):
        frequency = sum(c.arm_id == arm for c in chosen) / n
        assert abs(frequency - pi[a]) < 4 * np.sqrt(max(pi[a] * (1 - pi[a]), 1e-4) / n), (
            arm,
            frequency,
            pi[a],
        )
        if mode is PolicyMode.EPSILON_GREEDY:
            # greedy propensities are exact: every logged choice of an arm reports the same value
            np.testing.assert_allclose([c.propensity for c in chosen if c.arm_id == arm], pi[a])


def test_thompson_propensity_error_is_within_the_documented_bound() -> None:
    mix = np.array([0.4, 0.3, 0.3])
    exact = DecisionPolicy.for_offers(ESTIMATES, mode=PolicyMode.THOMPSON, thompson_draws=200_000)
    reference = exact.propensities(mix, rng=np.random.default_rng(0))
    default = offer_policy(mode=PolicyMode.THOMPSON)
    estimates = np.stack([default.propensities(mix, rng=np.random.default_rng(s)) for s in range(30)])
    # documented: standard error <= (1 - eps) * 0.5 / sqrt(2000) ~= 0.010
    assert estimates.std(axis=0).max() <= 0.9 * 0.5 / np.sqrt(2000) * 1.3
    assert np.abs(estimates.mean(axis=0) - reference).max() < 4 * 0.010 / np.sqrt(30) + 0.003


def test_ranking_lists_distinct_arms_with_conditional_propensities() -> None:
    policy = offer_policy(epsilon=0.0)
    ranked = policy.rank_offers(
        np.array([1.0, 0.0, 0.0]), np.ones(4, dtype=bool), n=3, rng=np.random.default_rng(0)
    )
    # greedy on the bargain hunter's rates 0.30, 0.05, 0.20, 0.02: pct20, then free_ship, then points
    assert [r.arm_id for r in ranked] == ["pct20", "free_ship", "points"]
    assert [r.propensity for r in ranked] == [1.0, 1.0, 1.0]
    assert ranked[0].reason == (
        "best expected response for this mix: 30%, "
        "driven by Bargain Hunter (1.00 of mix, 30% as that persona)"
    )
    assert ranked[1].reason.startswith("best remaining expected response for this mix: 20%")
    explored = offer_policy(epsilon=1.0).rank_offers(
        np.array([1.0, 0, 0]), np.ones(4, dtype=bool), n=4, rng=np.random.default_rng(0)
    )
    # pure exploration: 1/4, then 1/3, 1/2, 1 of the arms left
    np.testing.assert_allclose([r.propensity for r in explored], [1 / 4, 1 / 3, 1 / 2, 1])
    assert explored[0].reason.startswith("exploration (epsilon 1.00 over 4 eligible arms); expected response")
    assert (
        len(
            policy.rank_offers(
                np.array([1.0, 0, 0]), np.array([1, 0, 0, 1], dtype=bool), 3, np.random.default_rng(0)
            )
        )
        == 2
    )


def test_reason_names_the_persona_that_drives_the_choice() -> None:
    policy = offer_policy(epsilon=0.0)
    # 0.62 bargain hunter: pct20 = 0.62*0.30 + 0.38*0.04 = 0.2012 beats free_ship 0.62*0.2 + 0.38*0.1 = 0.162
    choice = policy.rank_offers(
        np.array([0.62, 0.38, 0.0]), np.ones(4, dtype=bool), 1, np.random.default_rng(0)
    )[0]
    assert choice.arm_id == "pct20"
    assert choice.reason == (
        "best expected response for this mix: 20%, "
        "driven by Bargain Hunter (0.62 of mix, 30% as that persona)"
    )
    # the driver is the largest contributor, not the dominant persona: with points excluded, early_access
    # wins for 0.7 loyalist / 0.3 luxury (0.7*0.08 + 0.3*0.40 = 0.176), and luxury gives 0.12 of it
    mask = np.array([True, False, True, True])
    driven = policy.rank_offers(np.array([0.0, 0.7, 0.3]), mask, 1, np.random.default_rng(0))[0]
    assert driven.arm_id == "early_access"
    assert driven.reason.endswith("18%, driven by Luxury Enthusiast (0.30 of mix, 40% as that persona)")
    thompson = offer_policy(mode=PolicyMode.THOMPSON, epsilon=0.0)
    reason = thompson.rank_offers(
        np.array([0.0, 0.0, 1.0]), np.ones(4, dtype=bool), 1, np.random.default_rng(0)
    )[0]
    assert reason.arm_id == "early_access"
    assert reason.reason.startswith(
        "Thompson sampling: best in 100% of posterior draws; expected response for this mix: 40%"
    )


def test_net_value_trades_response_against_cost() -> None:
    # pure bargain hunter, value 10 per redemption: pct20 0.30 * (10 - 9) = 0.30,
    # free_ship 0.20 * (10 - 2) = 1.60, points 0.05 * 9 = 0.45, early_access 0.02 * 9.5 = 0.19
    policy = DecisionPolicy.for_offers(
        ESTIMATES, epsilon=0.0, conversion_value=10.0, costs=COSTS, persona_names=NAMES
    )
    choice = policy.rank_offers(np.array([1.0, 0, 0]), np.ones(4, dtype=bool), 1, np.random.default_rng(0))[0]
    assert choice.arm_id == "free_ship"
    assert choice.score == pytest.approx(1.6)
    assert choice.reason == (
        "best expected net value for this mix: 1.60 per decision at 20% response, "
        "driven by Bargain Hunter (1.00 of mix, 20% as that persona)"
    )
    with pytest.raises(DecisionPolicyError, match=r"no cost for offer.*'early_access'"):
        DecisionPolicy.for_offers(
            ESTIMATES, conversion_value=10.0, costs={"pct20": 1.0, "points": 1.0, "free_ship": 1.0}
        )


def test_ties_go_to_the_earliest_arm() -> None:
    flat = ArmEstimates(arm_ids=ARMS, persona_ids=PERSONAS, alpha=np.ones((3, 4)), beta=np.ones((3, 4)))
    policy = DecisionPolicy.for_offers(flat, epsilon=0.0)
    mask = np.array([False, True, True, True])
    assert (
        policy.rank_offers(np.array([0.2, 0.3, 0.5]), mask, 1, np.random.default_rng(0))[0].arm_id == "points"
    )


def test_layouts_and_determinism() -> None:
    layouts = DecisionPolicy.for_layouts(
        ESTIMATES, mode=PolicyMode.THOMPSON, epsilon=0.1, persona_names=NAMES
    )
    mix = PersonaMix.from_mapping({"luxury": 0.7, "brand_loyalist": 0.3}, PERSONAS)
    first = layouts.choose_layout(mix, np.random.default_rng(123))
    assert first == layouts.choose_layout(mix, np.random.default_rng(123))
    assert first.arm_id in ARMS and 0 < first.propensity <= 1
    with pytest.raises(
        DecisionPolicyError, match="rank_offers needs an offer policy; this one chooses layouts"
    ):
        layouts.rank_offers(mix, np.ones(4, dtype=bool), 1, np.random.default_rng(0))
    with pytest.raises(
        DecisionPolicyError, match="choose_layout needs a layout policy; this one chooses offers"
    ):
        offer_policy().choose_layout(mix, np.random.default_rng(0))
    with pytest.raises(DecisionPolicyError, match="conversion_value applies to offers only"):
        DecisionPolicy(ESTIMATES, kind=ArmKind.LAYOUT, conversion_value=1.0, costs=COSTS)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(mixes, st.lists(st.booleans(), min_size=4, max_size=4), st.integers(1, 5)),
        min_size=1,
        max_size=6,
    ),
    mode=st.sampled_from(list(PolicyMode)),
    epsilon=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    valued=st.booleans(),
)
def test_a_batch_ranks_each_row_as_it_would_be_ranked_alone(
    rows: list[tuple[list[float], list[bool], int]], mode: PolicyMode, epsilon: float, valued: bool
) -> None:
    policy = DecisionPolicy.for_offers(
        ESTIMATES,
        mode=mode,
        epsilon=epsilon,
        persona_names=NAMES,
        thompson_draws=100,
        conversion_value=10.0 if valued else None,
        costs=COSTS if valued else None,
    )
    weights = np.array([np.asarray(w) / sum(w) for w, _, _ in rows])
    eligible = np.array([mask for _, mask, _ in rows], dtype=bool)
    ns = [n for _, _, n in rows]
    ids = [f"decision-{i}" for i in range(len(rows))]
    batch = policy.rank_many(weights, eligible, ns, [DecisionDraws(i, "offer") for i in ids])
    for row, ranked in enumerate(batch):
        if not eligible[row].any():
            assert ranked == []  # where one call raises NoEligibleArmError
            continue
        alone = policy.rank_offers(weights[row], eligible[row], ns[row], DecisionDraws(ids[row], "offer"))
        assert ranked == alone
        assert len(ranked) == min(ns[row], int(eligible[row].sum()))


def test_a_batch_of_the_wrong_shape_is_refused() -> None:
    policy = offer_policy()
    draws = [DecisionDraws("a", "offer")]
    with pytest.raises(DecisionPolicyError, match=r"mixes must have shape \(1, 3\)"):
        policy.rank_many(np.ones((1, 2)) / 2, None, [1], draws)
    with pytest.raises(DecisionPolicyError, match=r"eligible must be a boolean array of shape \(1, 4\)"):
        policy.rank_many(np.array([[1.0, 0, 0]]), np.ones((1, 3), dtype=bool), [1], draws)
    with pytest.raises(DecisionPolicyError, match="n must be positive, got 0"):
        policy.rank_many(np.array([[1.0, 0, 0]]), None, [0], draws)


def test_bad_requests_are_named() -> None:
    policy = offer_policy()
    rng = np.random.default_rng(0)
    with pytest.raises(NoEligibleArmError, match="no eligible offer among 4 arms"):
        policy.rank_offers(np.array([1.0, 0, 0]), np.zeros(4, dtype=bool), 1, rng)
    with pytest.raises(DecisionPolicyError, match=r"eligible_mask must be a boolean array of shape \(4,\)"):
        policy.rank_offers(np.array([1.0, 0, 0]), np.ones(3, dtype=bool), 1, rng)
    with pytest.raises(DecisionPolicyError, match=r"mix must have shape \(3,\)"):
        policy.rank_offers(np.array([0.5, 0.5]), np.ones(4, dtype=bool), 1, rng)
    with pytest.raises(DecisionPolicyError, match="mix is over personas"):
        policy.rank_offers(PersonaMix.uniform(("a", "b", "c")), np.ones(4, dtype=bool), 1, rng)
    with pytest.raises(DecisionPolicyError, match="epsilon must be in"):
        offer_policy(epsilon=1.5)
    with pytest.raises(DecisionPolicyError, match="needs a random generator"):
        offer_policy(mode=PolicyMode.THOMPSON).propensities(np.array([1.0, 0, 0]))
