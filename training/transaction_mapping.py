"""The mapping file that tells the transaction adapter how to read one shop's export.

Transaction exports (point-of-sale lines, order lines, loyalty-card baskets) all hold roughly the
same facts under different column names and conventions: an invoice, a product code, a quantity, a
unit price, a timestamp, a customer, sometimes a brand, a category, a coupon or household
demographics. Rather than one adapter per shop, a small TOML file names the export's columns for
each logical field and states the shop's conventions (how a cancellation is marked, which product
codes are not products, how to derive a category from the description).

The mapping is written by a person for an export they have just met, so it is validated strictly:
an unknown key is a typo until proven otherwise, and a typo that silently disabled the return
filter would quietly poison every model trained on the result. Every error names the mapping file
and the key; errors about the export's columns also name the data file and list its columns.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import polars as pl

from engine.errors import PersonaEngineError


class MappingError(PersonaEngineError, ValueError):
    """An invalid mapping, or one that does not fit the data file; names the file, key and column."""


class Field(StrEnum):
    """Logical fields of a transaction line that a mapping may point at a column of the export."""

    INVOICE = "invoice"
    PRODUCT_CODE = "product_code"
    DESCRIPTION = "description"
    QUANTITY = "quantity"
    UNIT_PRICE = "unit_price"
    DISCOUNT = "discount"
    COUPON = "coupon"
    BRAND = "brand"
    PRIVATE_LABEL = "private_label"
    CATEGORY = "category"
    TIMESTAMP = "timestamp"
    CUSTOMER = "customer"
    COUNTRY = "country"
    REGION = "region"
    AGE_BAND = "age_band"
    INCOME_BAND = "income_band"
    CHANNEL = "channel"
    DEVICE = "device"


REQUIRED_FIELDS: tuple[Field, ...] = (Field.PRODUCT_CODE, Field.UNIT_PRICE, Field.TIMESTAMP, Field.CUSTOMER)
"""Without these no event can be built: which item, at what price, when, and by whom."""

FIELD_MEANINGS: dict[Field, str] = {
    Field.INVOICE: "invoice / order / basket number (groups lines; cancellations are recognised by it)",
    Field.PRODUCT_CODE: "product code or SKU: becomes item_id",
    Field.DESCRIPTION: "product description: becomes the item title; category and tag rules match it",
    Field.QUANTITY: "units on the line; zero or negative lines are returns or corrections",
    Field.UNIT_PRICE: "price of one unit as charged: becomes price_paid; the item's price is its median",
    Field.DISCOUNT: "discount on the line, in the unit given by [discount] kind",
    Field.COUPON: "coupon code or flag; a non-empty value marks the line discounted",
    Field.BRAND: "brand name",
    Field.PRIVATE_LABEL: "whether the product is the shop's own label (true/false, 1/0, yes/no, y/n)",
    Field.CATEGORY: "category the product is shelved in (else [category] rules decide)",
    Field.TIMESTAMP: "when the line was sold",
    Field.CUSTOMER: "customer, loyalty card or household id; lines without one are dropped",
    Field.COUNTRY: "country of the customer: becomes the customer's region",
    Field.REGION: "region of the customer",
    Field.AGE_BAND: "age band of the customer or household head",
    Field.INCOME_BAND: "income band of the household",
    Field.CHANNEL: "traffic source or sales channel (store, web, app, email, ...)",
    Field.DEVICE: "device (desktop, mobile, ...)",
}


class DiscountKind(StrEnum):
    """How the mapped discount column is expressed; all become the contract's fraction off the price."""

    FRACTION = "fraction"  # 0.2 = 20% off
    PERCENT = "percent"  # 20 = 20% off
    AMOUNT_PER_UNIT = "amount_per_unit"  # money off each unit; unit_price is the price after it
    AMOUNT_PER_LINE = "amount_per_line"  # money off the whole line; needs quantity


@dataclass(frozen=True)
class PatternRule:
    """A regular expression on a text field and the value it assigns (a category or a tag)."""

    value: str
    pattern: re.Pattern[str]
    field: Field


