"""The candidate index's search loop, compiled: one call per query instead of some forty numpy calls.

``CandidateIndex.search`` (``engine.ranking.candidate_index``) bounds every list, probes lists in
order of their bound and stops once the k-th best allowed candidate beats every unprobed bound. In
numpy each of its steps is a call over a few dozen lists or a few hundred items, and at a page's
sizes (k = 20, about a thousand candidates) the calls' fixed cost was most of the search: about
60 µs per query on a quiet machine, the largest single cost of a Personalize call on a 100k-item
catalog. Compiled with numba the same loop scores the candidates straight from the index's
contiguous lists (no gathered copy of their vectors) and keeps the k best in a small heap.

Rounds and stopping rule are the numpy loop's: a first round of lists holding ``first_items`` items,
then every list whose bound reaches the k-th best score so far (or twice the items, while fewer than
k allowed items were found), until that bound test certifies the top k or ``cap`` lists were probed.

A page's list needs only the top k, and then the Python around one search per customer (a copy of
the catalog's mask for their purchases and exclusions, the call's argument checks, slicing the
candidates) cost as much as the search itself; ``search_top_many`` searches a whole batch in one call
instead (see there), with the same rounds, the same stopping rule and the same top k per query.

Scores are float32 dot products accumulated in an order the compiler picks once (``reassoc``, so the
64 products vectorise); the same query always gives the same bits, whichever batch it came in. The
kernel releases the GIL, so threads searching for different requests run in parallel.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray

# Relative and absolute widening of the list bounds, far above float32 rounding of a 64-term dot product.
BOUND_SLACK = 1e-5

_FLAGS = {"reassoc", "contract"}  # vectorised dot products; no assumptions about NaN or infinities


@numba.njit(cache=True, nogil=True, fastmath=_FLAGS)
def bounds_of(
    centroids: NDArray[np.float32],
    max_norm: NDArray[np.float64],
    radius: NDArray[np.float64],
    query: NDArray[np.float32],
) -> NDArray[np.float64]:
    """Upper bound of any item score per list (see ``CandidateIndex.bounds``), widened by the slack."""
    d = query.shape[0]
    squared = 0.0
    for j in range(d):
        squared += float(query[j]) * float(query[j])
    length = math.sqrt(squared)
    out = np.empty(centroids.shape[0], dtype=np.float64)
    for lst in range(centroids.shape[0]):
        dot = np.float32(0.0)
        for j in range(d):
            dot += centroids[lst, j] * query[j]
        tight = min(length * max_norm[lst], float(dot) + length * radius[lst])
        out[lst] = tight + BOUND_SLACK * length * max_norm[lst] + BOUND_SLACK
    return out


@numba.njit(cache=True, nogil=True)
def _heap_replace_min(heap: NDArray[np.float32], value: np.float32) -> None:
    """Replace the smallest of a full min-heap with ``value`` (larger than it) and restore the heap."""
    size = heap.shape[0]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and heap[child + 1] < heap[child]:
            child += 1
        if heap[child] >= value:
            break
        heap[i] = heap[child]
        i = child
    heap[i] = value


@numba.njit(cache=True, nogil=True)
def _heap_push(heap: NDArray[np.float32], size: int, value: np.float32) -> None:
    """Add ``value`` to the min-heap held in ``heap[:size]``."""
    i = size
    while i > 0:
        parent = (i - 1) // 2
        if heap[parent] <= value:
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = value


@numba.njit(cache=True, nogil=True)
def top_positions(values: NDArray[np.floating], n: int) -> NDArray[np.int64]:
    """Positions of the n largest values, best first, ties to the lower position, exactly.

    One pass with a heap of the n best so far (its root the worst of them: the lowest value, the
    higher position among equals), then an insertion sort of those n. numpy's argpartition gives
    the same set except when values tie at the n-th place, where it picks any of them; here the
    lower positions win, so a list's ties always resolve the same way.
    """
    n = min(n, values.shape[0])
    heap_values = np.empty(n, dtype=np.float64)
    heap_positions = np.empty(n, dtype=np.int64)
    size = 0
    for position in range(values.shape[0]):
        value = float(values[position])
        if size < n:  # sift up: a parent is worse than (or as bad as) its children
            i = size
            size += 1
            while i > 0:
                parent = (i - 1) // 2
                if heap_values[parent] < value or (
                    heap_values[parent] == value and heap_positions[parent] > position
                ):
                    break
                heap_values[i] = heap_values[parent]
                heap_positions[i] = heap_positions[parent]
                i = parent
            heap_values[i] = value
            heap_positions[i] = position
        elif n > 0 and value > heap_values[0]:  # a later position only beats the root with more
            i = 0
            while True:
                child = 2 * i + 1
                if child >= n:
                    break
                right = child + 1
                if right < n and (
                    heap_values[right] < heap_values[child]
                    or (
                        heap_values[right] == heap_values[child]
                        and heap_positions[right] > heap_positions[child]
                    )
                ):
                    child = right
                if heap_values[child] > value or (
                    heap_values[child] == value and heap_positions[child] < position
                ):
                    break
                heap_values[i] = heap_values[child]
                heap_positions[i] = heap_positions[child]
                i = child
            heap_values[i] = value
            heap_positions[i] = position
    # best first: higher value, then lower position
    for i in range(1, size):
        value, position = heap_values[i], heap_positions[i]
        j = i - 1
        while j >= 0 and (
            heap_values[j] < value or (heap_values[j] == value and heap_positions[j] > position)
        ):
            heap_values[j + 1] = heap_values[j]
            heap_positions[j + 1] = heap_positions[j]
            j -= 1
        heap_values[j + 1] = value
        heap_positions[j + 1] = position
    return heap_positions[:size].copy()


@numba.njit(cache=True, nogil=True, fastmath=_FLAGS)
def search_top_many(
    vectors: NDArray[np.float32],
    order: NDArray[np.int64],
    offsets: NDArray[np.int64],
    centroids: NDArray[np.float32],
    max_norm: NDArray[np.float64],
    radius: NDArray[np.float64],
    norms: NDArray[np.float64],
    queries: NDArray[np.float32],
    k: int,
    allowed: NDArray[np.bool_],
    use_allowed: bool,
    blocked_indptr: NDArray[np.int64],
    blocked_items: NDArray[np.int64],
    blocked: NDArray[np.bool_],
    cap: int,
    first_items: int,
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.int64], NDArray[np.bool_], int]:
    """The k best allowed items of each query (row r of ``queries``), best first, ties to the earlier
    candidate: exactly the items and scores ``search_lists`` ranks first for that query with
    ``allowed`` minus row r's blocked items (``blocked_items[blocked_indptr[r]:blocked_indptr[r + 1]]``,
    catalog indices), in one call for a batch.

    Why a batch kernel: a page's list needs only its top k, and per query the Python around the
    search (a catalog-sized mask copied per customer for their purchases and exclusions, the call's
    argument checks, the candidates' arrays) cost as much as the search. Here the blocked items are
    marked in ``blocked`` (a catalog-sized scratch mask, all False on entry and on return: the
    caller keeps one per thread) for their row alone, and items that cannot reach the k-th best so
    far are not scored (``norms``: each item's vector length in index order; see ``search_lists``).

    Returns per row the top items and scores (padded with -1 and 0), how many were found (fewer
    than k when fewer items are allowed in the probed lists) and whether every candidate scored was
    finite (a NaN or infinite score anywhere makes a list's ranking meaningless; the caller falls
    back to the exact path then); and -1, or what is wrong with the blocked items (nothing is
    searched then: the mask is written without bounds checks): the position of the first one
    outside the catalog, or -2 when ``blocked_indptr`` does not delimit ``blocked_items``.
    """
    rows = queries.shape[0]
    top_items = np.full((rows, k), -1, dtype=np.int64)
    top_scores = np.zeros((rows, k), dtype=np.float32)
    found = np.zeros(rows, dtype=np.int64)
    finite = np.ones(rows, dtype=np.bool_)
    n_items = blocked.shape[0]
    if blocked_indptr[0] != 0 or blocked_indptr[rows] != blocked_items.shape[0]:
        return top_items, top_scores, found, finite, -2
    for r in range(rows):
        if blocked_indptr[r + 1] < blocked_indptr[r]:
            return top_items, top_scores, found, finite, -2
    for t in range(blocked_items.shape[0]):
        if blocked_items[t] < 0 or blocked_items[t] >= n_items:
            return top_items, top_scores, found, finite, t
    for r in range(rows):
        for t in range(blocked_indptr[r], blocked_indptr[r + 1]):
            blocked[blocked_items[t]] = True
        items, scores, _, best = search_lists(
            vectors,
            order,
            offsets,
            centroids,
            max_norm,
            radius,
            norms,
            queries[r],
            k,
            allowed,
            use_allowed,
            blocked,
            True,
            cap,
            first_items,
        )
        for t in range(blocked_indptr[r], blocked_indptr[r + 1]):
            blocked[blocked_items[t]] = False
        found[r] = best.shape[0]
        for i in range(best.shape[0]):
            top_items[r, i] = items[best[i]]
            top_scores[r, i] = scores[best[i]]
        for i in range(scores.shape[0]):
            if not np.isfinite(scores[i]):
                finite[r] = False
                break
    return top_items, top_scores, found, finite, -1


@numba.njit(cache=True, nogil=True, fastmath=_FLAGS)
def search_lists(
    vectors: NDArray[np.float32],
    order: NDArray[np.int64],
    offsets: NDArray[np.int64],
    centroids: NDArray[np.float32],
    max_norm: NDArray[np.float64],
    radius: NDArray[np.float64],
    norms: NDArray[np.float64],
    query: NDArray[np.float32],
    k: int,
    allowed: NDArray[np.bool_],
    use_allowed: bool,
    blocked: NDArray[np.bool_],
    use_blocked: bool,
    cap: int,
    first_items: int,
) -> tuple[NDArray[np.int64], NDArray[np.float32], bool, NDArray[np.int64]]:
    """Every allowed item of the probed lists (catalog indices) with its score, whether the stopping
    bound certified the top k (see the module docstring), and the positions of the k best among
    them, best first, ties to the earlier candidate (``top_positions``).

    Two options serve callers that want only the top k (``search_top_many``); ``norms`` empty and
    ``use_blocked`` False leave them off. ``use_blocked``: items marked in ``blocked`` are treated as
    not allowed. ``norms`` (non-empty):
    once k candidates are held, an item whose score cannot reach the k-th best so far (its vector
    length times the query's, widened like the list bounds) is not scored and not returned. Such an
    item scores below every one of the k best, so the top k and their order are those of the full
    candidate set, and the stopping rule, which reads only the k-th best, stops where it would have;
    an item of non-finite length is always scored (its comparison is false).
    """
    n_lists = centroids.shape[0]
    d = query.shape[0]
    bounds = bounds_of(centroids, max_norm, radius, query)
    cut = norms.shape[0] > 0
    length = 0.0
    if cut:
        for j in range(d):
            length += float(query[j]) * float(query[j])
        length = math.sqrt(length)
    ranked = np.argsort(-bounds, kind="mergesort")  # stable: ties keep list order, as in numpy
    reach = np.empty(n_lists, dtype=np.int64)
    total = 0
    for i in range(n_lists):
        total += offsets[ranked[i] + 1] - offsets[ranked[i]]
        reach[i] = total
    target = min(cap, int(np.searchsorted(reach, first_items)) + 1)
    items = np.empty(max(first_items, 16), dtype=np.int64)
    scores = np.empty(items.shape[0], dtype=np.float32)
    heap = np.empty(k, dtype=np.float32)  # the k best scores so far, smallest first
    count = 0
    probed = 0
    while True:
        needed_items = count + (reach[target - 1] - (reach[probed - 1] if probed > 0 else 0))
        if needed_items > items.shape[0]:
            capacity = max(needed_items, 2 * items.shape[0])
            grown_items = np.empty(capacity, dtype=np.int64)
            grown_scores = np.empty(capacity, dtype=np.float32)
            grown_items[:count] = items[:count]
            grown_scores[:count] = scores[:count]
            items, scores = grown_items, grown_scores
        for r in range(probed, target):
            lst = ranked[r]
            for position in range(offsets[lst], offsets[lst + 1]):
                item = order[position]
                if use_allowed and not allowed[item]:
                    continue
                if use_blocked and blocked[item]:
                    continue
                if cut and count >= k:
                    reach_bound = length * norms[position]
                    if reach_bound + BOUND_SLACK * reach_bound + BOUND_SLACK < heap[0]:
                        continue
                value = np.float32(0.0)
                for j in range(d):
                    value += vectors[position, j] * query[j]
                items[count] = item
                scores[count] = value
                if count < k:
                    _heap_push(heap, count, value)
                elif value > heap[0]:
                    _heap_replace_min(heap, value)
                count += 1
        probed = target
        if probed >= n_lists:
            certified = True
            break
        if count >= k:
            kth = float(heap[0])
            # Lists whose bound reaches kth may hold an item that beats or ties it.
            needed = 0
            while needed < n_lists and bounds[ranked[needed]] >= kth:
                needed += 1
            if needed <= probed:
                certified = True
                break
        else:
            needed = int(np.searchsorted(reach, 2 * reach[probed - 1])) + 1
        if probed >= cap:
            certified = False
            break
        target = min(cap, max(needed, probed + 1), n_lists)
    found_scores = scores[:count].copy()
    return items[:count].copy(), found_scores, certified, top_positions(found_scores, k)
