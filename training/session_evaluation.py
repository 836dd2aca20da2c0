"""A known customer's first held-out day played as a live session: what folding it into their vector is worth.

Serving folds a known customer's live events since the artifact's data into their vector
(``engine.ranking.unlearned_events``): ALS solves it from their history and the session, as a refit
would place them; the linear autoencoder and blends of them read the same events. Offline evaluation
scores every known customer from the vector the fit left them, so the figures elsewhere say nothing of
that path. Here each warm customer whose held-out events fall on two UTC days or more has the events
of the first of those days played as a live session (weighted as the training matrix weighs event
types, added to their history as serving adds them), and what they engaged with on the later days,
new to them after the session, is held out. Their lists are scored twice: from the fitted vector and
from the vector folded in from history and session, both leaving out what they engaged with in
training and in the session. The paired difference, with a bootstrap interval over those customers,
is what the fold-in is worth to their next lists. Models that fold nothing in (BPR, LightFM, the
popularity models) score the same both ways and are left out.

Both lists are scored with the customer's overall mix: the session's move of the persona mix (live
state) is measured apart, by the context and drift evaluations. The session is the whole first day,
which is longer than the half-hour a live session weighs most, and it is all folded in, as serving
folds in every live event since the artifact's data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from engine.data.id_map import IdMap
from engine.data.interactions import relevant_matrix
from engine.evaluation.ranking_metrics import ranking_metrics
from engine.models.base import Recommender
from engine.personas.mix_resolution import LiveInteraction, LiveView
from engine.ranking.unlearned_events import UnlearnedEvents
from training.compare_verdict import WARM_SEGMENT
from training.config import TrainConfig
from training.evaluation import difference_cells, mean_or_nan, recommend_in_chunks
from training.paired_bootstrap import PairedDifference, paired_bootstrap
from training.prepared_data import EvaluationSegment, PreparedData

SESSION_EVALUATION = "session_evaluation"  # the manifest's key
SEGMENT = "session"


@dataclass(frozen=True)
class SessionCustomers:
    """Warm customers with a first held-out day (the session) and something new on a later one.

    ``fitted`` scores them from their fitted vectors, ``folded_in`` with history and session as the
    batch's events; same customers, exclusions and held-out items in the same order.
    """

    fitted: EvaluationSegment
    folded_in: EvaluationSegment
    session_events: int  # events on the customers' first held-out days, all told

    def to_dict(self) -> dict[str, Any]:
        n = len(self.fitted.customer_ids)
        return {
            "customers": n,
            "session_events": self.session_events,
            "session_events_per_customer": self.session_events / n if n else float("nan"),
        }


@dataclass(frozen=True)
class SessionFoldInResult:
    """One model on the session customers' later held-out items: NDCG from each vector."""

    model: str
    users: int
    ndcg_folded_in: float
    ndcg_fitted: float
    difference: PairedDifference  # folded in minus fitted, paired over customers

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "users": self.users,
            "ndcg_folded_in": self.ndcg_folded_in,
            "ndcg_fitted": self.ndcg_fitted,
            "difference": self.difference.to_dict(),
        }


