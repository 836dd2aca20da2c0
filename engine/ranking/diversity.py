"""Trading relevance for variety in a product list: maximal marginal relevance (MMR) re-ranking.

A list of ten near-identical phones is relevant and useless. MMR builds the list greedily from a
candidate pool larger than the list, each step taking the candidate with the best

    (1 - diversity) * relevance(i) - diversity * max_{j already in the list} similarity(i, j)

where relevance is the model score rescaled to [0, 1] over the pool, and two items are similar when
they share a category (0.5) and when the same persona favours them most (0.5), so a higher diversity
spreads the list over categories *and* over the personas of the customer's mix. At diversity 0 the
formula is relevance alone and the list is exactly the top of the pool, in score order; ties keep
the pool's order, so the result is deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

CATEGORY_WEIGHT = 0.5
PERSONA_WEIGHT = 0.5


@dataclass(frozen=True)
class DiversitySpace:
    """What "similar" means between items: per item its category code and its favouring persona."""

    category: NDArray[np.int64]
    persona: NDArray[np.int64]

    def __post_init__(self) -> None:
        if self.category.shape != self.persona.shape or self.category.ndim != 1:
            raise ValueError(
                f"DiversitySpace needs one category and one persona per item, "
                f"got shapes {self.category.shape} and {self.persona.shape}"
            )

    def similarity_to(self, items: NDArray[np.int64], other: int) -> NDArray[np.float64]:
        """Similarity in [0, 1] of each of ``items`` to item ``other``."""
        return CATEGORY_WEIGHT * (self.category[items] == self.category[other]) + PERSONA_WEIGHT * (
            self.persona[items] == self.persona[other]
        )


def pool_size(n: int, diversity: float, n_available: int) -> int:
    """Candidates to re-rank for an n-item list: the list itself at 0, four times it otherwise."""
    return min(n_available, n if diversity <= 0 else max(4 * n, n + 20))


def diversify(
    pool: NDArray[np.int64],
    relevance: NDArray[np.floating],
    n: int,
    diversity: float,
    space: DiversitySpace,
    already_listed: NDArray[np.int64] | None = None,
) -> NDArray[np.int64]:
    """Up to n items of ``pool`` (best first by ``relevance``) in MMR order.

    ``already_listed`` are items placed in the list by other means (pins, promotions); new items are
    compared with them too, so a promoted phone makes another phone less attractive.
    """
    if not (math.isfinite(diversity) and 0.0 <= diversity <= 1.0):
        raise ValueError(f"diversity must be in [0, 1], got {diversity}")
    if pool.shape != np.shape(relevance):
        raise ValueError(f"pool {pool.shape} and relevance {np.shape(relevance)} must align")
    take = min(n, len(pool))
    if diversity == 0.0 or take == 0:
        return pool[:take].copy()
    values = np.asarray(relevance, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    closest = np.zeros(len(pool))
    for item in already_listed if already_listed is not None else ():
        np.maximum(closest, space.similarity_to(pool, int(item)), out=closest)
    open_ = np.ones(len(pool), dtype=bool)
    chosen: list[int] = []
    for _ in range(take):
        objective = np.where(open_, (1.0 - diversity) * scaled - diversity * closest, -np.inf)
        best = int(np.argmax(objective))
        chosen.append(best)
        open_[best] = False
        np.maximum(closest, space.similarity_to(pool, int(pool[best])), out=closest)
    return pool[np.asarray(chosen, dtype=np.int64)]