@dataclass(frozen=True)
class PriceBands:
    """Price-band tags: ``edges`` split the item's price into ``len(edges) + 1`` bands named ``tags``."""

    edges: tuple[float, ...]
    tags: tuple[str, ...]


@dataclass(frozen=True)
class TransactionMapping:
    """A validated mapping: which column holds each field, and the shop's conventions."""

    source: str  # the mapping file, for messages
    name: str
    columns: dict[Field, str]
    timestamp_format: str | None
    timezone: str
    id_strip_chars: bool
    discount_kind: DiscountKind
    coupon_fraction: float | None
    cancellation_invoice_prefix: str | None
    excluded_product_codes: tuple[str, ...]
    excluded_product_code_pattern: re.Pattern[str] | None
    drop_missing_description: bool
    drop_duplicate_rows: bool
    default_category: str
    category_rules: tuple[PatternRule, ...]
    tag_rules: tuple[PatternRule, ...]
    price_bands: PriceBands | None
    private_label_brands: tuple[str, ...]

    def has(self, field: Field) -> bool:
        return field in self.columns

    def column(self, field: Field) -> str:
        return self.columns[field]

    def where(self, key: str) -> str:
        """How messages point at one key of the mapping file."""
        return f"{self.source}: {key}"


_SECTIONS: dict[str, set[str]] = {
    "source": {"name", "timestamp_format", "timezone", "strip_ids"},
    "columns": {f.value for f in Field},
    "discount": {"kind", "coupon_fraction"},
    "drop": {
        "cancellation_invoice_prefix",
        "product_codes",
        "product_code_pattern",
        "missing_description",
        "duplicate_rows",
    },
    "category": {"default", "rules"},
    "tags": {"rules"},
    "price_bands": {"edges", "tags"},
    "brand": {"private_labels"},
}
_RULE_KEYS = {"category": {"category", "pattern", "field"}, "tags": {"tag", "pattern", "field"}}
_TEXT_FIELDS = (Field.DESCRIPTION, Field.PRODUCT_CODE, Field.BRAND, Field.CATEGORY)
_VALUE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-:. ]*$")


class _Reader:
    """Typed access to the parsed TOML; every complaint is prefixed with the file and the key."""

    def __init__(self, document: dict[str, Any], source: str) -> None:
        self.document = document
        self.source = source

    def fail(self, key: str, problem: str) -> MappingError:
        return MappingError(f"{self.source}: {key} {problem}")

    def section(self, name: str) -> dict[str, Any]:
        raw = self.document.get(name, {})
        if not isinstance(raw, dict):
            raise self.fail(f"[{name}]", "must be a table")
        unknown = sorted(set(raw) - _SECTIONS[name])
        if unknown:
            raise self.fail(
                f"[{name}]", f"has unknown key(s) {unknown}; allowed: {', '.join(sorted(_SECTIONS[name]))}"
            )
        return raw

    def text(self, raw: dict[str, Any], section: str, key: str, default: str | None = None) -> str | None:
        value = raw.get(key, default)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise self.fail(f"[{section}] {key}", f"must be a non-empty string, got {value!r}")
        return value

    def flag(self, raw: dict[str, Any], section: str, key: str, default: bool) -> bool:
        value = raw.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(f"[{section}] {key}", f"must be true or false, got {value!r}")
        return value

    def strings(self, raw: dict[str, Any], section: str, key: str) -> tuple[str, ...]:
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v != "" for v in value):
            raise self.fail(f"[{section}] {key}", f"must be a list of non-empty strings, got {value!r}")
        return tuple(value)

    def pattern(self, value: Any, key: str) -> re.Pattern[str]:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"must be a non-empty regular expression string, got {value!r}")
        try:
            compiled = re.compile(value)
            # rules run in polars (Rust regex), whose dialect differs from Python's in corners
            pl.Series([""]).str.contains(value)
        except (re.error, pl.exceptions.ComputeError) as error:
            first_line = str(error).strip().splitlines()[0]
            raise self.fail(key, f"is not a valid regular expression ({first_line}): {value!r}") from None
        return compiled


