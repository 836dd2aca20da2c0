"""The persona catalog: who the shop's personas are and which behavioral signals identify them.

The catalog is written by people (marketing, UX research) in TOML, so it is validated strictly: an
unknown key is more likely a typo than an extension, and a typo in a signal would silently remove a
persona's anchor in inference. Errors name the file, the persona and the key.

Signals seed persona inference; they do not fix it. Each signal says in which direction a persona
differs from the average shopper on one event feature (see ``SIGNAL_KEYS``); inference starts from
these tilts and then fits the actual feature distributions on the data.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from engine.errors import PersonaEngineError

DEFAULT_CATALOG = "default"

# Signal key -> allowed values (None: a list of free strings, checked against the data at inference).
#   discount_share      share of the persona's events on discounted items: "high" or "low"
#   price_level         where its items sit within their category's price range: "low", "mid" or "high"
#   brand_concentration whether it keeps buying the same brands: "high" or "low"
#   bulk_share          share of its purchase lines of a dozen units or more (wholesale, stocking up):
#                       "high" or "low"; needs the events' quantity column
#   tags, categories    item tags / categories it favours
#   channels, devices   traffic sources and devices it favours
LEVEL_SIGNALS: dict[str, tuple[str, ...]] = {
    "discount_share": ("high", "low"),
    "price_level": ("low", "mid", "high"),
    "brand_concentration": ("high", "low"),
    "bulk_share": ("high", "low"),
}
LIST_SIGNALS: tuple[str, ...] = ("tags", "categories", "channels", "devices")
SIGNAL_KEYS: tuple[str, ...] = (*LEVEL_SIGNALS, *LIST_SIGNALS)

_PERSONA_KEYS = {
    "id",
    "name",
    "description",
    "demographics",
    "goals",
    "pain_points",
    "preferred_channels",
    "decision_factors",
    "signals",
}
_DEMOGRAPHIC_KEYS = {"age_bands", "income_bands", "regions", "summary"}
_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


class CatalogError(PersonaEngineError, ValueError):
    """An invalid persona catalog; the message names the file and the persona/key at fault."""


@dataclass(frozen=True)
class Demographics:
    age_bands: tuple[str, ...] = ()
    income_bands: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    summary: str = ""


@dataclass(frozen=True)
class PersonaSignals:
    """Direction of each identifying signal; empty fields say nothing about the persona."""

    discount_share: str | None = None
    price_level: str | None = None
    brand_concentration: str | None = None
    bulk_share: str | None = None
    tags: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Persona:
    id: str
    name: str
    description: str
    demographics: Demographics
    goals: tuple[str, ...]
    pain_points: tuple[str, ...]
    preferred_channels: tuple[str, ...]
    decision_factors: tuple[str, ...]
    signals: PersonaSignals


@dataclass(frozen=True)
class PersonaCatalog:
    """An ordered list of personas; the order fixes the column order of every mix matrix."""

    personas: tuple[Persona, ...]
    source: str = field(default="<memory>")

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.personas)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.personas)

    def __len__(self) -> int:
        return len(self.personas)

    def get(self, persona_id: str) -> Persona:
        for persona in self.personas:
            if persona.id == persona_id:
                return persona
        raise KeyError(f"no persona {persona_id!r} in catalog {self.source}")

    def resolve(self, name_or_id: str) -> str:
        """The persona id for an id or a display name (case-insensitive), as users type either."""
        wanted = name_or_id.strip().lower()
        for persona in self.personas:
            if wanted in (persona.id, persona.name.lower()):
                return persona.id
        raise KeyError(name_or_id)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise CatalogError(f"{where} must be a list of non-empty strings, got {value!r}")
    return tuple(v.strip() for v in value)


def _text(value: Any, where: str, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise CatalogError(f"{where} must be a non-empty string, got {value!r}")
    return value.strip()


def _parse_signals(raw: Any, where: str) -> PersonaSignals:
    if not isinstance(raw, dict):
        raise CatalogError(f"{where} must be a table of signals")
    unknown = set(raw) - set(SIGNAL_KEYS)
    if unknown:
        raise CatalogError(
            f"{where} has unknown signal(s) {sorted(unknown)}; known signals: {', '.join(SIGNAL_KEYS)}"
        )
    values: dict[str, Any] = {}
    for key, allowed in LEVEL_SIGNALS.items():
        if key in raw:
            if raw[key] not in allowed:
                raise CatalogError(f"{where}.{key} must be one of {', '.join(allowed)}, got {raw[key]!r}")
            values[key] = raw[key]
    for key in LIST_SIGNALS:
        if key in raw:
            values[key] = _strings(raw[key], f"{where}.{key}")
    signals = PersonaSignals(**values)
    if signals == PersonaSignals():
        raise CatalogError(f"{where} is empty; a persona needs at least one identifying signal")
    return signals


def _parse_persona(raw: Any, where: str) -> Persona:
    if not isinstance(raw, dict):
        raise CatalogError(f"{where} must be a table")
    unknown = set(raw) - _PERSONA_KEYS
    if unknown:
        raise CatalogError(
            f"{where} has unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(_PERSONA_KEYS))}"
        )
    persona_id = _text(raw.get("id"), f"{where}.id")
    if not _ID_PATTERN.match(persona_id):
        raise CatalogError(f"{where}.id {persona_id!r} must be lower_snake_case (letters, digits, _)")
    where = f"persona {persona_id!r}"
    demo_raw = raw.get("demographics", {})
    if not isinstance(demo_raw, dict):
        raise CatalogError(f"{where}.demographics must be a table")
    bad_demo = set(demo_raw) - _DEMOGRAPHIC_KEYS
    if bad_demo:
        raise CatalogError(f"{where}.demographics has unknown key(s) {sorted(bad_demo)}")
    demographics = Demographics(
        age_bands=_strings(demo_raw.get("age_bands", []), f"{where}.demographics.age_bands"),
        income_bands=_strings(demo_raw.get("income_bands", []), f"{where}.demographics.income_bands"),
        regions=_strings(demo_raw.get("regions", []), f"{where}.demographics.regions"),
        summary=_text(demo_raw.get("summary"), f"{where}.demographics.summary", required=False),
    )
    if "signals" not in raw:
        raise CatalogError(f"{where} has no [signals]; inference needs them to recognise the persona")
    return Persona(
        id=persona_id,
        name=_text(raw.get("name"), f"{where}.name"),
        description=_text(raw.get("description"), f"{where}.description"),
        demographics=demographics,
        goals=_strings(raw.get("goals", []), f"{where}.goals"),
        pain_points=_strings(raw.get("pain_points", []), f"{where}.pain_points"),
        preferred_channels=_strings(raw.get("preferred_channels", []), f"{where}.preferred_channels"),
        decision_factors=_strings(raw.get("decision_factors", []), f"{where}.decision_factors"),
        signals=_parse_signals(raw["signals"], f"{where}.signals"),
    )


def parse_catalog(document: dict[str, Any], source: str = "<memory>") -> PersonaCatalog:
    """Validate a parsed TOML document; errors are prefixed with ``source``."""
    try:
        unknown = set(document) - {"personas", "catalog"}
        if unknown:
            raise CatalogError(f"unknown top-level key(s) {sorted(unknown)}; expected [[personas]]")
        raw_personas = document.get("personas")
        if not isinstance(raw_personas, list) or len(raw_personas) < 2:
            raise CatalogError("a catalog needs at least two [[personas]] entries")
        personas = tuple(_parse_persona(raw, f"personas[{i}]") for i, raw in enumerate(raw_personas))
        for attribute in ("id", "name"):
            seen: set[str] = set()
            for persona in personas:
                value = getattr(persona, attribute).lower()
                if value in seen:
                    raise CatalogError(f"duplicate persona {attribute} {getattr(persona, attribute)!r}")
                seen.add(value)
    except CatalogError as error:
        raise CatalogError(f"{source}: {error}") from None
    return PersonaCatalog(personas=personas, source=source)


def bundled_catalog_names() -> tuple[str, ...]:
    """The catalogs shipped with the engine, by the name a config or --catalog gives them."""
    folder = resources.files("engine.catalogs")
    return tuple(
        sorted(entry.name.removesuffix(".toml") for entry in folder.iterdir() if entry.name.endswith(".toml"))
    )


def load_catalog(path_or_name: str | Path = DEFAULT_CATALOG) -> PersonaCatalog:
    """Load a catalog file, or a bundled one by name ("default", ...)."""
    text: str
    source = str(path_or_name)
    if isinstance(path_or_name, str) and not path_or_name.endswith(".toml") and "/" not in path_or_name:
        bundled = resources.files("engine.catalogs") / f"{path_or_name}.toml"
        if not bundled.is_file():
            raise CatalogError(
                f"no bundled persona catalog named {path_or_name!r}; bundled: "
                f"{', '.join(bundled_catalog_names())} (or a path to a .toml file)"
            )
        text = bundled.read_text(encoding="utf-8")
        source = f"bundled catalog {path_or_name!r}"
    else:
        path = Path(path_or_name)
        if not path.is_file():
            raise CatalogError(f"{path}: persona catalog file not found")
        text = path.read_text(encoding="utf-8")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise CatalogError(f"{source}: not valid TOML: {error}") from None
    return parse_catalog(document, source)


def catalog_to_toml(catalog: PersonaCatalog) -> str:
    """Serialise a catalog back to TOML, so an artifact carries the exact catalog it was trained with."""
    lines: list[str] = []

    def fmt(value: Any) -> str:
        if isinstance(value, str):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return "[" + ", ".join(fmt(v) for v in value) + "]"

    for p in catalog.personas:
        lines += [
            "[[personas]]",
            f"id = {fmt(p.id)}",
            f"name = {fmt(p.name)}",
            f"description = {fmt(p.description)}",
        ]
        for key in ("goals", "pain_points", "preferred_channels", "decision_factors"):
            lines.append(f"{key} = {fmt(getattr(p, key))}")
        lines.append("[personas.demographics]")
        d = p.demographics
        lines += [
            f"age_bands = {fmt(d.age_bands)}",
            f"income_bands = {fmt(d.income_bands)}",
            f"regions = {fmt(d.regions)}",
        ]
        if d.summary:
            lines.append(f"summary = {fmt(d.summary)}")
        lines.append("[personas.signals]")
        for key in LEVEL_SIGNALS:
            value = getattr(p.signals, key)
            if value is not None:
                lines.append(f"{key} = {fmt(value)}")
        for key in LIST_SIGNALS:
            value = getattr(p.signals, key)
            if value:
                lines.append(f"{key} = {fmt(value)}")
        lines.append("")
    return "\n".join(lines)
