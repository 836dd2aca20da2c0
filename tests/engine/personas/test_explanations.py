"""Stored mix explanations: what training writes is what a profile reads back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from engine.data.id_map import IdMap
from engine.data.loading import load_shop
from engine.personas.catalog import load_catalog
from engine.personas.explanations import MixExplanations, MixExplanationsError, _first_positions
from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.inference.model import PersonaInferenceModel
from engine.personas.inference.signals import SignalContribution, signal_index_dtype
from engine.personas.traits import describe_feature
from training.synthetic_shop import ShopConfig, generate_shop

PERSONAS = ("a", "b")
FEATURES = [("channel=email", "share of visits from channel email"), ("tag:organic", "items tagged organic")]


def explanations() -> MixExplanations:
    feature = np.full((3, 2, 2), -1, dtype=np.int32)
    feature[0, 0] = [1, 0]
    feature[0, 1, 0] = 0
    values = {
        name: np.arange(12, dtype=np.float32).reshape(3, 2, 2) / 10 + offset
        for offset, name in ((0, "customer_value"), (3, "contribution"))
    }
    population = np.array([0.25, 1.0], dtype=np.float32)  # per signal
    persona = np.array([[0.5, 0.125], [2.0, 0.75]], dtype=np.float32)  # per signal and persona
    return MixExplanations(PERSONAS, FEATURES, feature, values, population, persona)


def test_signals_stop_at_the_padding_and_carry_every_value() -> None:
    signals = explanations().signals(0)
    assert [s.feature for s in signals["a"]] == ["tag:organic", "channel=email"]
    assert [s.feature for s in signals["b"]] == ["channel=email"]
    first = signals["a"][0]
    assert first.description == "items tagged organic"
    assert (first.customer_value, first.population_value, first.contribution) == pytest.approx(
        (0.0, 1.0, 3.0)
    )
    assert (first.persona_value, signals["a"][1].persona_value, signals["b"][0].persona_value) == (
        2.0,
        0.5,
        0.125,
    )
    assert explanations().signals(2) == {"a": [], "b": []}


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    original = explanations()
    original.save(tmp_path / "explanations")
    loaded = MixExplanations.load(tmp_path / "explanations")
    assert loaded.persona_ids == PERSONAS and loaded.features == tuple(FEATURES)
    for row in range(3):
        assert loaded.signals(row) == original.signals(row)


def test_signal_slots_take_one_byte_and_int32_files_still_load(tmp_path: Path) -> None:
    # A million customers' slots are 25 MB as int8; artifacts written before held int32.
    original = explanations()
    assert original.feature.dtype == np.int8
    folder = tmp_path / "explanations"
    original.save(folder)
    assert np.load(folder / "feature.npy").dtype == np.int8
    np.save(folder / "feature.npy", original.feature.astype(np.int32))
    loaded = MixExplanations.load(folder)
    assert loaded.feature.dtype == np.int8
    assert [loaded.signals(row) for row in range(3)] == [original.signals(row) for row in range(3)]


@pytest.mark.parametrize(
    ("n_signals", "dtype"),
    [(1, np.int8), (127, np.int8), (128, np.int16), (32767, np.int16), (32768, np.int32)],
)
def test_signal_index_dtype_holds_every_index_and_the_padding(n_signals: int, dtype: type) -> None:
    chosen = signal_index_dtype(n_signals)
    assert chosen == dtype
    assert np.iinfo(chosen).max >= n_signals - 1 and np.iinfo(chosen).min <= -1


def test_wide_indices_are_checked_before_they_are_narrowed() -> None:
    # 256 would wrap to 0 as int8: a valid-looking signal. It must be refused as out of range.
    good = explanations()
    wide = good.feature.astype(np.int32)
    wide[1, 0, 0] = 256
    with pytest.raises(MixExplanationsError, match="outside the 2 known signals"):
        MixExplanations(PERSONAS, FEATURES, wide, good.values, good.population_value, good.persona_value)
    with pytest.raises(MixExplanationsError, match="expected signal indices"):
        MixExplanations(
            PERSONAS, FEATURES, good.feature.astype(np.float32), good.values,
            good.population_value, good.persona_value,
        )  # fmt: skip


def test_explanations_written_with_shares_in_every_slot_still_load(tmp_path: Path) -> None:
    # Artifacts written before the shares were kept per signal stored them per customer and slot.
    original = explanations()
    folder = tmp_path / "explanations"
    original.save(folder)
    document = json.loads((folder / "features.json").read_text())
    for entry in document["features"]:
        del entry["population_value"], entry["persona_value"]
    (folder / "features.json").write_text(json.dumps(document))
    feature = original.feature
    personas = np.arange(len(PERSONAS))[None, :, None]
    for name, table in (
        ("population_value", original.population_value[np.maximum(feature, 0)]),
        ("persona_value", original.persona_value[np.maximum(feature, 0), personas]),
    ):
        np.save(folder / f"{name}.npy", np.where(feature >= 0, table, 0.0).astype(np.float32))
    loaded = MixExplanations.load(folder)
    for row in range(3):
        assert loaded.signals(row) == original.signals(row)


def test_inconsistent_arrays_and_rows_are_refused(tmp_path: Path) -> None:
    good = explanations()
    tables = (good.population_value, good.persona_value)
    with pytest.raises(MixExplanationsError, match="outside the 1 known signals"):
        MixExplanations(PERSONAS, FEATURES[:1], good.feature, good.values, *tables)
    with pytest.raises(MixExplanationsError, match="contribution has shape"):
        MixExplanations(
            PERSONAS, FEATURES, good.feature, {**good.values, "contribution": np.zeros((3, 2, 1))}, *tables
        )
    with pytest.raises(MixExplanationsError, match="persona_value"):
        MixExplanations(
            PERSONAS, FEATURES, good.feature, good.values, good.population_value, np.zeros((2, 3))
        )
    with pytest.raises(IndexError, match="customer row 3"):
        good.signals(3)
    with pytest.raises(MixExplanationsError, match="cannot read"):
        MixExplanations.load(tmp_path / "missing")


# ---------------------------------------------------------------- built for every customer at once
TOP = 4
VALUE_NAMES = ("customer_value", "population_value", "persona_value", "contribution")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[PersonaInferenceModel, InferredMixes]:
    """Persona inference fitted on the small synthetic shop, plus a customer without any events."""
    folder = tmp_path_factory.mktemp("shop")
    generate_shop(folder, ShopConfig(customers=600, items=300, events=24_000, seed=5))
    shop = load_shop(folder)
    known = shop.events["customer_id"].unique(maintain_order=True).to_list()
    customers = IdMap([*known[:300], "nobody", *known[300:]], kind="customer")
    model = PersonaInferenceModel()
    return model, model.fit(shop, load_catalog("default"), customer_ids=customers)


def reference_explain(
    model: PersonaInferenceModel, mixes: InferredMixes, row: int, top: int
) -> dict[str, list[SignalContribution]]:
    """One customer's explanation computed the direct way: dense arithmetic on their own event rows."""
    features = mixes.evidence
    assert features is not None
    space = model.space
    start, stop = features.customer_indptr[row], features.customer_indptr[row + 1]
    out: dict[str, list[SignalContribution]] = {p: [] for p in mixes.persona_ids}
    if stop == start:
        return out
    rows = features.matrix[start:stop].toarray().astype(np.float64)
    parameters, marginals = model.behaviour.parameters, model.behaviour.marginals
    scores = rows @ parameters + model.behaviour.offsets[None, :]
    joint = np.exp(scores - scores.max(axis=1, keepdims=True)) * mixes.overall[row][None, :]
    responsibilities = joint * (features.weight[start:stop] / joint.sum(axis=1))[:, None]
    weighted = rows.T @ responsibilities
    contribution = weighted * (parameters - np.log(marginals[:, None]))
    centred = weighted - responsibilities.sum(axis=0)[None, :] * marginals[:, None]
    contribution[space.item_columns] = (parameters * centred)[space.item_columns]
    counts = rows.sum(axis=0)
    group = space.column_group
    known = np.bincount(group, weights=counts, minlength=len(space.groups))[group]
    known[space.binary_columns] = stop - start
    shares = np.divide(counts, known, out=np.zeros_like(counts), where=known > 0)
    for k, persona in enumerate(mixes.persona_ids):
        for j in np.argsort(-contribution[:, k], kind="stable")[:top]:
            if contribution[j, k] <= 0:
                break
            out[persona].append(
                SignalContribution(
                    feature=space.column_names[j],
                    description=describe_feature(space.column_names[j]),
                    customer_value=float(shares[j]),
                    population_value=float(marginals[j]),
                    persona_value=float(model.behaviour.probabilities[j, k]),
                    contribution=float(contribution[j, k]),
                )
            )
    return out


