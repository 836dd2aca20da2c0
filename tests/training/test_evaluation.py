"""Evaluation scores users a chunk at a time and reuses lists across segments: same metrics as all at once."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from engine.evaluation.ranking_metrics import ranking_metrics
from engine.models.base import Recommender, UserBatch
from engine.models.registry import create_model
from tests.engine.models.checkerboard import N_ITEMS, SMALL_CONFIGS, Checkerboard, make_checkerboard
from training.evaluation import evaluate_models, recommend_in_chunks
from training.prepared_data import EvaluationSegment

K = 5


@pytest.fixture(scope="module")
def board() -> Checkerboard:
    return make_checkerboard()


@pytest.fixture(scope="module")
def models(board: Checkerboard) -> dict[str, Recommender]:
    fitted = {}
    for kind in ("popularity", "persona_popularity", "als"):
        model = create_model(kind, **SMALL_CONFIGS[kind])
        model.fit(board.data)
        fitted[kind] = model
    return fitted


def segment(
    name: str, board: Checkerboard, users: np.ndarray, mix: np.ndarray | None = None
) -> EvaluationSegment:
    batch = board.batch(list(users), mix)
    relevant = sp.csr_matrix(
        (np.ones(len(users)), (np.arange(len(users)), board.group[users] * 10)), shape=(len(users), N_ITEMS)
    )
    return EvaluationSegment(
        name=name,
        customer_ids=np.asarray([f"c{u}" for u in users]),
        users=batch,
        exclude=board.data.interactions[users],
        relevant=relevant,
    )


def segments(board: Checkerboard) -> list[EvaluationSegment]:
    everyone = board.eval_users
    first_group = everyone[board.group[everyone] == 0]
    flipped = np.tile([0.1, 0.8, 0.1], (len(first_group), 1))
    return [
        segment("all", board, everyone),
        segment("group 0", board, first_group),  # a subset of "all" with the same inputs: reused
        segment("group 0, other mix", board, first_group, flipped),  # same customers, new inputs: scored
    ]


def at_once(model: Recommender, seg: EvaluationSegment) -> dict[str, float]:
    """The metrics of one recommend call over every user of the segment (the unchunked reference)."""
    recommended, _ = model.recommend(seg.users, K, exclude=seg.exclude)
    scored = ranking_metrics(recommended, seg.relevant)
    return {
        "precision": float(scored.precision.mean()),
        "recall": float(scored.recall.mean()),
        "ndcg": float(scored.ndcg.mean()),
        "map": float(scored.average_precision.mean()),
        "hit_rate": float(scored.hit.mean()),
        "coverage": scored.coverage,
    }


@pytest.mark.parametrize("rows_per_chunk", [1, 7, 1000])
def test_chunked_evaluation_equals_scoring_everyone_at_once(
    board: Checkerboard, models: dict[str, Recommender], rows_per_chunk: int
) -> None:
    segs = segments(board)
    assert len(segs[0].users) > 4 * 7  # several chunks of 7
    results = evaluate_models(models, segs, K, score_cells_per_chunk=rows_per_chunk * N_ITEMS)
    assert [(r.model, r.segment) for r in results] == [(m, s.name) for m in models for s in segs]
    by_key = {(r.model, r.segment): r for r in results}
    for name, model in models.items():
        for seg in segs:
            result = by_key[(name, seg.name)]
            assert result.users == len(seg.users)
            assert {**result.metrics, "coverage": result.coverage} == at_once(model, seg)
    # The flipped mix really changes persona-aware lists, so reusing them would have been caught above.
    aware = by_key[("persona_popularity", "group 0")].metrics
    assert aware != by_key[("persona_popularity", "group 0, other mix")].metrics


def test_chunks_concatenate_to_the_lists_of_one_call(
    board: Checkerboard, models: dict[str, Recommender]
) -> None:
    seg = segments(board)[0]
    for model in models.values():
        whole, _ = model.recommend(seg.users, K, exclude=seg.exclude)
        np.testing.assert_array_equal(
            recommend_in_chunks(model, seg, K, score_cells_per_chunk=3 * N_ITEMS), whole
        )
        # A chunk budget smaller than one row still scores one user at a time.
        np.testing.assert_array_equal(recommend_in_chunks(model, seg, K, score_cells_per_chunk=1), whole)


def test_empty_segment_and_bad_chunk_size(board: Checkerboard, models: dict[str, Recommender]) -> None:
    empty = EvaluationSegment(
        name="nobody",
        customer_ids=np.asarray([], dtype=np.str_),
        users=UserBatch(np.empty(0, dtype=np.int64), np.empty((0, 3)), sp.csr_matrix((0, 4))),
        exclude=sp.csr_matrix((0, N_ITEMS)),
        relevant=sp.csr_matrix((0, N_ITEMS)),
    )
    assert recommend_in_chunks(models["als"], empty, K).shape == (0, K)
    with pytest.raises(ValueError, match="score_cells_per_chunk"):
        evaluate_models(models, segments(board), K, score_cells_per_chunk=0)
