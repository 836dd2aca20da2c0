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
    # How drift looks (each drifting customer draws uniformly from the range; the defaults are the
    # original abrupt, complete drift, so shops generated before these knobs are unchanged):
    # strength: share of the way the mix moves from the old mix to one led by a new persona (1: all of it);
    # ramp days: the move happens gradually over this many days (0: abrupt, from the drift day on);
    # post_drift_activity: sessions per day after the drift relative to before (same total activity).
    drift_strength: tuple[float, float] = (1.0, 1.0)
    drift_ramp_days: tuple[int, int] = (0, 0)
    post_drift_activity: float = 1.0
    # How much of a customer's choice is their own: each persona's rates of shopping from the customer's
    # favourite taste niches and brands are scaled by it, the rest comes from the persona's own taste.
    # 1 (default) plants the shop as before; lower values make personas carry more of what a known
    # customer buys next (see README "Model quality: the figures").
    personal_taste: float = 1.0
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
        _check_range("drift_strength", self.drift_strength, float, 0.0, 1.0, zero_allowed=False)
        _check_range("drift_ramp_days", self.drift_ramp_days, int, 0, self.days, zero_allowed=True)
        activity = self.post_drift_activity
        if (
            isinstance(activity, bool)
            or not isinstance(activity, int | float)
            or not 0.05 <= activity <= 20.0
        ):
            raise ValueError(f"ShopConfig.post_drift_activity must be a rate in [0.05, 20], got {activity!r}")
        taste = self.personal_taste
        if isinstance(taste, bool) or not isinstance(taste, int | float) or not 0.0 <= taste <= 1.0:
            raise ValueError(f"ShopConfig.personal_taste must be a share in [0, 1], got {taste!r}")
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
        values["drift_strength"] = list(self.drift_strength)
        values["drift_ramp_days"] = list(self.drift_ramp_days)
        return values


def _check_range(
    name: str, value: object, kind: type, low: float, high: float, *, zero_allowed: bool
) -> None:
    """A (low, high) pair of ``kind`` within [low, high] (or (0, high] when zero is not allowed), ordered."""
    numbers = int | float if kind is float else int
    lower = "[" if zero_allowed else "("
    ok = (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, numbers) and not isinstance(v, bool) for v in value)
    )
    if ok:
        first, last = float(value[0]), float(value[1])  # type: ignore[index]
        first_ok = first >= low if zero_allowed else first > low
        ok = bool(first_ok and first <= last <= high)
    if not ok:
        raise ValueError(
            f"ShopConfig.{name} must be an ordered pair (min, max) of {kind.__name__}s in "
            f"{lower}{low:g}, {high:g}], got {value!r}"
        )
