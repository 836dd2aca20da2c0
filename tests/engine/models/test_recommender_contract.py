"""The contract every registered model honours, checked once for all of them on the checkerboard shop."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from engine.models.base import MODEL_MANIFEST, ModelFormatError, Recommender, UserBatch
from engine.models.fitted_shape import ModelNotFittedError, UserBatchError
from engine.models.registry import MODEL_KINDS, create_model, load_model
from tests.engine.models.checkerboard import (
    BLOCK_SIZE,
    DEMOGRAPHICS,
    GROUP_MIX,
    PERSONA_AWARE,
    PERSONAS,
    SMALL_CONFIGS,
    Checkerboard,
)


def test_every_kind_has_a_test_configuration() -> None:
    assert set(SMALL_CONFIGS) == set(MODEL_KINDS) == set(PERSONA_AWARE)


def test_a_fit_records_the_time_spent_inside_the_library_it_wraps(checkerboard: Checkerboard) -> None:
    """Training cost is the engine's time against the libraries': each fit says how much was theirs."""
    for kind in sorted(MODEL_KINDS):
        model = create_model(kind, **SMALL_CONFIGS[kind])
        assert model.library_fit_seconds is None
        started = time.perf_counter()
        model.fit(checkerboard.data)
        elapsed = time.perf_counter() - started
        if kind in ("popularity", "persona_popularity"):  # counting, no library
            assert model.library_fit_seconds is None, kind
        else:
            assert model.library_fit_seconds is not None and 0 < model.library_fit_seconds < elapsed, kind


def test_held_out_item_ranks_near_the_top(fitted: Recommender, checkerboard: Checkerboard) -> None:
    users = checkerboard.batch(list(checkerboard.eval_users))
    seen = checkerboard.data.interactions[checkerboard.eval_users]
    ids, _ = fitted.recommend(users, 5, exclude=seen)
    hits = (ids == checkerboard.held_out[:, None]).any(axis=1)
    # About 21 candidates remain per customer; a random ranking would hit about a quarter of the time.
    assert hits.mean() >= 0.9, f"{fitted.kind}: held-out item in the top 5 for {hits.mean():.0%} of customers"


def test_batch_scores_equal_single_row_scores(fitted: Recommender, checkerboard: Checkerboard) -> None:
    users = checkerboard.batch([0, 1, 7, -1, -1, 118])
    mixed = np.array([[0.5, 0.3, 0.2]])
    users = UserBatch(
        user_index=users.user_index,
        mix=np.vstack([users.mix[:3], mixed, GROUP_MIX[1:2], users.mix[5:]]),
        demographics=sp.csr_matrix(
            np.vstack([users.demographics[:4].toarray(), [[0, 1, 1, 0]], [[0, 0, 0, 0]]])
        ),
    )
    batch = fitted.score(users)
    assert batch.shape == (6, fitted.n_items) and batch.dtype == np.float32
    for row in range(len(users)):
        single = UserBatch(users.user_index[row : row + 1], users.mix[row : row + 1], users.demographics[row])
        np.testing.assert_allclose(fitted.score(single)[0], batch[row], rtol=1e-5, atol=1e-6)


def test_save_then_load_gives_identical_scores(
    fitted: Recommender, checkerboard: Checkerboard, tmp_path: Path
) -> None:
    written = fitted.save(tmp_path)
    names = sorted(path.name for path in tmp_path.iterdir())
    assert sorted(path.name for path in written) == names
    assert all(name == MODEL_MANIFEST or name.endswith(".npy") for name in names), names
    for path in tmp_path.glob("*.npy"):
        np.load(path, allow_pickle=False)
    loaded = load_model(tmp_path)
    assert type(loaded) is type(fitted)
    assert loaded.get_config() == fitted.get_config()
    users = checkerboard.batch([0, 5, -1])
    np.testing.assert_array_equal(loaded.score(users), fitted.score(users))
    np.testing.assert_array_equal(
        loaded.score(checkerboard.cold_batch(np.eye(3))), fitted.score(checkerboard.cold_batch(np.eye(3)))
    )


def test_loading_a_wrongly_shaped_array_is_refused(fitted: Recommender, tmp_path: Path) -> None:
    fitted.save(tmp_path)
    manifest = json.loads((tmp_path / MODEL_MANIFEST).read_text())
    victim = next(name for name in manifest["arrays"] if name != "shape")
    original = np.load(tmp_path / f"{victim}.npy")
    np.save(tmp_path / f"{victim}.npy", original[:-1])
    with pytest.raises(ModelFormatError, match=victim):
        load_model(tmp_path)


def test_recommend_respects_exclude_and_item_mask_and_pads(
    fitted: Recommender, checkerboard: Checkerboard
) -> None:
    users = checkerboard.batch([0, 1])
    allowed = [0, BLOCK_SIZE, 2 * BLOCK_SIZE]
    mask = np.zeros(fitted.n_items, dtype=bool)
    mask[allowed] = True
    exclude = sp.csr_matrix(([1.0], ([1], [BLOCK_SIZE])), shape=(2, fitted.n_items))
    ids, scores = fitted.recommend(users, 5, exclude=exclude, item_mask=mask)
    assert ids.shape == scores.shape == (2, 5)
    assert sorted(ids[0, :3]) == allowed and list(ids[0, 3:]) == [-1, -1]
    assert sorted(ids[1, :2]) == [0, 2 * BLOCK_SIZE] and list(ids[1, 2:]) == [-1, -1, -1]
    assert np.isneginf(scores[0, 3:]).all() and np.isfinite(scores[0, :3]).all()
    assert (np.diff(scores[0, :3]) <= 0).all()


def test_unknown_customer_is_scored_from_mix(fitted: Recommender, checkerboard: Checkerboard) -> None:
    scores = fitted.score(checkerboard.cold_batch(GROUP_MIX))
    assert np.isfinite(scores).all()
    if PERSONA_AWARE[fitted.kind]:
        assert not np.allclose(scores[0], scores[1])
        for group in (0, 1):
            top = np.argsort(-scores[group])[:3]
            assert np.isin(top, checkerboard.block(group)).all(), f"{fitted.kind}: group {group} got {top}"
    else:
        np.testing.assert_array_equal(scores[0], scores[1])


def test_a_known_customer_under_another_mix_scores_differently(
    fitted: Recommender, checkerboard: Checkerboard
) -> None:
    own = fitted.score(checkerboard.batch([0]))
    other = fitted.score(checkerboard.batch([0], mix=GROUP_MIX[1:2]))
    assert np.isfinite(own).all() and np.isfinite(other).all()
    assert (not np.allclose(own, other)) == PERSONA_AWARE[fitted.kind]


def test_pure_personas_can_be_scored(fitted: Recommender) -> None:
    users = UserBatch.for_personas(len(PERSONAS), len(DEMOGRAPHICS))
    scores = fitted.score(users)
    assert scores.shape == (len(PERSONAS), fitted.n_items) and np.isfinite(scores).all()


def test_get_config_round_trips(fitted: Recommender) -> None:
    config = fitted.get_config()
    assert json.loads(json.dumps(config)) == config
    assert type(fitted)(**config).get_config() == config
    assert create_model(fitted.kind, **config).get_config() == config


@pytest.mark.parametrize(
    ("user_index", "mix", "demographics", "field"),
    [
        ([0], [[0.5, 0.5]], [[0, 0, 0, 0]], "mix"),
        ([0], [[0.5, 0.5, 0.5]], [[0, 0, 0, 0]], "mix"),
        ([0], [[1.5, -0.5, 0.0]], [[0, 0, 0, 0]], "mix"),
        ([0], [[np.nan, 0.5, 0.5]], [[0, 0, 0, 0]], "mix"),
        ([120], [[1.0, 0.0, 0.0]], [[0, 0, 0, 0]], "user_index"),
        ([-2], [[1.0, 0.0, 0.0]], [[0, 0, 0, 0]], "user_index"),
        ([0], [[1.0, 0.0, 0.0]], [[0, 0, 0]], "demographics"),
        ([0], [[1.0, 0.0, 0.0]], [[0, -1, 0, 0]], "demographics"),
    ],
)
def test_batches_that_do_not_fit_the_model_are_rejected(
    fitted: Recommender,
    user_index: list[int],
    mix: list[list[float]],
    demographics: list[list[float]],
    field: str,
) -> None:
    users = UserBatch(
        user_index=np.array(user_index, dtype=np.int64),
        mix=np.array(mix, dtype=np.float64),
        demographics=sp.csr_matrix(np.array(demographics, dtype=np.float32)),
    )
    with pytest.raises(UserBatchError, match=fitted.kind) as caught:
        fitted.score(users)
    assert caught.value.field == field


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_an_unfitted_model_refuses_to_score_or_save(
    kind: str, checkerboard: Checkerboard, tmp_path: Path
) -> None:
    model = create_model(kind, **SMALL_CONFIGS[kind])
    with pytest.raises(ModelNotFittedError, match=kind):
        model.score(checkerboard.batch([0]))
    with pytest.raises(ModelNotFittedError, match=kind):
        model.save(tmp_path)
