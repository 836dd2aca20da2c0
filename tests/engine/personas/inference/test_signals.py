"""The compiled explanation step against the numpy one it replaced, on a fitted planted shop."""

from __future__ import annotations

import numpy as np
import pytest

from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.inference.model import PersonaInferenceModel
from engine.personas.inference.signals import SIGNAL_VALUES, ColumnFacts, strongest_signals_of
from tests.engine.personas.inference.signals_reference import reference_strongest_signals_of


@pytest.mark.parametrize(("first", "last", "top"), [(0, 400, 3), (17, 18, 5), (100, 260, 1), (5, 9, 200)])
def test_the_compiled_step_gives_the_columns_and_values_of_the_numpy_step(
    fitted: tuple[PersonaInferenceModel, InferredMixes], first: int, last: int, top: int
) -> None:
    model, mixes = fitted
    assert mixes.evidence is not None
    columns = ColumnFacts.of(model.space)
    args = (model.behaviour, columns, mixes.evidence, mixes.overall, first, last, top)
    column, values = strongest_signals_of(*args)
    want_column, want_values = reference_strongest_signals_of(*args)
    assert np.array_equal(column, want_column)
    assert (column >= 0).sum() > (last - first)  # most customers have a signal for some persona
    for name in SIGNAL_VALUES:
        assert np.allclose(values[name], want_values[name], rtol=1e-10, atol=1e-12), name


def test_mixes_that_put_all_weight_elsewhere_still_rank_the_same(
    fitted: tuple[PersonaInferenceModel, InferredMixes],
) -> None:
    """Near-pure and uniform mixes: responsibilities at their extremes, many contributions near 0."""
    model, mixes = fitted
    assert mixes.evidence is not None
    n, k = mixes.overall.shape
    overall = np.full((n, k), 1e-9)
    overall[np.arange(n), np.arange(n) % k] = 1.0
    overall[::3] = 1.0 / k
    overall /= overall.sum(axis=1, keepdims=True)
    args = (model.behaviour, ColumnFacts.of(model.space), mixes.evidence, overall, 0, n, 4)
    column, values = strongest_signals_of(*args)
    want_column, want_values = reference_strongest_signals_of(*args)
    assert np.array_equal(column, want_column)
    for name in SIGNAL_VALUES:
        assert np.allclose(values[name], want_values[name], rtol=1e-10, atol=1e-12), name