def parse_mapping(document: dict[str, Any], source: str = "<memory>") -> TransactionMapping:
    """Validate a parsed mapping document; ``source`` (the file) prefixes every error."""
    reader = _Reader(document, source)
    unknown = sorted(set(document) - set(_SECTIONS))
    if unknown:
        raise reader.fail("top level", f"has unknown section(s) {unknown}; allowed: {', '.join(_SECTIONS)}")
    if "columns" not in document:
        raise reader.fail("[columns]", "is missing; it maps fields such as product_code to export columns")

    source_raw = reader.section("source")
    columns_raw = reader.section("columns")
    columns: dict[Field, str] = {}
    for key, value in columns_raw.items():
        if not isinstance(value, str) or value == "":
            raise reader.fail(f"[columns] {key}", f"must name a column of the export, got {value!r}")
        columns[Field(key)] = value
    missing = [f.value for f in REQUIRED_FIELDS if f not in columns]
    if missing:
        raise reader.fail(
            "[columns]",
            f"lacks required mapping(s) {missing}; "
            + "; ".join(f"{f} = {FIELD_MEANINGS[Field(f)]}" for f in missing),
        )
    if Field.COUNTRY in columns and Field.REGION in columns:
        raise reader.fail("[columns]", "maps both country and region; both become the customer's region")

    timezone = reader.text(source_raw, "source", "timezone", "UTC") or "UTC"
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(timezone)
    except (KeyError, ValueError, OSError):
        raise reader.fail("[source] timezone", f"is not a known time zone: {timezone!r}") from None

    discount_raw = reader.section("discount")
    kind_text = discount_raw.get("kind", DiscountKind.FRACTION.value)
    if kind_text not in {k.value for k in DiscountKind}:
        raise reader.fail(
            "[discount] kind", f"must be one of {', '.join(k.value for k in DiscountKind)}, got {kind_text!r}"
        )
    discount_kind = DiscountKind(kind_text)
    if discount_kind is DiscountKind.AMOUNT_PER_LINE and Field.QUANTITY not in columns:
        raise reader.fail("[discount] kind", "amount_per_line needs [columns] quantity to spread the amount")
    coupon_fraction = discount_raw.get("coupon_fraction")
    if coupon_fraction is not None and (
        isinstance(coupon_fraction, bool)
        or not isinstance(coupon_fraction, int | float)
        or not 0 < coupon_fraction <= 1
    ):
        raise reader.fail(
            "[discount] coupon_fraction", f"must be a number in (0, 1], got {coupon_fraction!r}"
        )
    if Field.COUPON in columns and Field.DISCOUNT not in columns and coupon_fraction is None:
        raise reader.fail(
            "[discount] coupon_fraction",
            "is required when [columns] maps coupon but not discount: it is the fraction a coupon takes "
            "off (the contract stores discounts as fractions, and inventing one would bias the personas)",
        )

    drop_raw = reader.section("drop")
    prefix = reader.text(drop_raw, "drop", "cancellation_invoice_prefix")
    if prefix is not None and Field.INVOICE not in columns:
        raise reader.fail("[drop] cancellation_invoice_prefix", "needs [columns] invoice")
    code_pattern = (
        reader.pattern(drop_raw["product_code_pattern"], "[drop] product_code_pattern")
        if "product_code_pattern" in drop_raw
        else None
    )
    drop_missing_description = reader.flag(drop_raw, "drop", "missing_description", False)
    if drop_missing_description and Field.DESCRIPTION not in columns:
        raise reader.fail("[drop] missing_description", "needs [columns] description")

    category_raw = reader.section("category")
    default_category = reader.text(category_raw, "category", "default", "uncategorised") or "uncategorised"
    category_rules = _rules(reader, category_raw, "category", "category", columns)
    tags_raw = reader.section("tags")
    tag_rules = _rules(reader, tags_raw, "tags", "tag", columns)

    bands = _price_bands(reader, document) if "price_bands" in document else None
    brand_raw = reader.section("brand")
    private_labels = reader.strings(brand_raw, "brand", "private_labels")
    if private_labels and Field.BRAND not in columns:
        raise reader.fail("[brand] private_labels", "needs [columns] brand")

    return TransactionMapping(
        source=source,
        name=reader.text(source_raw, "source", "name", Path(source).stem) or Path(source).stem,
        columns=columns,
        timestamp_format=reader.text(source_raw, "source", "timestamp_format"),
        timezone=timezone,
        id_strip_chars=reader.flag(source_raw, "source", "strip_ids", True),
        discount_kind=discount_kind,
        coupon_fraction=None if coupon_fraction is None else float(coupon_fraction),
        cancellation_invoice_prefix=prefix,
        excluded_product_codes=reader.strings(drop_raw, "drop", "product_codes"),
        excluded_product_code_pattern=code_pattern,
        drop_missing_description=drop_missing_description,
        drop_duplicate_rows=reader.flag(drop_raw, "drop", "duplicate_rows", False),
        default_category=default_category,
        category_rules=category_rules,
        tag_rules=tag_rules,
        price_bands=bands,
        private_label_brands=private_labels,
    )


