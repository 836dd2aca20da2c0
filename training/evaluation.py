"""Offline evaluation of fitted models on the held-out period, per customer segment.

Metrics come from ``engine.evaluation.ranking_metrics`` (implemented once, tested against hand-computed
cases); this module decides *whom* to score and how: segments, the k, exclusion of already-seen items, and the
ratio to popularity that tells whether personalisation is worth its cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.evaluation.ranking_metrics import ranking_metrics
from engine.models.base import Recommender, UserBatch
from training.paired_bootstrap import PairedDifference, paired_bootstrap
from training.prepared_data import ContextSegments, EvaluationSegment

ScoredLists = list[tuple[EvaluationSegment, NDArray[np.int64]]]  # segments scored and their top-k lists
METRIC_NAMES: tuple[str, ...] = ("precision", "recall", "ndcg", "map", "hit_rate")
BASELINE = "popularity"
CONTEXT_EVALUATION = "context_evaluation"  # the manifest's key for ``evaluate_context_mixes`` results
# Scores held at once while recommending: users are scored a chunk at a time so that memory stays at
# a few hundred MB (scores plus top-k's temporaries) whatever the shop's size; scoring all 428,000
# evaluation customers of a 100,000-item shop at once needed 160 GiB.
SCORE_CELLS_PER_CHUNK = 1 << 24


def mean_or_nan(values: NDArray[np.floating]) -> float:
    """The mean over customers, NaN for none (a segment nobody in it went on to engage in)."""
    return float(values.mean()) if len(values) else float("nan")


@dataclass(frozen=True)
class SegmentResult:
    model: str
    segment: str
    users: int
    metrics: dict[str, float]  # metric name -> mean over users with held-out positives
    coverage: float
    # metric name -> value per scored user, in the segment's row order (users without held-out
    # positives left out), so two models on one segment can be compared user by user
    per_user: dict[str, NDArray[np.float64]] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "segment": self.segment,
            "users": self.users,
            **self.metrics,
            "coverage": self.coverage,
        }


def evaluate_models(
    models: Mapping[str, Recommender],
    segments: list[EvaluationSegment],
    k: int,
    *,
    score_cells_per_chunk: int = SCORE_CELLS_PER_CHUNK,
    scored_lists: dict[str, ScoredLists] | None = None,
) -> list[SegmentResult]:
    """Metrics of every model on every segment.

    A segment whose customers were all scored before with the same inputs (the per-persona segments
    are subsets of "all") reuses those lists instead of scoring them again: recommending is the
    dominant cost of evaluation on a large shop, and a customer's list depends only on their inputs.
    The lists scored are kept per model in ``scored_lists`` when given, for ``evaluate_context_mixes``
    to reuse in turn.
    """
    if score_cells_per_chunk < 1:
        raise ValueError(f"score_cells_per_chunk must be >= 1, got {score_cells_per_chunk}")
    results: list[SegmentResult] = []
    for name, model in models.items():
        scored_before: ScoredLists = []
        if scored_lists is not None:
            scored_lists[name] = scored_before
        for segment in segments:
            recommended = _reused_lists(segment, scored_before)
            if recommended is None:
                recommended = recommend_in_chunks(model, segment, k, score_cells_per_chunk)
                scored_before.append((segment, recommended))
            scored = ranking_metrics(recommended, segment.relevant)
            per_user = {
                "precision": scored.precision,
                "recall": scored.recall,
                "ndcg": scored.ndcg,
                "map": scored.average_precision,
                "hit_rate": scored.hit,
            }
            results.append(
                SegmentResult(
                    model=name,
                    segment=segment.name,
                    users=scored.n_evaluated,
                    metrics={m: mean_or_nan(v) for m, v in per_user.items()},
                    coverage=scored.coverage,
                    per_user=per_user,
                )
            )
    return results


def recommend_in_chunks(
    model: Recommender, segment: EvaluationSegment, k: int, score_cells_per_chunk: int = SCORE_CELLS_PER_CHUNK
) -> NDArray[np.int64]:
    """(users, k) top-k lists of a segment, scoring at most ``score_cells_per_chunk`` user x item cells.

    Each user's list depends only on their own row of scores and exclusions, so the chunks
    concatenate to exactly the lists of one call over every user.
    """
    users = segment.users
    n = len(users)
    rows_per_chunk = max(1, score_cells_per_chunk // max(model.n_items, 1))
    chunks = []
    for start in range(0, n, rows_per_chunk):
        stop = min(n, start + rows_per_chunk)
        batch = UserBatch(
            user_index=users.user_index[start:stop],
            mix=users.mix[start:stop],
            demographics=users.demographics[start:stop],
            base_mix=users.base_mix[start:stop] if users.base_mix is not None else None,
            steering=users.steering[start:stop] if users.steering is not None else None,
            events=sp.csr_matrix(users.events[start:stop]) if users.events is not None else None,
        )
        recommended, _ = model.recommend(batch, k, exclude=segment.exclude[start:stop])
        chunks.append(recommended)
    if not chunks:
        return np.empty((0, k), dtype=np.int64)
    return np.asarray(np.vstack(chunks), dtype=np.int64)


def _reused_lists(segment: EvaluationSegment, scored_before: ScoredLists) -> NDArray[np.int64] | None:
    """The segment's lists taken from an earlier segment holding all its customers with the same inputs."""
    for earlier, recommended in scored_before:
        rows = _rows_of(earlier.customer_ids, segment.customer_ids)
        if rows is not None and _same_inputs(earlier, rows, segment):
            return recommended[rows]
    return None


