"""A linear item-item autoencoder in closed form, served as factors: the engine's model for small catalogues.

Steck (2020), "Autoencoders that don't overfit towards the identity" (NeurIPS): a customer's scores are
``x B``, their binary interaction row times an items x items matrix fitted in closed form. Training
with dropout ``p`` on the input has the same optimum as the ridge penalty
``Λ = p / (1 - p) diag(G) + λ I`` (``G = XᵀX``): a popular item is penalised more, which is what keeps
the model from learning the identity. Two forms:

- DLAE (default): ``B = (G + Λ)⁻¹ G``;
- with ``zero_diagonal``, EDLAE: an item may not predict itself, ``B = I - P diag(1 / diag P)`` with
  ``P = (G + Λ)⁻¹`` (EASE, Steck 2019, when ``p = 0``).

Why it is here: it learns from co-occurrence, where ALS learns a low-rank taste, so the two err on
different customers. On MovieLens 100K (ua, the ``compare`` harness, search seed 0) DLAE alone scored
0.3172 NDCG@10 against tuned implicit ALS's 0.3168 (a tie), and blends of the two with a third
model scored up to +0.0047 [+0.0008, +0.0087] above that ALS (scratch runs, 2026-12-07, README).

Served as factors. With ``D = Λ^½`` and ``D⁻¹ G D⁻¹ = Q diag(e) Qᵀ`` (one symmetric eigen-
decomposition), ``B = D⁻¹ Q diag(e / (1 + e)) Qᵀ D``, and EDLAE's scores on items a customer has not
touched are ``x D⁻¹ Q diag(e / (1 + e)) Qᵀ D⁻¹ diag(1 / diag P)`` (the identity and ``D⁻²`` terms only
score their own items, which are never recommended). Keeping the ``factors`` largest ``e`` gives a
customer vector ``x D⁻¹ Q_r diag(e_r / (1 + e_r))`` and an item vector ``D Q_r`` (DLAE) or
``diag(1 / diag P) D⁻¹ Q_r`` (EDLAE): exact when ``factors`` >= the number of items. So the persona
blend and prior, the candidate index and serving are those of the other factor models, and a customer
outside the fit is placed exactly by their events (the same product), with no fold-in solve.

The cost is the dense items x items matrix: memory ``8 n_items²`` bytes and a cubic eigen-
decomposition, so fitting is refused above ``MAX_ITEMS`` items (ALS is the model for those). Its user
vectors hold ``4 n_users * factors`` bytes: lower ``factors`` for a large customer base.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from engine.models.base import ModelFitError, TrainingSet
from engine.models.fitted_shape import FittedShape, expect_array, require_finite
from engine.models.implicit_factors import ImplicitFactorsModel

# 10,000 items: an 800 MB Gram matrix and an eigendecomposition of minutes on two cores.
MAX_ITEMS: Final = 10_000


@dataclass(frozen=True)
class _ClosedForm:
    """The fit's factors, in the shape ``ImplicitFactorsModel._adopt`` reads from an implicit estimator."""

    user_factors: NDArray[np.float32]
    item_factors: NDArray[np.float32]
    query_projection: NDArray[np.float32]  # (n_items, rank): a customer's vector is their row times this


def closed_form_factors(
    seen: sp.csr_matrix, dropout: float, regularization: float, zero_diagonal: bool, rank: int
) -> _ClosedForm:
    """The rank-``rank`` factors of the autoencoder fitted on ``seen``, the binary (0/1) interactions
    (module docstring)."""
    gram = np.asarray((seen.T @ seen).toarray())
    penalty = dropout / (1.0 - dropout) * np.diag(gram) + regularization
    scale = np.sqrt(penalty)
    whitened = gram / scale[:, None] / scale[None, :]
    n_items = gram.shape[0]
    eigenvalues, eigenvectors = np.linalg.eigh(whitened)  # ascending
    eigenvalues = np.maximum(eigenvalues, 0.0)  # rounding can leave a PSD matrix's zeros at -1e-15
    kept = slice(n_items - rank, n_items)
    shrink = eigenvalues[kept] / (1.0 + eigenvalues[kept])
    basis = eigenvectors[:, kept]
    projection = basis / scale[:, None] * shrink[None, :]
    if zero_diagonal:
        # diag P = diag(D⁻¹ Q diag(1 / (1 + e)) Qᵀ D⁻¹), over every eigenpair, not only the kept ones
        inverse_diagonal = (eigenvectors**2 @ (1.0 / (1.0 + eigenvalues))) / penalty
        item_factors = basis / scale[:, None] / inverse_diagonal[:, None]
    else:
        item_factors = basis * scale[:, None]
    user_factors = np.asarray(seen @ projection)
    return _ClosedForm(
        user_factors=user_factors.astype(np.float32),
        item_factors=item_factors.astype(np.float32),
        query_projection=projection.astype(np.float32),
    )


