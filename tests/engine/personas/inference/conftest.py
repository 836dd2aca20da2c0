"""One planted shop and one fit of it for the whole package: fitting is the slow part of these tests."""

from __future__ import annotations

import pytest

from engine.personas.catalog import PersonaCatalog, load_catalog
from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.inference.model import PersonaInferenceModel
from tests.engine.personas.planted_shop import PlantedShop, planted_shop


@pytest.fixture(scope="package")
def planted() -> PlantedShop:
    return planted_shop()


@pytest.fixture(scope="package")
def catalog() -> PersonaCatalog:
    return load_catalog("default")


@pytest.fixture(scope="package")
def fitted(planted: PlantedShop, catalog: PersonaCatalog) -> tuple[PersonaInferenceModel, InferredMixes]:
    model = PersonaInferenceModel()
    return model, model.fit(planted.shop, catalog, customer_ids=planted.customer_ids)
