"""A persona catalog proposed from the data: clusters of customers' behaviour, named by what sets them apart.

The bundled catalog is a hypothesis written for a general store; a grocery or wholesale export does
not have "tech savvy" customers, yet inference must spread every customer over the catalog's
personas. A proposal starts from the shop instead: every customer with enough events is described
by the shares of their events in each feature value persona inference knows (category, tag, price
level, discount, brand repeat, bulk, channel, device), the customers are clustered (k-means on
standardised shares, seeded, so a proposal is reproducible), and each cluster becomes a persona whose
signals are the values it shows markedly more often than the population (``min_lift`` times the
population's share) and whose name and id come from the most distinctive of them.

The proposal is a ``PersonaCatalog`` (``catalog_to_toml`` writes it), so it loads and trains like any
hand-written catalog; people are expected to rename and describe its personas before they use it
in front of anyone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.cluster.vq import kmeans2

from engine.personas.catalog import Demographics, Persona, PersonaCatalog, PersonaSignals
from engine.personas.discovery import misfit_scores
from engine.personas.inference.errors import PersonaInferenceError
from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.inference.model import PersonaInferenceModel
from engine.personas.traits import (
    BRAND_REPEAT,
    BULK,
    CATEGORY,
    CHANNEL,
    DEVICE,
    DISCOUNTED,
    PRICE_LEVEL,
    TAG_PREFIX,
    YES,
)

_MIN_SPREAD = 0.02  # floor on a share's spread when standardising: a value almost nobody shows
_LEVEL_SIGNALS = {DISCOUNTED: "discount_share", BRAND_REPEAT: "brand_concentration", BULK: "bulk_share"}
_LIST_SIGNALS = {CATEGORY: "categories", CHANNEL: "channels", DEVICE: "devices"}
_PRICE_WORDS = {"low": "Budget", "mid": "Mid-range", "high": "Premium"}


@dataclass(frozen=True)
class ProposalConfig:
    """``personas``: how many to propose; ``min_events``: customers with fewer are not clustered
    (their shares are noise); ``min_lift``: a value becomes a signal when the cluster shows it this
    many times as often as the population (or this many times less, for high/low signals);
    ``min_difference``: and at least this much more often in absolute terms (a category with 0.5% of
    events shown at 0.8% is not what sets a persona apart); ``max_values``: at most this many
    categories, tags, channels or devices per persona."""

    personas: int = 5
    min_events: int = 5
    min_lift: float = 1.3
    min_difference: float = 0.02
    max_values: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.personas < 2:
            raise ValueError(f"a catalog needs at least 2 personas, got personas={self.personas}")
        if self.min_events < 1 or self.min_lift <= 1 or self.max_values < 1 or self.min_difference < 0:
            raise ValueError(
                "ProposalConfig needs min_events >= 1, min_lift > 1, min_difference >= 0, max_values >= 1; "
                f"got {self.min_events}, {self.min_lift}, {self.min_difference}, {self.max_values}"
            )


@dataclass(frozen=True)
class Distinctive:
    """A feature value a proposed persona shows more (or less) often than the population."""

    feature: str
    persona_share: float
    population_share: float

    @property
    def lift(self) -> float:
        return self.persona_share / self.population_share if self.population_share > 0 else float("inf")


@dataclass(frozen=True)
class ProposedPersona:
    persona: Persona
    customers: int
    share: float  # of the clustered customers
    distinctive: tuple[Distinctive, ...]  # most distinctive first


@dataclass(frozen=True)
class CatalogProposal:
    catalog: PersonaCatalog
    personas: tuple[ProposedPersona, ...]
    customers_clustered: int


def propose_catalog(
    model: PersonaInferenceModel, mixes: InferredMixes, config: ProposalConfig | None = None
) -> CatalogProposal:
    """Cluster the customers' feature shares into ``config.personas`` personas (module docstring).

    ``model`` and ``mixes`` are any fitted persona model and its mixes (with their event evidence):
    only the observed shares and the feature space are used, not the given catalog's personas.
    Clusters left empty by k-means are dropped; fewer than two left is an error.
    """
    config = config or ProposalConfig()
    fit = misfit_scores(model, mixes, config.min_events)
    rows = np.flatnonzero(fit.scored)
    if rows.size < config.personas:
        raise PersonaInferenceError(
            f"only {rows.size} customers have {config.min_events}+ events; "
            f"cannot propose {config.personas} personas"
        )
    shares = fit.observed[rows]
    names = model.space.column_names
    population = shares.mean(axis=0)
    spread = np.maximum(shares.std(axis=0), _MIN_SPREAD)
    points = (shares - population) / spread
    _, labels = kmeans2(points, config.personas, minit="++", seed=np.random.default_rng(config.seed))
    clusters = [np.flatnonzero(labels == c) for c in range(config.personas)]
    clusters = sorted((c for c in clusters if c.size), key=lambda c: (-c.size, int(c[0])))
    if len(clusters) < 2:
        raise PersonaInferenceError("the customers fell into fewer than 2 clusters; no catalog to propose")
    proposed: list[ProposedPersona] = []
    taken: set[str] = set()
    for members in clusters:
        mean = shares[members].mean(axis=0)
        lift = np.divide(mean, population, out=np.ones_like(mean), where=population > 0)
        # Most distinctive first on the scale the clusters were found on (differences in spreads): by
        # lift alone, a value 0.01% of everyone's events and none of the cluster's led the list.
        standardised = (mean - population) / spread
        order = np.argsort(-np.abs(standardised), kind="stable")
        distinctive = tuple(
            Distinctive(names[j], float(mean[j]), float(population[j]))
            for j in order[:8]
            if abs(mean[j] - population[j]) >= config.min_difference
        )
        signals = _signals(names, lift, mean - population, config)
        persona_id, name = _naming(signals, taken)
        taken.add(persona_id)
        share = members.size / rows.size
        persona = Persona(
            id=persona_id,
            name=name,
            description=_description(distinctive, members.size, share),
            demographics=Demographics(),
            goals=(),
            pain_points=(),
            preferred_channels=signals.channels,
            decision_factors=(),
            signals=signals,
        )
        proposed.append(ProposedPersona(persona, int(members.size), float(share), distinctive))
    catalog = PersonaCatalog(tuple(p.persona for p in proposed), source="proposed from the data")
    return CatalogProposal(catalog, tuple(proposed), int(rows.size))


def _signals(
    names: tuple[str, ...], lift: NDArray[np.float64], excess: NDArray[np.float64], config: ProposalConfig
) -> PersonaSignals:
    """The values a cluster shows at least ``min_lift`` times (and ``min_difference``) more often than
    everyone (high/low levels also when it shows them ``min_lift`` times less); when none qualify,
    the value it shows most in excess of everyone."""
    lists: dict[str, list[tuple[float, str]]] = {"categories": [], "tags": [], "channels": [], "devices": []}
    excess_of: dict[tuple[str, str], float] = {}
    levels: dict[str, str] = {}
    best_price: tuple[float, str] | None = None
    for j, column in enumerate(names):
        group, _, value = column.partition("=")
        if column.startswith(TAG_PREFIX):
            lists["tags"].append((lift[j], column.removeprefix(TAG_PREFIX)))
            excess_of[("tags", column.removeprefix(TAG_PREFIX))] = float(excess[j])
        elif group in _LIST_SIGNALS:
            lists[_LIST_SIGNALS[group]].append((lift[j], value))
            excess_of[(_LIST_SIGNALS[group], value)] = float(excess[j])
        elif group == PRICE_LEVEL and (best_price is None or lift[j] > best_price[0]):
            best_price = (lift[j], value)
        elif group in _LEVEL_SIGNALS and value == YES:
            if lift[j] >= config.min_lift:
                levels[_LEVEL_SIGNALS[group]] = "high"
            elif lift[j] <= 1.0 / config.min_lift:
                levels[_LEVEL_SIGNALS[group]] = "low"
    if best_price is not None and best_price[0] >= config.min_lift:
        levels["price_level"] = best_price[1]
    chosen = {
        key: tuple(
            v
            for _, v in sorted(
                (
                    c
                    for c in candidates
                    if c[0] >= config.min_lift and excess_of[(key, c[1])] >= config.min_difference
                ),
                reverse=True,
            )
        )[: config.max_values]
        for key, candidates in lists.items()
    }
    if not any(chosen.values()) and not levels and excess_of:
        key, value = max(excess_of, key=lambda pair: (excess_of[pair], pair))
        chosen[key] = (value,)
    return PersonaSignals(
        discount_share=levels.get("discount_share"),
        price_level=levels.get("price_level"),
        brand_concentration=levels.get("brand_concentration"),
        bulk_share=levels.get("bulk_share"),
        tags=chosen["tags"],
        categories=chosen["categories"],
        channels=chosen["channels"],
        devices=chosen["devices"],
    )


def _naming(signals: PersonaSignals, taken: set[str]) -> tuple[str, str]:
    """An id and a display name from the signals: price word, up to two categories (or tags, or the
    channel), e.g. "Premium jewelry & fashion shopper"; a number is added when the id is taken."""
    words: list[str] = []
    if signals.price_level is not None:
        words.append(_PRICE_WORDS[signals.price_level])
    elif signals.discount_share == "high":
        words.append("Deal-seeking")
    elif signals.bulk_share == "high":
        words.append("Bulk")
    elif signals.bulk_share == "low":
        words.append("Small-quantity")
    subject = signals.categories[:2] or signals.tags[:2] or signals.channels[:1] or signals.devices[:1]
    subject = tuple(v for v in subject if not words or v.lower() != words[0].lower())
    if subject:
        words.append(" & ".join(subject))
    elif signals.brand_concentration == "high":
        words.append("brand-loyal")
    words.append("shopper")
    name = " ".join(words)
    name = name[0].upper() + name[1:]
    base = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "persona"
    if not base[0].isalpha():
        base = f"p_{base}"
    persona_id, n = base, 2
    while persona_id in taken:
        persona_id, n = f"{base}_{n}", n + 1
    return persona_id, name if persona_id == base else f"{name} {n - 1}"


def _description(distinctive: tuple[Distinctive, ...], customers: int, share: float) -> str:
    shown = ", ".join(
        f"{d.feature} {d.persona_share:.0%} of events (all customers {d.population_share:.0%})"
        for d in distinctive[:4]
    )
    if not shown:
        return f"Proposed from {customers:,} customers ({share:.0%}); no value sets their events apart."
    return f"Proposed from {customers:,} customers ({share:.0%}): {shown}."
