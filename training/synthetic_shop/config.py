"""The knobs of one synthetic shop: size, seed, simulated period, planted structure and file format.

Validated on construction so that a bad value is reported by field name before anything is written.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from training.synthetic_shop.items import CATEGORY_SPECS

FILE_FORMATS: tuple[str, ...] = ("parquet", "csv")


@dataclass(frozen=True)
class ShopConfig:
    """Size, randomness and planted-structure knobs of one synthetic shop."""

    customers: int = 5_000
    items: int = 2_000
    events: int = 200_000  # approximate total event rows
    seed: int = 7
    start: dt.date = dt.date(2026, 1, 1)
    days: int = 182
    drift_share: float = 0.10  # share of customers whose mix changes at a recorded date
    hidden_segment_share: float = 0.03  # customers driven by a persona NOT in the catalog (for discovery)
    file_format: str = "parquet"  # or "csv"
    chunk_customers: int = 20_000  # customers generated per chunk (bounded memory)

    def __post_init__(self) -> None:
        minimums = {
            "customers": 1,
            "items": 5 * len(CATEGORY_SPECS),
            "events": 1,
            "days": 14,
            "chunk_customers": 1,
        }
        for name, minimum in minimums.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"ShopConfig.{name} must be an integer >= {minimum}, got {value!r}")
        for name in ("drift_share", "hidden_segment_share"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ValueError(f"ShopConfig.{name} must be a share in [0, 1], got {value!r}")
        if self.drift_share + self.hidden_segment_share > 1.0:
            raise ValueError(
                "ShopConfig.drift_share + hidden_segment_share must not exceed 1 (hidden-segment customers "
                f"do not drift), got {self.drift_share} + {self.hidden_segment_share}"
            )
        if self.file_format not in FILE_FORMATS:
            raise ValueError(
                f"ShopConfig.file_format must be one of {', '.join(FILE_FORMATS)}, got {self.file_format!r}"
            )
        if not isinstance(self.start, dt.date) or isinstance(self.start, dt.datetime):
            raise ValueError(f"ShopConfig.start must be a datetime.date, got {self.start!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"ShopConfig.seed must be a non-negative integer, got {self.seed!r}")

    def as_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["start"] = self.start.isoformat()
        return values