def _rows_of(ids: NDArray[np.str_], wanted: NDArray[np.str_]) -> NDArray[np.int64] | None:
    """Positions of ``wanted`` in ``ids``, or None if any is missing."""
    if len(ids) == 0 or len(wanted) > len(ids):
        return None
    order = np.argsort(ids, kind="stable")
    found = np.minimum(np.searchsorted(ids[order], wanted), len(ids) - 1)
    rows = order[found]
    return rows.astype(np.int64) if np.array_equal(ids[rows], wanted) else None


def _same_inputs(earlier: EvaluationSegment, rows: NDArray[np.int64], segment: EvaluationSegment) -> bool:
    """Whether rows of an earlier segment are queried exactly as the segment's users (so lists match)."""
    return (
        np.array_equal(earlier.users.user_index[rows], segment.users.user_index)
        and np.array_equal(earlier.users.mix[rows], segment.users.mix)
        and _same_base_mix(earlier.users, rows, segment.users)
        # evaluation batches hold CSR demographics (dense ones are the request path's)
        and _same_sparse(
            cast(sp.csr_matrix, earlier.users.demographics[rows]),
            cast(sp.csr_matrix, segment.users.demographics),
        )
        and _same_sparse(earlier.exclude[rows], segment.exclude)
        and _same_events(earlier.users, rows, segment.users)
    )


def _same_events(earlier: UserBatch, rows: NDArray[np.int64], users: UserBatch) -> bool:
    if earlier.events is None or users.events is None:
        return earlier.events is None and users.events is None
    return _same_sparse(sp.csr_matrix(earlier.events[rows]), sp.csr_matrix(users.events))


def _same_base_mix(earlier: UserBatch, rows: NDArray[np.int64], later: UserBatch) -> bool:
    """Whether both batches learn the customers' histories under the same mixes (None: the mix itself)."""
    before = earlier.base_mix[rows] if earlier.base_mix is not None else earlier.mix[rows]
    after = later.base_mix if later.base_mix is not None else later.mix
    return np.array_equal(before, after)


def _same_sparse(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    return a.shape == b.shape and abs(a - b).nnz == 0


def ratio_to_baseline(results: list[SegmentResult], metric: str = "ndcg") -> dict[tuple[str, str], float]:
    """metric(model, segment) / metric(popularity, segment); NaN where the baseline is absent or zero."""
    base = {r.segment: r.metrics[metric] for r in results if r.model == BASELINE}
    out: dict[tuple[str, str], float] = {}
    for r in results:
        b = base.get(r.segment)
        out[(r.model, r.segment)] = r.metrics[metric] / b if b else float("nan")
    return out


def best_model(results: list[SegmentResult], segment: str = "all", metric: str = "ndcg") -> str | None:
    """The persona-conditioned model with the highest metric on a segment (baselines excluded); None
    when every model scored 0, where "highest" would be the first of a tie of zeros (a test period of
    a few customers whom no model served a held-out item: ``training.held_out_period``)."""
    candidates = [r for r in results if r.segment == segment and r.model != BASELINE]
    if not candidates:
        raise ValueError(f"no results for segment {segment!r}")
    best = max(candidates, key=lambda r: r.metrics[metric])
    return best.model if best.metrics[metric] > 0 else None


def results_table(results: list[SegmentResult], k: int) -> tuple[list[str], list[list[Any]]]:
    """All metrics for every model on the warm customers, with the NDCG ratio to popularity."""
    ratios = ratio_to_baseline(results)
    columns = ["model", "users", f"P@{k}", f"R@{k}", f"NDCG@{k}", f"MAP@{k}", f"HR@{k}", "cover", "x pop"]
    rows = [
        [
            r.model,
            r.users,
            *(r.metrics[m] for m in METRIC_NAMES),
            r.coverage,
            ratios.get((r.model, r.segment)),
        ]
        for r in results
        if r.segment == "all"
    ]
    return columns, rows


def segment_table(
    results: list[SegmentResult], k: int, metric: str = "ndcg"
) -> tuple[list[str], list[list[Any]]]:
    """One row per segment (all, each dominant persona, cold start, new customers), one column per model."""
    models = list(dict.fromkeys(r.model for r in results))
    segments = list(dict.fromkeys(r.segment for r in results))
    value = {(r.model, r.segment): r.metrics[metric] for r in results}
    users = {r.segment: r.users for r in results}
    columns = [f"{metric.upper()}@{k} by segment", "users", *models]
    rows = [
        [
            segment.removeprefix("persona:"),
            users[segment],
            *(value.get((m, segment), float("nan")) for m in models),
        ]
        for segment in segments
    ]
    return columns, rows


@dataclass(frozen=True)
class ContextMixResult:
    """One model on one context's held-out events: NDCG with the context's mix and with the overall mix.

    ``difference`` is context minus overall, averaged over the context's customers, with a paired
    bootstrap interval over customers; ``distinct_mix_users`` counts the customers whose context mix
    differs from their overall one (the others score the same both ways).
    """

    model: str
    context: str
    users: int
    distinct_mix_users: int
    ndcg_context_mix: float
    ndcg_overall_mix: float
    difference: PairedDifference

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "context": self.context,
            "users": self.users,
            "distinct_mix_users": self.distinct_mix_users,
            "ndcg_context_mix": self.ndcg_context_mix,
            "ndcg_overall_mix": self.ndcg_overall_mix,
            "difference": self.difference.to_dict(),
        }


