"""Cold-start mixes from demographics on the planted shop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from engine.data.feature_space import FeatureSpace, demographic_columns
from engine.data.id_map import IdMap
from engine.personas.inference.demographic_prior import DemographicMixPrior
from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.inference.model import PersonaInferenceModel
from engine.personas.mix_resolution import CustomerMixes, demographic_frame
from engine.personas.shopping_context import CONTEXTS
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


def test_extra_customer_features_move_a_cold_start_mix_when_they_are_informative(
    planted: PlantedShop, fitted: tuple[PersonaInferenceModel, InferredMixes], tmp_path: Path
) -> None:
    """Planted: bargain hunters live in big households; health enthusiasts have a garden (categorical).

    The extra columns go the way serving sees them: encoded by the feature space (numeric standardized),
    decoded from the stored rows, and turned into an eventless customer's stored mix.
    """
    _, mixes = fitted
    rng = np.random.default_rng(3)
    bargain, health = PERSONAS.index("bargain_hunter"), PERSONAS.index("health_enthusiast")
    n = len(planted.customer_ids)
    customers = pl.DataFrame(
        {
            "customer_id": planted.customer_ids.ids.tolist(),
            "feature__household_size": 1.0 + 5.0 * planted.expected[:, bargain] + rng.normal(0, 0.3, n),
            "feature__garden": np.where(planted.expected[:, health] > 0.4, "yes", "no"),
        }
    )
    columns = demographic_columns(customers)
    assert columns[-2:] == ("feature__garden", "feature__household_size")
    space = FeatureSpace.from_frame(customers, columns)
    decoded = demographic_frame(space.encode(customers, columns), space).with_columns(
        customers["customer_id"]
    )
    prior = DemographicMixPrior.fit(mixes, decoded)
    assert set(prior.numeric_attributes) == {"feature__household_size"}

    newcomers = pl.DataFrame(
        {"feature__household_size": [6.0, 1.0, None], "feature__garden": ["no", "no", "yes"]}
    )
    stored = CustomerMixes.with_demographic_prior(
        PERSONAS,
        IdMap(["big", "single", "gardener"], kind="customer"),
        overall=np.zeros((3, len(PERSONAS))),
        by_context=np.zeros((3, len(CONTEXTS), len(PERSONAS))),
        n_events=np.zeros(3, dtype=np.int64),
        prior=prior,
        demographics=space.encode(newcomers, columns),
        demographic_space=space,
    )
    big, single, gardener = (stored.stored(row).weights for row in range(3))
    informative = big[bargain] - single[bargain]
    assert informative > 0.2, (big, single)
    assert gardener[health] > single[health] + 0.1
    reloaded = DemographicMixPrior.load(prior.save(tmp_path / "prior.json"))
    np.testing.assert_allclose(reloaded.mix_for_frame(decoded), prior.mix_for_frame(decoded))

    # uninformative extras move a mix by sampling noise only, far less than informative ones
    noise = customers.with_columns(
        pl.Series("feature__household_size", rng.normal(3, 1, n)), pl.Series("feature__garden", ["no"] * n)
    )
    flat = DemographicMixPrior.fit(
        mixes, demographic_frame(space.encode(noise, columns), space).with_columns(customers["customer_id"])
    )
    high, low = flat.mix_for_frame(pl.DataFrame({"feature__household_size": [2.0, -2.0]}))
    assert np.abs(high - low).max() < informative / 3


def test_each_value_mix_is_the_smoothed_mean_of_its_customers_with_events() -> None:
    """Per attribute value: (sum of its event-having customers' mixes + smoothing x population) /
    (their count + smoothing); customers without events and unknown customers count for nothing."""
    rng = np.random.default_rng(11)
    n, k, smoothing = 400, 3, 20.0
    ids = IdMap([f"c{i}" for i in range(n)], kind="customer")
    overall = rng.dirichlet(np.ones(k), n)
    n_events = rng.integers(0, 3, n)
    mixes = InferredMixes(
        customer_ids=ids,
        persona_ids=("a", "b", "c"),
        overall=overall,
        by_context=np.repeat(overall[:, None], len(CONTEXTS), axis=1),
        n_events=n_events,
        n_events_by_context=np.zeros((n, len(CONTEXTS)), dtype=np.int64),
    )
    bands = rng.choice(["18-24", "25-34", "35-44"], n)
    customers = pl.DataFrame(
        {"customer_id": [*ids.ids.tolist(), "stranger"], "age_band": [*bands.tolist(), "18-24"]}
    )
    prior = DemographicMixPrior.fit(mixes, customers, smoothing=smoothing)
    warm = n_events > 0
    population = overall[warm].mean(axis=0)
    np.testing.assert_allclose(prior.population_mix, population)
    for band in ("18-24", "25-34", "35-44"):
        members = warm & (bands == band)
        want = (overall[members].sum(axis=0) + smoothing * population) / (members.sum() + smoothing)
        np.testing.assert_allclose(prior.attribute_mixes["age_band"][band], want, rtol=1e-12)