def assert_same_signals(got: list[SignalContribution], expected: list[SignalContribution]) -> None:
    assert [(s.feature, s.description) for s in got] == [(s.feature, s.description) for s in expected]
    np.testing.assert_allclose(
        [[getattr(s, name) for name in VALUE_NAMES] for s in got],
        [[getattr(s, name) for name in VALUE_NAMES] for s in expected],
        rtol=1e-5,
        atol=1e-9,
    )


@pytest.fixture(scope="module")
def reference(
    synthetic: tuple[PersonaInferenceModel, InferredMixes],
) -> list[dict[str, list[SignalContribution]]]:
    model, mixes = synthetic
    return [reference_explain(model, mixes, row, TOP) for row in range(len(mixes.customer_ids))]


def as_arrays(
    explanations: list[dict[str, list[SignalContribution]]], persona_ids: tuple[str, ...]
) -> tuple[NDArray[np.str_], NDArray[np.float64]]:
    """(customers, personas, top) feature names ("" for none) and (..., 4) values, for bulk comparison."""
    names = np.full((len(explanations), len(persona_ids), TOP), "", dtype=object)
    values = np.zeros((*names.shape, len(VALUE_NAMES)))
    for row, explained in enumerate(explanations):
        for k, persona in enumerate(persona_ids):
            for slot, signal in enumerate(explained[persona]):
                names[row, k, slot] = signal.feature
                values[row, k, slot] = [getattr(signal, name) for name in VALUE_NAMES]
    return names.astype(np.str_), values


