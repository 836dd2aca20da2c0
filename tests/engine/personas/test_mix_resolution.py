"""Which mix a request uses: request > inferred (per context) > demographic prior > population."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from engine.data.feature_space import ABOVE_MEAN, BELOW_MEAN, DEMOGRAPHIC_COLUMNS, FeatureSpace
from engine.data.id_map import IdMap
from engine.personas.inference.demographic_prior import DemographicMixPrior
from engine.personas.mix import PersonaMix
from engine.personas.mix_resolution import (
    CustomerMixes,
    LiveView,
    MixResolver,
    MixSource,
    demographic_frame,
)

PERSONAS = ("a", "b", "c")
OVERALL = np.asarray([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [1 / 3, 1 / 3, 1 / 3]])
BY_CONTEXT = np.stack([OVERALL, OVERALL[:, ::-1]], axis=1)  # weekday = overall, weekend reversed
SPACE = FeatureSpace(("age_band=18-24", "age_band=65+", "region=north"))


def prior() -> DemographicMixPrior:
    return DemographicMixPrior(
        PERSONAS,
        population_mix=np.asarray([0.5, 0.25, 0.25]),
        attribute_mixes={"age_band": {"65+": np.asarray([0.1, 0.1, 0.8])}},
    )


def mixes() -> CustomerMixes:
    demographics = sp.csr_matrix(np.asarray([[1, 0, 1], [0, 0, 0], [0, 1, 0]], dtype=np.float32))
    return CustomerMixes.with_demographic_prior(
        PERSONAS,
        IdMap(["known", "other", "eventless"], kind="customer"),
        overall=OVERALL,
        by_context=BY_CONTEXT,
        n_events=np.asarray([12, 3, 0]),
        prior=prior(),
        demographics=demographics,
        demographic_space=SPACE,
    )


def resolver() -> MixResolver:
    return MixResolver(mixes())


class SessionMixes:
    """Live state that moves every customer to one mix and remembers what it was asked."""

    def __init__(self, mix: PersonaMix) -> None:
        self.mix = mix
        self.asked: list[tuple[str, PersonaMix]] = []

    def live_view(self, customer_id: str, long_term: PersonaMix) -> LiveView | None:
        self.asked.append((customer_id, long_term))
        return LiveView(self.mix, ("bought-today",))


def test_a_requested_mix_wins_over_everything() -> None:
    given = PersonaMix.from_mapping({"c": 2.0}, PERSONAS)
    resolved = resolver().resolve("known", given, "weekend_holiday")
    assert resolved.source is MixSource.REQUEST and resolved.mix is given and resolved.has_events


def test_known_customers_get_their_context_mix_or_overall_without_context() -> None:
    weekend = resolver().resolve("known", None, "weekend_holiday")
    assert weekend.source is MixSource.INFERRED
    np.testing.assert_allclose(weekend.mix.weights, OVERALL[0, ::-1])
    np.testing.assert_allclose(resolver().resolve("known").mix.weights, OVERALL[0])


def test_customers_without_events_get_the_prior_of_their_demographics() -> None:
    resolved = resolver().resolve("eventless", None, "weekday")
    assert resolved.source is MixSource.PRIOR and not resolved.has_events
    np.testing.assert_allclose(resolved.mix.weights, prior().mix_for(age_band="65+"))
    assert resolved.mix.dominant == "c"


def test_unknown_ids_get_the_population_mix_as_a_prior() -> None:
    resolved = resolver().resolve("never-seen", None, "weekday")
    assert resolved.row == -1 and resolved.source is MixSource.PRIOR and not resolved.has_events
    np.testing.assert_allclose(resolved.mix.weights, [0.5, 0.25, 0.25])


def test_demographic_frame_decodes_one_hot_rows() -> None:
    frame = demographic_frame(sp.csr_matrix(np.asarray([[1, 0, 1], [0, 0, 0]])), SPACE)
    assert frame.to_dicts() == [
        {"age_band": "18-24", "region": "north", "income_band": None, "gender": None, "occupation": None},
        {"age_band": None, "region": None, "income_band": None, "gender": None, "occupation": None},
    ]


def test_mixes_over_other_personas_and_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="personas"):
        resolver().resolve("known", PersonaMix.from_mapping({"x": 1.0}, ("x", "y", "z")))
    with pytest.raises(ValueError, match="shapes"):
        CustomerMixes(
            PERSONAS,
            IdMap(["one"], kind="customer"),
            overall=OVERALL,
            by_context=BY_CONTEXT,
            n_events=np.ones(3, dtype=np.int64),
            population_mix=np.ones(3),
        )


def test_a_resolver_built_with_live_state_moves_stored_mixes_but_never_a_requested_one() -> None:
    session = PersonaMix.from_mapping({"b": 1.0}, PERSONAS)
    live = SessionMixes(session)
    with_live = MixResolver(mixes(), live)
    moved = with_live.resolve("known", None, "weekend_holiday")
    assert moved.source is MixSource.LIVE and moved.mix is session and moved.has_events
    assert moved.live is not None and moved.live.purchased_item_ids == ("bought-today",)
    np.testing.assert_allclose(live.asked[0][1].weights, OVERALL[0, ::-1])  # the context's stored mix
    given = PersonaMix.from_mapping({"c": 1.0}, PERSONAS)
    assert with_live.resolve("known", given).source is MixSource.REQUEST
    assert len(live.asked) == 1
    assert resolver().resolve("known").source is MixSource.INFERRED  # another resolver: no live state


def _row_walk_frame(demographics: sp.csr_matrix, space: FeatureSpace) -> pl.DataFrame:
    """``demographic_frame`` as a walk over the stored values, row by row: the reference it must equal."""
    n = demographics.shape[0]
    text_names = list(DEMOGRAPHIC_COLUMNS)
    numeric_names: list[str] = []
    for name in space.names:
        if name.endswith(ABOVE_MEAN):
            numeric_names.append(name.removesuffix(ABOVE_MEAN))
        elif "=" in name and name.partition("=")[0] not in text_names:
            text_names.append(name.partition("=")[0])
    text: dict[str, list[str | None]] = {c: [None] * n for c in text_names}
    numbers = {c: np.zeros(n) for c in numeric_names}
    coo = demographics.tocoo()
    for row, column, value in zip(coo.row.tolist(), coo.col.tolist(), coo.data.tolist(), strict=True):
        name = space.names[column]
        if name.endswith(ABOVE_MEAN):
            numbers[name.removesuffix(ABOVE_MEAN)][row] += value
        elif name.endswith(BELOW_MEAN):
            numbers[name.removesuffix(BELOW_MEAN)][row] -= value
        else:
            attribute, _, category = name.partition("=")
            text[attribute][row] = category
    frame = pl.DataFrame(text, schema=dict.fromkeys(text_names, pl.Utf8))
    return frame.with_columns([pl.Series(c, v, dtype=pl.Float64) for c, v in numbers.items()])


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 12), st.data())
def test_decoded_demographics_equal_a_row_by_row_walk(n: int, data: st.DataObject) -> None:
    names = (
        "age_band=18-24", "age_band=25-34", "region=north", "loyalty=gold", "loyalty=silver",
        f"spend{ABOVE_MEAN}", f"spend{BELOW_MEAN}", f"visits{ABOVE_MEAN}", f"visits{BELOW_MEAN}",
    )  # fmt: skip
    cells = data.draw(
        st.lists(st.tuples(st.integers(0, max(n - 1, 0)), st.integers(0, len(names) - 1)), max_size=3 * n)
    )
    values = data.draw(st.lists(st.floats(0.01, 3.0), min_size=len(cells), max_size=len(cells)))
    rows = [r for r, _ in cells] if n else []
    columns = [c for _, c in cells] if n else []
    matrix = sp.csr_matrix((values[: len(rows)], (rows, columns)), shape=(n, len(names)))
    matrix.sum_duplicates()
    space = FeatureSpace(names)
    assert_frame_equal(demographic_frame(matrix, space), _row_walk_frame(matrix, space))
