"""Persona inference of a large shop: the EM fits on a sample of customers, chunks fold in alike."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from engine.data.id_map import IdMap, UnknownIdError
from engine.personas.catalog import PersonaCatalog
from engine.personas.event_encoding import build_event_features
from engine.personas.explanations import MixExplanations
from engine.personas.inference.config import PersonaInferenceConfig
from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.inference.model import PersonaInferenceModel, em_sample
from engine.personas.mix import total_variation_rows
from tests.engine.personas.event_encoding_reference import assert_same_features, reference_event_features
from tests.engine.personas.planted_shop import PlantedShop, non_hidden_tv


def test_a_sample_of_customers_has_the_features_of_those_customers_alone(planted: PlantedShop) -> None:
    features = build_event_features(planted.shop.events, planted.shop.items)
    rows = np.array([0, 3, 4, 17, 200, len(features.customer_ids) - 1])
    ids = features.customer_ids.ids[rows]
    alone = build_event_features(
        planted.shop.events.filter(pl.col("customer_id").is_in(ids.tolist())),
        planted.shop.items,
        customer_ids=IdMap(ids, kind="customer"),
    )
    sample = features.of_customers(rows)
    assert sample.customer_ids.ids.tolist() == ids.tolist()
    assert (sample.matrix != alone.matrix).nnz == 0 and sample.matrix.shape == alone.matrix.shape
    for name in ("customer_index", "customer_indptr", "item_index", "weight", "context_index"):
        assert np.array_equal(getattr(sample, name), getattr(alone, name)), name
    for name in ("day", "timestamp_us"):
        assert np.array_equal(getattr(sample, name), getattr(alone, name)), name
    # brand codes number the brands of a batch: the same brands, numbered one to one
    pairs = set(zip(sample.brand_code.tolist(), alone.brand_code.tolist(), strict=True))
    assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})
    assert np.array_equal(sample.brand_code < 0, alone.brand_code < 0)
    assert np.array_equal(sample.price_percentile, alone.price_percentile, equal_nan=True)


def test_the_sample_is_seeded_whole_and_only_taken_when_the_shop_is_larger() -> None:
    assert em_sample(1_000, 0) is None
    assert em_sample(1_000, 1_000) is None
    sample = em_sample(1_000, 300)
    assert sample is not None and sample.size == 300
    assert np.all(np.diff(sample) > 0) and sample[0] >= 0 and sample[-1] < 1_000
    again = em_sample(1_000, 300)
    assert again is not None and np.array_equal(sample, again)


def test_em_customers_must_be_a_count() -> None:
    with pytest.raises(ValueError, match="em_customers must be an integer >= 0"):
        PersonaInferenceConfig(em_customers=-1)


def _fit(
    planted: PlantedShop, catalog: PersonaCatalog, em_customers: int
) -> tuple[PersonaInferenceModel, InferredMixes]:
    model = PersonaInferenceModel(replace(PersonaInferenceConfig(), em_customers=em_customers))
    return model, model.fit(planted.shop, catalog, customer_ids=planted.customer_ids)


def test_a_fit_on_a_third_of_the_customers_recovers_the_planted_mixes_as_well(
    planted: PlantedShop, catalog: PersonaCatalog, fitted: tuple[PersonaInferenceModel, InferredMixes]
) -> None:
    """Every customer gets a mix, and the mixes barely move: the behaviour is pinned down by a third."""
    whole_model, whole = fitted
    n = len(planted.customer_ids)
    model, sampled = _fit(planted, catalog, n // 3)
    assert whole_model.fit_summary is not None and whole_model.fit_summary.em_customers is None
    assert model.fit_summary is not None and model.fit_summary.em_customers == n // 3
    assert (
        model.fit_summary.n_customers == n and model.fit_summary.n_events == whole_model.fit_summary.n_events
    )
    assert sampled.overall.shape == whole.overall.shape
    assert float(total_variation_rows(sampled.overall, whole.overall).mean()) < 0.03
    assert non_hidden_tv(sampled, planted) == pytest.approx(non_hidden_tv(whole, planted), abs=0.01)


def test_a_cap_at_or_above_the_shop_fits_every_customer_as_before(
    planted: PlantedShop, catalog: PersonaCatalog, fitted: tuple[PersonaInferenceModel, InferredMixes]
) -> None:
    _, whole = fitted
    model, capped = _fit(planted, catalog, len(planted.customer_ids))
    assert model.fit_summary is not None and model.fit_summary.em_customers is None
    assert np.array_equal(capped.overall, whole.overall)
    assert np.array_equal(capped.by_context, whole.by_context)


def test_features_of_a_planted_shop_equal_the_reference_pipeline(planted: PlantedShop) -> None:
    """Including customers without events (from the customers table) between those with events."""
    silent = [f"quiet{n}" for n in range(5)]
    ids = IdMap([*planted.customer_ids.ids.tolist()[:200], *silent, *planted.customer_ids.ids.tolist()[200:]])
    features = build_event_features(planted.shop.events, planted.shop.items, customer_ids=ids)
    assert_same_features(features, reference_event_features(planted.shop.events, planted.shop.items, ids))
    assert np.array_equal(features.events_per_customer[200:205], np.zeros(5))


def test_encoding_names_customers_missing_from_the_map(planted: PlantedShop) -> None:
    ids = IdMap(planted.customer_ids.ids.tolist()[1:])
    missing = str(planted.customer_ids.ids[0])
    with pytest.raises(UnknownIdError, match=missing):
        build_event_features(planted.shop.events, planted.shop.items, customer_ids=ids)


def test_mixes_and_explanations_do_not_depend_on_the_chunk_size(
    planted: PlantedShop, catalog: PersonaCatalog
) -> None:
    """The fit of a shop encoded in chunks of 37 customers equals the fit of it encoded whole."""
    whole_model = PersonaInferenceModel(replace(PersonaInferenceConfig(), chunk_customers=10_000, threads=1))
    whole = whole_model.fit(planted.shop, catalog, customer_ids=planted.customer_ids)
    chunked_model = PersonaInferenceModel(replace(PersonaInferenceConfig(), chunk_customers=37, threads=1))
    chunked = chunked_model.fit(planted.shop, catalog, customer_ids=planted.customer_ids)
    assert np.allclose(chunked.overall, whole.overall, atol=1e-8)
    assert np.allclose(chunked.by_context, whole.by_context, atol=1e-8)
    assert np.array_equal(chunked.n_events_by_context, whole.n_events_by_context)
    explained = MixExplanations.build(chunked_model, chunked)
    expected = MixExplanations.build(whole_model, whole)
    assert np.array_equal(explained.feature, expected.feature)
    assert explained.features == expected.features
