"""Time-based train/test split with a cold-start hold-out.

Recommendation quality must be judged on the future, never on a random shuffle of the past: the last
``test_days`` of events are the test period. A seeded share of customers is also held out of model
training entirely: the models never see their ids, but persona inference still reads their history,
the way a brand-new customer's first session or signup survey gives a mix before any model retrain.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class TimeSplit:
    test_start: dt.datetime
    train_events: pl.DataFrame
    test_events: pl.DataFrame
    warm_customers: tuple[str, ...]  # have training events and are not held out: the models' users
    cold_customers: tuple[str, ...]  # held out of model training, have training events (for their mix)


def _holdout(customer_id: str, seed: int, share: float) -> bool:
    digest = hashlib.blake2b(f"{seed}:{customer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


def split_events(events: pl.DataFrame, *, test_days: int, cold_start_share: float, seed: int) -> TimeSplit:
    """Split on the last ``test_days`` days; hold out ``cold_start_share`` of customers by a stable hash.

    The hash makes the hold-out independent of row order and stable across re-runs and data growth.
    """
    if events.height == 0:
        raise ValueError("cannot split an empty events table")
    last = events["timestamp"].max()
    assert isinstance(last, dt.datetime)
    test_start = last - dt.timedelta(days=test_days)
    train = events.filter(pl.col("timestamp") < test_start)
    test = events.filter(pl.col("timestamp") >= test_start)
    if train.height == 0:
        raise ValueError(
            f"no events before the test period starting {test_start.isoformat()}; lower test_days"
        )
    train_customers = train["customer_id"].unique(maintain_order=True).to_list()
    cold = tuple(c for c in train_customers if _holdout(c, seed, cold_start_share))
    cold_set = set(cold)
    warm = tuple(c for c in train_customers if c not in cold_set)
    return TimeSplit(
        test_start=test_start, train_events=train, test_events=test, warm_customers=warm, cold_customers=cold
    )
