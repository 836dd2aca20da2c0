"""The planted personas agree with the catalog's signals and tilt channel/device shares as documented."""

import dataclasses

import pytest

from engine.personas.catalog import load_catalog
from training.synthetic_shop.planted_personas import (
    HIDDEN_PERSONA_ID,
    PLANTED_PERSONAS,
    SIGNALLED_MASS,
    PlantedPersona,
    planted_persona,
)


def test_every_catalog_persona_has_planted_behaviour_matching_its_signals() -> None:
    catalog = load_catalog()
    for persona in catalog.personas:
        planted = planted_persona(persona.id)
        assert set(planted.channels) == set(persona.signals.channels)
        assert set(planted.devices) == set(persona.signals.devices)
        assert set(planted.favoured_categories) == set(persona.signals.categories)
        assert set(persona.signals.tags) <= {t for t, f in planted.tag_boost.items() if f > 1}
    assert HIDDEN_PERSONA_ID not in catalog.ids
    assert set(PLANTED_PERSONAS) == {*catalog.ids, HIDDEN_PERSONA_ID}
    with pytest.raises(KeyError, match="no planted behaviour for persona 'impulse_buyer'"):
        planted_persona("impulse_buyer")


def test_channel_shares_favour_signalled_values() -> None:
    persona = PlantedPersona(persona_id="x", population_share=0.1, weekend_gain=1.0, channels=("email",))
    shares = persona.channel_shares()
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["email"] == pytest.approx(SIGNALLED_MASS + (1 - SIGNALLED_MASS) * 0.15)
    assert shares["search"] == pytest.approx((1 - SIGNALLED_MASS) * 0.30)
    with pytest.raises(ValueError, match=r"x.devices names unknown value\(s\) \['fax'\]"):
        dataclasses.replace(persona, devices=("fax",)).device_shares()
