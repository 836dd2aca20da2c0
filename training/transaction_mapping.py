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

import difflib
import itertools
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import polars as pl

from engine.data.contract import CUSTOMER_FEATURE_PREFIX
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
    LINE_TOTAL = "line_total"
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


REQUIRED_FIELDS: tuple[Field, ...] = (Field.PRODUCT_CODE, Field.TIMESTAMP, Field.CUSTOMER)
"""Without these (and a price: unit_price or line_total) no event can be built: which item, when, by whom."""

TABLE_FIELDS: dict[str, tuple[Field, tuple[Field, ...]]] = {
    "products": (Field.PRODUCT_CODE, (Field.DESCRIPTION, Field.BRAND, Field.PRIVATE_LABEL, Field.CATEGORY)),
    "customers": (Field.CUSTOMER, (Field.COUNTRY, Field.REGION, Field.AGE_BAND, Field.INCOME_BAND)),
}
"""Extra tables an export may come in: the lines' field they join on, and the fields they may map."""

FIELD_MEANINGS: dict[Field, str] = {
    Field.INVOICE: "invoice / order / basket number (groups lines; cancellations are recognised by it)",
    Field.PRODUCT_CODE: "product code or SKU: becomes item_id",
    Field.DESCRIPTION: "product description: becomes the item title; category and tag rules match it",
    Field.QUANTITY: "units on the line; zero or negative lines are returns or corrections",
    Field.UNIT_PRICE: "price of one unit as charged: becomes price_paid; the item's price is its median",
    Field.LINE_TOTAL: "amount charged for the whole line, instead of unit_price: price = total / quantity",
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


class FeatureKind(StrEnum):
    """How an extra customer feature is used: numbers are standardized, categories one-hot encoded."""

    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


@dataclass(frozen=True)
class CustomerFeature:
    """An extra demographic column (``[customer_features]``): becomes ``feature__<name>`` of customers."""

    name: str
    column: str
    kind: FeatureKind

    @property
    def output_column(self) -> str:
        return f"{CUSTOMER_FEATURE_PREFIX}{self.name}"


@dataclass(frozen=True)
class ExtraTable:
    """A table joined to the lines (``[tables.products]``, ``[tables.customers]``) on ``joins``."""

    name: str
    file: str  # relative paths are resolved against the folder of the lines export
    key: str  # the table's column holding the joined field's value
    joins: Field
    columns: dict[Field, str]
    features: tuple[CustomerFeature, ...] = ()

    def path(self, lines: Path) -> Path:
        path = Path(self.file)
        return path if path.is_absolute() else lines.parent / path


@dataclass(frozen=True)
class TransactionMapping:
    """A validated mapping: which column holds each field, and the shop's conventions."""

    source: str  # the mapping file, for messages
    name: str
    columns: dict[Field, str]  # columns of the lines export
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
    tables: tuple[ExtraTable, ...] = ()
    line_features: tuple[CustomerFeature, ...] = ()  # features read from the lines (no customers table)

    def has(self, field: Field) -> bool:
        return field in self.columns or any(field in t.columns for t in self.tables)

    def column(self, field: Field) -> str:
        """The export column holding ``field``, in the lines or in the extra table that maps it."""
        if field in self.columns:
            return self.columns[field]
        return next(t.columns[field] for t in self.tables if field in t.columns)

    @property
    def features(self) -> tuple[CustomerFeature, ...]:
        return self.line_features + tuple(f for t in self.tables for f in t.features)

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
    "tables": set(TABLE_FIELDS),
    "customer_features": set(),  # names chosen by the mapping; checked one by one
}
_TABLE_KEYS = {"file", "key", "columns"}
_FEATURE_KEYS = {"column", "kind"}
_FEATURE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_RULE_KEYS = {"category": {"category", "pattern", "field"}, "tags": {"tag", "pattern", "field"}}
_TEXT_FIELDS = (Field.DESCRIPTION, Field.PRODUCT_CODE, Field.BRAND, Field.CATEGORY)
_VALUE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-:. ]*$")


def _closest(key: str, allowed: Iterable[str]) -> str | None:
    """The allowed key ``key`` most likely misspells (as training.config suggests for its keys)."""
    names = sorted(allowed)
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6) or [n for n in names if n.startswith(key)]
    return close[0] if close else None


