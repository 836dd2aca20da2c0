"""Scoring inferred mixes against planted ones: against the mix in force for each event."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from engine.data.id_map import IdMap
from engine.evaluation.persona_accuracy import compare_with_planted, planted_targets
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


def test_planted_targets_come_out_in_the_same_order_every_run() -> None:
    """Averages over the compared customers (the report's tables) must not change in the last digits
    from run to run, so the rows follow the events' order rather than a parallel group-by's."""
    rng = np.random.default_rng(3)
    n_customers, n_events = 20_000, 120_000
    ids = [f"c{i:05d}" for i in range(n_customers)]
    owner = rng.integers(0, n_customers, n_events)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    events = pl.DataFrame(
        {
            "customer_id": [ids[i] for i in owner],
            "timestamp": [start + dt.timedelta(hours=int(h)) for h in rng.integers(0, 24 * 180, n_events)],
        }
    )
    weekday, weekend = (
        rng.dirichlet(np.ones(len(PERSONAS)), n_customers),
        rng.dirichlet(np.ones(len(PERSONAS)), n_customers),
    )
    truth = pl.DataFrame(
        {
            "customer_id": ids,
            **{f"weekday__{p}": weekday[:, k] for k, p in enumerate(PERSONAS)},
            **{f"weekend_holiday__{p}": weekend[:, k] for k, p in enumerate(PERSONAS)},
        }
    )
    customer_map = IdMap(ids, kind="customer")
    counts = np.bincount(owner, minlength=n_customers)
    mixes = InferredMixes(
        customer_ids=customer_map,
        persona_ids=tuple(PERSONAS),
        overall=rng.dirichlet(np.ones(len(PERSONAS)), n_customers),
        by_context=rng.dirichlet(np.ones(len(PERSONAS)), (n_customers, 2)),
        n_events=counts,
        n_events_by_context=np.stack([counts, np.zeros_like(counts)], axis=1),
    )
    runs = [planted_targets(mixes, truth, events) for _ in range(3)]
    first_seen = customer_map.to_internal(events["customer_id"].unique(maintain_order=True).to_list())
    np.testing.assert_array_equal(runs[0].rows, first_seen)
    for run in runs[1:]:
        np.testing.assert_array_equal(run.rows, runs[0].rows)
        assert run.expected.mean(axis=0).tobytes() == runs[0].expected.mean(axis=0).tobytes()
