"""``persona-engine discover``: customer segments that no persona of the catalog explains.

A catalog is a hypothesis about the shop's customers. Discovery fits it to the data and then looks
for groups of customers whose behaviour the fitted personas predict badly and who resemble each
other, which is where a marketing team should consider a new persona.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl

from engine.data.loading import load_shop
from engine.personas.catalog import catalog_to_toml, load_catalog
from engine.personas.catalog_fit import catalog_fit
from engine.personas.catalog_proposal import ProposalConfig, propose_catalog
from engine.personas.discovery import DiscoveryConfig, discover_segments
from engine.personas.inference.model import PersonaInferenceModel


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
    personas: int | None = None,
    held_out_days: int = 28,
    seed: int = 0,
) -> dict[str, Any]:
    """Propose a catalog from the shop's events, write it to ``out`` and compare its fit with the given one.

    Both catalogs are fitted on the events before the last ``held_out_days`` and scored on those days
    (``engine.personas.catalog_fit``); the proposal is built from the given catalog's fit on the same
    earlier events, so the held-out days are news to both. The file written is the proposal measured
    here, read back through ``load_catalog`` before this returns (it loads and trains as it is).
    """
    if held_out_days < 1:
        raise ValueError(f"held_out_days must be >= 1, got {held_out_days}")
    shop = load_shop(data_path)
    given = load_catalog(catalog_name)
    last = shop.events["timestamp"].max()
    if not isinstance(last, dt.datetime):
        raise ValueError(f"{data_path}: the shop has no events")
    cutoff = last - dt.timedelta(days=held_out_days)
    earlier = shop.events.filter(pl.col("timestamp") <= cutoff)
    later = shop.events.filter(pl.col("timestamp") > cutoff)
    if earlier.height == 0 or later.height == 0:
        raise ValueError(
            f"{data_path}: the last {held_out_days} days hold all or none of the events; choose another "
            "--held-out-days"
        )
    earlier_shop = dataclasses.replace(shop, events=earlier)
    given_model = PersonaInferenceModel()
    given_mixes = given_model.fit(earlier_shop, given)
    proposal = propose_catalog(
        given_model, given_mixes, ProposalConfig(personas=personas or len(given), seed=seed)
    )
    proposed_model = PersonaInferenceModel()
    proposed_mixes = proposed_model.fit(earlier_shop, proposal.catalog)
    fits = {
        "given": catalog_fit(given_model, given_mixes, later, shop.items),
        "proposed": catalog_fit(proposed_model, proposed_mixes, later, shop.items),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Persona catalog proposed by persona-engine discover from {data_path}\n"
        f"# ({proposal.customers_clustered:,} customers clustered by their events' shares per feature;\n"
        "# rename and describe the personas before showing them to anyone).\n\n"
    )
    out.write_text(header + catalog_to_toml(proposal.catalog), encoding="utf-8")
    written = load_catalog(out)
    return {
        "catalog_file": str(out),
        "given_catalog": catalog_name,
        "held_out_days": held_out_days,
        "customers_clustered": proposal.customers_clustered,
        "fit": {name: fit.to_dict() for name, fit in fits.items()},
        "held_out_log_likelihood_difference": (
            fits["proposed"].held_out_log_likelihood - fits["given"].held_out_log_likelihood
        ),
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
            for p in proposal.personas
        ],
        "loads_as_catalog": len(written) == len(proposal.catalog),
    }
