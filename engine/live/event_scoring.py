"""How much each persona explains one live event, in microseconds, with the stored persona model.

Training encodes events through polars (``engine.personas.event_encoding.build_event_features``), which is
right for millions of rows and far too slow for the three events of one RecordEvents call. An
event's log-likelihood under the model is a sum over its feature values: the item-level part
(category, price level, tags, plus the item-choice normaliser) depends only on the item, and the
event-level part is one row of parameters per known fact (discounted, channel, device). So the item
part is precomputed for every item of the artifact at load, through the same polars encoding (the
scores are exactly those of training), and a live event is a row look-up plus a few additions.

Brand repeat (is this one of the customer's habitual brands) needs the customer's whole history,
which the live path does not have: it is left unknown, which the model treats as a missing fact.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import polars as pl
from numpy.typing import NDArray

from engine.artifact.contents import LoadedArtifact
from engine.data.id_map import MISSING, IdMap
from engine.live.events import BehaviorEvent
from engine.personas.event_encoding import build_event_features
from engine.personas.inference.model import PersonaInferenceModel
from engine.personas.traits import CHANNEL, DEVICE, DISCOUNTED, NO, YES

_TAG_FEATURE_PREFIX = "tag="


class LiveEventScorer:
    """Per-persona log-likelihoods of live events, and the model to fold them into mixes."""

    def __init__(self, model: PersonaInferenceModel, items: pl.DataFrame) -> None:
        """``items`` is an items table (item_id, category, price, optional brand and tags)."""
        self.model = model
        self.persona_ids = model.persona_ids
        self.items = IdMap(items["item_id"].cast(pl.Utf8).to_list(), kind="item")
        self.item_positions: dict[str, int] = {str(v): i for i, v in enumerate(self.items.ids.tolist())}
        # One synthetic event per item, without event-level facts: its scores are the item part.
        start = dt.datetime(2000, 1, 3, tzinfo=dt.UTC)
        probe = pl.DataFrame(
            {
                "customer_id": ["probe"] * len(self.items),
                "item_id": self.items.ids.tolist(),
                "timestamp": [start + dt.timedelta(seconds=i) for i in range(len(self.items))],
            },
            schema={"customer_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Datetime("us", "UTC")},
        )
        # Without brands: the probe customer's many same-brand events would otherwise read as brand repeats.
        brandless = items.with_columns(pl.lit(None, dtype=pl.Utf8).alias("brand"))
        features = build_event_features(probe, brandless, space=model.space, holidays=model.config.holidays)
        scores = model.event_log_likelihoods(features)
        self.item_scores = np.zeros((len(self.items), len(self.persona_ids)))
        self.item_scores[features.item_index] = scores
        space = model.space
        self._facts: dict[tuple[str, str], NDArray[np.float64]] = {}
        for group in (DISCOUNTED, CHANNEL, DEVICE):
            spec = space.group(group)
            if spec is None:
                continue
            for value in spec.values:
                column = space.column(group, value)
                if column is not None:
                    self._facts[(group, value)] = model.column_log_likelihoods(column)
        self._fact_rows = list(self._facts)
        self._fact_index = {key: i for i, key in enumerate(self._fact_rows)}
        self._fact_matrix = np.vstack([*self._facts.values(), np.zeros(len(self.persona_ids))])

    @classmethod
    def from_artifact(cls, artifact: LoadedArtifact) -> LiveEventScorer:
        """The scorer of a verified artifact: its persona model and its items, tags from the item features."""
        return cls(artifact.inference, artifact_items(artifact))

    def item_index(self, item_id: str) -> int:
        """The artifact's index of an item, or -1 (MISSING) for an item it does not know."""
        return self.item_positions.get(item_id, MISSING)

    def score(self, event: BehaviorEvent) -> NDArray[np.float64] | None:
        """(personas,) log-likelihoods of one event, or None when its item is unknown (no evidence)."""
        item = self.item_index(event.item_id)
        if item == MISSING:
            return None
        scores = self.item_scores[item].copy()
        if event.discount is not None:
            scores += self._facts.get((DISCOUNTED, YES if event.discount > 0 else NO), 0.0)
        for group, value in ((CHANNEL, event.channel), (DEVICE, event.device)):
            if value:
                scores += self._facts.get((group, value), 0.0)
        return scores

    def score_facts(
        self,
        item_ids: Sequence[str],
        discounted: Sequence[bool | None],
        channels: Sequence[str | None],
        devices: Sequence[str | None],
    ) -> NDArray[np.float64]:
        """(events, personas) scores of events given as columns of facts; every item must be known.

        The per-request path: one gather of item rows and one of fact rows, instead of an event object
        per row.
        """
        rows = [self.item_positions[item] for item in item_ids]
        scores = self.item_scores[rows]
        none = len(self._fact_rows)  # the all-zero last row of _fact_matrix: fact unknown
        facts = self._fact_index
        for group, values in ((CHANNEL, channels), (DEVICE, devices)):
            scores += self._fact_matrix[[facts.get((group, v), none) if v else none for v in values]]
        keys = [none if d is None else facts.get((DISCOUNTED, YES if d else NO), none) for d in discounted]
        scores += self._fact_matrix[keys]
        return scores


def artifact_items(artifact: LoadedArtifact) -> pl.DataFrame:
    """The items table as training saw it (id, category, brand, price, tags), rebuilt from the artifact.

    Tags are not stored as a column; they are the ``tag=...`` columns of the item feature matrix.
    """
    items = artifact.item_catalog
    names = artifact.item_space.names
    features = artifact.item_features
    rows, columns = features.shape
    indptr, indices = features.indptr, features.indices
    tag_of = {
        j: name.removeprefix(_TAG_FEATURE_PREFIX)
        for j, name in enumerate(names)
        if name.startswith(_TAG_FEATURE_PREFIX)
    }
    tags = [
        [tag_of[int(j)] for j in indices[indptr[i] : indptr[i + 1]] if int(j) in tag_of] for i in range(rows)
    ]
    if len(items) != rows or len(names) != columns:
        raise ValueError(
            f"artifact {artifact.path}: item features have shape ({rows}, {columns}) for {len(items)} items"
        )
    return pl.DataFrame(
        {
            "item_id": items.ids.ids.tolist(),
            "category": items.categories.tolist(),
            "brand": items.brands.tolist(),
            "price": items.prices.astype(np.float64),
            "tags": tags,
        },
        schema={
            "item_id": pl.Utf8,
            "category": pl.Utf8,
            "brand": pl.Utf8,
            "price": pl.Float64,
            "tags": pl.List(pl.Utf8),
        },
    )
