"""``persona-engine segments``: for each persona, the customers it describes and the channel to reach each.

A marketing team sends each persona its own campaign (copy written for its goals and decision
factors) through its own channel. A customer belongs to every persona whose weight in their overall
mix reaches the threshold, so a 50/50 customer is in two segments; below the threshold a persona is
too small a part of them to write to.

The channel for a (persona, customer) pair is chosen, in order, as:
1. ``customer_events``: of the persona's preferred channels (catalog), the one the customer came
   through most often: the persona's channel, confirmed by the customer's own behaviour;
2. ``customer_events_other``: the customer's most used channel, when they used none of the persona's;
3. ``persona_catalog``: the persona's first preferred channel, when the data records no channel for
   the customer (the shop's events have no channel column, or the customer has no events);
4. empty, with source ``none``, when neither is known.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from engine.data.loading import load_shop
from engine.personalizer import Personalizer
from training.config import parse_config

CHANNEL_SOURCES = ("customer_events", "customer_events_other", "persona_catalog", "none")


@dataclass(frozen=True)
class SegmentCount:
    persona_id: str
    name: str
    customers: int
    share: float  # of all customers of the artifact
    channels: dict[str, int]  # customers per chosen channel


@dataclass(frozen=True)
class SegmentsReport:
    out: str
    threshold: float
    customers: int
    rows: int
    channel_data: str  # where per-customer channels came from, or why there were none
    segments: tuple[SegmentCount, ...]
    seconds: float


def customer_channel_counts(data_dir: Path) -> pl.DataFrame | None:
    """(customer_id, channel, events) from the shop's events; None when no event records a channel."""
    shop = load_shop(data_dir, skip_invalid=True)
    if "channel" not in shop.events.columns:
        return None
    counts = (
        shop.events.lazy()
        .filter(pl.col("channel").is_not_null())
        .group_by("customer_id", "channel")
        .agg(pl.len().alias("events"))
        .collect()
    )
    return counts if counts.height else None


def persona_segments(
    personalizer: Personalizer,
    out: Path,
    *,
    threshold: float = 0.4,
    data_dir: Path | None = None,
) -> SegmentsReport:
    """Write one row per (persona, customer) whose overall mix weight reaches ``threshold``.

    ``data_dir`` (default: the folder the artifact was trained on, when it still exists) supplies the
    customers' channels; without it every row takes the persona's catalog channel.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise ValueError(f"{out}: write segments to a .csv or .parquet file")
    started = time.perf_counter()
    catalog = personalizer.catalog
    mixes = personalizer.mixes.overall
    customer_ids = personalizer.customers.ids

    channel_data = "none: no data folder"
    folder = data_dir if data_dir is not None else _training_data_dir(personalizer)
    counts = None
    if folder is not None and folder.is_dir():
        counts = customer_channel_counts(folder)
        channel_data = f"events in {folder}" if counts is not None else f"none: no channel in {folder}"
    elif folder is not None:
        channel_data = f"none: {folder} not found"

    parts: list[pl.DataFrame] = []
    for k, persona in enumerate(catalog.personas):
        members = np.flatnonzero(mixes[:, k] >= threshold)
        parts.append(
            pl.DataFrame(
                {
                    "persona_id": [persona.id] * members.size,
                    "persona_name": [persona.name] * members.size,
                    "customer_id": customer_ids[members].tolist(),
                    "weight": mixes[members, k].astype(np.float64),
                },
                schema={
                    "persona_id": pl.String,
                    "persona_name": pl.String,
                    "customer_id": pl.String,
                    "weight": pl.Float64,
                },
            )
        )
    members_frame = pl.concat(parts)
    preferred = pl.DataFrame(
        {
            "persona_id": [p.id for p in catalog.personas],
            "preferred": [list(p.preferred_channels) for p in catalog.personas],
        },
        schema={"persona_id": pl.String, "preferred": pl.List(pl.String)},
    )
    frame = _choose_channels(members_frame.join(preferred, on="persona_id", how="left"), counts)
    frame = frame.sort(["persona_id", "weight", "customer_id"], descending=[False, True, False])
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        frame.write_csv(out)
    else:
        frame.write_parquet(out)

    n = len(customer_ids)
    segments = []
    for persona in catalog.personas:
        rows = frame.filter(pl.col("persona_id") == persona.id)
        by_channel = rows.group_by("channel").len().sort(["len", "channel"], descending=[True, False])
        segments.append(
            SegmentCount(
                persona_id=persona.id,
                name=persona.name,
                customers=rows.height,
                share=rows.height / n if n else 0.0,
                channels={str(c or ""): int(v) for c, v in by_channel.iter_rows()},
            )
        )
    return SegmentsReport(
        out=str(out),
        threshold=threshold,
        customers=n,
        rows=frame.height,
        channel_data=channel_data,
        segments=tuple(segments),
        seconds=time.perf_counter() - started,
    )


def _training_data_dir(personalizer: Personalizer) -> Path | None:
    artifact = personalizer.artifact
    config = artifact.manifest.get("config")
    if not isinstance(config, dict):
        return None
    return Path(parse_config(config, source=f"{artifact.path}/manifest.json").data.path)


def _choose_channels(members: pl.DataFrame, counts: pl.DataFrame | None) -> pl.DataFrame:
    """Add ``channel`` and ``channel_source`` to (persona, customer) rows; see the module docstring."""
    catalog_channel = pl.col("preferred").list.first()
    if counts is None:
        return members.with_columns(
            catalog_channel.alias("channel"),
            pl.when(catalog_channel.is_null())
            .then(pl.lit("none"))
            .otherwise(pl.lit("persona_catalog"))
            .alias("channel_source"),
        ).drop("preferred")
    # ties between channels go to the alphabetically first, so reruns give the same file
    ordered = counts.sort(["customer_id", "events", "channel"], descending=[False, True, False])
    own = ordered.group_by("customer_id", maintain_order=True).agg(pl.col("channel").first().alias("_own"))
    pairs = (
        members.select("persona_id", "customer_id", "preferred")
        .explode("preferred")
        .join(ordered, left_on=["customer_id", "preferred"], right_on=["customer_id", "channel"], how="inner")
        .sort(["persona_id", "customer_id", "events", "preferred"], descending=[False, False, True, False])
        .group_by("persona_id", "customer_id", maintain_order=True)
        .agg(pl.col("preferred").first().alias("_persona_own"))
    )
    frame = members.join(pairs, on=["persona_id", "customer_id"], how="left").join(
        own, on="customer_id", how="left"
    )
    return frame.with_columns(
        pl.coalesce("_persona_own", "_own", catalog_channel).alias("channel"),
        pl.when(pl.col("_persona_own").is_not_null())
        .then(pl.lit("customer_events"))
        .when(pl.col("_own").is_not_null())
        .then(pl.lit("customer_events_other"))
        .when(catalog_channel.is_not_null())
        .then(pl.lit("persona_catalog"))
        .otherwise(pl.lit("none"))
        .alias("channel_source"),
    ).drop("preferred", "_persona_own", "_own")
