import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engine.ranking.top_k import top_k


def test_top_k_orders_and_filters() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [1.0, 0.0, 0.2, 0.3]])
    exclude = sp.csr_matrix(np.array([[0, 1, 0, 0], [0, 0, 0, 0]]))
    ids, top = top_k(scores, 2, exclude=exclude, item_mask=np.array([True, True, True, False]))
    assert ids.tolist() == [[2, 0], [0, 2]]
    assert top[0].tolist() == pytest.approx([0.5, 0.1])


def test_top_k_pads_when_too_few_candidates() -> None:
    ids, top = top_k(np.array([[0.3, 0.2]]), 4, item_mask=np.array([True, False]))
    assert ids.tolist() == [[0, -1, -1, -1]]
    assert np.isneginf(top[0, 1:]).all()


@given(
    arrays(
        np.float32, st.tuples(st.integers(1, 4), st.integers(1, 30)), elements=st.floats(-1e3, 1e3, width=32)
    ),
    st.integers(1, 35),
)
def test_top_k_matches_full_sort(scores: np.ndarray, k: int) -> None:
    ids, top = top_k(scores, k)
    for row in range(scores.shape[0]):
        expected = np.sort(scores[row])[::-1][: min(k, scores.shape[1])]
        assert top[row, : len(expected)].tolist() == pytest.approx(expected.tolist())
        valid = ids[row][ids[row] >= 0]
        assert len(set(valid.tolist())) == len(valid)
