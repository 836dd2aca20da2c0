"""Product lists of a batch of rows: each row scored as if alone, and the lean paths equal the general."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.artifact.contents import load_artifact
from engine.models.base import UserBatch
from engine.personalization_request import CustomerTarget, ProductRequest
from engine.personalizer import Personalizer
from engine.ranking.candidate_index import CandidateIndexSettings
from engine.ranking.filters import ItemFilters
from engine.ranking.list_assembly import ItemReason, assemble_list
from engine.ranking.product_lists import (
    ListRow,
    ProductListBuilder,
    _ChunkScores,
    dense_rows,
    row_indices,
    score_rows,
)
from engine.ranking.promotions import PinnedItem, Promotions
from tests.engine.small_artifact import train_small_artifact


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Personalizer:
    artifact = load_artifact(train_small_artifact(tmp_path_factory.mktemp("lists")))
    return Personalizer(artifact, "als", candidate_index=CandidateIndexSettings(min_items=0, clusters=3))


@settings(max_examples=50, deadline=None)
@given(
    dense=st.lists(
        st.lists(st.sampled_from([0.0, 0.0, 1.0, 2.5]), min_size=4, max_size=4), min_size=1, max_size=6
    ),
    picks=st.lists(st.integers(-1, 5), min_size=1, max_size=8),
)
def test_dense_rows_are_the_rows_of_the_matrix(dense: list[list[float]], picks: list[int]) -> None:
    matrix = sp.csr_matrix(np.asarray(dense, dtype=np.float32))
    rows = np.asarray([p % len(dense) if p >= 0 else -1 for p in picks], dtype=np.int64)
    expected = matrix.toarray()[rows]
    np.testing.assert_array_equal(dense_rows(matrix, rows), expected)
    for r in rows.tolist():
        np.testing.assert_array_equal(row_indices(matrix, r), np.flatnonzero(matrix.toarray()[r]))


def test_a_model_without_row_independent_scores_is_scored_one_row_at_a_time(indexed: Personalizer) -> None:
    """Persona popularity scores by a BLAS product, whose rounding depends on the number of rows; the
    batch path must give each row the bits it gets alone."""
    backfill = indexed.backfill
    assert backfill is not None and not backfill.row_independent_scores
    rng = np.random.default_rng(3)
    mixes = rng.dirichlet(np.ones(len(indexed.catalog.ids)), size=7)
    batch = UserBatch(
        np.full(7, -1, dtype=np.int64), mixes, np.zeros((7, len(indexed.demographic_space))), validated=True
    )
    together = score_rows(backfill, batch)
    for j in range(7):
        alone = backfill.score(batch.rows(np.array([j])))
        np.testing.assert_array_equal(together[j], alone[0])


def test_query_vectors_of_a_row_do_not_depend_on_the_other_rows(indexed: Personalizer) -> None:
    customers = [str(c) for c in indexed.model_customers.ids[:9]] + ["stranger-1", "stranger-2"]
    batch = indexed.scoring_batch(customers, "weekday")
    together = indexed.model.query_vectors(batch)
    for j in range(len(customers)):
        alone = indexed.model.query_vectors(batch.rows(np.array([j])))
        np.testing.assert_array_equal(together[j], alone[0])


def test_the_lean_ranked_path_lists_what_the_general_candidate_path_lists(indexed: Personalizer) -> None:
    builder = indexed.lists
    reason = ItemReason.PERSONALIZED
    for k in (1, 5, 20):
        spec = indexed._spec(ProductRequest(k=k, filters=ItemFilters(include_out_of_stock=k == 5)))
        assert spec.plain
        for customer in [str(c) for c in indexed.model_customers.ids[:15]] + ["stranger"]:
            row = indexed._row(CustomerTarget(customer), spec, "weekday", None)
            scores = _ChunkScores(builder, builder.user_batch([row]))
            eligible = spec.eligible(row_indices(indexed.purchases, row.resolved.row))
            lean = builder._plain_tops([row], scores)[0].get(0)
            general = builder._from_candidates(scores.query(0), spec, eligible, reason)
            assert (lean is None) == (general is None)
            if lean is not None and general is not None:
                entries, items = general
                np.testing.assert_array_equal(lean[0], items)
                assert lean[1].astype(np.float64).tolist() == [e.score for e in entries]


def test_a_spec_is_plain_only_without_promotions_pins_and_diversity(indexed: Personalizer) -> None:
    item = str(indexed.items.ids[0])
    assert indexed._spec(ProductRequest(k=4)).plain
    assert not indexed._spec(ProductRequest(k=4, diversity=0.2)).plain
    assert not indexed._spec(ProductRequest(k=4, promotions=Promotions(pins=(PinnedItem(item, 1),)))).plain


@pytest.fixture(scope="module")
def scanned(indexed: Personalizer) -> Personalizer:
    """The same artifact without an index: every list comes from the full score row."""
    served = Personalizer(indexed.artifact, "als")
    assert served.index is None
    return served


def test_the_lean_full_scan_path_lists_what_assemble_list_lists(scanned: Personalizer) -> None:
    builder = scanned.lists
    vectors = scanned.model.item_vectors()
    assert vectors is not None
    for k in (1, 7, 30):
        spec = scanned._spec(ProductRequest(k=k, filters=ItemFilters(price_max=60.0 if k == 7 else None)))
        for customer in [str(c) for c in scanned.model_customers.ids[:12]] + ["stranger"]:
            row = scanned._row(CustomerTarget(customer), spec, None, None)
            listed = builder.build([row])[0]
            full = vectors @ scanned.model.query_vectors(builder.user_batch([row]))[0]
            eligible = spec.eligible(row_indices(scanned.purchases, row.resolved.row))
            reason = ItemReason.PERSONALIZED if row.model_row >= 0 else ItemReason.PERSONA
            entries = assemble_list(
                k=k,
                scores=full,
                eligible=eligible,
                backfill_scores=scanned.backfill.score(builder.user_batch([row]))[0]
                if scanned.backfill
                else None,
                promotions=spec.promotions,
                diversity=0.0,
                space=scanned.diversity_space,
                model_reason=reason,
            )
            assert [(i.item_id, i.score, i.reason) for i in listed] == [
                (str(scanned.items.ids[e.item]), e.score, e.reason) for e in entries
            ]


def test_the_batch_search_lists_each_row_as_its_own_mask_does(
    indexed: Personalizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One chunk of rows with different k, filters, purchases, carts and exclusions: the rankings
    the batch search gives (``_plain_tops``) equal those of each row's own ``eligible`` mask."""
    builder = indexed.lists
    items = [str(i) for i in indexed.items.ids]
    customers = [str(c) for c in indexed.model_customers.ids[:12]] + ["stranger"]
    buyers = [c for c in customers[:12] if row_indices(indexed.purchases, indexed.customers.index(c)).size]
    assert buyers, "the small artifact should have customers with purchases"
    specs = [
        indexed._spec(ProductRequest(k=10)),
        indexed._spec(ProductRequest(k=10, filters=ItemFilters(include_purchased=True))),
        indexed._spec(ProductRequest(k=4, filters=ItemFilters(exclude_item_ids=tuple(items[:5])))),
        indexed._spec(ProductRequest(k=7, filters=ItemFilters(price_max=60.0))),
    ]
    rows = []
    for n, customer in enumerate(buyers + customers):
        spec = specs[n % len(specs)]
        cart = np.array([n % len(items), (3 * n) % len(items)], dtype=np.int64) if n % 3 else None
        target = CustomerTarget(customer, exclude_item_ids=(items[(5 * n) % len(items)],) if n % 2 else ())
        rows.append(indexed._row(target, spec, "weekday", cart))
    tops, _ = builder._plain_tops(rows, _ChunkScores(builder, builder.user_batch(rows)))
    assert len(tops) == len(rows)  # every row ranked by the batch search (none fell back)
    batched = builder.build(rows)
    monkeypatch.setattr(type(builder), "_plain_tops", lambda self, chunk, scores: ({}, set()))
    alone = builder.build(rows)
    assert [[(i.item_id, i.score, i.rank, i.reason) for i in listed] for listed in batched] == [
        [(i.item_id, i.score, i.rank, i.reason) for i in listed] for listed in alone
    ]
    purchased = {
        n: {items[i] for i in row_indices(indexed.purchases, row.resolved.row).tolist()}
        for n, row in enumerate(rows)
    }
    for n, (row, listed) in enumerate(zip(rows, batched, strict=True)):
        assert len(listed) == row.spec.k
        if not row.spec.filters.include_purchased:
            assert not purchased[n] & {i.item_id for i in listed}


