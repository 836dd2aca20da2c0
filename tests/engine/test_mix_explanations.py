"""Stored mix explanations: what training writes is what a profile reads back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.mix_explanations import MixExplanations, MixExplanationsError

PERSONAS = ("a", "b")
FEATURES = [("channel=email", "share of visits from channel email"), ("tag:organic", "items tagged organic")]


def explanations() -> MixExplanations:
    feature = np.full((3, 2, 2), -1, dtype=np.int32)
    feature[0, 0] = [1, 0]
    feature[0, 1, 0] = 0
    values = {
        name: np.arange(12, dtype=np.float32).reshape(3, 2, 2) / 10 + offset
        for offset, name in enumerate(("customer_value", "population_value", "persona_value", "contribution"))
    }
    return MixExplanations(PERSONAS, FEATURES, feature, values)


def test_signals_stop_at_the_padding_and_carry_every_value() -> None:
    signals = explanations().signals(0)
    assert [s.feature for s in signals["a"]] == ["tag:organic", "channel=email"]
    assert [s.feature for s in signals["b"]] == ["channel=email"]
    first = signals["a"][0]
    assert first.description == "items tagged organic"
    assert (first.customer_value, first.population_value, first.contribution) == pytest.approx(
        (0.0, 1.0, 3.0)
    )
    assert explanations().signals(2) == {"a": [], "b": []}


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    original = explanations()
    original.save(tmp_path / "explanations")
    loaded = MixExplanations.load(tmp_path / "explanations")
    assert loaded.persona_ids == PERSONAS and loaded.features == tuple(FEATURES)
    for row in range(3):
        assert loaded.signals(row) == original.signals(row)


def test_inconsistent_arrays_and_rows_are_refused(tmp_path: Path) -> None:
    good = explanations()
    with pytest.raises(MixExplanationsError, match="outside the 1 known signals"):
        MixExplanations(PERSONAS, FEATURES[:1], good.feature, good.values)
    with pytest.raises(MixExplanationsError, match="contribution has shape"):
        MixExplanations(
            PERSONAS, FEATURES, good.feature, {**good.values, "contribution": np.zeros((3, 2, 1))}
        )
    with pytest.raises(IndexError, match="customer row 3"):
        good.signals(3)
    with pytest.raises(MixExplanationsError, match="cannot read"):
        MixExplanations.load(tmp_path / "missing")
