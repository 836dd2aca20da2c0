"""Persona inference on the planted shop: mixes, context mixes, fold-in, explanations and profiles."""

from __future__ import annotations

import datetime as dt
import tomllib

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.data.id_map import IdMap
from engine.personas.catalog import load_catalog, parse_catalog
from engine.personas.inference.config import PersonaInferenceConfig
from engine.personas.inference.errors import PersonaInferenceError
from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.inference.model import PersonaInferenceModel
from engine.personas.mix import total_variation_rows
from engine.personas.shopping_context import CONTEXTS
from tests.engine.personas.planted_shop import PERSONAS, PlantedShop, non_hidden_tv, planted_shop


def test_recovers_planted_mixes(
    planted: PlantedShop, fitted: tuple[PersonaInferenceModel, InferredMixes]
) -> None:
    """Inferred mixes sit close to the planted ones: far closer than knowing only the population mix.

    Thresholds: the sampling noise alone (realised persona shares vs the planted mix) is ~0.08 TV
    here, the population-mix baseline ~0.5; events are ambiguous one by one (personas overlap on
    every feature), so 0.15 leaves a margin over the ~0.127 measured (0.13 with a single
    population-centred Dirichlet prior) while failing any real regression.
    """
    _, mixes = fitted
    baseline = np.tile(planted.expected.mean(axis=0), (len(planted.expected), 1))
    baseline_tv = float(total_variation_rows(baseline, planted.expected).mean())
    tv = non_hidden_tv(mixes, planted)
    dominant = float((mixes.overall.argmax(axis=1) == planted.expected.argmax(axis=1)).mean())
    assert tv < 0.15
    assert tv < 0.35 * baseline_tv
    assert dominant > 0.8


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_customers=st.integers(min_value=5, max_value=40),
    seed=st.integers(min_value=0, max_value=10_000),
    low=st.integers(min_value=1, max_value=6),
)
def test_mixes_are_on_the_simplex(n_customers: int, seed: int, low: int) -> None:
    shop = planted_shop(n_customers=n_customers, events_per_customer=(low, low + 8), seed=seed, n_items=120)
    extra = shop.customer_ids.add_ids(["never_seen"])
    model = PersonaInferenceModel(PersonaInferenceConfig(max_iterations=30))
    mixes = model.fit(shop.shop, load_catalog("default"), customer_ids=extra)
    for block in (mixes.overall, mixes.by_context.reshape(-1, len(PERSONAS))):
        assert np.all(np.isfinite(block)) and (block >= 0).all()
        np.testing.assert_allclose(block.sum(axis=1), 1.0, atol=1e-9)
    silent = extra.index("never_seen")
    assert mixes.n_events[silent] == 0
    np.testing.assert_allclose(mixes.overall[silent], model.population_mix)
    np.testing.assert_allclose(mixes.by_context[silent], np.tile(model.population_mix, (len(CONTEXTS), 1)))


def test_context_mixes_shift_in_the_planted_direction(
    planted: PlantedShop, fitted: tuple[PersonaInferenceModel, InferredMixes]
) -> None:
    """Weekends were planted 40% towards luxury: weekend mixes lean there, weekday ones away from it."""
    _, mixes = fitted
    weekday, weekend = CONTEXTS.index("weekday"), CONTEXTS.index("weekend_holiday")
    shift = (mixes.by_context[:, weekend] - mixes.by_context[:, weekday]).mean(axis=0)
    luxury = PERSONAS.index("luxury_enthusiast")
    assert shift[luxury] > 0.1
    assert np.argmax(shift) == luxury
    assert (np.delete(shift, luxury) < 0).all()


def test_context_mix_of_a_customer_with_few_context_events_stays_near_overall(
    planted: PlantedShop, fitted: tuple[PersonaInferenceModel, InferredMixes]
) -> None:
    model, mixes = fitted
    one_weekend_event = planted.shop.events.filter(pl.col("customer_id") == "c0").with_columns(
        pl.lit(dt.datetime(2024, 3, 9, 12, tzinfo=dt.UTC)).alias("timestamp")  # a Saturday
    )
    few = model.infer(one_weekend_event.head(1), planted.shop.items, prior=mixes.overall[:1])
    moved = total_variation_rows(few.by_context[:, CONTEXTS.index("weekend_holiday")], few.overall)[0]
    assert moved < 0.15


def test_explanation_names_the_planted_signal(fitted: tuple[PersonaInferenceModel, InferredMixes]) -> None:
    """The customer with the most bargain weight is explained by discounts, the most luxury one by price."""
    model, mixes = fitted
    bargain = int(np.argmax(mixes.overall[:, PERSONAS.index("bargain_hunter")]))
    reasons = model.explain(mixes, bargain, top=3)["bargain_hunter"]
    assert reasons, "a bargain-heavy customer must have reasons for their bargain weight"
    features = [r.feature for r in reasons]
    assert "discounted=yes" in features
    discount = reasons[features.index("discounted=yes")]
    assert discount.description == "discount share"
    assert discount.customer_value > discount.population_value
    assert discount.persona_value > discount.population_value
    assert all(r.contribution > 0 for r in reasons)
    assert [r.contribution for r in reasons] == sorted((r.contribution for r in reasons), reverse=True)

    luxury = int(np.argmax(mixes.overall[:, PERSONAS.index("luxury_enthusiast")]))
    luxury_features = [r.feature for r in model.explain(mixes, luxury, top=4)["luxury_enthusiast"]]
    assert {"price_level=high", "tag:premium", "tag:limited-edition", "channel=direct"} & set(luxury_features)


