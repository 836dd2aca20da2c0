"""MMR re-ranking: 0 is the relevance order, more diversity spreads categories and personas."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.ranking.diversity import DiversitySpace, diversify, pool_size

# items 0-5: category 0, favoured by persona 0; items 6-11: category 1/persona 1; 12-17: category 2/persona 0
SPACE = DiversitySpace(
    category=np.repeat(np.arange(3), 6).astype(np.int64), persona=np.repeat([0, 1, 0], 6).astype(np.int64)
)
POOL = np.arange(18, dtype=np.int64)
RELEVANCE = np.linspace(1.0, 0.1, 18)


def test_zero_diversity_returns_the_head_of_the_pool() -> None:
    assert diversify(POOL, RELEVANCE, 5, 0.0, SPACE).tolist() == [0, 1, 2, 3, 4]


def test_full_diversity_alternates_categories_starting_from_the_best_item() -> None:
    picked = diversify(POOL, RELEVANCE, 3, 1.0, SPACE).tolist()
    assert picked[0] == 0 and sorted(SPACE.category[picked].tolist()) == [0, 1, 2]


def test_items_already_listed_count_as_neighbours() -> None:
    picked = diversify(POOL[:12], RELEVANCE[:12], 1, 0.9, SPACE, already_listed=np.asarray([17]))
    assert SPACE.category[picked[0]] == 1, "category 0 shares the listed item's persona"


def test_pool_size_is_the_list_at_zero_and_larger_otherwise() -> None:
    assert pool_size(10, 0.0, 1000) == 10
    assert pool_size(10, 0.5, 1000) == 40
    assert pool_size(10, 0.5, 25) == 25


@pytest.mark.parametrize("diversity", [-0.1, 1.1, float("nan")])
def test_diversity_outside_zero_to_one_is_rejected(diversity: float) -> None:
    with pytest.raises(ValueError, match="diversity"):
        diversify(POOL, RELEVANCE, 3, diversity, SPACE)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 20), diversity=st.floats(0, 1), seed=st.integers(0, 1000))
def test_result_is_distinct_pool_items_and_more_diversity_never_narrows_categories(
    n: int, diversity: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    pool = rng.permutation(18).astype(np.int64)
    relevance = np.sort(rng.random(18))[::-1]
    picked = diversify(pool, relevance, n, diversity, SPACE)
    assert len(picked) == min(n, 18) == len(set(picked.tolist()))
    assert set(picked.tolist()) <= set(pool.tolist())
    if n >= 3 and diversity >= 0.5:
        assert len(set(SPACE.category[picked].tolist())) == 3
