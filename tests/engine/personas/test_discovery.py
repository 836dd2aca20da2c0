"""Discovery on planted shops: a hidden gift-shopper segment must be found, and nothing where none exists."""

from __future__ import annotations

import numpy as np
import pytest

from engine.personas.catalog import load_catalog
from engine.personas.discovery import DiscoveryConfig, DiscoveryResult, discover_segments, misfit_scores
from engine.personas.inference.errors import PersonaInferenceError
from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.inference.model import PersonaInferenceModel
from tests.engine.personas.planted_shop import PlantedShop, planted_shop


def _discover(shop: PlantedShop) -> tuple[PersonaInferenceModel, InferredMixes, DiscoveryResult]:
    model = PersonaInferenceModel()
    mixes = model.fit(shop.shop, load_catalog("default"), customer_ids=shop.customer_ids)
    return model, mixes, discover_segments(model, mixes)


@pytest.fixture(scope="module")
def with_gift_shoppers() -> PlantedShop:
    return planted_shop(n_customers=1000, hidden_share=0.04, seed=7)


def test_finds_the_planted_gift_shoppers(with_gift_shoppers: PlantedShop) -> None:
    shop = with_gift_shoppers
    _, _, result = _discover(shop)
    assert len(result.segments) == 1
    segment = result.segments[0]
    hidden = set(shop.customer_ids.ids[shop.hidden].tolist())
    members = set(segment.customer_ids)
    assert len(members & hidden) / len(members) > 0.9  # the segment is the gift shoppers
    assert len(members & hidden) / len(hidden) > 0.5  # and most of them
    assert set(segment.example_customer_ids) <= hidden
    assert segment.size == len(segment.customer_ids) >= DiscoveryConfig().min_segment_size
    assert segment.share == pytest.approx(segment.size / result.n_scored)
    excess = {u.feature for u in segment.unexplained_features if u.excess > 0.1}
    assert {"device=tablet", "category=toys", "category=books"} <= excess
    top_traits = {t.trait for t in segment.distinguishing_traits[:4]}
    assert top_traits & {"category:toys", "category:books", "device:tablet", "channel:social"}
    for trait in segment.distinguishing_traits:
        if trait.trait in ("category:toys", "device:tablet"):
            assert trait.z_score > 1 and trait.segment_mean > trait.population_mean


def test_reports_nothing_without_a_hidden_segment() -> None:
    _, _, result = _discover(planted_shop(n_customers=1000, hidden_share=0.0, seed=8))
    assert result.segments == ()
    assert result.n_scored > 900
    assert result.n_poorly_explained < 0.15 * result.n_scored


def test_discovery_is_deterministic(with_gift_shoppers: PlantedShop) -> None:
    model, mixes, first = _discover(with_gift_shoppers)
    second = discover_segments(model, mixes)
    assert first.segments == second.segments
    np.testing.assert_array_equal(first.misfit, second.misfit)


def test_small_segments_are_not_reported(with_gift_shoppers: PlantedShop) -> None:
    model = PersonaInferenceModel()
    mixes = model.fit(
        with_gift_shoppers.shop, load_catalog("default"), customer_ids=with_gift_shoppers.customer_ids
    )
    assert discover_segments(model, mixes, config=DiscoveryConfig(min_segment_size=500)).segments == ()


def test_misfit_is_higher_for_customers_the_personas_do_not_describe(with_gift_shoppers: PlantedShop) -> None:
    model = PersonaInferenceModel()
    mixes = model.fit(
        with_gift_shoppers.shop, load_catalog("default"), customer_ids=with_gift_shoppers.customer_ids
    )
    fit = misfit_scores(model, mixes, min_events=8)
    hidden = with_gift_shoppers.hidden
    assert np.nanmedian(fit.misfit[hidden]) > np.nanpercentile(fit.misfit[~hidden], 75)


def test_discovery_needs_mixes_with_evidence(with_gift_shoppers: PlantedShop) -> None:
    model = PersonaInferenceModel()
    mixes = model.fit(with_gift_shoppers.shop, load_catalog("default"))
    stripped = InferredMixes(
        mixes.customer_ids,
        mixes.persona_ids,
        mixes.overall,
        mixes.by_context,
        mixes.n_events,
        mixes.n_events_by_context,
    )
    with pytest.raises(PersonaInferenceError, match="evidence"):
        discover_segments(model, stripped)
    with pytest.raises(ValueError, match="min_aspects"):
        DiscoveryConfig(min_aspects=0)
