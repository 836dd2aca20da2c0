"""Folding a customer the model never saw into ALS from their events."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.models.base import Recommender, UserBatch
from engine.models.fitted_shape import UserBatchError
from engine.models.fold_in import fold_in, item_gram
from engine.models.implicit_factors import ImplicitALSModel, ImplicitBPRModel, ImplicitFactorsModel
from engine.models.registry import create_model
from tests.engine.models.checkerboard import BLOCK_SIZE, GROUP_MIX, N_ITEMS, SMALL_CONFIGS, Checkerboard


def _als(checkerboard: Checkerboard, **overrides: object) -> ImplicitALSModel:
    model = ImplicitALSModel(**{**SMALL_CONFIGS["als"], "iterations": 30, **overrides})
    model.fit(checkerboard.data)
    return model


def _cold_with_events(checkerboard: Checkerboard, users: list[int]) -> tuple[np.ndarray, sp.csr_matrix]:
    """The users' own rows of the training matrix, as events of customers the model does not know."""
    index = np.asarray(users)
    return GROUP_MIX[checkerboard.group[index]], sp.csr_matrix(checkerboard.data.interactions[index])


def test_the_constant_penalty_folds_in_as_implicit_recalculates_a_user(checkerboard: Checkerboard) -> None:
    """implicit's own ``recalculate_user`` solves the same equations (its objective, its confidences)."""
    from implicit.cpu.als import AlternatingLeastSquares

    data = checkerboard.data
    estimator = AlternatingLeastSquares(
        factors=4, regularization=0.5, alpha=2.0, iterations=10, random_state=3
    )
    estimator.fit(sp.csr_matrix(data.interactions, dtype=np.float32), show_progress=False)
    items = np.asarray(estimator.item_factors, dtype=np.float32)
    events = sp.csr_matrix(data.interactions[[0, 5, 17]], dtype=np.float32)
    ours = fold_in(events, items, item_gram(items), regularization=0.5, alpha=2.0, per_interaction=False)
    theirs = estimator.recalculate_user(np.arange(3), events)
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4)


def test_a_known_customer_folded_back_in_lands_on_their_fitted_vector(checkerboard: Checkerboard) -> None:
    """The fit's user step for the per-interaction penalty is this solve (a few CG steps of it):
    refolding a training customer's own events gives (nearly) the vector the fit left them."""
    model = _als(checkerboard, penalty="per_interaction", iterations=60)
    state = model._fitted()[1]
    users = [0, 1, 30, 77]
    refolded = model._folded_in(sp.csr_matrix(checkerboard.data.interactions[users]), np.arange(len(users)))
    np.testing.assert_allclose(refolded, state["user_factors"][users], rtol=0.05, atol=0.02)


def test_a_row_without_events_gets_zeros_and_a_row_is_the_same_alone_and_in_a_batch() -> None:
    rng = np.random.default_rng(0)
    items = rng.normal(size=(12, 5)).astype(np.float32)
    events = sp.csr_matrix(np.array([[0, 1, 0] * 4, [0] * 12, [2, 0, 0] * 4], dtype=np.float32))
    settings_: dict[str, Any] = {"regularization": 0.1, "alpha": 3.0, "per_interaction": True}
    together = fold_in(events, items, item_gram(items), **settings_)
    assert not together[1].any()
    for row in (0, 2):
        alone = fold_in(sp.csr_matrix(events[row]), items, item_gram(items), **settings_)
        assert np.array_equal(alone[0], together[row])
    chosen = fold_in(events, items, item_gram(items), rows=np.array([2, 0]), **settings_)
    assert np.array_equal(chosen, together[[2, 0]])