def evaluate_context_mixes(
    models: Mapping[str, Recommender],
    contexts: list[ContextSegments],
    k: int,
    *,
    resamples: int = 2000,
    seed: int = 0,
    score_cells_per_chunk: int = SCORE_CELLS_PER_CHUNK,
    scored_lists: Mapping[str, ScoredLists] | None = None,
) -> list[ContextMixResult]:
    """Every model on every context's held-out events, scored with the context mix and the overall mix.

    Serving scores a request with the mix of its context, offline evaluation ("all") with the overall
    mix; this says what the context mix is worth on the events it is used for. The interval is over
    customers, pairing each customer's two NDCGs (same seed for every model and context).

    With ``scored_lists`` (``evaluate_models``' lists per model), the overall-mix lists are taken from
    the warm customers' lists scored there, and with the context mix only the customers whose context
    mix differs from their overall one are scored: the others' inputs are the same, so are their lists.
    """
    results: list[ContextMixResult] = []
    for name, model in models.items():
        scored_before = list(scored_lists.get(name, [])) if scored_lists is not None else []
        for pair in contexts:
            overall = _reused_lists(pair.with_overall_mix, scored_before)
            if overall is None:
                overall = recommend_in_chunks(model, pair.with_overall_mix, k, score_cells_per_chunk)
            in_context = _context_mix_lists(model, pair.with_context_mix, overall, k, score_cells_per_chunk)
            with_context = ranking_metrics(in_context, pair.with_context_mix.relevant).ndcg
            with_overall = ranking_metrics(overall, pair.with_overall_mix.relevant).ndcg
            results.append(
                ContextMixResult(
                    model=name,
                    context=pair.context,
                    users=len(with_context),
                    distinct_mix_users=int(pair.distinct_mix.sum()),
                    ndcg_context_mix=mean_or_nan(with_context),
                    ndcg_overall_mix=mean_or_nan(with_overall),
                    difference=paired_bootstrap(with_context, with_overall, resamples=resamples, seed=seed),
                )
            )
    return results


def _context_mix_lists(
    model: Recommender,
    segment: EvaluationSegment,
    overall: NDArray[np.int64],
    k: int,
    score_cells_per_chunk: int,
) -> NDArray[np.int64]:
    """The segment's lists under its context mixes: the overall-mix list where a customer's context mix
    is their overall mix to the last bit (same inputs, same list), scored for the others."""
    users = segment.users
    base = users.base_mix if users.base_mix is not None else users.mix
    differs = np.flatnonzero(~np.all(users.mix == base, axis=1))
    lists = overall.copy()
    if differs.size:
        subset = EvaluationSegment(
            segment.name,
            segment.customer_ids[differs],
            users.rows(differs),
            segment.exclude[differs],
            segment.relevant[differs],
        )
        lists[differs] = recommend_in_chunks(model, subset, k, score_cells_per_chunk)
    return lists


def difference_cells(mean: float, low: float, high: float) -> tuple[str, str]:
    """A paired difference and its interval as table cells: differences of mixes are a few thousandths,
    so four decimals, signed."""
    return f"{mean:+.4f}", f"[{low:+.4f}, {high:+.4f}]"


def context_mix_table(results: list[ContextMixResult], k: int) -> tuple[list[str], list[list[Any]]]:
    """One row per (context, model): NDCG with each mix, their difference and its 95% interval."""
    columns = [
        "context",
        "model",
        "users",
        f"NDCG@{k} context mix",
        f"NDCG@{k} overall mix",
        "diff",
        "95% CI",
    ]
    rows = [
        [
            r.context,
            r.model,
            r.users,
            r.ndcg_context_mix,
            r.ndcg_overall_mix,
            *difference_cells(r.difference.mean, r.difference.low, r.difference.high),
        ]
        for r in sorted(results, key=lambda r: (r.context, r.model))
    ]
    return columns, rows