def _unknown_keys(unknown: list[str], allowed: Iterable[str], what: str = "key(s)") -> str:
    """``has unknown key(s) ['product_cod'] (did you mean 'product_code'?)``; the allowed keys are
    listed too when some unknown key resembles none of them."""
    allowed = sorted(allowed)
    guesses = {key: guess for key in unknown if (guess := _closest(key, allowed)) is not None}
    text = f"has unknown {what} {unknown}"
    if guesses:
        named = [
            repr(guess) if len(unknown) == 1 else f"{guess!r} for {key!r}" for key, guess in guesses.items()
        ]
        text += f" (did you mean {', '.join(named)}?)"
    if len(guesses) < len(unknown):
        text += f"; allowed: {', '.join(allowed)}"
    return text


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
        if name == "customer_features":
            return raw
        unknown = sorted(set(raw) - _SECTIONS[name])
        if unknown:
            raise self.fail(f"[{name}]", _unknown_keys(unknown, _SECTIONS[name]))
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
        raise reader.fail("top level", _unknown_keys(unknown, _SECTIONS, "section(s)"))
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
    if Field.UNIT_PRICE in columns and Field.LINE_TOTAL in columns:
        raise reader.fail("[columns]", "maps both unit_price and line_total; map the one the export has")
    if Field.UNIT_PRICE not in columns and Field.LINE_TOTAL not in columns:
        raise reader.fail(
            "[columns]",
            f"needs unit_price or line_total; unit_price = {FIELD_MEANINGS[Field.UNIT_PRICE]}; "
            f"line_total = {FIELD_MEANINGS[Field.LINE_TOTAL]}",
        )
    if Field.LINE_TOTAL in columns and Field.QUANTITY not in columns:
        raise reader.fail("[columns] line_total", "needs [columns] quantity to divide the total by")
    tables = _tables(reader, columns)
    mapped = set(columns) | {f for t in tables for f in t.columns}
    if Field.COUNTRY in mapped and Field.REGION in mapped:
        raise reader.fail("[columns]", "maps both country and region; both become the customer's region")
    features = _features(reader)
    customers_table = next((t for t in tables if t.name == "customers"), None)
    if customers_table is not None:
        tables = tuple(
            ExtraTable(t.name, t.file, t.key, t.joins, t.columns, features) if t is customers_table else t
            for t in tables
        )
    line_features = features if customers_table is None else ()

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
    if drop_missing_description and Field.DESCRIPTION not in mapped:
        raise reader.fail("[drop] missing_description", "needs [columns] description")

    category_raw = reader.section("category")
    default_category = reader.text(category_raw, "category", "default", "uncategorised") or "uncategorised"
    category_rules = _rules(reader, category_raw, "category", "category", mapped)
    tags_raw = reader.section("tags")
    tag_rules = _rules(reader, tags_raw, "tags", "tag", mapped)

    bands = _price_bands(reader, document) if "price_bands" in document else None
    brand_raw = reader.section("brand")
    private_labels = reader.strings(brand_raw, "brand", "private_labels")
    if private_labels and Field.BRAND not in mapped:
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
        tables=tables,
        line_features=line_features,
    )


def _tables(reader: _Reader, columns: dict[Field, str]) -> tuple[ExtraTable, ...]:
    """``[tables.products]`` and ``[tables.customers]``: file, join key and the fields they map."""
    raw = reader.section("tables")
    tables: list[ExtraTable] = []
    for name, entry in raw.items():
        where = f"[tables.{name}]"
        if not isinstance(entry, dict):
            raise reader.fail(where, "must be a table with file, key and columns")
        unknown = sorted(set(entry) - _TABLE_KEYS)
        if unknown:
            raise reader.fail(where, _unknown_keys(unknown, _TABLE_KEYS))
        file = reader.text(entry, f"tables.{name}", "file")
        key = reader.text(entry, f"tables.{name}", "key")
        if file is None or key is None:
            raise reader.fail(where, "needs file (the table's file) and key (its column the lines join on)")
        joins, allowed = TABLE_FIELDS[name]
        mapped_raw = entry.get("columns", {})
        if not isinstance(mapped_raw, dict):
            raise reader.fail(f"[tables.{name}.columns]", "must be a table of field = column")
        mapped: dict[Field, str] = {}
        for field_name, column in mapped_raw.items():
            if field_name not in {f.value for f in allowed}:
                fields = [f.value for f in allowed]
                guess = _closest(field_name, fields)
                raise reader.fail(
                    f"[tables.{name}.columns] {field_name}",
                    f"is not a field of the {name} table"
                    + (f" (did you mean {guess!r}?)" if guess else f"; allowed: {', '.join(fields)}"),
                )
            if not isinstance(column, str) or column == "":
                raise reader.fail(
                    f"[tables.{name}.columns] {field_name}", f"must name a column, got {column!r}"
                )
            field = Field(field_name)
            if field in columns:
                raise reader.fail(
                    f"[tables.{name}.columns] {field_name}",
                    f"{field_name} is mapped twice: [columns] maps it to {columns[field]!r} too",
                )
            mapped[field] = column
        tables.append(ExtraTable(name, file, key, joins, mapped))
    return tuple(tables)


def _features(reader: _Reader) -> tuple[CustomerFeature, ...]:
    """``[customer_features]``: name = { column = "...", kind = "numeric" | "categorical" }."""
    raw = reader.section("customer_features")
    features: list[CustomerFeature] = []
    for name, entry in raw.items():
        where = f"[customer_features] {name}"
        if not _FEATURE_NAME.match(name):
            raise reader.fail(
                where, "must be a name of lower-case letters, digits and _, starting with a letter"
            )
        if not isinstance(entry, dict) or set(entry) - _FEATURE_KEYS or "column" not in entry:
            raise reader.fail(
                where, 'must be { column = "EXPORT_COLUMN", kind = "numeric" or "categorical" }'
            )
        column = entry["column"]
        if not isinstance(column, str) or column == "":
            raise reader.fail(f"{where} column", f"must name a column, got {column!r}")
        kind = entry.get("kind", FeatureKind.CATEGORICAL.value)
        if kind not in {k.value for k in FeatureKind}:
            raise reader.fail(f"{where} kind", f"must be numeric or categorical, got {kind!r}")
        features.append(CustomerFeature(name, column, FeatureKind(kind)))
    return tuple(features)


def _rules(
    reader: _Reader, raw: dict[str, Any], section: str, value_key: str, columns: set[Field]
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
            raise reader.fail(where, _unknown_keys(unknown, _RULE_KEYS[section]))
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
            raise reader.fail(
                f"{where} field", f"is {field.value!r}, which neither [columns] nor [tables] maps"
            )
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
