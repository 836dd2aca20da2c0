"""``persona-engine discover``: customer segments that no persona of the catalog explains.

A catalog is a hypothesis about the shop's customers. Discovery fits it to the data and then looks
for groups of customers whose behaviour the fitted personas predict badly and who resemble each
other, which is where a marketing team should consider a new persona.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl

from engine.data.loading import load_shop
from engine.personas.catalog import catalog_to_toml, load_catalog
from engine.personas.catalog_fit import CatalogFit, catalog_fit
from engine.personas.catalog_proposal import CatalogProposal, ProposalConfig, propose_catalog
from engine.personas.discovery import DiscoveryConfig, discover_segments
from engine.personas.inference.model import PersonaInferenceModel
from training.config import TrainConfig
from training.config_references import check_split_file
from training.prepared_data import split_for


def run_discovery(data_path: Path, catalog_name: str, *, min_share: float = 0.005) -> dict[str, Any]:
    shop = load_shop(data_path)
    catalog = load_catalog(catalog_name)
    model = PersonaInferenceModel()
    mixes = model.fit(shop, catalog)
    result = discover_segments(model, mixes, config=DiscoveryConfig(min_segment_share=min_share))
    return {
        "customers_scored": result.n_scored,
        "poorly_explained": result.n_poorly_explained,
        "segments": [
            {
                "size": segment.size,
                "share": segment.share,
                "mean_misfit": segment.mean_misfit,
                "unexplained_features": [asdict(f) for f in segment.unexplained_features],
                "traits": [asdict(t) for t in segment.distinguishing_traits],
                "examples": list(segment.example_customer_ids),
            }
            for segment in result.segments
        ],
    }


def run_catalog_proposal(
    data_path: Path,
    catalog_name: str,
    out: Path,
    *,
    personas: int | Sequence[int] | None = None,
    held_out_days: int = 28,
    held_out_share: float | None = None,
    seed: int = 0,
    training_split: TrainConfig | None = None,
) -> dict[str, Any]:
    """Propose a catalog from the shop's events, write it to ``out`` and compare its fit with the given one.

    Both catalogs are fitted on the events before the last ``held_out_days`` and scored on those days
    (``engine.personas.catalog_fit``); the proposal is built from the given catalog's fit on the same
    earlier events, so the held-out days are news to both. ``personas`` may name several sizes: each
    is proposed and measured, and the one whose personas best predict the held-out days (held-out
    NDCG@10; the smaller on a tie) is written. How many personas a shop supports is an empirical
    question: more personas describe customers more finely, and each is estimated from fewer of them.
    The file written is the proposal measured here, read back through ``load_catalog`` before this
    returns (it loads and trains as it is).

    ``held_out_share`` replaces the held-out days with each customer's latest events, that share of
    them (rounded down, so customers with few events keep all theirs earlier): on data whose customers
    are active in bursts (MovieLens users rate their films within days), the last weeks hold a few
    dozen customers, too few to tell catalogs apart, while every customer has latest events.

    ``training_split``: a training config whose evaluation the catalog is meant for; only the events
    its split trains on are read (the held-out days are then the last days of those), so the catalog
    an evaluation uses has never seen its test events.
    """
    if held_out_days < 1:
        raise ValueError(f"held_out_days must be >= 1, got {held_out_days}")
    if held_out_share is not None and not 0 < held_out_share < 1:
        raise ValueError(f"held_out_share must be between 0 and 1, got {held_out_share}")
    if training_split is not None:
        check_split_file(training_split, data_path)
    shop = load_shop(data_path)
    if training_split is not None:
        shop = dataclasses.replace(shop, events=split_for(training_split, shop, data_path).train_events)
    given = load_catalog(catalog_name)
    sizes = _proposal_sizes(personas, len(given))
    last = shop.events["timestamp"].max()
    if not isinstance(last, dt.datetime):
        raise ValueError(f"{data_path}: the shop has no events")
    earlier, later = _held_out_split(shop.events, last, held_out_days, held_out_share, data_path)
    earlier_shop = dataclasses.replace(shop, events=earlier)
    given_model = PersonaInferenceModel()
    given_mixes = given_model.fit(earlier_shop, given)
    given_fit = catalog_fit(given_model, given_mixes, earlier, later, shop.items)
    candidates: list[tuple[CatalogProposal, CatalogFit]] = []
    for size in sizes:
        proposal = propose_catalog(given_model, given_mixes, ProposalConfig(personas=size, seed=seed))
        proposed_model = PersonaInferenceModel()
        proposed_mixes = proposed_model.fit(earlier_shop, proposal.catalog)
        candidates.append((proposal, catalog_fit(proposed_model, proposed_mixes, earlier, later, shop.items)))
    chosen, chosen_fit = max(
        candidates, key=lambda c: (_ranking_score(c[1]), -len(c[0].catalog), -candidates.index(c))
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Persona catalog proposed by persona-engine discover from {data_path}\n"
        f"# ({chosen.customers_clustered:,} customers clustered by their events' shares per feature;\n"
        "# rename and describe the personas before showing them to anyone).\n\n"
    )
    out.write_text(header + catalog_to_toml(chosen.catalog), encoding="utf-8")
    written = load_catalog(out)
    return {
        "catalog_file": str(out),
        "given_catalog": catalog_name,
        "events_read": {
            "scope": "all" if training_split is None else f"training split of {training_split.source}",
            "events": shop.events.height,
            "last": last.isoformat(),
        },
        "held_out_days": held_out_days if held_out_share is None else None,
        "held_out_share": held_out_share,
        "customers_clustered": chosen.customers_clustered,
        "fit": {"given": given_fit.to_dict(), "proposed": chosen_fit.to_dict()},
        "held_out_log_likelihood_difference": (
            chosen_fit.held_out_log_likelihood - given_fit.held_out_log_likelihood
        ),
        "candidates": [
            {"requested_personas": size, "chosen": proposal is chosen, **fit.to_dict()}
            for size, (proposal, fit) in zip(sizes, candidates, strict=True)
        ],
        "personas": [
            {
                "id": p.persona.id,
                "name": p.persona.name,
                "customers": p.customers,
                "share": p.share,
                "signals": {k: v for k, v in asdict(p.persona.signals).items() if v},
                "distinctive": [
                    {"feature": d.feature, "share": d.persona_share, "population_share": d.population_share}
                    for d in p.distinctive
                ],
            }
            for p in chosen.personas
        ],
        "loads_as_catalog": len(written) == len(chosen.catalog),
    }


def _held_out_split(
    events: pl.DataFrame, last: dt.datetime, days: int, share: float | None, data_path: Path
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(earlier, held-out) events: the last ``days`` days, or each customer's latest ``share``."""
    if share is not None:
        earlier, later = latest_events_held_out(events, share)
        if later.height == 0:
            raise ValueError(
                f"{data_path}: no customer has enough events to hold {share:.0%} of them out; "
                "choose a larger --held-out-share"
            )
        return earlier, later
    cutoff = last - dt.timedelta(days=days)
    earlier = events.filter(pl.col("timestamp") <= cutoff)
    later = events.filter(pl.col("timestamp") > cutoff)
    if earlier.height == 0 or later.height == 0:
        raise ValueError(
            f"{data_path}: the last {days} days hold all or none of the events; choose another "
            "--held-out-days"
        )
    return earlier, later


def latest_events_held_out(events: pl.DataFrame, share: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(earlier, later): each customer's latest ``floor(share * n)`` of their n events are later."""
    ranked = events.with_columns(
        pl.col("timestamp").rank("ordinal").over("customer_id").alias("_position"),
        pl.len().over("customer_id").alias("_events"),
    )
    later = pl.col("_position") > pl.col("_events") - (pl.col("_events") * share).floor()
    return (
        ranked.filter(~later).drop("_position", "_events"),
        ranked.filter(later).drop("_position", "_events"),
    )


def _proposal_sizes(personas: int | Sequence[int] | None, given: int) -> tuple[int, ...]:
    """The sizes to propose, in the order given, without repeats; the given catalog's when None."""
    if personas is None:
        return (given,)
    sizes = (personas,) if isinstance(personas, int) else tuple(personas)
    if not sizes or any(size < 2 for size in sizes):
        raise ValueError(f"a proposed catalog needs at least 2 personas, got {list(sizes)}")
    return tuple(dict.fromkeys(sizes))


def _ranking_score(fit: CatalogFit) -> float:
    return fit.held_out_ndcg_at_10 if math.isfinite(fit.held_out_ndcg_at_10) else -1.0
