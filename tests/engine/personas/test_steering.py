"""Steering: a requested mix overrides a known customer's history by the setting, and nothing else does."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.models.base import Recommender, UserBatch
from engine.models.implicit_factors import ImplicitFactorsModel
from engine.models.registry import create_model
from engine.personas.steering import DEFAULT_STEERING, artifact_steering, check_steering, steering_shares
from tests.engine.models.checkerboard import SMALL_CONFIGS, Checkerboard, make_checkerboard

OWN = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5]])
PURE = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])


def test_shares_scale_with_the_distance_from_the_own_mix() -> None:
    shares = steering_shares(PURE, OWN, np.array([True, True, False]), 0.5)
    assert shares is not None
    # distance of (0, 1, 0) from (0.8, 0.1, 0.1) is 0.9; from (0.1, 0.8, 0.1) 0.2; row 3 is not requested
    np.testing.assert_allclose(shares, [0.45, 0.1, 0.0])


def test_no_steering_without_a_request_a_zero_setting_or_the_own_mix() -> None:
    everyone = np.ones(3, dtype=bool)
    assert steering_shares(PURE, OWN, np.zeros(3, dtype=bool), 1.0) is None
    assert steering_shares(PURE, OWN, everyone, 0.0) is None
    assert steering_shares(OWN, OWN, everyone, 1.0) is None  # the customer's own mix given back


@settings(deadline=None)  # timing on a shared machine says nothing about the property
@given(st.floats(0, 1), st.lists(st.floats(0.01, 1), min_size=3, max_size=3))
def test_shares_stay_within_the_setting(setting: float, weights: list[float]) -> None:
    mix = np.tile(np.asarray(weights) / sum(weights), (3, 1))
    shares = steering_shares(mix, OWN, np.ones(3, dtype=bool), setting)
    assert shares is None or ((shares >= 0) & (shares <= setting + 1e-12)).all()


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), True, "0.5"])
def test_bad_settings_are_refused_by_name(bad: object) -> None:
    with pytest.raises(ValueError, match="steering"):
        check_steering(bad)  # type: ignore[arg-type]


def test_artifact_steering_reads_the_config_or_falls_back_to_the_default() -> None:
    assert artifact_steering({"config": {"personas": {"steering": 0.6}}}) == 0.6
    assert artifact_steering({"config": {"personas": {"catalog": "default"}}}) == DEFAULT_STEERING
    assert artifact_steering({}) == DEFAULT_STEERING


@pytest.fixture(scope="module")
def board() -> Checkerboard:
    return make_checkerboard()


@pytest.fixture(scope="module", params=["als", "bpr", "lightfm_hybrid"])
def model(request: pytest.FixtureRequest, board: Checkerboard) -> Recommender:
    fitted = create_model(request.param, **SMALL_CONFIGS[request.param])
    fitted.fit(board.data)
    return fitted


def _requested(board: Checkerboard, users: list[int], steering: np.ndarray | None) -> UserBatch:
    own = board.batch(users)
    mix = np.tile([0.1, 0.8, 0.1], (len(users), 1))  # the second group's mix, for customers of the first
    return UserBatch(own.user_index, mix, own.demographics, base_mix=own.mix, steering=steering)


def test_setting_zero_scores_exactly_as_without_steering(board: Checkerboard, model: Recommender) -> None:
    users = [int(u) for u in np.flatnonzero(board.group == 0)[:5]]
    without = model.score(_requested(board, users, None))
    zero = model.score(_requested(board, users, np.zeros(len(users))))
    np.testing.assert_array_equal(without, zero)


def test_full_steering_ranks_a_known_customer_as_the_mix_alone(
    board: Checkerboard, model: Recommender
) -> None:
    users = [int(u) for u in np.flatnonzero(board.group == 0)[:5]]
    steered = model.score(_requested(board, users, np.ones(len(users))))
    request = _requested(board, users, None)
    stranger = model.score(UserBatch(np.full(len(users), -1), request.mix, request.demographics))
    if model.kind == "lightfm_hybrid":  # the stranger's representation exactly
        np.testing.assert_allclose(steered, stranger, rtol=1e-5, atol=1e-6)
    else:  # the mix's direction (demographics play no part), at the customer's length; BPR's bias kept
        assert isinstance(model, ImplicitFactorsModel)
        width = model.factors
        steered_vectors = model.user_vectors(_requested(board, users, np.ones(len(users))))[:, :width]
        mix_only = model.user_vectors(
            UserBatch(np.full(len(users), -1), request.mix, 0 * request.demographics)
        )
        aim = mix_only[:, :width]
        cosine = (steered_vectors * aim).sum(axis=1) / (
            np.linalg.norm(steered_vectors, axis=1) * np.linalg.norm(aim, axis=1)
        )
        np.testing.assert_allclose(cosine, 1.0, atol=1e-5)
        own = model.user_vectors(request)[:, :width]
        np.testing.assert_allclose(
            np.linalg.norm(steered_vectors, axis=1), np.linalg.norm(own, axis=1), rtol=1e-5
        )


def test_steering_moves_the_list_towards_the_requested_group(board: Checkerboard, model: Recommender) -> None:
    """Customers of group 0 given group 1's mix: more of group 1's block in the top 10 as steering grows."""
    users = [int(u) for u in np.flatnonzero(board.group == 0)[:10]]
    block = set(board.block(1).tolist())
    shares = []
    for setting in (0.0, 0.5, 1.0):
        batch = _requested(board, users, np.full(len(users), setting))
        top, _ = model.recommend(batch, 10)
        shares.append(np.mean([len(block.intersection(row.tolist())) / 10 for row in top]))
    assert shares[0] <= shares[1] + 1e-9 <= shares[2] + 2e-9
    assert shares[2] > shares[0] or shares[0] == 1.0


def test_steering_outside_zero_to_one_is_refused(board: Checkerboard, model: Recommender) -> None:
    batch = _requested(board, [0, 1], np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="steering"):
        model.score(batch)
