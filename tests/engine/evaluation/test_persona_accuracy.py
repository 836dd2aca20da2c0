"""Scoring inferred mixes against planted ones: against the mix in force for each event."""

from __future__ import annotations

from dataclasses import replace

import polars as pl
import pytest

from engine.evaluation.persona_accuracy import compare_with_planted
from engine.personas.catalog import load_catalog
from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.inference.model import PersonaInferenceModel
from engine.personas.mix import total_variation_rows
from tests.engine.personas.planted_shop import PERSONAS, PlantedShop, non_hidden_tv, planted_shop


@pytest.fixture(scope="module")
def planted() -> PlantedShop:
    return planted_shop()


@pytest.fixture(scope="module")
def fitted(planted: PlantedShop) -> tuple[PersonaInferenceModel, InferredMixes]:
    model = PersonaInferenceModel()
    return model, model.fit(planted.shop, load_catalog("default"), customer_ids=planted.customer_ids)


def test_compare_with_planted_scores_against_the_mix_in_force(
    planted: PlantedShop, fitted: tuple[PersonaInferenceModel, InferredMixes]
) -> None:
    _, mixes = fitted
    weekday, weekend = planted.mixes[:, 0], planted.mixes[:, 1]
    truth = pl.DataFrame(
        {
            "customer_id": planted.customer_ids.ids.tolist(),
            "hidden_segment": planted.hidden,
            **{f"weekday__{p}": weekday[:, k] for k, p in enumerate(PERSONAS)},
            **{f"weekend_holiday__{p}": weekend[:, k] for k, p in enumerate(PERSONAS)},
            **{f"realized__{p}": planted.realized[:, k] for k, p in enumerate(PERSONAS)},
        }
    )
    result = compare_with_planted(mixes, truth, planted.shop.events)
    assert result["n_compared"] == len(planted.customer_ids)
    assert result["mean_tv"] == pytest.approx(non_hidden_tv(mixes, planted))
    expected_floor = total_variation_rows(planted.realized, planted.expected).mean()
    assert result["realized_noise_floor_tv"] == pytest.approx(expected_floor)
    perfect = replace(mixes, overall=planted.expected)
    assert compare_with_planted(perfect, truth, planted.shop.events)["mean_tv"] == pytest.approx(
        0.0, abs=1e-12
    )
    with pytest.raises(ValueError, match="lacks column"):
        compare_with_planted(mixes, truth.drop("weekday__tech_savvy"), planted.shop.events)
