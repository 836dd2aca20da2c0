"""Leading personas and evidence ordering."""

from __future__ import annotations

import numpy as np

from engine.personas.catalog import load_catalog
from engine.personas.inference.signals import SignalContribution
from engine.personas.mix import PersonaMix
from engine.personas.profile import by_weight, evidence_for, leading_personas

CATALOG = load_catalog()


def test_leading_personas_are_the_heaviest_three_at_or_above_ten_percent() -> None:
    mix = PersonaMix(CATALOG.ids, np.asarray([0.05, 0.4, 0.4, 0.09, 0.06]))
    leaders = leading_personas(mix, CATALOG)
    assert [leader.persona_id for leader in leaders] == ["brand_loyalist", "health_enthusiast"]
    assert leaders[0].preferred_channels == CATALOG.get("brand_loyalist").preferred_channels
    flat = leading_personas(PersonaMix.uniform(CATALOG.ids), CATALOG)
    assert [leader.persona_id for leader in flat] == list(CATALOG.ids[:3]), "ties in catalog order"


def test_evidence_lists_personas_with_weight_heaviest_first() -> None:
    mix = PersonaMix(CATALOG.ids, np.asarray([0.0, 0.2, 0.0, 0.7, 0.1]))
    signal = SignalContribution("tag:new-tech", "items tagged new-tech", 0.5, 0.1, 0.6, 1.2)
    evidence = evidence_for(mix, {"tech_savvy": [signal]})
    assert [e.persona_id for e in evidence] == ["tech_savvy", "brand_loyalist", "luxury_enthusiast"]
    assert evidence[0].signals == (signal,) and evidence[1].signals == ()
    assert by_weight(mix).tolist()[:3] == [3, 1, 4]
