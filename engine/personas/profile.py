"""Who a customer is in persona terms, for people: mixes, the evidence behind them, what matters to them.

A profile is what a marketer or a messaging system reads before choosing words and channels, so next
to the numbers it carries the catalog's human side of the customer's leading personas (preferred
channels, decision factors). Leading personas are the heaviest of the overall mix, at most three,
each with at least 10% weight: a 4% persona is noise, not a trait to write copy for.

Evidence comes from the explanations precomputed at training time (``engine.personas.explanations``); a
customer without events has none, and their profile says so with ``cold_start``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from engine.personas.catalog import PersonaCatalog
from engine.personas.drift import DriftStatus
from engine.personas.inference.signals import SignalContribution
from engine.personas.mix import PersonaMix
from engine.personas.mix_resolution import MixSource

LEADING_LIMIT = 3
LEADING_MIN_WEIGHT = 0.10


@dataclass(frozen=True)
class LeadingPersona:
    persona_id: str
    name: str
    weight: float
    preferred_channels: tuple[str, ...]
    decision_factors: tuple[str, ...]


@dataclass(frozen=True)
class PersonaEvidence:
    """The strongest signals behind one persona's weight, strongest first."""

    persona_id: str
    weight: float
    signals: tuple[SignalContribution, ...]


@dataclass(frozen=True)
class PersonaProfile:
    customer_id: str
    cold_start: bool  # no events in the artifact: the mixes are priors and there is no evidence
    mix: PersonaMix
    mix_source: MixSource
    context_mixes: tuple[tuple[str, PersonaMix], ...]  # in CONTEXTS order
    evidence: tuple[PersonaEvidence, ...]
    leading_personas: tuple[LeadingPersona, ...]
    model_version: str
    drift: DriftStatus | None = None  # None while the server keeps no live state for the customer


def by_weight(mix: PersonaMix) -> NDArray[np.int64]:
    """Persona positions, highest weight first, ties in catalog order (how responses list mixes)."""
    return np.lexsort((np.arange(len(mix.weights)), -mix.weights)).astype(np.int64)


def leading_personas(mix: PersonaMix, catalog: PersonaCatalog) -> tuple[LeadingPersona, ...]:
    leaders = []
    for k in by_weight(mix)[:LEADING_LIMIT]:
        weight = float(mix.weights[k])
        if weight < LEADING_MIN_WEIGHT:
            break
        persona = catalog.get(mix.personas[k])
        leaders.append(
            LeadingPersona(
                persona_id=persona.id,
                name=persona.name,
                weight=weight,
                preferred_channels=persona.preferred_channels,
                decision_factors=persona.decision_factors,
            )
        )
    return tuple(leaders)


def evidence_for(
    mix: PersonaMix, signals: dict[str, list[SignalContribution]]
) -> tuple[PersonaEvidence, ...]:
    """Evidence of every persona with positive weight, highest weight first."""
    return tuple(
        PersonaEvidence(mix.personas[k], float(mix.weights[k]), tuple(signals.get(mix.personas[k], [])))
        for k in by_weight(mix)
        if mix.weights[k] > 0
    )