def _rules(
    reader: _Reader, raw: dict[str, Any], section: str, value_key: str, columns: dict[Field, str]
) -> tuple[PatternRule, ...]:
    rules_raw = raw.get("rules", [])
    if not isinstance(rules_raw, list):
        raise reader.fail(f"[{section}] rules", f"must be an array of tables ([[{section}.rules]])")
    rules: list[PatternRule] = []
    for i, rule in enumerate(rules_raw):
        where = f"[[{section}.rules]] #{i + 1}"
        if not isinstance(rule, dict):
            raise reader.fail(where, "must be a table")
        unknown = sorted(set(rule) - _RULE_KEYS[section])
        if unknown:
            raise reader.fail(
                where, f"has unknown key(s) {unknown}; allowed: {', '.join(sorted(_RULE_KEYS[section]))}"
            )
        value = rule.get(value_key)
        if not isinstance(value, str) or not _VALUE_PATTERN.match(value):
            raise reader.fail(
                f"{where} {value_key}", f"must be a name of letters, digits, _ - : . or spaces, got {value!r}"
            )
        field_name = rule.get("field", Field.DESCRIPTION.value)
        if field_name not in {f.value for f in _TEXT_FIELDS}:
            raise reader.fail(
                f"{where} field",
                f"must be one of {', '.join(f.value for f in _TEXT_FIELDS)}, got {field_name!r}",
            )
        field = Field(field_name)
        if field not in columns:
            raise reader.fail(f"{where} field", f"is {field.value!r}, which [columns] does not map")
        if "pattern" not in rule:
            raise reader.fail(where, "has no pattern")
        rules.append(PatternRule(value, reader.pattern(rule["pattern"], f"{where} pattern"), field))
    return tuple(rules)


def _price_bands(reader: _Reader, document: dict[str, Any]) -> PriceBands:
    raw = reader.section("price_bands")
    edges = raw.get("edges")
    if (
        not isinstance(edges, list)
        or not edges
        or not all(isinstance(e, int | float) and not isinstance(e, bool) for e in edges)
        or any(b <= a for a, b in itertools.pairwise(edges))
    ):
        raise reader.fail(
            "[price_bands] edges", f"must be a non-empty list of increasing prices, got {edges!r}"
        )
    tags = reader.strings(raw, "price_bands", "tags")
    if len(tags) != len(edges) + 1:
        raise reader.fail(
            "[price_bands] tags", f"must name {len(edges) + 1} bands (one more than edges), got {len(tags)}"
        )
    return PriceBands(tuple(float(e) for e in edges), tags)


def load_mapping(path: Path) -> TransactionMapping:
    """Read and validate a mapping file."""
    if not path.is_file():
        raise MappingError(f"{path}: mapping file not found")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise MappingError(f"{path}: not valid TOML: {error}") from None
    return parse_mapping(document, source=str(path))
