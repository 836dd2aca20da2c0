"""``persona-engine discover``: customer segments that no persona of the catalog explains.

A catalog is a hypothesis about the shop's customers. Discovery fits it to the data and then looks
for groups of customers whose behaviour the fitted personas predict badly and who resemble each
other, which is where a marketing team should consider a new persona.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine.data.loading import load_shop
from engine.personas.catalog import load_catalog
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
