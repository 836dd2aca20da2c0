"""The loaded, validated data of one shop: the tables of the data contract as typed polars frames.

Loaders (``engine.data.loading``) produce a ShopData; everything downstream (persona inference,
interaction matrices, offer and layout estimates) consumes it, so nothing past this point needs to
re-check types, ids or references.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl


@dataclass(frozen=True)
class LoadReport:
    """What a load accepted and what an explicit option told it to skip, per table and reason."""

    rows_read: dict[str, int] = field(default_factory=dict)
    rows_skipped: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def total_skipped(self) -> int:
        return sum(sum(reasons.values()) for reasons in self.rows_skipped.values())


@dataclass(frozen=True)
class ShopData:
    """Typed tables; column types follow ``engine.data.contract`` (timestamps are UTC datetimes).

    ``events`` and ``items`` are always present; the other tables are None when the shop has none.
    Every events.item_id exists in items; ids are unique in their own table.
    """

    events: pl.DataFrame
    items: pl.DataFrame
    customers: pl.DataFrame | None = None
    offers: pl.DataFrame | None = None
    layouts: pl.DataFrame | None = None
    decisions: pl.DataFrame | None = None
    report: LoadReport = field(default_factory=LoadReport)
