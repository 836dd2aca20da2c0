"""Which events a served model folds in per request row: history, live events since the artifact's data."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import scipy.sparse as sp

from engine.data.id_map import IdMap
from engine.personas.mix_resolution import LiveInteraction, LiveView
from engine.ranking.unlearned_events import (
    UnlearnedEvents,
    artifact_data_until,
    artifact_folds_in_live_events,
)

ITEMS = ["i0", "i1", "i2", "i3"]
WEIGHTS = {"view": 1.0, "cart": 3.0, "purchase": 5.0}
DATA_UNTIL = dt.datetime(2026, 7, 1, tzinfo=dt.UTC).timestamp()
BEFORE, AFTER = DATA_UNTIL - 3600.0, DATA_UNTIL + 3600.0
# Customer 0 viewed i0 twice and bought i1 in training (log1p of the summed weights, as trained).
HISTORY = sp.csr_matrix(np.array([[np.log1p(2.0), np.log1p(5.0), 0, 0], [0, 0, 0, 0]], dtype=np.float32))


def _unlearned(**overrides: object) -> UnlearnedEvents:
    settings: dict[str, object] = {
        "history": HISTORY,
        "items": IdMap(ITEMS),
        "event_weights": WEIGHTS,
        "data_until": DATA_UNTIL,
        **overrides,
    }
    return UnlearnedEvents(**settings)  # type: ignore[arg-type]


def _live(*events: tuple[float, str, str], bought: tuple[str, ...] = ()) -> LiveView:
    return LiveView(None, bought, events=tuple(LiveInteraction(*e) for e in events))


def _row(matrix: sp.csr_matrix | None, row: int) -> dict[str, float]:
    assert matrix is not None
    dense = matrix[row].toarray()[0]
    return {ITEMS[i]: float(dense[i]) for i in np.flatnonzero(dense)}


def test_a_known_customers_live_events_after_the_data_are_added_to_their_whole_history() -> None:
    live = _live((BEFORE, "i2", "view"), (AFTER, "i0", "view"), (AFTER, "i3", "cart"), (AFTER, "i3", "view"))
    events = _unlearned().rows([live], np.array([0]), np.array([0]))
    assert _row(events, 0) == pytest.approx(
        {"i0": np.log1p(3.0), "i1": np.log1p(5.0), "i3": np.log1p(4.0)}, rel=1e-6
    ), "i2 was viewed before the artifact's data ended: it may be in the history already"


def test_known_customers_without_new_events_or_with_folding_off_bring_none() -> None:
    unlearned = _unlearned()
    assert unlearned.rows([None, _live((BEFORE, "i2", "view"))], np.array([0, 0]), np.array([0, 0])) is None
    off = _unlearned(known_customers=False)
    assert off.rows([_live((AFTER, "i2", "view"))], np.array([0]), np.array([0])) is None


def test_an_id_the_artifact_never_saw_brings_every_live_event_and_every_live_purchase() -> None:
    """Its events are all new to the model, whenever they happened; purchases that are no longer
    kept (the bought list outlasts the kept events) count once each, kept ones as the events say."""
    live = _live((BEFORE, "i2", "view"), (AFTER, "i3", "purchase"), bought=("i3", "i0"))
    events = _unlearned().rows([live], np.array([-1]), np.array([-1]))
    assert _row(events, 0) == pytest.approx({"i0": np.log1p(5.0), "i2": np.log1p(1.0), "i3": np.log1p(5.0)})


def test_a_cold_start_customer_brings_their_history_as_trained_and_live_events_since() -> None:
    unlearned = _unlearned()
    history_only = unlearned.rows([None], np.array([-1]), np.array([0]))
    assert history_only is not None
    np.testing.assert_array_equal(history_only[0].toarray(), HISTORY[0].toarray())  # to the bit
    live = _live((BEFORE, "i1", "view"), (AFTER, "i2", "view"))
    assert _row(unlearned.rows([live], np.array([-1]), np.array([0])), 0) == pytest.approx(
        {"i0": np.log1p(2.0), "i1": np.log1p(5.0), "i2": np.log1p(1.0)}
    )


def test_events_of_unweighted_types_and_items_outside_the_catalog_are_left_out() -> None:
    live = _live((AFTER, "gone", "view"), (AFTER, "i2", "wishlist"), (AFTER, "i2", "cart"))
    events = _unlearned(event_weights={**WEIGHTS, "wishlist": 0.0}).rows([live], np.array([1]), np.array([1]))
    assert _row(events, 0) == pytest.approx({"i2": np.log1p(3.0)})


def test_rows_keep_their_places_in_the_batch() -> None:
    lives = [None, _live((AFTER, "i2", "view")), None, _live((AFTER, "i3", "view"))]
    events = _unlearned().rows(lives, np.array([0, 1, 1, -1]), np.array([0, 1, 1, -1]))
    assert events is not None and events.shape == (4, len(ITEMS))
    assert np.diff(events.indptr).tolist() == [0, 1, 0, 1]
    assert _row(events, 3) == pytest.approx({"i3": np.log1p(1.0)})


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"data_until": "2026-07-01T00:00:00+00:00"}, DATA_UNTIL),
        ({"data_until": "2026-07-01T00:00:00"}, DATA_UNTIL),  # naive: UTC, as training writes
        ({"data_until": "not a time"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_the_artifacts_data_end_is_read_from_its_manifest(record: object, expected: float | None) -> None:
    assert artifact_data_until({} if record is None else {"served_models": record}) == expected


def test_folding_known_customers_is_on_unless_the_training_config_turned_it_off() -> None:
    assert artifact_folds_in_live_events({})
    assert artifact_folds_in_live_events({"config": {"output": {"refit_on_all_events": True}}})
    assert not artifact_folds_in_live_events({"config": {"output": {"fold_in_live_events": False}}})
