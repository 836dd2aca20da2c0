"""The IVF candidate index: exact when it certifies or probes everything, and the lists it serves."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.personalization_request import CustomerTarget, ProductRequest, SessionContext
from engine.personalizer import Personalizer
from engine.ranking.candidate_index import (
    CandidateIndex,
    CandidateIndexSettings,
    candidates_top_k,
    exact_top_k,
    recall_at_k,
)
from engine.ranking.filters import ItemFilters
from engine.ranking.promotions import PinnedItem, PromotionRule, Promotions
from tests.engine.small_artifact import train_small_artifact


def _index(vectors: np.ndarray, clusters: int, seed: int) -> CandidateIndex:
    return CandidateIndex.build(
        vectors, CandidateIndexSettings(min_items=0, clusters=clusters, probe_share=1.0, seed=seed)
    )


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    d=st.integers(1, 8),
    clusters=st.integers(1, 20),
    k=st.integers(1, 30),
    seed=st.integers(0, 2**16),
    skew=st.booleans(),
)
def test_a_full_probe_finds_the_exact_top_k_of_the_allowed_items(
    n: int, d: int, clusters: int, k: int, seed: int, skew: bool
) -> None:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    if skew:  # a few long vectors among many short ones, as factor models learn for popular items
        vectors *= rng.pareto(1.5, size=(n, 1)).astype(np.float32)
    index = _index(vectors, clusters, seed)
    query = rng.normal(size=d).astype(np.float32)
    allowed = rng.random(n) < 0.7
    exact_scores = np.where(allowed, vectors @ query, -np.inf)
    expected = exact_top_k(exact_scores, min(k, int(allowed.sum())))

    found = index.search(query, k, allowed=allowed)

    assert found.certified
    assert allowed[found.items].all() and len(np.unique(found.items)) == len(found.items)
    np.testing.assert_allclose(found.scores, vectors[found.items] @ query, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(candidates_top_k(found, k), expected)
    everything = index.search(query, k, allowed=allowed, max_probe=index.n_lists)
    np.testing.assert_array_equal(candidates_top_k(everything, k), expected)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 400),
    d=st.integers(1, 8),
    clusters=st.integers(1, 20),
    k=st.integers(1, 30),
    rows=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    ties=st.booleans(),
    cap=st.sampled_from([None, 1, 3]),
)
def test_the_batch_search_ranks_each_row_as_a_search_with_its_own_mask(
    n: int, d: int, clusters: int, k: int, rows: int, seed: int, ties: bool, cap: int | None
) -> None:
    """Blocked items per row, the per-item cut and the probe cap: the same top k, scores and order
    (ties included: rounded vectors tie often) as ``search`` with the row's mask, row by row."""
    rng = np.random.default_rng(seed)
    vectors = (rng.normal(size=(n, d)) * rng.pareto(1.5, size=(n, 1))).astype(np.float32)
    queries = rng.normal(size=(rows, d)).astype(np.float32)
    if ties:
        vectors, queries = np.round(vectors), np.round(queries)
    index = _index(vectors, clusters, seed)
    allowed = rng.random(n) < 0.8
    blocked = [rng.choice(n, size=int(rng.integers(0, 12))) for _ in range(rows)]  # repeats allowed
    indptr = np.concatenate([[0], np.cumsum([len(b) for b in blocked])]).astype(np.int64)

    top = index.search_top_many(queries, k, allowed, indptr, np.concatenate(blocked), max_probe=cap)

    for r in range(rows):
        mask = allowed.copy()
        mask[blocked[r]] = False
        alone = index.search(queries[r], k, allowed=mask, max_probe=cap)
        found = int(top.found[r])
        assert found == len(alone.best)
        np.testing.assert_array_equal(top.items[r, :found], alone.items[alone.best])
        np.testing.assert_array_equal(top.scores[r, :found], alone.scores[alone.best])
        assert (top.items[r, found:] == -1).all()
        assert bool(top.finite[r]) == bool(np.isfinite(alone.scores).all())
    assert not index._scratch.blocked.any()  # the scratch mask is left clear for the next batch