@pytest.mark.parametrize("cells_per_chunk", [5_000, 1 << 22])  # several chunks (~12 customers), one
def test_build_matches_explaining_each_customer_directly(
    synthetic: tuple[PersonaInferenceModel, InferredMixes],
    reference: list[dict[str, list[SignalContribution]]],
    cells_per_chunk: int,
) -> None:
    model, mixes = synthetic
    strongest = model.strongest_signals(mixes, top=TOP, cells_per_chunk=cells_per_chunk)
    expected_names, expected_values = as_arrays(reference, mixes.persona_ids)
    names = np.asarray([*strongest.names, ""], dtype=np.str_)[strongest.column]
    np.testing.assert_array_equal(names, expected_names)
    values = np.stack([strongest.values_of(name) for name in VALUE_NAMES], axis=-1)
    np.testing.assert_allclose(values, expected_values, rtol=1e-5, atol=1e-9)
    nobody = mixes.customer_ids.index("nobody")
    assert (strongest.column[nobody] == -1).all() and (strongest.column[0] >= 0).any()


def test_build_stores_the_signals_explain_returns(
    synthetic: tuple[PersonaInferenceModel, InferredMixes],
    reference: list[dict[str, list[SignalContribution]]],
    tmp_path: Path,
) -> None:
    model, mixes = synthetic
    stored = MixExplanations.build(model, mixes, top=TOP)
    used = {name for name, _ in stored.features}
    assert len(used) == len(stored.features) and stored.n_customers == len(mixes.customer_ids)
    stored.save(tmp_path / "explanations")
    loaded = MixExplanations.load(tmp_path / "explanations")
    for row in range(0, len(mixes.customer_ids), 7):
        explained = model.explain(mixes, row, top=TOP)
        for persona in mixes.persona_ids:
            assert_same_signals(loaded.signals(row)[persona], explained[persona])
            assert_same_signals(explained[persona], reference[row][persona])


@settings(max_examples=60, deadline=None)
@given(
    n_columns=st.integers(1, 12),
    size=st.integers(0, 20_000),
    late=st.integers(0, 20_000),
    seed=st.integers(0, 2**31),
    dtype=st.sampled_from([np.int8, np.int16, np.int32]),
)
def test_first_positions_are_those_of_a_scan_over_every_entry(
    n_columns: int, size: int, late: int, seed: int, dtype: type
) -> None:
    """A column first seen late is found, in every width the slots are stored in; a column outside
    the space is refused."""
    rng = np.random.default_rng(seed)
    column = rng.integers(-1, max(1, n_columns - 1), size=size).astype(dtype)
    if size:
        column[min(late, size - 1)] = n_columns - 1  # the last column, once, anywhere
    want = np.full(n_columns, -1, dtype=np.int64)
    for position, value in enumerate(column.tolist()):
        if value >= 0 and want[value] < 0:
            want[value] = position
    assert np.array_equal(_first_positions(column, n_columns), want)
    if size:
        with pytest.raises(ValueError, match="outside the feature space"):
            _first_positions(column, int(column.max()))
