"""A catalog proposed from a planted shop: valid, reproducible, and it finds the planted kinds of shopper."""

from __future__ import annotations

import tomllib

import pytest

from engine.personas.catalog import catalog_to_toml, load_catalog, parse_catalog
from engine.personas.catalog_proposal import CatalogProposal, ProposalConfig, propose_catalog
from engine.personas.inference.model import PersonaInferenceModel
from tests.engine.personas.planted_shop import PlantedShop, planted_shop


@pytest.fixture(scope="module")
def shop() -> PlantedShop:
    return planted_shop(n_customers=600, seed=3)


@pytest.fixture(scope="module")
def proposal(shop: PlantedShop) -> CatalogProposal:
    model = PersonaInferenceModel()
    mixes = model.fit(shop.shop, load_catalog("default"))
    return propose_catalog(model, mixes, ProposalConfig(personas=5, seed=1))


def test_proposal_is_a_valid_catalog_that_round_trips_through_toml(proposal: CatalogProposal) -> None:
    catalog = proposal.catalog
    assert 2 <= len(catalog) <= 5
    assert len(set(catalog.ids)) == len(catalog)
    reread = parse_catalog(tomllib.loads(catalog_to_toml(catalog)), "proposal")
    assert reread.ids == catalog.ids
    assert [p.signals for p in reread.personas] == [p.signals for p in catalog.personas]
    assert sum(p.customers for p in proposal.personas) == proposal.customers_clustered


def test_signals_are_what_sets_each_cluster_apart(proposal: CatalogProposal) -> None:
    for proposed in proposal.personas:
        signals = proposed.persona.signals
        lifted = {d.feature for d in proposed.distinctive if d.lift >= 1.3}
        for category in signals.categories:
            if f"category={category}" in {d.feature for d in proposed.distinctive}:
                assert f"category={category}" in lifted
        assert proposed.persona.description.startswith(f"Proposed from {proposed.customers:,} customers")


def test_the_planted_tech_and_health_shoppers_are_found(proposal: CatalogProposal) -> None:
    categories = [set(p.signals.categories) for p in proposal.catalog.personas]
    assert any({"electronics", "computers", "phones", "smart_home"} & c for c in categories)
    assert any({"health_food", "supplements", "fitness"} & c for c in categories)


def test_proposal_is_deterministic_for_a_seed(shop: PlantedShop, proposal: CatalogProposal) -> None:
    model = PersonaInferenceModel()
    mixes = model.fit(shop.shop, load_catalog("default"))
    again = propose_catalog(model, mixes, ProposalConfig(personas=5, seed=1))
    assert again.catalog == proposal.catalog


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 personas"):
        ProposalConfig(personas=1)
    with pytest.raises(ValueError, match="min_lift"):
        ProposalConfig(min_lift=1.0)