class LinearAutoencoderModel(ImplicitFactorsModel):
    """DLAE / EDLAE (Steck 2020) in closed form, served as factors (module docstring).

    ``dropout`` is the input dropout the penalty stands for (0 <= p < 1; 0 with ``zero_diagonal`` is
    EASE), ``regularization`` the constant part of the penalty (> 0, so that an item nobody touched
    still has one), ``factors`` the rank served (the whole model when >= the number of items).
    ``num_threads`` is the BLAS threads of the eigendecomposition. The persona settings are the other
    factor models' (``ImplicitFactorsModel``).
    """

    kind = "linear_autoencoder"
    folds_in_events = True

    def __init__(
        self,
        factors: int = 1024,
        dropout: float = 0.5,
        regularization: float = 100.0,
        zero_diagonal: bool = False,
        persona_blend: float = 0.3,
        demographic_weight: float = 0.3,
        num_threads: int = 2,
        activity_levels: int = 3,
        blend_weights: list[float] | None = None,
        prior_weights: list[float] | None = None,
        prior_half_life_days: float | None = None,
        prior_scope: str = "personas",
    ) -> None:
        if not np.isfinite(regularization) or regularization <= 0:
            raise ValueError(
                f"regularization must be a positive number (an item nobody touched needs a penalty), "
                f"got {regularization}"
            )
        if not (np.isfinite(dropout) and 0.0 <= dropout < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        super().__init__(
            factors,
            regularization,
            1,  # no iterations: closed form
            persona_blend,
            demographic_weight,
            num_threads,
            0,  # no randomness
            activity_levels,
            blend_weights,
            prior_weights,
            prior_half_life_days,
            prior_scope,
        )
        self.dropout = float(dropout)
        self.zero_diagonal = bool(zero_diagonal)
        self._rank: int | None = None

    def get_config(self) -> dict[str, Any]:
        unused = ("iterations", "random_state")  # closed form: neither applies
        config = {name: value for name, value in self._blend_config().items() if name not in unused}
        return {**config, "dropout": self.dropout, "zero_diagonal": self.zero_diagonal}

    @property
    def factor_width(self) -> int:
        if self._rank is None:
            raise ModelFitError(f"{self.kind} model: the rank is known once the model is fitted or loaded")
        return self._rank

    def _estimator_factory(self) -> Callable[[], Any]:
        raise NotImplementedError("the closed form needs no estimator; see _train")

    def _training_matrix(self, data: TrainingSet) -> sp.csr_matrix:
        return sp.csr_matrix(data.interactions > 0, dtype=np.float64)

    def _train(self, data: TrainingSet, show_progress: bool) -> _ClosedForm:
        n_items = data.n_items
        if n_items > MAX_ITEMS:
            raise ModelFitError(
                f"{self.kind} model: {n_items:,} items; the closed form needs an items x items matrix, "
                f"fitted here for at most {MAX_ITEMS:,} items: use als for this catalogue"
            )
        self._rank = min(self.factors, n_items)
        started = time.perf_counter()
        with threadpool_limits(self.num_threads or None, "blas"):
            fitted = closed_form_factors(
                self._training_matrix(data), self.dropout, self.regularization, self.zero_diagonal, self._rank
            )
        self.library_fit_seconds = time.perf_counter() - started
        return fitted

    def _adopt(self, estimator: Any, data: TrainingSet, shape: FittedShape) -> None:
        fitted: _ClosedForm = estimator
        super()._adopt(fitted, data, shape)
        require_finite(self.kind, query_projection=fitted.query_projection)
        assert self._state is not None
        self._state["query_projection"] = fitted.query_projection

    def _restore(self, arrays: dict[str, NDArray[Any]]) -> None:
        shape = FittedShape.from_arrays(arrays, self.kind)
        self._rank = min(self.factors, shape.n_items)
        super()._restore(arrays)
        assert self._state is not None
        self._state["query_projection"] = expect_array(
            arrays, "query_projection", (shape.n_items, self._rank), self.kind
        )

    def _folded_in(self, events: sp.csr_matrix, rows: NDArray[np.int64]) -> NDArray[np.float32]:
        """A customer outside the fit: their binary events times the projection, as for a known one."""
        _, state = self._fitted()
        seen = sp.csr_matrix(events[rows] > 0, dtype=np.float32)
        return np.asarray(seen @ state["query_projection"], dtype=np.float32)
