"""Implicit-feedback ALS whose penalty grows with each vector's interactions (ALS-WR): MLlib's objective.

implicit penalises every customer and item vector by the same ``regularization``; Spark MLlib's ALS
penalises each by ``regParam`` times its number of interactions and weighs an observed pair
``1 + alpha * r`` where implicit weighs it ``alpha * r``. No single ``regParam`` makes the two agree
for customers and items of every activity, so an ``als`` model trained on Spark was a different model
from the local one (NDCG@10 from 6% below to 32% above on generated shops). ``InteractionWeightedALS``
fits MLlib's objective on one machine, with implicit's conjugate-gradient steps, so that
``[models.als] penalty = "per_interaction"`` names the same model on both engines: locally this
solver, on Spark MLlib with ``regParam = regularization`` (``training.spark.als``).

implicit has no per-vector penalty (its solvers take one number), hence a compiled solver of our own;
it follows ``implicit.cpu._als.least_squares_cg`` step for step, the penalty aside.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numba
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

CG_STEPS = 3  # implicit's default: a few steps per half-iteration, warm-started from the last factors


@dataclass
class InteractionWeightedALS:
    """The estimator ``ImplicitALSModel`` fits with ``penalty = "per_interaction"`` (implicit's surface:
    ``fit(user_items)`` then ``user_factors`` and ``item_factors``).

    Minimises sum over all pairs of c_ui (p_ui - x_u . y_i)^2 + regularization x (sum_u n_u |x_u|^2 +
    sum_i n_i |y_i|^2), with c_ui = 1 + alpha x r_ui and p_ui = 1 where r_ui > 0 (c = 1, p = 0
    elsewhere), n the number of interactions: MLlib's implicit ALS.
    """

    factors: int
    regularization: float
    alpha: float
    iterations: int
    num_threads: int = 0
    random_state: int = 42
    cg_steps: int = CG_STEPS
    user_factors: NDArray[np.float32] | None = field(default=None, init=False)
    item_factors: NDArray[np.float32] | None = field(default=None, init=False)

    def fit(self, user_items: sp.csr_matrix, show_progress: bool = False) -> None:
        """``show_progress`` is accepted for implicit's signature; the fit draws nothing."""
        del show_progress
        rng = np.random.default_rng(self.random_state)
        by_user = sp.csr_matrix(user_items, dtype=np.float32)
        by_user.data = np.float32(1.0) + np.float32(self.alpha) * by_user.data
        threads = max(1, self.num_threads)
        users, items = _Side.of(by_user, threads), _Side.of(by_user.T.tocsr(), threads)
        # implicit's start: small uniform factors, so the first steps are driven by the data
        x = rng.random((by_user.shape[0], self.factors), dtype=np.float32) * np.float32(0.01)
        y = rng.random((by_user.shape[1], self.factors), dtype=np.float32) * np.float32(0.01)
        with ThreadPoolExecutor(threads, thread_name_prefix="als") as pool:
            for _ in range(self.iterations):
                users.solve(pool, x, y, self.regularization, self.cg_steps)
                items.solve(pool, y, x, self.regularization, self.cg_steps)
        self.user_factors, self.item_factors = x, y


@dataclass(frozen=True)
class _Side:
    """One side's confidences (rows: the vectors solved for) in the compiled step's index types, and
    its rows cut into ranges of about equal interactions, one per thread; built once per fit."""

    indptr: NDArray[np.int64]
    indices: NDArray[np.int64]
    confidence: NDArray[np.float32]
    ranges: list[tuple[int, int]]

    @classmethod
    def of(cls, confidence: sp.csr_matrix, threads: int) -> _Side:
        indptr = confidence.indptr.astype(np.int64)
        cuts = np.searchsorted(indptr, np.linspace(0, indptr[-1], threads + 1)[1:-1])
        bounds = [0, *cuts.tolist(), confidence.shape[0]]
        ranges = [(a, b) for a, b in itertools.pairwise(bounds) if b > a]
        return cls(indptr, confidence.indices.astype(np.int64), confidence.data, ranges)

    def solve(
        self,
        pool: ThreadPoolExecutor,
        solved: NDArray[np.float32],
        fixed: NDArray[np.float32],
        regularization: float,
        steps: int,
    ) -> None:
        """A half-iteration: every row's CG steps, the ranges on the pool's threads (the compiled step
        leaves the GIL; numba's own parallel loops are avoided, since their default threading layer
        must not be entered from two Python threads at once)."""
        wide = fixed.astype(np.float64)  # the Gram matrix summed in float64, from one copy
        gram = (wide.T @ wide).astype(np.float32)
        penalty = np.float32(regularization)

        def solve_range(rows: tuple[int, int]) -> None:
            _conjugate_gradient_rows(
                self.indptr, self.indices, self.confidence, solved, fixed, gram, penalty, steps, *rows
            )

        list(pool.map(solve_range, self.ranges))


@numba.njit(nogil=True, cache=True)
def _conjugate_gradient_rows(
    indptr: NDArray[np.int64],
    indices: NDArray[np.int64],
    confidence: NDArray[np.float32],
    solved: NDArray[np.float32],
    fixed: NDArray[np.float32],
    gram: NDArray[np.float32],
    regularization: np.float32,
    steps: int,
    first: int,
    last: int,
) -> None:  # pragma: no cover - compiled; tested through InteractionWeightedALS
    """A few CG steps per row of ``first:last`` towards (G + sum_i (c_i - 1) y_i y_i' + lambda_row I) x
    = sum_i c_i y_i, G the fixed side's Gram matrix and lambda_row the penalty times the row's
    interactions: implicit's ``least_squares_cg`` with a per-row penalty."""
    one = np.float32(1.0)
    for row in range(first, last):
        start, stop = indptr[row], indptr[row + 1]
        if start == stop:
            # No interactions, so no penalty either: the row's system is the Gram matrix alone, singular
            # whenever the other side has fewer rows than factors, and its least-norm solution is 0 (a CG
            # on it diverged to NaN with two training customers). An item nobody touched scores 0.
            solved[row] = 0.0
            continue
        penalty = np.float32(regularization * (stop - start))
        x = solved[row].copy()
        residual = -(gram @ x) - penalty * x
        for at in range(start, stop):
            item = fixed[indices[at]]
            c = confidence[at]
            residual += (c - (c - one) * np.dot(item, x)) * item
        direction = residual.copy()
        old = np.dot(residual, residual)
        for _ in range(steps):
            if old < 1e-20:
                break
            product = gram @ direction + penalty * direction
            for at in range(start, stop):
                item = fixed[indices[at]]
                product += (confidence[at] - one) * np.dot(item, direction) * item
            curvature = np.dot(direction, product)
            if curvature <= 0:  # rounding on a near-singular system: stop where the row is
                break
            step = old / curvature
            x += step * direction
            residual -= step * product
            new = np.dot(residual, residual)
            direction = residual + (new / old) * direction
            old = new
        solved[row] = x
