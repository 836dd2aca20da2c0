"""The compiled search loop: bounds that hold, the numpy loop's stopping rule, and the same bits per query."""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.ranking.candidate_index import CandidateIndex, CandidateIndexSettings, exact_top_k
from engine.ranking.candidate_search import bounds_of, search_lists, top_positions


def _index(n: int, d: int, clusters: int, seed: int) -> tuple[CandidateIndex, np.random.Generator]:
    rng = np.random.default_rng(seed)
    vectors = (rng.normal(size=(n, d)) * rng.pareto(1.5, size=(n, 1))).astype(np.float32)
    settings_ = CandidateIndexSettings(min_items=0, clusters=clusters, probe_share=1.0, seed=seed)
    return CandidateIndex.build(vectors, settings_), rng


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 400), d=st.integers(1, 16), clusters=st.integers(1, 12), seed=st.integers(0, 999))
@example(n=400, d=5, clusters=1, seed=208)  # a centroid dot that cancels: float32 rounding of 8e-5
def test_no_item_scores_above_its_lists_bound(n: int, d: int, clusters: int, seed: int) -> None:
    index, rng = _index(n, d, clusters, seed)
    query = rng.normal(size=d).astype(np.float32)
    bounds = bounds_of(index.centroids, index.max_norm, index.radius, query)
    length = float(np.sqrt(query.astype(np.float64) @ query))
    centroids = index.centroids.astype(np.float64)
    reference = np.minimum(length * index.max_norm, centroids @ query + length * index.radius)
    # The loop sums the centroid's dot in float32, as serving scores: against the float64 reference it
    # may be off by the rounding of d float32 additions of terms as large as |c_j q_j| (a dot whose
    # terms cancel is small beside them), which the bound's slack covers by design.
    rounding = d * float(np.finfo(np.float32).eps) * (np.abs(centroids) @ np.abs(query.astype(np.float64)))
    expected = reference + 1e-5 * length * index.max_norm + 1e-5
    assert (np.abs(bounds - expected) <= rounding + 1e-5 * np.abs(expected) + 1e-5).all()
    scores = index.vectors.astype(np.float64) @ query
    for lst in range(index.n_lists):
        assert (scores[index.offsets[lst] : index.offsets[lst + 1]] <= bounds[lst]).all()


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 600),
    k=st.integers(1, 40),
    first=st.integers(1, 300),
    masked=st.booleans(),
    seed=st.integers(0, 999),
)
def test_a_certified_search_holds_the_exact_top_k_and_is_the_same_every_time(
    n: int, k: int, first: int, masked: bool, seed: int
) -> None:
    index, rng = _index(n, 6, 8, seed)
    query = rng.normal(size=6).astype(np.float32)
    allowed = rng.random(n) < 0.6 if masked else np.zeros(0, dtype=bool)

    def search() -> tuple[np.ndarray, np.ndarray, bool, np.ndarray]:
        args = (index.vectors, index.order, index.offsets, index.centroids, index.max_norm, index.radius)
        no_cut, nothing_blocked = np.zeros(0), np.zeros(0, dtype=bool)
        return search_lists(
            *args, no_cut, query, k, allowed, masked, nothing_blocked, False, index.n_lists, first
        )

    items, scores, certified, top = search()
    assert certified
    again = search()
    np.testing.assert_array_equal(again[0], items)
    assert again[1].tobytes() == scores.tobytes()
    ok = allowed if masked else np.ones(n, dtype=bool)
    assert ok[items].all() and len(np.unique(items)) == len(items)
    exact = np.where(ok, index.vectors[np.argsort(index.order)] @ query, -np.inf)
    wanted = min(k, int(ok.sum()))
    best = exact_top_k(exact, wanted)
    found_best = items[top]
    np.testing.assert_array_equal(top, np.argsort(-scores, kind="stable")[:wanted])
    # the same items up to float32 ties at the boundary
    np.testing.assert_allclose(np.sort(exact[found_best]), np.sort(exact[best]), rtol=1e-5, atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.integers(-4, 4), max_size=60), n=st.integers(0, 70))
def test_top_positions_are_the_best_first_with_ties_to_the_lower_position(values: list[int], n: int) -> None:
    """Scores are small integers, so most of them tie: the reference is a stable sort."""
    array = np.asarray(values, dtype=np.float32)
    expected = np.argsort(-array.astype(np.float64), kind="stable")[:n]
    np.testing.assert_array_equal(top_positions(array, n), expected)
