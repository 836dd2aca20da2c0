"""Two-stage retrieval for large catalogs: an inverted-file (IVF) index over item vectors.

A factor model scores a customer as ``u @ V.T`` over every item; at 100k items that full scan (and the
masks and top-k over 100k scores behind it) is most of a request. The index splits the item vectors
into clusters with k-means at artifact load, stores the items re-ordered so that every cluster is one
contiguous slice, and answers a query in two stages:

1. score the centroids (``C @ u``, a few hundred dot products) and bound from them the best score any
   item of each cluster can reach;
2. score the items of the most promising clusters exactly (one matrix-vector product over their
   slices), until no unprobed cluster can beat the k-th best candidate.

The result is the *candidate set*: item indices with their exact model scores. Filters, promotions,
diversity and the final top-k then run on a few thousand candidates instead of the whole catalog
(``engine.personalizer``), which falls back to the exact full scan whenever the candidates cannot
fill the list (strict filters, big promotions), so lists are never shorter than the exact path's.

The stopping rule makes the top-k exact (see ``CandidateIndex``); only a cap on the clusters probed
per query (``probe_share``), which bounds the latency of queries whose bounds prune badly, can make it
approximate. Recall@k against the full scan is what the serving benchmark reports. Small catalogs,
below ``min_items``, are always scanned exactly: there the scan is cheap.

k-means is seeded, so every worker process builds the same index from the same artifact and answers
the same request identically; nothing is written to the artifact.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# Rows of the item matrix scored against all centroids at once while assigning (bounds memory).
_ASSIGN_CHUNK = 8192
# Norm quantiles that split each cluster into lists of similar vector length (see CandidateIndex).
# Finer toward the top, where the winners are: factor models give a few popular items long vectors,
# and a query's k-th best score usually clears the bound of every band below the top half percent
# (on the 100k-item benchmark model: ~500 candidates per query with these bands, ~1,000 with
# (0.5, 0.8, 0.95, 0.99)).
NORM_BAND_QUANTILES = (0.5, 0.9, 0.98, 0.995, 0.999)
# Stand for "no mask" and "no per-item cut" in the compiled search, which takes arrays either way.
_NOTHING_ALLOWED = np.zeros(0, dtype=bool)
_NO_NORMS = np.zeros(0, dtype=np.float64)


@dataclass(frozen=True)
class CandidateIndexSettings:
    """When to build an index and how wide to search it.

    ``min_items``: catalogs with fewer items are scanned exactly (no index). ``clusters``: k-means
    clusters, 0 picks ``round(sqrt(n_items) / 8)`` (40 at 100k items; each cluster is then split into
    norm bands, see ``CandidateIndex``, and on the benchmark model the bands prune most: 20 to 80
    clusters scored within 5% of each other's candidate counts, more clusters only add lists to
    visit). ``probe_share``: the most lists probed per query, as a share of all lists (1.0: no cap,
    always exact; lower caps the latency of queries whose bounds prune badly, at the cost of recall
    for them). ``training_sample``: items k-means is fitted on (all items are then assigned);
    ``iterations`` and ``seed`` of k-means.
    """

    min_items: int = 20_000
    clusters: int = 0
    probe_share: float = 0.5
    training_sample: int = 50_000
    iterations: int = 10
    seed: int = 17

    def __post_init__(self) -> None:
        if self.min_items < 0:
            raise ValueError(f"min_items must be >= 0, got {self.min_items}")
        if self.clusters < 0:
            raise ValueError(f"clusters must be >= 0 (0 = sqrt of the catalog size), got {self.clusters}")
        if not 0.0 < self.probe_share <= 1.0:
            raise ValueError(f"probe_share must be in (0, 1], got {self.probe_share}")
        if self.training_sample <= 0 or self.iterations <= 0:
            raise ValueError(
                "training_sample and iterations must be positive, "
                f"got {self.training_sample}, {self.iterations}"
            )

    def wants_index(self, n_items: int) -> bool:
        return n_items >= self.min_items

    def n_clusters(self, n_items: int) -> int:
        wanted = self.clusters or round(math.sqrt(n_items) / 8)
        return max(1, min(wanted, n_items))


def _nearest_centroid(points: NDArray[np.float32], centroids: NDArray[np.float32]) -> NDArray[np.int64]:
    """Index of each point's nearest centroid (Euclidean): argmax of ``x.c - |c|^2 / 2``."""
    half_norms = 0.5 * np.einsum("ij,ij->i", centroids, centroids)
    out = np.empty(len(points), dtype=np.int64)
    for start in range(0, len(points), _ASSIGN_CHUNK):
        block = points[start : start + _ASSIGN_CHUNK] @ centroids.T
        block -= half_norms
        out[start : start + _ASSIGN_CHUNK] = np.argmax(block, axis=1)
    return out