@pytest.mark.parametrize(
    ("n_items", "rows", "message"),
    [
        (4, np.array([1]), "rows must index the 1 rows of events"),
        (5, None, "events cover 5 items, the model's item factors 4"),
    ],
    ids=["rows outside the events", "events over other items"],
)
def test_rows_outside_the_events_or_events_over_other_items_are_refused(
    n_items: int, rows: np.ndarray | None, message: str
) -> None:
    items = np.ones((4, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=message):
        fold_in(
            sp.csr_matrix((1, n_items)),
            items,
            item_gram(items),
            regularization=1.0,
            alpha=1.0,
            per_interaction=True,
            rows=rows,
        )


def test_a_cold_customer_with_events_is_ranked_like_the_known_customer_with_those_events(
    checkerboard: Checkerboard,
) -> None:
    """Without persona weights a folded-in stranger is scored by their events alone: the same top
    items as the known customer whose events they are; without events, by their mix as before."""
    model = _als(checkerboard, persona_blend=0.0, penalty="constant")
    users = [2, 3, 8, 9]
    mix, events = _cold_with_events(checkerboard, users)
    stranger = dataclasses.replace(checkerboard.cold_batch(mix), events=events)
    folded = model.score(stranger)
    known = model.score(checkerboard.batch(users))
    for row in range(len(users)):
        assert set(np.argsort(-folded[row])[:3]) == set(np.argsort(-known[row])[:3])
    np.testing.assert_array_equal(
        model.score(stranger.without_events()), model.score(checkerboard.cold_batch(mix))
    )
    without = dataclasses.replace(stranger, events=sp.csr_matrix(np.zeros(events.shape, dtype=np.float32)))
    np.testing.assert_array_equal(model.score(without), model.score(checkerboard.cold_batch(mix)))


@pytest.mark.parametrize("kind", ["als", "linear_autoencoder", "blend"])
def test_a_known_customer_with_their_own_events_scores_as_without_and_new_events_move_them(
    checkerboard: Checkerboard, kind: str
) -> None:
    """A known customer's events are all their events (history and live): their history alone gives
    back (nearly) the fitted vector; adding a session on the other group's block turns their list to
    it, as a refit on those events would; rows without events in the same batch are not touched."""
    if kind == "als":
        model: Recommender = _als(checkerboard, persona_blend=0.0, penalty="per_interaction", iterations=60)
    else:
        model = create_model(kind, **SMALL_CONFIGS[kind])
        model.fit(checkerboard.data)
    users = [int(u) for u in np.flatnonzero(checkerboard.group == 0)[:3]]  # they shop the first block
    batch = checkerboard.batch(users)
    history = sp.csr_matrix(checkerboard.data.interactions[users])
    plain = model.score(batch)
    own = model.score(dataclasses.replace(batch, events=history))
    for row in range(len(users)):
        assert set(np.argsort(-own[row])[:3]) == set(np.argsort(-plain[row])[:3])
    session = sp.lil_matrix(history.shape, dtype=np.float32)
    other = checkerboard.block(1)
    session[0, other[:6]] = np.log1p(5.0)  # customer 0 bought six items of the other block
    moved = model.score(dataclasses.replace(batch, events=(history + session.tocsr()).tocsr()))
    unseen = np.setdiff1d(other, other[:6])  # the other block's items they have not touched
    assert moved[0, unseen].mean() > plain[0, unseen].mean()
    rank_before = (plain[0][None, :] > plain[0, unseen][:, None]).sum(axis=1).mean()
    rank_after = (moved[0][None, :] > moved[0, unseen][:, None]).sum(axis=1).mean()
    assert rank_after < rank_before, "the other block rises in their list"
    only_first = sp.csr_matrix((history + session.tocsr())[[0]])
    events = sp.vstack([only_first, sp.csr_matrix((2, history.shape[1]))]).tocsr()
    # Query vectors are row-independent to the bit (serving's promise); score products are BLAS's.
    partly = model.query_vectors(dataclasses.replace(batch, events=events))
    np.testing.assert_array_equal(partly[1:], model.query_vectors(batch)[1:])
    alone = model.query_vectors(dataclasses.replace(batch.rows(np.array([0])), events=only_first))
    np.testing.assert_array_equal(partly[0], alone[0])


def test_bpr_has_no_fold_in_and_ignores_events(checkerboard: Checkerboard) -> None:
    junk = sp.csr_matrix(np.ones((2, checkerboard.data.n_items), dtype=np.float32))
    bpr = ImplicitBPRModel(**SMALL_CONFIGS["bpr"])
    bpr.fit(checkerboard.data)
    cold = checkerboard.cold_batch(GROUP_MIX)
    known = checkerboard.batch([0, 1])
    np.testing.assert_array_equal(bpr.score(dataclasses.replace(cold, events=junk)), bpr.score(cold))
    np.testing.assert_array_equal(bpr.score(dataclasses.replace(known, events=junk)), bpr.score(known))


def test_a_folded_in_customer_takes_the_persona_weights_of_their_activity_level(
    checkerboard: Checkerboard,
) -> None:
    """Level by the number of events: a customer with one event leans on the mix as a light known
    customer would (blend 1 there: their list is the mix's), one with many events on their own."""
    data = checkerboard.data
    model = _als(checkerboard, activity_levels=2, blend_weights=[1.0, 0.0])
    edges = model._fitted()[1]["activity_edges"]
    heavy = int(np.argmax(np.diff(data.interactions.indptr)))
    assert np.diff(data.interactions.indptr)[heavy] > edges[0]
    one_event = sp.csr_matrix(
        ([1.0], ([0], [int(data.interactions[heavy].indices[0])])), shape=(1, data.n_items)
    )
    mix = GROUP_MIX[checkerboard.group[[heavy]]]
    light = dataclasses.replace(checkerboard.cold_batch(mix), events=one_event)
    np.testing.assert_allclose(
        model.user_vectors(light), model.user_vectors(checkerboard.cold_batch(mix)), rtol=1e-6
    )
    rich = dataclasses.replace(checkerboard.cold_batch(mix), events=sp.csr_matrix(data.interactions[[heavy]]))
    np.testing.assert_allclose(
        model.user_vectors(rich),
        model._folded_in(sp.csr_matrix(data.interactions[[heavy]]), np.zeros(1, dtype=np.int64)),
        rtol=1e-6,
    )


def test_a_batch_with_events_of_another_catalog_or_negative_events_is_refused(
    checkerboard: Checkerboard,
) -> None:
    model = _als(checkerboard)
    cold = checkerboard.cold_batch(GROUP_MIX)
    with pytest.raises(UserBatchError, match="events cover 3 items") as wider:
        model.score(dataclasses.replace(cold, events=sp.csr_matrix((2, 3))))
    assert wider.value.field == "events"
    negative = sp.csr_matrix(np.full((2, checkerboard.data.n_items), -1.0))
    with pytest.raises(UserBatchError, match="events must be finite and non-negative"):
        model.score(dataclasses.replace(cold, events=negative))


@pytest.fixture(scope="module")
def fitted_by_penalty(checkerboard: Checkerboard) -> dict[str, ImplicitALSModel]:
    return {penalty: _als(checkerboard, penalty=penalty) for penalty in ("constant", "per_interaction")}


@pytest.mark.parametrize("penalty", ["constant", "per_interaction"])
@settings(max_examples=30, deadline=None)
@given(rows=st.lists(st.lists(st.integers(0, 23), max_size=6, unique=True), min_size=1, max_size=5))
def test_each_row_scores_the_same_alone_as_in_any_batch(
    rows: list[list[int]],
    penalty: str,
    fitted_by_penalty: dict[str, ImplicitALSModel],
    checkerboard: Checkerboard,
) -> None:
    """The serving path's promise (``ordered_product``): a folded-in row is the same bits in any batch."""
    model = fitted_by_penalty[penalty]
    events = sp.lil_matrix((len(rows), model.n_items), dtype=np.float32)
    for r, items in enumerate(rows):
        for item in items:
            events[r, item] = 1.0 + item % 3
    mix = np.tile(GROUP_MIX[:1], (len(rows), 1))
    batch = dataclasses.replace(checkerboard.cold_batch(mix), events=sp.csr_matrix(events))
    together = model.query_vectors(batch)
    for r in range(len(rows)):
        alone = model.query_vectors(batch.rows(np.array([r])))
        assert np.array_equal(alone[0], together[r])


@pytest.mark.parametrize("kind", ["als", "linear_autoencoder"])
def test_rows_with_and_without_events_known_or_not_score_alone_as_in_a_batch(
    checkerboard: Checkerboard, kind: str
) -> None:
    """Serving batches pages of every kind together: a known customer with a session, a stranger with
    events, a known customer without; each row's query vector is the same bits alone, in the batch,
    and when its fold-in was remembered from an earlier page."""
    model = create_model(kind, **SMALL_CONFIGS[kind])
    model.fit(checkerboard.data)
    interactions = checkerboard.data.interactions
    session = sp.csr_matrix(
        interactions[[0]] + sp.csr_matrix(([1.5], ([0], [BLOCK_SIZE + 1])), shape=(1, N_ITEMS))
    )
    events = sp.vstack([session, sp.csr_matrix(interactions[[5]]), sp.csr_matrix((1, N_ITEMS))]).tocsr()
    batch = UserBatch(
        user_index=np.array([0, -1, 3]),
        mix=np.vstack([GROUP_MIX[0], GROUP_MIX[1], GROUP_MIX[0]]),
        demographics=np.zeros((3, checkerboard.data.user_demographics.shape[1])),
        events=events,
    )
    first = model.query_vectors(batch)  # solves rows 0 and 1
    assert isinstance(model, ImplicitFactorsModel) and model._folded_memo, (
        "a serving batch's fold-ins are remembered"
    )
    again = model.query_vectors(batch)  # from memory
    np.testing.assert_array_equal(first, again)
    model.forget_folded_in()
    for row in range(3):
        alone = model.query_vectors(batch.rows(np.array([row])))
        np.testing.assert_array_equal(alone[0], first[row])