def test_plain_rows_with_too_few_candidates_go_straight_to_the_full_path(
    indexed: Personalizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Price caps that leave fewer candidates than k in the probed lists: the batch search marks those
    rows short, and their lists equal what they were when the candidate path searched them again."""
    builder = indexed.lists
    prices = np.sort(indexed.item_catalog.prices)
    customers = [str(c) for c in indexed.model_customers.ids[:20]] + ["stranger"]
    rows = []
    for n, customer in enumerate(customers):
        spec = indexed._spec(
            ProductRequest(k=10 + n % 5, filters=ItemFilters(price_max=float(prices[3 + n % 20])))
        )
        rows.append(indexed._row(CustomerTarget(customer), spec, "weekday", None))
    tops, short = builder._plain_tops(rows, _ChunkScores(builder, builder.user_batch(rows)))
    assert short and tops and not short & tops.keys()
    skipping = builder.build(rows)
    batch_search = type(builder)._plain_tops

    def none_short(self: ProductListBuilder, chunk: list[ListRow], scores: _ChunkScores) -> object:
        return batch_search(self, chunk, scores)[0], set()

    monkeypatch.setattr(type(builder), "_plain_tops", none_short)
    assert [[(i.item_id, i.score, i.rank, i.reason) for i in listed] for listed in skipping] == [
        [(i.item_id, i.score, i.rank, i.reason) for i in listed] for listed in builder.build(rows)
    ]