def session_customers(
    prepared: PreparedData, warm: EvaluationSegment, event_weights: Mapping[str, float]
) -> SessionCustomers | None:
    """The session pair of ``warm``'s customers (the evaluation's "all" segment), or None when none has
    held-out events on two days with something new after the first."""
    items = prepared.items
    test = (
        prepared.split.test_events.with_columns(
            pl.col("customer_id").cast(pl.Utf8), pl.col("timestamp").dt.date().alias("_day")
        )
        .filter(pl.col("customer_id").is_in(pl.Series(warm.customer_ids.tolist(), dtype=pl.Utf8).implode()))
        .filter(pl.col("item_id").cast(pl.Utf8).is_in(pl.Series(items.ids.tolist(), dtype=pl.Utf8).implode()))
    )
    if test.height == 0:
        return None
    test = test.with_columns(pl.col("_day").min().over("customer_id").alias("_first"))
    session, later = (
        test.filter(pl.col("_day") == pl.col("_first")),
        test.filter(pl.col("_day") > pl.col("_first")),
    )
    wanted = set(later["customer_id"].unique().to_list())
    rows = np.flatnonzero([c in wanted for c in warm.customer_ids.tolist()])
    if rows.size == 0:
        return None
    local = IdMap(warm.customer_ids[rows].tolist(), kind="customer")
    # The session as live state would hold it, and the customer's events built from it by serving's
    # own code (engine.ranking.unlearned_events): history and session summed before the log. Nothing
    # of the test period was learned, so every session event is new (no data end).
    sessions: dict[str, list[LiveInteraction]] = {}
    ids = local.ids.tolist()
    scored = session.filter(pl.col("customer_id").is_in(pl.Series(ids, dtype=pl.Utf8).implode()))
    for customer, item, kind, micros in scored.select(
        "customer_id",
        pl.col("item_id").cast(pl.Utf8),
        pl.col("event_type").cast(pl.Utf8),
        pl.col("timestamp").dt.epoch("us"),
    ).iter_rows():
        sessions.setdefault(customer, []).append(LiveInteraction(micros / 1e6, item, kind))
    lives = [LiveView(None, events=tuple(sessions.get(c, ()))) for c in ids]
    built = UnlearnedEvents(prepared.history, items, event_weights).rows(
        lives, warm.users.user_index[rows], prepared.customer_rows(ids)
    )
    if built is None:
        return None
    events = sp.csr_matrix(built)
    exclude = sp.csr_matrix(
        (np.ones(events.nnz, dtype=np.float32), events.indices, events.indptr), events.shape
    )
    relevant = relevant_matrix(later, local, items, exclude=exclude)
    keep = np.flatnonzero(np.asarray(relevant.getnnz(axis=1) > 0))
    if keep.size == 0:
        return None
    users = warm.users.rows(rows[keep])
    fitted = EvaluationSegment(f"{SEGMENT}:fitted", local.ids[keep], users, exclude[keep], relevant[keep])
    folded_in = dataclasses.replace(
        fitted,
        name=f"{SEGMENT}:folded_in",
        users=dataclasses.replace(users, events=sp.csr_matrix(events[keep])),
    )
    return SessionCustomers(fitted, folded_in, sum(len(sessions.get(ids[k], ())) for k in keep.tolist()))


def evaluate_session_fold_in(
    models: Mapping[str, Recommender], pair: SessionCustomers, k: int, *, resamples: int = 2000, seed: int = 0
) -> list[SessionFoldInResult]:
    """Every model that folds events in, on the session customers: NDCG from each vector (module doc)."""
    results = []
    for name, model in models.items():
        if not model.folds_in_events:
            continue
        folded = ranking_metrics(recommend_in_chunks(model, pair.folded_in, k), pair.folded_in.relevant).ndcg
        fitted = ranking_metrics(recommend_in_chunks(model, pair.fitted, k), pair.fitted.relevant).ndcg
        results.append(
            SessionFoldInResult(
                model=name,
                users=len(folded),
                ndcg_folded_in=mean_or_nan(folded),
                ndcg_fitted=mean_or_nan(fitted),
                difference=paired_bootstrap(folded, fitted, resamples=resamples, seed=seed),
            )
        )
    return results


def session_evaluation(
    prepared: PreparedData,
    models: Mapping[str, Recommender],
    segments: Sequence[EvaluationSegment],
    config: TrainConfig,
) -> dict[str, Any] | None:
    """``train``'s and ``evaluate``'s session evaluation of a prepared split: the customers' figures and
    one entry per model, or None when no warm customer has a session and something after it."""
    warm = next((s for s in segments if s.name == WARM_SEGMENT), None)
    if warm is None or len(warm.customer_ids) == 0:
        return None
    pair = session_customers(prepared, warm, config.interactions)
    if pair is None:
        return None
    results = evaluate_session_fold_in(models, pair, config.evaluation.k)
    return {**pair.to_dict(), "results": [r.to_dict() for r in results]}


def session_table(record: Mapping[str, Any], k: int) -> tuple[str, list[str], list[list[Any]]]:
    """A title saying who was scored, and one row per model: NDCG from each vector and the difference."""
    title = (
        f"first held-out day as a live session ({record.get('customers', 0):,} known customers, "
        f"{record.get('session_events_per_customer', float('nan')):.1f} events each): "
        "folded into their vector (as served) vs their fitted vector"
    )
    columns = ["model", "users", f"NDCG@{k} folded in", f"NDCG@{k} fitted", "diff", "95% CI"]
    rows = [
        [
            r["model"],
            r["users"],
            r["ndcg_folded_in"],
            r["ndcg_fitted"],
            *difference_cells(r["difference"]["mean"], r["difference"]["low"], r["difference"]["high"]),
        ]
        for r in record.get("results", [])
    ]
    return title, columns, rows
