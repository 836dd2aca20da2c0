"""Cold-start mixes from demographics on the planted shop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from engine.personas.inference.demographic_prior import DemographicMixPrior
from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.inference.model import PersonaInferenceModel
from tests.engine.personas.planted_shop import PERSONAS, PlantedShop


def test_demographic_prior_gives_cold_start_mixes(
    planted: PlantedShop, fitted: tuple[PersonaInferenceModel, InferredMixes], tmp_path: Path
) -> None:
    """Planted: 18-24 year olds are mostly tech-savvy, high incomes mostly luxury."""
    assert planted.shop.customers is not None
    _, mixes = fitted
    prior = DemographicMixPrior.fit(mixes, planted.shop.customers)
    tech, luxury = PERSONAS.index("tech_savvy"), PERSONAS.index("luxury_enthusiast")
    young = prior.mix_for(age_band="18-24")
    rich = prior.mix_for(income_band="high")
    assert young[tech] > prior.population_mix[tech] + 0.2
    assert rich[luxury] > prior.population_mix[luxury] + 0.2
    both = prior.mix_for(age_band="18-24", income_band="high")
    assert both[tech] > prior.population_mix[tech] and both[luxury] > prior.population_mix[luxury]
    np.testing.assert_allclose(prior.mix_for(), prior.population_mix)
    np.testing.assert_allclose(prior.mix_for(age_band="99+", region="mars"), prior.population_mix)

    frame = pl.DataFrame(
        {
            "age_band": ["18-24", None, "45-54"],
            "income_band": ["high", "middle", None],
            "region": [None, None, "north"],
        }
    )
    vectorised = prior.mix_for_frame(frame)
    for row, record in enumerate(frame.iter_rows(named=True)):
        np.testing.assert_allclose(vectorised[row], prior.mix_for(**record))
    np.testing.assert_allclose(vectorised.sum(axis=1), 1.0)
    reloaded = DemographicMixPrior.load(prior.save(tmp_path / "prior.json"))
    np.testing.assert_allclose(reloaded.mix_for_frame(frame), vectorised)