def _cluster_means(
    points: NDArray[np.float32], assignment: NDArray[np.int64], previous: NDArray[np.float32]
) -> NDArray[np.float32]:
    """Mean of each cluster's points; an empty cluster keeps its previous centroid."""
    order = np.argsort(assignment, kind="stable")
    counts = np.bincount(assignment, minlength=len(previous))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    filled = counts > 0
    sums = np.add.reduceat(points[order].astype(np.float64), starts[filled], axis=0)
    means = previous.astype(np.float64, copy=True)
    means[filled] = sums / counts[filled, None]
    return means.astype(np.float32)


def kmeans(
    points: NDArray[np.float32], n_clusters: int, *, iterations: int, sample: int, seed: int
) -> NDArray[np.float32]:
    """Lloyd's k-means on a seeded sample of ``points``, started from distinct sampled points."""
    rng = np.random.default_rng(seed)
    n = len(points)
    training = points if n <= sample else points[np.sort(rng.choice(n, size=sample, replace=False))]
    centroids = np.array(
        training[rng.choice(len(training), size=n_clusters, replace=False)], dtype=np.float32
    )
    for _ in range(iterations):
        assignment = _nearest_centroid(training, centroids)
        updated = _cluster_means(training, assignment, centroids)
        if np.array_equal(updated, centroids):
            break
        centroids = updated
    return centroids


@dataclass(slots=True)
class TopCandidates:
    """Each query's k best candidates from ``CandidateIndex.search_top_many``.

    Row r holds ``found[r]`` items (catalog indices) and their exact scores, best first, ties to the
    earlier candidate, padded with -1 and 0 beyond that; ``finite[r]`` is False when any candidate
    scored for it was NaN or infinite.
    """

    items: NDArray[np.int64]
    scores: NDArray[np.float32]
    found: NDArray[np.int64]
    finite: NDArray[np.bool_]


@dataclass(slots=True)  # one per search, on the request path: not frozen (5x the construction)
class Candidates:
    """A query's candidate items (catalog indices) with their exact scores.

    ``certified``: the search stopped because no unprobed list could hold an item scoring above the
    k-th best candidate, so the candidates contain the exact top-k of the allowed items; False when
    the probe cap ended the search first (the top-k is then approximate).
    """

    items: NDArray[np.int64]
    scores: NDArray[np.float32]
    certified: bool
    # positions (in ``items``) of the k best candidates, best first, ties to the earlier position
    best: NDArray[np.int64]


