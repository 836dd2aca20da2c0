"""The distributed EM's partitioning: every customer in exactly one block, whole, in order."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from training.spark.persona_em import CustomerBlock, customer_blocks


class _Setup:
    """The two per-event arrays of ``EmSetup`` that blocks slice."""

    def __init__(self, n_events: int) -> None:
        self.event_signatures = type("Signatures", (), {"index": np.arange(n_events)})()
        self.item_signature = np.arange(n_events) * 10


class _Features:
    def __init__(self, lengths: list[int]) -> None:
        self.customer_indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.weight = np.ones(int(self.customer_indptr[-1]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 12), min_size=1, max_size=40), st.integers(1, 9))
def test_blocks_cover_every_customer_and_event_once(lengths: list[int], n_blocks: int) -> None:
    features = _Features(lengths)
    gamma = np.arange(2 * 3 * len(lengths), dtype=np.float64).reshape(2, 3, len(lengths))
    blocks: list[CustomerBlock] = customer_blocks(_Setup(len(features.weight)), features, gamma, n_blocks)  # type: ignore[arg-type]
    assert 1 <= len(blocks) <= n_blocks
    assert [b.start for b in blocks] == sorted(b.start for b in blocks) and blocks[0].start == 0
    np.testing.assert_array_equal(np.concatenate([b.gamma for b in blocks], axis=2), gamma)
    np.testing.assert_array_equal(
        np.concatenate([b.event_signature for b in blocks]), np.arange(len(features.weight))
    )
    assert sum(len(b.indptr) - 1 for b in blocks) == len(lengths)
    for block in blocks:
        assert block.indptr[0] == 0 and block.indptr[-1] == len(block.weight)
