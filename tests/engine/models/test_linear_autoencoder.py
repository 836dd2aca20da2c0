"""The linear autoencoder served as factors gives the closed form's scores, places new customers
exactly, and refuses what it cannot fit."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engine.models import linear_autoencoder
from engine.models.base import ModelFitError, TrainingSet, UserBatch
from engine.models.linear_autoencoder import LinearAutoencoderModel
from engine.models.registry import load_model


def _training_set(seen: np.ndarray, n_personas: int = 2) -> TrainingSet:
    n_users, n_items = seen.shape
    mix = np.full((n_users, n_personas), 1.0 / n_personas)
    mix[::2] = np.eye(n_personas)[0]
    return TrainingSet(
        interactions=sp.csr_matrix(seen.astype(np.float32) * 2.0),  # confidences: the model reads > 0
        user_mix=mix,
        user_demographics=sp.csr_matrix((n_users, 1)),
        item_features=sp.csr_matrix((n_items, 1)),
        persona_names=tuple(f"p{i}" for i in range(n_personas)),
        demographic_feature_names=("d",),
        item_feature_names=("f",),
    )


def _known(data: TrainingSet, rows: np.ndarray) -> UserBatch:
    return UserBatch(user_index=rows, mix=data.user_mix[rows], demographics=data.user_demographics[rows])


def _closed_form(seen: np.ndarray, dropout: float, regularization: float, zero_diagonal: bool) -> np.ndarray:
    """Steck's formulas, written the textbook way (inverse and solve), to check the factored form."""
    x = seen.astype(np.float64)
    gram = x.T @ x
    penalty = np.diag(dropout / (1 - dropout) * np.diag(gram) + regularization)
    if zero_diagonal:
        inverse = np.linalg.inv(gram + penalty)
        weights = np.eye(len(gram)) - inverse / np.diag(inverse)[None, :]
    else:
        weights = np.linalg.solve(gram + penalty, gram)
    return x @ weights


@settings(max_examples=40, deadline=None)
@given(
    seen=arrays(np.bool_, st.tuples(st.integers(3, 12), st.integers(2, 9))),
    dropout=st.sampled_from([0.0, 0.25, 0.5, 0.75]),
    regularization=st.sampled_from([0.5, 3.0, 50.0]),
    zero_diagonal=st.booleans(),
)
def test_full_rank_factors_score_untouched_items_as_the_closed_form(
    seen: np.ndarray, dropout: float, regularization: float, zero_diagonal: bool
) -> None:
    assume(seen.any())  # every model refuses a training set without one interaction
    data = _training_set(seen)
    model = LinearAutoencoderModel(
        factors=64, dropout=dropout, regularization=regularization, zero_diagonal=zero_diagonal,
        persona_blend=0.0, num_threads=1,
    )  # fmt: skip
    model.fit(data)
    scores = model.score(_known(data, np.arange(seen.shape[0])))
    expected = _closed_form(seen, dropout, regularization, zero_diagonal)
    untouched = ~seen  # a customer's own items are never recommended; the forms differ only there
    np.testing.assert_allclose(scores[untouched], expected[untouched], rtol=1e-4, atol=1e-5)
    assert model.factor_width == seen.shape[1]


def test_a_lower_rank_keeps_the_strongest_directions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    seen = rng.random((60, 20)) < 0.3
    data = _training_set(seen)
    full = LinearAutoencoderModel(factors=20, persona_blend=0.0, num_threads=1)
    low = LinearAutoencoderModel(factors=6, persona_blend=0.0, num_threads=1)
    full.fit(data)
    low.fit(data)
    users = _known(data, np.arange(60))
    assert low.item_vectors().shape == (20, 6) and low.factor_width == 6
    exact, approximate = full.score(users), low.score(users)
    # the truncation keeps most of the scores' spread, and a saved and loaded model scores the same
    assert np.corrcoef(exact.ravel(), approximate.ravel())[0, 1] > 0.8
    low.save(tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    np.testing.assert_array_equal(loaded.score(users), approximate)


def test_a_customer_outside_the_fit_is_placed_by_their_events_exactly() -> None:
    rng = np.random.default_rng(5)
    seen = rng.random((40, 15)) < 0.3
    seen[7, :3] = True
    data = _training_set(seen)
    model = LinearAutoencoderModel(factors=15, persona_blend=0.0, num_threads=1)
    model.fit(data)
    known = model.score(_known(data, np.array([7])))
    newcomer = UserBatch(
        user_index=np.array([-1]),
        mix=data.user_mix[7:8],
        demographics=data.user_demographics[7:8],
        events=sp.csr_matrix(seen[7:8].astype(np.float32)),
    )
    np.testing.assert_allclose(model.score(newcomer), known, rtol=1e-5, atol=1e-6)


def test_settings_it_cannot_fit_are_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="regularization must be a positive number"):
        LinearAutoencoderModel(regularization=0.0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        LinearAutoencoderModel(dropout=1.0)
    monkeypatch.setattr(linear_autoencoder, "MAX_ITEMS", 8)
    with pytest.raises(ModelFitError, match=r"9 items.*at most 8 items: use als"):
        LinearAutoencoderModel(num_threads=1).fit(_training_set(np.ones((4, 9), dtype=bool)))
