"""What an artifact's served models were fitted on, as the manifest's ``served_models`` records it.

``persona-engine train`` evaluates models fitted on the split's training part, then (by default,
``[output] refit_on_all_events``) refits every model, the persona mixes and the decision estimates on
all events and all customers for the artifact it writes. The served models may therefore have seen
the test period: a job that scores held-out events must read this record and never score them with
the artifact's models. Artifacts written before the record existed serve the split's models.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from engine.artifact.manifest import served_data_until

MANIFEST_KEY = "served_models"


@dataclass(frozen=True)
class ServedModels:
    """``refit_on_all_events`` False: the artifact serves the very models its manifest's metrics scored."""

    refit_on_all_events: bool
    events: int | None = None  # events the served models and mixes were fitted on
    customers: int | None = None  # customers the artifact knows
    model_customers: int | None = None  # customers with a row in the models
    data_until: dt.datetime | None = None  # the newest event or decision they were fitted on

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> ServedModels:
        record = manifest.get(MANIFEST_KEY)
        if not isinstance(record, dict):
            return cls(refit_on_all_events=False)
        return cls(
            refit_on_all_events=bool(record.get("refit_on_all_events", False)),
            events=_count(record.get("events")),
            customers=_count(record.get("customers")),
            model_customers=_count(record.get("model_customers")),
            data_until=served_data_until(manifest),
        )

    def describe(self) -> str:
        """For people: "refit on all 199,584 events and 5,000 customers, 4,998 of them in the models"."""
        if self.events is None or self.customers is None:
            return "refit on all events" if self.refit_on_all_events else "fitted on the split"
        text = (
            f"refit on all {self.events:,} events and {self.customers:,} customers"
            if self.refit_on_all_events
            else f"fitted on the split's {self.events:,} training events and {self.customers:,} customers"
        )
        if self.model_customers is not None:
            text += f", {self.model_customers:,} of them in the models"
        return text


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
