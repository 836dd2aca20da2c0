"""The blend keeps its known customers' persona prior only when validation shows it lifting them."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp

from training.blend_weights import _lifts


def _segment(relevant: np.ndarray) -> SimpleNamespace:
    return SimpleNamespace(exclude=None, relevant=sp.csr_matrix(relevant))


def test_a_prior_that_puts_every_customers_item_first_lifts_and_noise_does_not() -> None:
    rng = np.random.default_rng(0)
    customers, items = 300, 40
    wanted = rng.integers(0, items, size=customers)
    relevant = np.zeros((customers, items))
    relevant[np.arange(customers), wanted] = 1.0
    scores = rng.normal(size=(customers, items)).astype(np.float32)
    helpful = np.zeros((customers, items))
    helpful[np.arange(customers), wanted] = 10.0
    assert _lifts(scores, helpful, _segment(relevant), 10)  # type: ignore[arg-type]
    noise = 0.01 * rng.normal(size=(customers, items))
    assert not _lifts(scores, noise, _segment(relevant), 10)  # type: ignore[arg-type]
    assert not _lifts(scores, np.zeros((customers, items)), _segment(relevant), 10)  # type: ignore[arg-type]