def test_persona_profiles_show_what_each_persona_does(
    fitted: tuple[PersonaInferenceModel, InferredMixes],
) -> None:
    model, _ = fitted
    profiles = model.persona_profiles()
    lift = {
        (row["persona_id"], row["feature"]): row["lift"]
        for row in profiles.select("persona_id", "feature", "lift").iter_rows(named=True)
    }
    assert lift[("bargain_hunter", "discounted=yes")] > 2
    assert lift[("tech_savvy", "tag:new-tech")] > 2
    assert lift[("health_enthusiast", "channel=social")] > 2
    assert lift[("brand_loyalist", "brand_repeat=yes")] > 1.5
    totals = (
        profiles.filter(pl.col("group") == "channel").group_by("persona_id").agg(pl.col("probability").sum())
    )
    np.testing.assert_allclose(totals["probability"].to_numpy(), 1.0)


def test_infer_folds_in_without_refitting(
    planted: PlantedShop, fitted: tuple[PersonaInferenceModel, InferredMixes]
) -> None:
    """Folding the training events back in reproduces the fitted mixes; a prior centres empty customers."""
    model, mixes = fitted
    again = model.infer(planted.shop.events, planted.shop.items, customer_ids=planted.customer_ids)
    # The fit's mixes are the converged fold-in under the fitted model, so they agree to the tolerance
    # (steps of 1e-4; the fit's fold-in starts from the EM's posteriors, this one from the prior's).
    assert np.abs(again.overall - mixes.overall).max() < 1e-3
    assert np.abs(again.by_context - mixes.by_context).max() < 1e-3
    newcomers = IdMap(["c1", "brand_new"], kind="customer")
    prior = np.array([model.population_mix, np.eye(len(PERSONAS))[2] * 0.5 + 0.1])
    folded = model.infer(
        planted.shop.events.filter(pl.col("customer_id") == "c1"), planted.shop.items, newcomers, prior=prior
    )
    np.testing.assert_allclose(folded.overall[1], prior[1])
    with pytest.raises(ValueError, match="prior has shape"):
        model.infer(
            planted.shop.events.filter(pl.col("customer_id") == "c1"),
            planted.shop.items,
            newcomers,
            prior=prior[:1],
        )


def test_a_customers_inferred_mix_does_not_depend_on_the_rest_of_the_batch(
    planted: PlantedShop, fitted: tuple[PersonaInferenceModel, InferredMixes]
) -> None:
    """Each customer's fold-in stops on its own, so inferring a few customers alone gives their mixes
    from the whole batch (a slow customer elsewhere no longer moves everyone else's last digits)."""
    model, _ = fitted
    everyone = model.infer(planted.shop.events, planted.shop.items, customer_ids=planted.customer_ids)
    few = [str(c) for c in planted.customer_ids.ids[::37]]
    alone = model.infer(
        planted.shop.events.filter(pl.col("customer_id").is_in(few)),
        planted.shop.items,
        customer_ids=IdMap(few, kind="customer"),
    )
    rows = planted.customer_ids.to_internal(few)
    np.testing.assert_allclose(alone.overall, everyone.overall[rows], rtol=0, atol=1e-12)
    np.testing.assert_allclose(alone.by_context, everyone.by_context[rows], rtol=0, atol=1e-12)


def test_unfitted_model_refuses_to_infer(planted: PlantedShop) -> None:
    with pytest.raises(PersonaInferenceError, match="not fitted"):
        PersonaInferenceModel().infer(planted.shop.events, planted.shop.items)


CATALOG_WITH_ABSENT_SIGNALS = """
[[personas]]
id = "bargain_hunter"
name = "Bargain Hunter"
description = "Hunts deals."
[personas.signals]
discount_share = "high"
price_level = "low"
channels = ["email", "search"]

[[personas]]
id = "antique_collector"
name = "Antique Collector"
description = "Only shops for antiques, by fax."
[personas.signals]
categories = ["antiques"]
tags = ["vintage"]
channels = ["fax"]

[[personas]]
id = "tech_savvy"
name = "Tech-Savvy Shopper"
description = "Gadgets."
[personas.signals]
tags = ["new-tech"]
categories = ["electronics", "computers", "phones", "smart_home"]
devices = ["mobile"]
"""


def test_catalog_signals_absent_from_the_data_still_fit(planted: PlantedShop) -> None:
    catalog = parse_catalog(tomllib.loads(CATALOG_WITH_ABSENT_SIGNALS), "test catalog")
    model = PersonaInferenceModel(PersonaInferenceConfig(max_iterations=60))
    mixes = model.fit(planted.shop, catalog, customer_ids=planted.customer_ids)
    assert set(model.unmatched_signals["antique_collector"]) == {
        "category=antiques",
        "tag:vintage",
        "channel=fax",
    }
    assert "bargain_hunter" not in model.unmatched_signals
    assert np.all(np.isfinite(mixes.overall))
    np.testing.assert_allclose(mixes.overall.sum(axis=1), 1.0)
    bargain_planted = planted.expected[:, PERSONAS.index("bargain_hunter")]
    tech_planted = planted.expected[:, PERSONAS.index("tech_savvy")]
    assert np.corrcoef(mixes.overall[:, 0], bargain_planted)[0, 1] > 0.6
    assert np.corrcoef(mixes.overall[:, 2], tech_planted)[0, 1] > 0.6
