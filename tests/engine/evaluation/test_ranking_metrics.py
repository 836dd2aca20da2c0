from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.evaluation.ranking_metrics import catalog_coverage, hit_matrix, ranking_metrics


def relevance(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    indptr = np.cumsum([0] + [len(r) for r in rows])
    indices = np.asarray([i for r in rows for i in r], dtype=np.int32)
    return sp.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(len(rows), n_items))


def test_hand_computed_example() -> None:
    n_items = 8
    recommended = np.array(
        [
            [2, 0, 5],  # relevant {0, 3}: one hit at position 2
            [1, 4, -1],  # relevant {1, 2, 4, 5}: hits at positions 1 and 2, padded third slot
            [3, 1, -1],  # no relevant items: excluded
            [0, 1, 2],  # relevant {5}: no hit
        ],
        dtype=np.int64,
    )
    relevant = relevance([[0, 3], [1, 4, 5, 2], [], [5]], n_items)
    m = ranking_metrics(recommended, relevant)

    assert m.users.tolist() == [0, 1, 3]
    assert m.n_evaluated == 3 and m.n_excluded == 1
    l3 = 1 / math.log2(3)  # discount at position 2
    # user 0: precision 1/3, recall 1/2; DCG = 1/log2(3); ideal has min(2, 3) = 2 hits: 1 + 1/log2(3);
    #         AP = precision@2 = 1/2, divided by min(2, 3) = 2 -> 1/4.
    # user 1: precision 2/3 (padding is a miss), recall 2/4; DCG = 1 + 1/log2(3); ideal over min(4, 3) = 3
    #         hits: 1 + 1/log2(3) + 1/2; AP = (1/1 + 2/2) / min(4, 3) = 2/3.
    # user 3: all zeros.
    np.testing.assert_allclose(m.precision, [1 / 3, 2 / 3, 0])
    np.testing.assert_allclose(m.recall, [1 / 2, 1 / 2, 0])
    np.testing.assert_allclose(m.ndcg, [l3 / (1 + l3), (1 + l3) / (1 + l3 + 0.5), 0])
    np.testing.assert_allclose(m.average_precision, [1 / 4, 2 / 3, 0])
    np.testing.assert_allclose(m.hit, [1, 1, 0])
    # coverage: items {0, 1, 2, 3, 4, 5} appear somewhere (the excluded user counts) -> 6 / 8.
    assert m.coverage == pytest.approx(0.75)

    means = m.means()
    assert means["precision@3"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert means["map@3"] == pytest.approx((1 / 4 + 2 / 3) / 3)
    assert means["hit_rate@3"] == pytest.approx(2 / 3)
    assert means["coverage@3"] == pytest.approx(0.75)


def test_average_precision_rewards_early_hits() -> None:
    # relevant {0, 1}; ranking [0, 9, 1]: precision@1 = 1, precision@3 = 2/3 -> AP = (1 + 2/3) / 2 = 5/6
    # ranking [9, 0, 1]: precision@2 = 1/2, precision@3 = 2/3 -> AP = (1/2 + 2/3) / 2 = 7/12
    relevant = relevance([[0, 1], [0, 1]], 10)
    m = ranking_metrics(np.array([[0, 9, 1], [9, 0, 1]]), relevant)
    np.testing.assert_allclose(m.average_precision, [5 / 6, 7 / 12])


def test_explicit_zeros_are_not_relevant() -> None:
    relevant = sp.csr_matrix((np.array([1.0, 0.0]), np.array([0, 1]), np.array([0, 2])), shape=(1, 4))
    m = ranking_metrics(np.array([[1, 0]]), relevant)
    # only item 0 is relevant, found at position 2
    np.testing.assert_allclose(m.recall, [1.0])
    np.testing.assert_allclose(m.precision, [0.5])


def test_duplicate_entries_count_once_and_any_sparse_format_works() -> None:
    # COO with item 2 stored twice for user 0: still one relevant item
    relevant = sp.coo_matrix(
        (np.array([1.0, 1.0, 1.0]), (np.array([0, 0, 1]), np.array([2, 2, 0]))), shape=(2, 4)
    )
    m = ranking_metrics(np.array([[2, 1], [3, 0]]), relevant)
    np.testing.assert_allclose(m.recall, [1.0, 1.0])
    np.testing.assert_allclose(m.precision, [0.5, 0.5])


def test_nobody_evaluated_gives_nan_means() -> None:
    m = ranking_metrics(np.array([[0, 1]]), relevance([[]], 3))
    assert m.n_evaluated == 0 and m.n_excluded == 1
    assert math.isnan(m.means()["ndcg@2"])


@pytest.mark.parametrize(
    ("recommended", "message"),
    [
        (np.array([[0, 7]]), r"recommended\[0, 1\] = 7"),
        (np.array([[0, -2]]), r"recommended\[0, 1\] = -2"),
        (np.array([[3, 3]]), "row 0 lists item 3 more than once"),
        (np.array([[0.0, 1.0]]), "integer item indices"),
        (np.array([[0, 1], [1, 2]]), "2 rows but relevant has 1 users"),
    ],
)
def test_invalid_recommendations_are_named(recommended: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ranking_metrics(recommended, relevance([[0]], 5))


def test_padding_may_repeat_and_coverage_ignores_it() -> None:
    assert catalog_coverage(np.array([[1, -1, -1], [1, 2, -1]]), 4) == pytest.approx(0.5)


@st.composite
def ranking_case(draw: st.DrawFn) -> tuple[np.ndarray, sp.csr_matrix, np.random.Generator]:
    n_users = draw(st.integers(1, 12))
    n_items = draw(st.integers(2, 30))
    k = draw(st.integers(1, n_items))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rec = np.stack([rng.permutation(n_items)[:k] for _ in range(n_users)]).astype(np.int64)
    pad = rng.random(rec.shape) < 0.15
    rec[pad] = -1
    rows = [
        sorted(rng.choice(n_items, size=rng.integers(0, n_items + 1), replace=False)) for _ in range(n_users)
    ]
    return rec, relevance([list(map(int, r)) for r in rows], n_items), rng


@settings(max_examples=150, deadline=None)
@given(ranking_case())
def test_metrics_are_within_unit_interval(
    case: tuple[np.ndarray, sp.csr_matrix, np.random.Generator],
) -> None:
    rec, relevant, _ = case
    m = ranking_metrics(rec, relevant)
    for values in (m.precision, m.recall, m.ndcg, m.average_precision, m.hit):
        assert np.all((values >= 0) & (values <= 1 + 1e-12))
    assert 0 <= m.coverage <= 1
    assert m.n_evaluated + m.n_excluded == rec.shape[0]
    # a hit can only be counted where an item was recommended
    assert not hit_matrix(rec, relevant)[rec == -1].any()


@settings(max_examples=150, deadline=None)
@given(ranking_case())
def test_perfect_ranking_scores_one(case: tuple[np.ndarray, sp.csr_matrix, np.random.Generator]) -> None:
    rec, relevant, rng = case
    n_users, k = rec.shape
    n_items = relevant.shape[1]
    perfect = np.full((n_users, k), -1, dtype=np.int64)
    for u in range(n_users):
        rel = rng.permutation(relevant[u].indices)
        others = rng.permutation(np.setdiff1d(np.arange(n_items), rel))
        perfect[u] = np.concatenate([rel, others])[:k]
    m = ranking_metrics(perfect, relevant)
    np.testing.assert_allclose(m.ndcg, 1.0)
    np.testing.assert_allclose(m.average_precision, 1.0)
    np.testing.assert_allclose(m.hit, 1.0)
    n_rel = np.diff(relevant.indptr)[m.users]
    np.testing.assert_allclose(m.recall, np.minimum(n_rel, k) / n_rel)
    np.testing.assert_allclose(m.precision, np.minimum(n_rel, k) / k)


@settings(max_examples=150, deadline=None)
@given(ranking_case())
def test_permuting_non_relevant_items_changes_nothing(
    case: tuple[np.ndarray, sp.csr_matrix, np.random.Generator],
) -> None:
    rec, relevant, rng = case
    hits = hit_matrix(rec, relevant)
    shuffled = rec.copy()
    for u in range(rec.shape[0]):
        misses = np.flatnonzero(~hits[u])
        shuffled[u, misses] = rec[u, rng.permutation(misses)]
    before, after = ranking_metrics(rec, relevant), ranking_metrics(shuffled, relevant)
    for name in ("precision", "recall", "ndcg", "average_precision", "hit"):
        np.testing.assert_allclose(getattr(after, name), getattr(before, name), err_msg=name)
    assert after.coverage == before.coverage