class CandidateIndex:
    """The IVF index of one item matrix: lists of items, contiguous, with a score bound per list.

    A list is one k-means cluster's items within one norm band (``NORM_BAND_QUANTILES``): factor
    models give a few popular items long vectors and most items short ones, and a list mixing both
    would have a loose bound. For a query ``q`` the best score in a list is at most
    ``min(|q| * max_norm, q . centroid + |q| * radius)`` (Cauchy-Schwarz on the item and on its
    offset from the list centroid). Lists are probed in order of that bound; once the k-th best
    allowed candidate scores at least the next list's bound, no unprobed item can enter the top-k and
    the search stops: exact, after scoring a small share of the catalog. ``max_probe`` caps the lists
    probed per query, which bounds latency and is the only source of approximation.
    """

    def __init__(
        self,
        item_vectors: NDArray[np.float32],
        assignment: NDArray[np.int64],
        max_probe: int,
    ) -> None:
        """``assignment``: each item's cluster; the lists are built from it and the item norms."""
        vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64))
        band = np.searchsorted(np.quantile(norms, NORM_BAND_QUANTILES), norms, side="right")
        # Within a list the longest vectors come first, so early slices hold the likely winners.
        self.order: NDArray[np.int64] = np.lexsort((-norms, band, assignment)).astype(np.int64)
        key = assignment[self.order] * (len(NORM_BAND_QUANTILES) + 1) + band[self.order]
        starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
        self.offsets: NDArray[np.int64] = np.concatenate([starts, [len(key)]]).astype(np.int64)
        self.vectors: NDArray[np.float32] = np.ascontiguousarray(vectors[self.order])
        sizes = np.diff(self.offsets)
        list_of = np.repeat(np.arange(len(sizes)), sizes)
        sorted_norms = norms[self.order]
        # each item's vector length in index order: the batch search's per-item cut (``search_top_many``)
        self.norms: NDArray[np.float64] = np.ascontiguousarray(sorted_norms)
        self.max_norm: NDArray[np.float64] = np.maximum.reduceat(sorted_norms, starts)
        sums = np.add.reduceat(self.vectors.astype(np.float64), starts, axis=0)
        centroids = sums / sizes[:, None]
        offsets_sq = np.einsum(
            "ij,ij->i", self.vectors - centroids[list_of], self.vectors - centroids[list_of]
        )
        self.radius: NDArray[np.float64] = np.sqrt(np.maximum.reduceat(offsets_sq, starts))
        self.centroids: NDArray[np.float32] = centroids.astype(np.float32)
        self.max_probe = max(1, min(int(max_probe), self.n_lists))
        self._scratch = threading.local()  # each thread's blocked-item mask (``search_top_many``)
        # the arrays every compiled search reads, in its argument order
        self._lists = (self.vectors, self.order, self.offsets, self.centroids, self.max_norm, self.radius)

    @classmethod
    def build(cls, item_vectors: NDArray[np.floating], settings: CandidateIndexSettings) -> CandidateIndex:
        vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        n_clusters = settings.n_clusters(len(vectors))
        centroids = kmeans(
            vectors,
            n_clusters,
            iterations=settings.iterations,
            sample=max(settings.training_sample, n_clusters),
            seed=settings.seed,
        )
        assignment = _nearest_centroid(vectors, centroids)
        n_lists = len(np.unique(assignment)) * (len(NORM_BAND_QUANTILES) + 1)
        return cls(vectors, assignment, math.ceil(settings.probe_share * n_lists))

    @property
    def n_items(self) -> int:
        return len(self.order)

    @property
    def n_lists(self) -> int:
        return len(self.centroids)

    def list_sizes(self) -> NDArray[np.int64]:
        return np.diff(self.offsets)

    def bounds(self, query: NDArray[np.float32]) -> NDArray[np.float64]:
        """Upper bound of the score of any item of each list for ``query``.

        Slightly widened (``BOUND_SLACK``) so that float32 rounding of an item's computed score can
        never put it above its list's bound.
        """
        from engine.ranking.candidate_search import bounds_of

        return np.asarray(
            bounds_of(self.centroids, self.max_norm, self.radius, np.asarray(query, dtype=np.float32))
        )

    def search(
        self,
        vector: NDArray[np.floating],
        k: int,
        allowed: NDArray[np.bool_] | None = None,
        max_probe: int | None = None,
    ) -> Candidates:
        """Every allowed item of the probed lists, scored exactly; see the class docstring for when it stops.

        ``allowed`` is a (n_items,) mask in catalog order (filters, exclusions); items outside it are
        neither returned nor counted toward the k that certify the result. Lists are probed in rounds:
        a first batch holding ``max(4k, 256)`` items, then every list whose bound reaches the k-th best
        score found so far (doubling the batch while fewer than k allowed items were found). The loop
        is compiled (``engine.ranking.candidate_search``, imported on first use: numba's import and
        compilation cost a second, which only a served index should pay).
        """
        from engine.ranking.candidate_search import search_lists

        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        cap = self.max_probe if max_probe is None else max(1, min(int(max_probe), self.n_lists))
        items, scores, certified, best = search_lists(
            *self._lists,
            _NO_NORMS,  # every item of a probed list is scored
            np.ascontiguousarray(vector, dtype=np.float32),
            int(k),
            _NOTHING_ALLOWED if allowed is None else allowed,
            allowed is not None,
            _NOTHING_ALLOWED,
            False,
            int(cap),
            max(4 * int(k), 256),
        )
        return Candidates(items, scores, bool(certified), best)

    def search_top_many(
        self,
        queries: NDArray[np.floating],
        k: int,
        allowed: NDArray[np.bool_] | None,
        blocked_indptr: NDArray[np.int64],
        blocked_items: NDArray[np.int64],
        max_probe: int | None = None,
    ) -> TopCandidates:
        """The k best allowed candidates of each query, as ``search(query, k, allowed minus the row's
        blocked items).best`` picks them, for a batch of queries in one compiled call.

        ``blocked_items[blocked_indptr[r]:blocked_indptr[r + 1]]`` are the catalog items row r may not
        have besides those outside ``allowed`` (their purchases, cart, exclusions): marked for the
        row alone inside the search, instead of one catalog-sized mask per row. Only the top k is
        returned, so items that cannot reach it are not scored (``candidate_search.search_top_many``).
        """
        from engine.ranking.candidate_search import search_top_many

        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        rows = len(queries)
        if blocked_indptr.shape != (rows + 1,):
            raise ValueError(f"blocked_indptr must have {rows + 1} entries, got {blocked_indptr.shape}")
        cap = self.max_probe if max_probe is None else max(1, min(int(max_probe), self.n_lists))
        blocked = getattr(self._scratch, "blocked", None)
        if blocked is None:  # one per thread: searches on other threads mark their own
            blocked = self._scratch.blocked = np.zeros(self.n_items, dtype=bool)
        items, scores, found, finite, bad = search_top_many(
            *self._lists,
            self.norms,
            np.ascontiguousarray(queries, dtype=np.float32),
            int(k),
            _NOTHING_ALLOWED if allowed is None else allowed,
            allowed is not None,
            np.ascontiguousarray(blocked_indptr, dtype=np.int64),
            np.ascontiguousarray(blocked_items, dtype=np.int64),
            blocked,
            int(cap),
            max(4 * int(k), 256),
        )
        if bad == -2:
            raise ValueError(
                f"blocked_indptr must rise from 0 to len(blocked_items) = {len(blocked_items)}, "
                f"got {blocked_indptr.tolist()}"
            )
        if bad >= 0:
            raise ValueError(
                f"blocked item {int(blocked_items[bad])} is not a catalog index (0..{self.n_items - 1})"
            )
        return TopCandidates(items, scores, found, finite)


