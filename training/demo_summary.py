"""``persona-engine summary``: what a newcomer should see after training, in one screen.

The headline metrics against popularity, how well persona inference did, and a few real customers
with their persona mix (weekday vs weekend) and the products the model would show them, next to a
pure-persona request and an unknown visitor: the three ways the engine is asked to personalise.

The lists are ``recommend``'s (``training.batch_recommend.customer_lists``: the serving path, the
same rule for what is left out, by default what the customer bought, as the API), so a customer shown
here gets the same products from ``recommend``, ``batch-recommend`` and the server, and the summary
says what it left out as ``recommend`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.text import Text

from engine.personalizer import Personalizer, ProductList
from engine.personas.shopping_context import CONTEXTS
from training.batch_recommend import DEFAULT_EXCLUSION, EXCLUSION_RULES, customer_lists
from training.console_output import Money, print_table, stdout_console
from training.served_models import MANIFEST_KEY as SERVED_MODELS
from training.served_models import ServedModels


def _mix_text(rec: ProductList, names: dict[str, str]) -> str:
    pairs = sorted(rec.mix.as_dict().items(), key=lambda kv: -kv[1])
    return ", ".join(f"{names[p]} {w:.0%}" for p, w in pairs if w >= 0.05)


def _example_customers(personalizer: Personalizer, n: int) -> list[str]:
    """Known, modelled customers with different dominant personas, so the examples differ visibly."""
    dominant = np.argmax(personalizer.mix_overall, axis=1)
    modelled = np.flatnonzero(personalizer._model_row >= 0)
    picked: list[str] = []
    for k in range(len(personalizer.catalog)):
        rows = modelled[dominant[modelled] == k]
        if rows.size:
            best = rows[np.argmax(personalizer.mix_overall[rows, k])]
            picked.append(str(personalizer.customers.ids[best]))
        if len(picked) == n:
            break
    return picked


def summarize(
    artifact_path: Path,
    *,
    n_customers: int = 3,
    k: int = 5,
    exclude: str = DEFAULT_EXCLUSION,
    print_tables: bool = True,
) -> dict[str, Any]:
    """The summary's document (and its tables, unless ``print_tables`` is False); ``exclude`` is a
    rule of ``EXCLUSION_RULES``, as ``recommend --exclude``."""
    personalizer = Personalizer.from_path(artifact_path)
    manifest = personalizer.artifact.manifest
    names = dict(zip(personalizer.catalog.ids, personalizer.catalog.names, strict=True))
    summary = manifest.get("summary", {})
    served = ServedModels.of(manifest)
    document: dict[str, Any] = {
        "version": personalizer.version,
        "summary": summary,
        "served_models": manifest.get(SERVED_MODELS),
        "excluded": exclude,
        "customers": [],
    }

    def listed(customer_id: str, mix: dict[str, float] | None = None) -> ProductList:
        given = None if mix is None else personalizer.persona_mix(mix)
        return customer_lists(personalizer, [customer_id], k=k, mix=given, exclude=exclude)[0]

    requests: list[tuple[str, ProductList]] = []
    for customer in _example_customers(personalizer, n_customers):
        requests.append(("inferred mix", listed(customer)))
    # A visitor the engine has never seen, who told us (a quiz, a landing page) they shop like the
    # persona least represented among the examples above: the given mix alone drives the list.
    shown = {rec.mix.dominant for _, rec in requests}
    given = next(
        (p for p in reversed(personalizer.catalog.ids) if p not in shown), personalizer.catalog.ids[-1]
    )
    requests.append((f"given mix: {names[given]}", listed("new-visitor-with-quiz", {given: 1.0})))
    requests.append(("unknown visitor", listed("visitor-never-seen")))
    for label, rec in requests:
        entry = {
            "request": label,
            "customer_id": rec.customer_id,
            "cold_start": rec.cold_start,
            "persona_mix": rec.mix.as_dict(),
            "items": [vars(item) for item in rec.items],
        }
        if not rec.cold_start and label == "inferred mix":
            entry["mix_by_context"] = {
                context: personalizer.mix_for(rec.customer_id, context)[0].as_dict() for context in CONTEXTS
            }
        document["customers"].append(entry)
    if not print_tables:
        return document
    stdout_console.rule(f"persona-engine artifact {personalizer.version}")
    metrics = [
        m for m in manifest.get("metrics", []) if m["segment"] in ("all", "cold_start", "new_customers")
    ]
    if metrics:
        print_table(
            "NDCG@10 by model (held-out period)",
            ["model", "segment", "users", "NDCG", "recall", "coverage"],
            [[m["model"], m["segment"], m["users"], m["ndcg"], m["recall"], m["coverage"]] for m in metrics],
        )
    accuracy = manifest.get("persona_accuracy")
    of_mixes = ""
    if served.refit_on_all_events:
        stdout_console.print(
            f"served models: {served.describe()}\n"
            "  (the figures above are of the same models fitted on the split)",
            highlight=False,
        )
        # The mixes shown below are the served ones, inferred from every event.
        accuracy = manifest.get(SERVED_MODELS, {}).get("persona_accuracy") or accuracy
        of_mixes = " (all events)"
    if accuracy:
        stdout_console.print(
            f"persona inference vs planted mixes{of_mixes}: mean total-variation distance "
            f"{accuracy.get('mean_tv', float('nan')):.3f}, dominant persona right "
            f"{accuracy.get('dominant_accuracy', float('nan')):.1%}"
        )
    for entry, (label, rec) in zip(document["customers"], requests, strict=True):
        stdout_console.print()
        status = "cold start" if rec.cold_start else "known"
        stdout_console.print(
            Text.assemble((rec.customer_id, "bold"), f" ({label}, {status}): {_mix_text(rec, names)}")
        )
        by_context = entry.get("mix_by_context")
        if by_context:
            for context, mix in by_context.items():
                top = sorted(mix.items(), key=lambda kv: -kv[1])[:2]
                stdout_console.print(f"  {context}: " + ", ".join(f"{names[p]} {w:.0%}" for p, w in top))
        print_table(
            "",
            ["rank", "item", "title", "category", "price", "reason"],
            [
                [i + 1, it.item_id, it.title, it.category, Money(it.price), it.reason]
                for i, it in enumerate(rec.items)
            ],
        )
    stdout_console.print(
        f"left out: {EXCLUSION_RULES[exclude]} (--exclude {exclude}); the lists are what recommend, "
        "batch-recommend and the API return",
        highlight=False,
    )
    return document
