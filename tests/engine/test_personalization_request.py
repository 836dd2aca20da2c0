"""Request values check their own invariants and name the field."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from engine.invalid_request import InvalidRequestError
from engine.personalization_request import CustomerTarget, ProductRequest, SessionContext


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: ProductRequest(k=0), "num_results"),
        (lambda: ProductRequest(diversity=-0.1), "diversity"),
        (lambda: ProductRequest(diversity=float("nan")), "diversity"),
        (lambda: SessionContext(shopping_context="holiday"), "shopping_context"),
        (lambda: SessionContext(timestamp=dt.datetime(2026, 1, 1)), "timestamp"),
        (lambda: SessionContext(basket_value=-1.0), "basket_value"),
        (lambda: SessionContext(basket_value=float("inf")), "basket_value"),
        (lambda: CustomerTarget(""), "customer_id"),
    ],
)
def test_invalid_values_name_their_field(build: Callable[[], object], field: str) -> None:
    with pytest.raises(InvalidRequestError) as error:
        build()
    assert error.value.field == field and str(error.value).startswith(f"{field}: ")


def test_defaults_are_a_valid_request() -> None:
    request = ProductRequest()
    assert request.k == 10 and request.diversity == 0.0 and not request.explain
    assert SessionContext().shopping_context is None


def test_paths_nest_when_seen_from_the_enclosing_message() -> None:
    error = InvalidRequestError("weights[1].weight", "must be >= 0, got -0.2").within(
        "targets[3].persona_mix"
    )
    assert str(error) == "targets[3].persona_mix.weights[1].weight: must be >= 0, got -0.2"
    assert (
        str(InvalidRequestError("", "needs a condition").within("rules[0]")) == "rules[0]: needs a condition"
    )
