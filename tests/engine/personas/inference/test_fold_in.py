"""Fold-in around a centre: it leans towards the centre and leaves the caller's array alone."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.data.id_map import IdMap
from engine.personas.inference.fold_in import fold_in, fold_in_by_context, scaled_likelihoods
from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.inference.model import PersonaInferenceModel
from engine.personas.traits import FEATURE_MATRIX_DTYPE
from tests.engine.personas.planted_shop import PERSONAS, PlantedShop


def test_fold_in_with_a_centre_leans_towards_it(
    planted: PlantedShop, fitted: tuple[PersonaInferenceModel, InferredMixes]
) -> None:
    """A demographic centre shifts which persona a customer with few events is thought to be."""
    model, mixes = fitted
    health = PERSONAS.index("health_enthusiast")
    row = int(np.argsort(mixes.overall[:, health])[len(mixes.overall) // 2])  # a middling customer
    customer = str(mixes.customer_ids.ids[row])
    few = planted.shop.events.filter(pl.col("customer_id") == customer).head(3)
    ids = IdMap([customer], kind="customer")
    plain = model.infer(few, planted.shop.items, ids)
    centre = np.full((1, len(PERSONAS)), 0.05)
    centre[0, health] = 0.8
    leaning = model.infer(few, planted.shop.items, ids, prior=centre)
    assert leaning.overall[0, health] > plain.overall[0, health] + 0.1


@pytest.mark.parametrize("groups", [1, 3])
def test_fold_in_leaves_the_callers_centre_alone(groups: int) -> None:
    """One group's (1, k) centre transposes to an array that is already contiguous: it must be copied,
    or the fold-in overwrites the caller's long-term mix (and drift is measured against itself)."""
    rng = np.random.default_rng(groups)
    k, n = 4, 12
    centre = rng.dirichlet(np.ones(k), size=groups)
    before = centre.copy()
    likelihoods = rng.random((k, n)) * np.array([[4.0], [1.0], [1.0], [1.0]])
    mixes = fold_in(likelihoods, np.ones(n), rng.integers(0, groups, n), centre, 3.0, 100)
    assert np.array_equal(centre, before)
    assert not np.allclose(mixes, centre)


def _reference_fold_in(
    likelihoods: np.ndarray, weight: np.ndarray, group: np.ndarray, centre: np.ndarray, strength: float
) -> np.ndarray:
    """The MAP fold-in written plainly, one group at a time, as the textbook EM states it."""
    out = centre.copy()
    for g in range(centre.shape[0]):
        mine = group == g
        if not mine.any():
            continue
        lik, w, theta = likelihoods[:, mine], weight[mine], centre[g].copy()
        for _ in range(500):
            joint = theta[:, None] * lik
            joint *= w / joint.sum(axis=0)
            updated = (joint.sum(axis=1) + strength * centre[g]) / (w.sum() + strength)
            done = np.abs(updated - theta).max() < 1e-12
            theta = updated
            if done:
                break
        out[g] = theta
    return out


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 6),
    n=st.integers(0, 40),
    groups=st.integers(1, 6),
    strength=st.floats(0.05, 20.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_fold_in_matches_the_plain_em_per_group(
    k: int, n: int, groups: int, strength: float, seed: int
) -> None:
    """The compiled per-group loop reaches the plain EM's fixed point, and a group's mix does not
    depend on the other groups of the batch (live drift checks fold customers in one at a time)."""
    rng = np.random.default_rng(seed)
    likelihoods = rng.random((k, n)) + 1e-3
    weight = rng.random(n) * 2.0 + 0.01
    group = rng.integers(0, groups, n)
    centre = rng.dirichlet(np.ones(k), size=groups)
    got = fold_in(likelihoods, weight, group, centre, strength, 500, tolerance=1e-12)
    assert np.allclose(got, _reference_fold_in(likelihoods, weight, group, centre, strength), atol=1e-9)
    assert np.allclose(got.sum(axis=1), 1.0)
    alone = fold_in(
        likelihoods[:, group == 0], weight[group == 0], np.zeros(int((group == 0).sum()), dtype=np.int64),
        centre[:1], strength, 500, tolerance=1e-12,
    )  # fmt: skip
    assert np.allclose(alone[0], got[0], atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    events=st.integers(1, 30),
    columns=st.integers(1, 12),
    k=st.integers(1, 5),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_scaled_likelihoods_are_the_sparse_products_scaled_per_event(
    events: int, columns: int, k: int, density: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    matrix = sp.random(events, columns, density=density, format="csr", random_state=rng, dtype=np.float64)
    matrix.data[:] = 1.0  # encoded events are 0/1, in the encoding's own dtype
    matrix = matrix.astype(FEATURE_MATRIX_DTYPE)
    parameters = rng.normal(size=(columns, k)) * 3.0
    offsets = rng.normal(size=k)
    first = int(rng.integers(0, events))
    stop = int(rng.integers(first, events + 1))
    scaled, scale = scaled_likelihoods(matrix, parameters, offsets, (first, stop))
    log_likelihood = np.asarray(matrix[first:stop].astype(np.float64) @ parameters) + offsets
    assert scaled.shape == (k, stop - first)
    assert np.allclose(scale, log_likelihood.max(axis=1, initial=-np.inf) if stop > first else scale)
    assert np.allclose(np.log(scaled.T) + scale[:, None], log_likelihood)
    assert np.allclose(scaled.max(axis=0, initial=1.0), 1.0)


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 9), min_size=1, max_size=6),
    n_contexts=st.integers(1, 3),
    k=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_context_fold_in_equals_the_fold_in_of_customer_context_groups(
    lengths: list[int], n_contexts: int, k: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = int(indptr[-1])
    likelihoods = rng.random((k, n)) + 1e-3
    weight = rng.choice([1.0, 0.5, 1.0 / 3.0, 2.0], n)
    context = rng.integers(0, n_contexts, n)
    centre = rng.dirichlet(np.ones(k), len(lengths))
    customer = np.repeat(np.arange(len(lengths)), lengths)
    expected = fold_in(
        likelihoods, weight, customer * n_contexts + context, np.repeat(centre, n_contexts, axis=0), 3.0, 50
    )
    got = fold_in_by_context(likelihoods, weight, indptr, context, n_contexts, centre, 3.0, 50)
    np.testing.assert_array_equal(got, expected)  # the same steps on the same events in the same order
