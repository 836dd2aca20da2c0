import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.invalid_request import InvalidRequestError
from engine.personas.mix import PersonaMix, PersonaMixError, normalize_rows, total_variation_rows

PERSONAS = ("bargain_hunter", "brand_loyalist", "luxury_enthusiast")
weights = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(st.fixed_dictionaries({}, optional={p: weights for p in PERSONAS}))
def test_from_mapping_normalises_onto_the_simplex(raw: dict[str, float]) -> None:
    if not raw or sum(raw.values()) == 0:
        with pytest.raises(PersonaMixError):
            PersonaMix.from_mapping(raw, PERSONAS)
        return
    mix = PersonaMix.from_mapping(raw, PERSONAS)
    assert math.isclose(float(mix.weights.sum()), 1.0, abs_tol=1e-9)
    assert (mix.weights >= 0).all()
    for name, value in raw.items():
        assert math.isclose(mix.as_dict()[name], value / sum(raw.values()), rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ({"bargain_huntr": 1.0}, "bargain_huntr", "unknown persona 'bargain_huntr'"),
        ({"bargain_hunter": -0.1}, "bargain_hunter", "must be >= 0"),
        ({"bargain_hunter": float("nan")}, "bargain_hunter", "must be finite"),
        ({"bargain_hunter": float("inf")}, "bargain_hunter", "must be finite"),
        ({"bargain_hunter": 0.0, "brand_loyalist": 0.0}, "persona_mix", "all zero"),
        ({}, "persona_mix", "empty"),
    ],
)
def test_bad_mixes_name_the_field(raw: dict[str, float], field: str, message: str) -> None:
    with pytest.raises(PersonaMixError, match=message) as info:
        PersonaMix.from_mapping(raw, PERSONAS)
    assert info.value.field == field


def test_pure_and_dominant_and_distance() -> None:
    pure = PersonaMix.pure("luxury_enthusiast", PERSONAS)
    assert pure.dominant == "luxury_enthusiast"
    assert pure.total_variation(PersonaMix.uniform(PERSONAS)) == pytest.approx(2 / 3)


def test_normalize_rows_uses_fallback_for_empty_rows() -> None:
    out = normalize_rows(np.array([[2.0, 2.0, 0.0], [0.0, 0.0, 0.0]]))
    assert out.tolist() == [[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]]
    assert total_variation_rows(out[:1], np.array([[1.0, 0.0, 0.0]])).tolist() == [0.5]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([], "targets[3].persona_mix.weights: empty"),
        (
            [("bargain_huntr", 1.0)],
            "targets[3].persona_mix.weights[0].persona_id: unknown persona 'bargain_huntr'",
        ),
        (
            [("luxury_enthusiast", 1.0), ("luxury_enthusiast", 2.0)],
            "targets[3].persona_mix.weights[1].persona_id: 'luxury_enthusiast' already appears in "
            "targets[3].persona_mix.weights[0]",
        ),
        (
            [("bargain_hunter", 1.0), ("brand_loyalist", -0.2)],
            "targets[3].persona_mix.weights[1].weight: must be >= 0",
        ),
        ([("bargain_hunter", float("nan"))], "targets[3].persona_mix.weights[0].weight: must be finite"),
        ([("bargain_hunter", 0.0)], "targets[3].persona_mix.weights: all weights are zero"),
    ],
)
def test_a_requests_entries_are_validated_with_their_path(
    entries: list[tuple[str, float]], message: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        PersonaMix.from_entries(entries, PERSONAS, "targets[3].persona_mix")
    assert str(info.value).startswith(message), str(info.value)


def test_a_requests_entries_normalise_like_a_mapping() -> None:
    entries = [("luxury_enthusiast", 3.0), ("bargain_hunter", 1.0)]
    mix = PersonaMix.from_entries(entries, PERSONAS)
    assert mix.as_dict() == pytest.approx(PersonaMix.from_mapping(dict(entries), PERSONAS).as_dict())


# Every finite non-negative float, denormals and values near the float limit included.
any_weight = st.floats(min_value=0, allow_nan=False, allow_infinity=False)


@given(st.lists(any_weight, min_size=1, max_size=len(PERSONAS)))
def test_any_finite_weights_with_one_positive_make_a_mix_or_a_named_error(values: list[float]) -> None:
    """A request may send two weights of 1e308 (their sum overflows) or denormals (their sum loses
    digits): either way it is a valid mix in the given proportions, never an internal error."""
    entries = list(zip(PERSONAS, values, strict=False))
    if max(values) == 0:
        with pytest.raises(InvalidRequestError, match="all weights are zero"):
            PersonaMix.from_entries(entries, PERSONAS)
        return
    largest = max(values)
    shares = [v / largest for v in values]
    for mix in (PersonaMix.from_entries(entries, PERSONAS), PersonaMix.from_mapping(dict(entries), PERSONAS)):
        assert math.isclose(float(mix.weights.sum()), 1.0, abs_tol=1e-9)
        for (name, _), share in zip(entries, shares, strict=True):
            assert math.isclose(mix.as_dict()[name], share / sum(shares), rel_tol=1e-9, abs_tol=1e-12)
