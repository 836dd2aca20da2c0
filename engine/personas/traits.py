"""Persona trait features: what each event says about who is shopping, and the traits of each customer.

Persona inference explains every event by one persona, so it needs each event described by the same
features the catalog's signals talk about: was it discounted, where does the item's price sit in its
category, is it the customer's usual brand, which category and tags, which channel and device. Each
feature group takes one value per event (tags are independent yes/no features), encoded as a sparse
0/1 matrix so the inference can score millions of events with one sparse product.

Groups are either facts of the event (discount, brand repeat, bulk quantity, channel, device) or facts
of the item (category, price level, tags). The split matters to inference: item facts are strongly correlated
through the catalog (premium items are expensive, new-tech items are electronics), so they are
modelled jointly as a choice among items rather than as independent features; the item matrix and
each event's item index are kept for that.

The customer-level traits (discount share, price percentile, brand Herfindahl, ...) are averages of
the same event features plus a few non-linear summaries; they are what explanations and segment
discovery show to people, so both speak the vocabulary of the catalog.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.data.id_map import IdMap

YES = "yes"
NO = "no"
DISCOUNTED = "discounted"
PRICE_LEVEL = "price_level"
BRAND_REPEAT = "brand_repeat"
BULK = "bulk_quantity"
CATEGORY = "category"
CHANNEL = "channel"
DEVICE = "device"
TAG_PREFIX = "tag:"
PRICE_LEVELS: tuple[str, ...] = ("low", "mid", "high")
# A brand is one of a customer's habitual brands when it has at least two of their events and is their
# most frequent brand or holds this share of their branded events: loyal shoppers often keep two or
# three brands, and counting only the single top one would hide half of their loyalty.
HABITUAL_BRAND_SHARE = 0.1
# A purchase line of at least this many units is a bulk purchase: a dozen is the smallest case size
# wholesalers and shops restocking buy in, and a fixed count means the same line is "bulk" at training
# and at serving time, whatever else the data holds.
BULK_QUANTITY = 12.0
_MICROSECONDS_PER_DAY = 86_400_000_000
# The event feature matrix holds only 0 and 1, which one byte stores exactly (about 8 values an event:
# 77M at 10M events, 0.3 GB as float32, 0.6 GB as float64). scipy computes products with float64
# operands in float64 and the compiled passes read the bytes as they are, so likelihoods, counts and
# explanations are the same to the last bit as with float64 ones.
FEATURE_MATRIX_DTYPE = np.int8


class GroupKind(StrEnum):
    """How a feature group is modelled: one value out of several, or an independent yes/no flag."""

    CATEGORICAL = "categorical"
    BINARY = "binary"


@dataclass(frozen=True)
class FeatureGroup:
    """One feature group and the matrix columns it owns (``start`` to ``start + len(values)``).

    A binary group (one tag) owns a single column that is 1 when the flag is set; an event with a
    categorical group missing (no channel recorded, say) has no 1 in that group's columns at all.
    ``item_level`` groups describe the item (the same for every event on it), the others the event.
    """

    name: str
    kind: GroupKind
    values: tuple[str, ...]
    start: int
    item_level: bool

    @property
    def stop(self) -> int:
        return self.start + len(self.values)

    def column_name(self, value: str) -> str:
        return self.name if self.kind is GroupKind.BINARY else f"{self.name}={value}"


@dataclass(frozen=True)
class EventFeatureSpace:
    """The ordered feature groups and columns fixed at fit time, reused unchanged when inferring."""

    groups: tuple[FeatureGroup, ...]

    def __post_init__(self) -> None:
        position = 0
        for group in self.groups:
            if group.start != position:
                raise ValueError(
                    f"feature group {group.name!r} starts at column {group.start}, expected {position}"
                )
            if not group.values:
                raise ValueError(f"feature group {group.name!r} has no values")
            if group.kind is GroupKind.BINARY and not group.item_level:
                raise ValueError(f"binary feature group {group.name!r} must describe items")
            position = group.stop

    @classmethod
    def build(
        cls,
        categories: Iterable[str],
        tags: Iterable[str],
        channels: Iterable[str],
        devices: Iterable[str],
        *,
        quantities: bool = False,
    ) -> EventFeatureSpace:
        """The space for a shop's vocabulary; a group with no observed value (no channel data) is left out.

        ``quantities`` says whether the events record quantities; only then is there a bulk group.
        """
        specs: list[tuple[str, GroupKind, tuple[str, ...], bool]] = [
            (DISCOUNTED, GroupKind.CATEGORICAL, (YES, NO), False),
            (BRAND_REPEAT, GroupKind.CATEGORICAL, (YES, NO), False),
            (BULK, GroupKind.CATEGORICAL, (YES, NO) if quantities else (), False),
            (CHANNEL, GroupKind.CATEGORICAL, tuple(sorted(set(channels))), False),
            (DEVICE, GroupKind.CATEGORICAL, tuple(sorted(set(devices))), False),
            (PRICE_LEVEL, GroupKind.CATEGORICAL, PRICE_LEVELS, True),
            (CATEGORY, GroupKind.CATEGORICAL, tuple(sorted(set(categories))), True),
            *((f"{TAG_PREFIX}{tag}", GroupKind.BINARY, (YES,), True) for tag in sorted(set(tags))),
        ]
        groups: list[FeatureGroup] = []
        start = 0
        for name, kind, values, item_level in specs:
            if values:
                groups.append(FeatureGroup(name, kind, values, start, item_level))
                start += len(values)
        return cls(tuple(groups))

    @property
    def n_columns(self) -> int:
        return self.groups[-1].stop if self.groups else 0

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(group.column_name(value) for group in self.groups for value in group.values)

    @property
    def column_group(self) -> NDArray[np.int64]:
        """For each column, the position of its group in ``groups``."""
        return np.repeat(np.arange(len(self.groups), dtype=np.int64), [len(g.values) for g in self.groups])

    @property
    def binary_columns(self) -> NDArray[np.bool_]:
        return self._per_column([g.kind is GroupKind.BINARY for g in self.groups])

    @property
    def item_columns(self) -> NDArray[np.bool_]:
        """Columns describing the item (category, price level, tags) rather than the event."""
        return self._per_column([g.item_level for g in self.groups])

    @property
    def group_sum_matrix(self) -> sp.csr_matrix:
        """(groups x columns) 0/1 matrix: multiplying by it sums columns per group."""
        group_of = self.column_group
        return sp.csr_matrix(
            (np.ones(group_of.size), (group_of, np.arange(group_of.size))),
            shape=(len(self.groups), group_of.size),
        )

    def _per_column(self, flags: Sequence[bool]) -> NDArray[np.bool_]:
        return np.repeat(np.array(flags, dtype=bool), [len(g.values) for g in self.groups])

    def group(self, name: str) -> FeatureGroup | None:
        return next((g for g in self.groups if g.name == name), None)

    def column(self, group_name: str, value: str) -> int | None:
        """The column of one group value, or None when the data never showed that value."""
        group = self.group(group_name)
        if group is None or value not in group.values:
            return None
        return group.start + group.values.index(value)

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {"name": g.name, "kind": g.kind.value, "values": list(g.values), "item_level": g.item_level}
            for g in self.groups
        ]

    @classmethod
    def from_json(cls, document: Sequence[Mapping[str, Any]]) -> EventFeatureSpace:
        groups: list[FeatureGroup] = []
        start = 0
        for i, raw in enumerate(document):
            try:
                values = tuple(str(v) for v in raw["values"])
                item_level = raw["item_level"]
                if not isinstance(item_level, bool):
                    raise ValueError(f"item_level must be true or false, got {item_level!r}")
                group = FeatureGroup(str(raw["name"]), GroupKind(raw["kind"]), values, start, item_level)
            except (KeyError, ValueError, TypeError) as error:
                raise ValueError(f"feature group #{i} is malformed: {error}") from None
            groups.append(group)
            start = group.stop
        return cls(tuple(groups))


def describe_feature(column_name: str) -> str:
    """A phrase people understand for a feature column, as shown in explanations."""
    if column_name.startswith(TAG_PREFIX):
        return f"share of events on items tagged {column_name.removeprefix(TAG_PREFIX)}"
    group, _, value = column_name.partition("=")
    fixed = {
        f"{DISCOUNTED}={YES}": "discount share",
        f"{DISCOUNTED}={NO}": "full-price share",
        f"{BRAND_REPEAT}={YES}": "brand concentration (share of events on their habitual brands)",
        f"{BRAND_REPEAT}={NO}": "share of events on brands they rarely buy",
        f"{BULK}={YES}": f"bulk share (purchase lines of {BULK_QUANTITY:g} units or more)",
        f"{BULK}={NO}": f"share of purchase lines under {BULK_QUANTITY:g} units",
        f"{PRICE_LEVEL}=low": "share of low-priced items (bottom third of their category)",
        f"{PRICE_LEVEL}=mid": "share of mid-priced items (middle third of their category)",
        f"{PRICE_LEVEL}=high": "share of high-priced items (top third of their category)",
    }
    if column_name in fixed:
        return fixed[column_name]
    if group == CATEGORY:
        return f"share of events in category {value}"
    if group == CHANNEL:
        return f"share of visits from channel {value}"
    if group == DEVICE:
        return f"share of events on device {value}"
    return column_name


@dataclass(frozen=True)
class EventFeatures:
    """Event features of one batch of events, rows sorted by customer then time.

    Rows of customer ``c`` are ``customer_indptr[c]:customer_indptr[c + 1]``, so per-customer sums are
    one sparse product with ``customer_indicator`` and one customer's events are a row slice.
    ``item_matrix`` holds the item-level columns of every item of the items table (events repeat
    their item's row). ``weight`` is 1/(rows of the same customer, item and UTC day): a view followed
    by a cart and a purchase is one decision, and counting it three times would triple its evidence.
    ``price_percentile`` (NaN when unknown) and ``brand_code`` (-1 when unknown) keep the continuous
    and high-cardinality facts the traits need but the persona model does not.
    """

    space: EventFeatureSpace
    matrix: sp.csr_matrix
    customer_ids: IdMap
    customer_index: NDArray[np.int64]
    customer_indptr: NDArray[np.int64]
    item_ids: IdMap
    item_index: NDArray[np.int64]
    item_matrix: sp.csr_matrix
    weight: NDArray[np.float64]
    context_index: NDArray[np.int8]  # position of the event's context in CONTEXTS
    price_percentile: NDArray[np.float64]
    brand_code: NDArray[np.int64]
    day: NDArray[np.int64]  # UTC days since 1970-01-01
    timestamp_us: NDArray[np.int64]  # UTC microseconds since 1970-01-01

    @property
    def n_events(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_customers(self) -> int:
        return len(self.customer_ids)

    @property
    def customer_indicator(self) -> sp.csr_matrix:
        """(customers x events) 0/1 matrix: left-multiplying sums event rows per customer."""
        n = self.n_events
        return sp.csr_matrix(
            (np.ones(n, dtype=np.float64), np.arange(n, dtype=np.int64), self.customer_indptr),
            shape=(self.n_customers, n),
        )

    @property
    def events_per_customer(self) -> NDArray[np.int64]:
        return np.diff(self.customer_indptr)

    @property
    def item_indicator(self) -> sp.csr_matrix:
        """(items x events) 0/1 matrix: left-multiplying sums event rows per item."""
        n = self.n_events
        return sp.csr_matrix(
            (np.ones(n, dtype=np.float64), (self.item_index, np.arange(n, dtype=np.int64))),
            shape=(len(self.item_ids), n),
        )

    def of_customers(self, rows: NDArray[np.int64]) -> EventFeatures:
        """The features of customers ``rows`` (increasing positions) alone, with every event of each.

        The persona EM of a large shop fits on such a sample of whole customers: its parameters are
        a few hundred numbers per persona, which a few hundred thousand customers pin down as well as
        millions do, and every customer is then folded in under them.
        """
        rows = np.asarray(rows, dtype=np.int64)
        starts = self.customer_indptr[rows]
        counts = self.customer_indptr[rows + 1] - starts
        indptr = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        events = np.repeat(starts - indptr[:-1], counts) + np.arange(indptr[-1], dtype=np.int64)
        return replace(
            self,
            matrix=self.matrix[events],
            customer_ids=IdMap(self.customer_ids.ids[rows], kind=self.customer_ids.kind),
            customer_index=np.repeat(np.arange(rows.size, dtype=np.int64), counts),
            customer_indptr=indptr,
            item_index=self.item_index[events],
            weight=self.weight[events],
            context_index=self.context_index[events],
            price_percentile=self.price_percentile[events],
            brand_code=self.brand_code[events],
            day=self.day[events],
            timestamp_us=self.timestamp_us[events],
        )

    def group_counts(self, counts: NDArray[Any]) -> NDArray[np.float64]:
        """Per row of a (rows x columns) count matrix, each column's group total, laid out per column.

        For a categorical group that total is the number of events where the group is known, the
        denominator of its shares. A binary column's total is meaningless (absence is not recorded);
        callers put the number of events there instead.
        """
        dense = np.asarray(counts, dtype=np.float64)
        totals = np.asarray(self.space.group_sum_matrix @ dense.T).T
        return np.asarray(totals[:, self.space.column_group], dtype=np.float64)


TRAIT_DESCRIPTIONS: dict[str, str] = {
    "n_events": "number of events (frequency)",
    "active_days": "distinct days with events",
    "recency_days": "days since the last event",
    "weekend_share": "share of events on weekends and holidays",
    "discount_share": "share of events on discounted items",
    "price_percentile": "mean price percentile of items within their category",
    "brand_herfindahl": "brand concentration (Herfindahl index of brand shares)",
    "top_brand_share": "share of events on their most-bought brand",
    "category_count": "number of distinct categories",
    "category_entropy": "category breadth (entropy of category shares, nats)",
}


def describe_trait(trait: str) -> str:
    """A phrase for a column of ``customer_traits``; share columns reuse the feature wording."""
    if trait in TRAIT_DESCRIPTIONS:
        return TRAIT_DESCRIPTIONS[trait]
    if trait.startswith(TAG_PREFIX):
        return describe_feature(trait)
    group, _, value = trait.partition(":")
    return describe_feature(f"{group}={value}") if value else trait


def customer_traits(features: EventFeatures, reference_time: dt.datetime | None = None) -> pl.DataFrame:
    """Human-readable traits of every customer in ``features.customer_ids`` (rows in that order).

    Shares are over the events where the feature is known; customers without events (or without any
    known value for a feature) get nulls there, zero counts, and a null recency. ``reference_time``
    (default: the latest event) is when recency is measured.
    """
    n = features.n_customers
    indicator = features.customer_indicator
    n_events = features.events_per_customer.astype(np.float64)
    counts = np.asarray((indicator @ features.matrix).toarray(), dtype=np.float64)
    known = features.group_counts(counts)
    binary = features.space.binary_columns
    known[:, binary] = n_events[:, None]
    shares = _safe_divide(counts, known)

    columns: dict[str, NDArray[np.float64] | NDArray[np.int64]] = {}
    columns["n_events"] = features.events_per_customer
    customer_of = features.customer_index
    unique_days = (
        np.unique(customer_of * (1 << 32) + features.day) if features.n_events else np.zeros(0, np.int64)
    )
    columns["active_days"] = np.bincount(unique_days >> 32, minlength=n).astype(np.int64)
    last = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last, customer_of, features.timestamp_us)
    if reference_time is None:
        reference_us = int(features.timestamp_us.max()) if features.n_events else 0
    else:
        stamp = reference_time if reference_time.tzinfo else reference_time.replace(tzinfo=dt.UTC)
        reference_us = int(stamp.timestamp() * 1_000_000)
    columns["recency_days"] = np.where(n_events > 0, (reference_us - last) / _MICROSECONDS_PER_DAY, np.nan)
    weekend = np.bincount(customer_of, weights=features.context_index.astype(np.float64), minlength=n)
    columns["weekend_share"] = _safe_divide(weekend, n_events)

    space = features.space
    discounted = space.column(DISCOUNTED, YES)
    columns["discount_share"] = shares[:, discounted] if discounted is not None else np.full(n, np.nan)
    price = features.price_percentile
    has_price = ~np.isnan(price)
    price_sum = np.bincount(customer_of[has_price], weights=price[has_price], minlength=n)
    columns["price_percentile"] = _safe_divide(price_sum, np.bincount(customer_of[has_price], minlength=n))
    columns["brand_herfindahl"], columns["top_brand_share"] = _brand_concentration(features)
    category = space.group(CATEGORY)
    if category is not None:
        category_shares = shares[:, category.start : category.stop]
        columns["category_count"] = (
            (counts[:, category.start : category.stop] > 0).sum(axis=1).astype(np.int64)
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            plogp = np.where(category_shares > 0, category_shares * np.log(category_shares), 0.0)
        columns["category_entropy"] = np.where(n_events > 0, -np.nansum(plogp, axis=1), np.nan)

    for group in space.groups:
        if group.name in (DISCOUNTED, BRAND_REPEAT):
            continue  # already shown as discount_share and top_brand_share
        for offset, value in enumerate(group.values):
            name = group.name if group.kind is GroupKind.BINARY else f"{group.name}:{value}"
            columns[name] = shares[:, group.start + offset]

    data: dict[str, pl.Series] = {
        "customer_id": pl.Series("customer_id", features.customer_ids.ids.tolist(), pl.Utf8)
    }
    for name, values in columns.items():
        if values.dtype.kind == "f":
            data[name] = pl.Series(name, values, pl.Float64, nan_to_null=True)
        else:
            data[name] = pl.Series(name, values, pl.Int64)
    return pl.DataFrame(data)


def _brand_concentration(features: EventFeatures) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Herfindahl index of each customer's brand shares, and the share of their top brand."""
    n = features.n_customers
    known = features.brand_code >= 0
    if not known.any():
        return np.full(n, np.nan), np.full(n, np.nan)
    codes = features.brand_code[known]
    brand_matrix = sp.csr_matrix(
        (np.ones(codes.size), (features.customer_index[known], codes)), shape=(n, int(codes.max()) + 1)
    )
    brand_matrix.sum_duplicates()
    totals = np.asarray(brand_matrix.sum(axis=1)).ravel()
    squares = np.asarray(brand_matrix.multiply(brand_matrix).sum(axis=1)).ravel()
    top = np.asarray(brand_matrix.max(axis=1).toarray()).ravel()
    return _safe_divide(squares, totals**2), _safe_divide(top, totals)


def _safe_divide(numerator: NDArray[Any], denominator: NDArray[Any]) -> NDArray[np.float64]:
    """Elementwise ratio with NaN where the denominator is zero (no events: the trait is unknown)."""
    num = np.asarray(numerator, dtype=np.float64)
    den = np.broadcast_to(np.asarray(denominator, dtype=np.float64), num.shape)
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)