def test_the_batch_search_refuses_blocked_items_that_are_not_catalog_indices() -> None:
    rng = np.random.default_rng(1)
    index = _index(rng.normal(size=(50, 4)).astype(np.float32), 4, 1)
    queries = rng.normal(size=(2, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="blocked item 50 is not a catalog index"):
        index.search_top_many(queries, 3, None, np.array([0, 1, 2]), np.array([4, 50]))
    with pytest.raises(ValueError, match="blocked item -1"):
        index.search_top_many(queries, 3, None, np.array([0, 0, 1]), np.array([-1]))
    with pytest.raises(ValueError, match="blocked_indptr must rise"):
        index.search_top_many(queries, 3, None, np.array([0, 2, 1]), np.array([4, 5]))
    with pytest.raises(ValueError, match="blocked_indptr must have 3 entries"):
        index.search_top_many(queries, 3, None, np.array([0, 1]), np.array([4]))
    assert not index._scratch.blocked.any()


def test_a_batch_search_row_with_a_non_finite_score_says_so() -> None:
    vectors = np.ones((40, 3), dtype=np.float32)
    vectors[7] = [1e18, 1e18, 0.0]
    index = _index(vectors, 2, 0)
    queries = np.full((2, 3), 1e21, dtype=np.float32)  # finite, but item 7's float32 score overflows
    top = index.search_top_many(queries, 5, None, np.array([0, 0, 1]), np.array([7]))
    assert top.finite.tolist() == [False, True]  # row 1 blocks the item whose score is infinite


def test_the_index_groups_each_list_contiguously_and_covers_every_item_once() -> None:
    rng = np.random.default_rng(3)
    vectors = (rng.normal(size=(2000, 6)) * rng.pareto(1.5, size=(2000, 1))).astype(np.float32)
    index = _index(vectors, 16, 3)
    np.testing.assert_array_equal(np.sort(index.order), np.arange(2000))
    assert index.offsets[0] == 0 and index.offsets[-1] == 2000 and (index.list_sizes() > 0).all()
    np.testing.assert_array_equal(index.vectors, vectors[index.order])
    assert recall_at_k(index, rng.normal(size=(20, 6)), 10) == 1.0


def test_a_probe_cap_bounds_the_work_and_says_the_result_is_not_certified() -> None:
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(3000, 8)).astype(np.float32)  # no popular head: bounds prune little
    index = _index(vectors, 40, 5)
    capped = index.search(rng.normal(size=8).astype(np.float32), 10, max_probe=2)
    assert not capped.certified
    assert len(capped.items) < 3000


def test_settings_decide_when_a_catalog_gets_an_index() -> None:
    settings_ = CandidateIndexSettings(min_items=1000)
    assert not settings_.wants_index(999) and settings_.wants_index(1000)
    assert CandidateIndexSettings().n_clusters(100_000) == 40
    with pytest.raises(ValueError, match="probe_share"):
        CandidateIndexSettings(probe_share=0.0)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Personalizer, Personalizer]:
    """The same artifact served exactly and through an index over its (small) catalog."""
    path = train_small_artifact(tmp_path_factory.mktemp("candidate_index"))
    exact = Personalizer.from_path(path, "als")
    indexed = Personalizer(
        exact.artifact, "als", candidate_index=CandidateIndexSettings(min_items=0, clusters=8)
    )
    assert exact.index is None and indexed.index is not None
    return exact, indexed


def test_lists_served_through_the_index_equal_the_exact_lists(
    served: tuple[Personalizer, Personalizer],
) -> None:
    exact, indexed = served
    items = exact.items.ids
    customers = [str(c) for c in exact.customers.ids[:25]] + ["never-seen-1", "never-seen-2"]
    requests = [
        ProductRequest(k=10),
        ProductRequest(k=6, diversity=0.5),
        ProductRequest(k=8, filters=ItemFilters(exclude_categories=(str(exact.item_catalog.categories[0]),))),
        ProductRequest(
            k=8,
            promotions=Promotions(
                rules=(PromotionRule("brand", share=0.25, brands=(str(exact.item_catalog.brands[0]),)),),
                pins=(PinnedItem(str(items[3]), 1),),
            ),
        ),
        ProductRequest(k=len(items) - 2),  # more than the candidates hold: falls back to the full scan
    ]
    session = SessionContext(
        timestamp=dt.datetime(2026, 3, 7, 12, tzinfo=dt.UTC), cart_item_ids=(str(items[0]),)
    )
    for request in requests:
        targets = [CustomerTarget(c) for c in customers]
        ids = [f"d{i}" for i in range(len(targets))]
        for a, b in zip(
            exact.recommend_products(targets, request, session, decision_ids=ids),
            indexed.recommend_products(targets, request, session, decision_ids=ids),
            strict=True,
        ):
            assert [(i.item_id, i.reason, i.promotion_id) for i in a.items] == [
                (i.item_id, i.reason, i.promotion_id) for i in b.items
            ]
            assert [i.score for i in a.items] == pytest.approx([i.score for i in b.items], rel=1e-4, abs=1e-6)
