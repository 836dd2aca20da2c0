import tomllib
from pathlib import Path

import pytest

from engine.personas.catalog import CatalogError, catalog_to_toml, load_catalog, parse_catalog

MINIMAL = """
[[personas]]
id = "saver"
name = "Saver"
description = "Waits for sales."
[personas.signals]
discount_share = "high"

[[personas]]
id = "spender"
name = "Spender"
description = "Buys premium."
[personas.signals]
price_level = "high"
"""


def test_default_catalog_has_the_required_personas() -> None:
    catalog = load_catalog()
    assert {
        "Bargain Hunter",
        "Brand Loyalist",
        "Health Enthusiast",
        "Tech-Savvy Shopper",
        "Luxury Enthusiast",
    } <= set(catalog.names)
    for persona in catalog.personas:
        assert (
            persona.goals and persona.pain_points and persona.preferred_channels and persona.decision_factors
        )
    assert catalog.resolve("tech-savvy shopper") == "tech_savvy"


def test_catalog_round_trips_through_toml() -> None:
    catalog = load_catalog()
    assert parse_catalog(tomllib.loads(catalog_to_toml(catalog))).personas == catalog.personas


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.replace('discount_share = "high"', 'discount_share = "sometimes"'),
            r"persona 'saver'\.signals\.discount_share must be one of high, low",
        ),
        (
            lambda t: t.replace('price_level = "high"', 'price_levle = "high"'),
            r"persona 'spender'\.signals has unknown signal\(s\) \['price_levle'\]",
        ),
        (lambda t: t.replace('id = "spender"', 'id = "saver"'), "duplicate persona id 'saver'"),
        (lambda t: t.replace('id = "saver"', 'id = "Saver Person"'), "must be lower_snake_case"),
        (
            lambda t: t.replace('name = "Spender"\n', ""),
            r"persona 'spender'\.name must be a non-empty string",
        ),
        (
            lambda t: t.replace('description = "Buys premium."', 'descripton = "x"'),
            r"unknown key\(s\) \['descripton'\]",
        ),
        (lambda t: t.split('[[personas]]\nid = "spender"')[0], "at least two"),
        (lambda t: t + "\n[extra]\nx = 1\n", r"unknown top-level key\(s\) \['extra'\]"),
    ],
)
def test_invalid_catalogs_are_rejected_with_the_file_and_key(tmp_path: Path, edit, message: str) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(edit(MINIMAL), encoding="utf-8")
    with pytest.raises(CatalogError, match=message) as info:
        load_catalog(path)
    assert str(path) in str(info.value)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[personas]\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="not valid TOML"):
        load_catalog(bad)
    with pytest.raises(CatalogError, match="not found"):
        load_catalog(tmp_path / "nope.toml")
    with pytest.raises(CatalogError, match="no bundled persona catalog"):
        load_catalog("nonexistent")