def exact_top_k(scores: NDArray[np.floating], k: int) -> NDArray[np.int64]:
    """The k best indices of a full score row, best first, ties to the lower index (the exact reference)."""
    k = min(k, len(scores))
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return part[np.lexsort((part, -scores[part]))].astype(np.int64)


def candidates_top_k(candidates: Candidates, k: int) -> NDArray[np.int64]:
    """The k best candidates, best first, ties to the lower catalog index (same order as ``exact_top_k``)."""
    k = min(k, len(candidates.items))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    part = (
        np.argpartition(-candidates.scores, k - 1)[:k]
        if k < len(candidates.items)
        else np.arange(len(candidates.items))
    )
    best = part[np.lexsort((candidates.items[part], -candidates.scores[part]))]
    return candidates.items[best]


def recall_at_k(index: CandidateIndex, queries: NDArray[np.floating], k: int) -> float:
    """Mean share of each query's exact top-k (full scan) that the index's top-k finds."""
    hits = 0
    for query in np.asarray(queries, dtype=np.float32):
        exact = exact_top_k(index.vectors @ query, k)
        found = candidates_top_k(index.search(query, k), k)
        hits += len(np.intersect1d(index.order[exact], found))
    return hits / (len(queries) * min(k, index.n_items)) if len(queries) else 1.0
