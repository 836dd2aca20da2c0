"""Which personas of a customer's mix an item is recommended for: per-persona shares of its score.

Model scores of a mix are not a sum of per-persona parts for every model (a LightFM customer is a
normalised feature sum, ALS blends persona vectors into a customer vector), so shares are defined on
the one thing every model can do: score a pure persona. For persona k and item i let

    z_k(i) = (s_k(i) - mean_j s_k(j)) / std_j s_k(j)

be the serving model's score of item i for the pure persona k, standardised over the catalog (how
unusually strongly persona k alone favours the item, on a scale that compares across personas and
models). For a mix w the share of persona k in item i is

    share_k(i) = w_k * exp(z_k(i)) / sum_j w_j * exp(z_j(i))

i.e. the mix weight times how strongly the persona favours the item, normalised over personas: a
persona with weight 0 gets share 0, a pure mix gives its persona share 1, and between two personas of
equal weight one standard deviation of preference is a factor e. The pure-persona scores are computed
once at load, so an explanation is a gather and a softmax per listed item.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from engine.models.base import Recommender, UserBatch

_FLAT = 1e-9  # relative spread below which a persona's scores count as constant


class PersonaAffinity:
    """Standardised pure-persona scores z (personas, items) of one model."""

    def __init__(self, persona_scores: NDArray[np.floating]) -> None:
        scores = np.asarray(persona_scores, dtype=np.float64)
        if scores.ndim != 2:
            raise ValueError(f"persona scores must be (personas, items), got shape {scores.shape}")
        if not np.all(np.isfinite(scores)):
            raise ValueError("persona scores must be finite to standardise them")
        spread = scores.std(axis=1, keepdims=True)
        centred = scores - scores.mean(axis=1, keepdims=True)
        # A persona scoring every item alike favours none; rounding must not turn that into huge z.
        flat = spread <= _FLAT * np.abs(scores).max(axis=1, keepdims=True)
        self.z = np.divide(centred, spread, out=np.zeros_like(centred), where=~flat)

    @classmethod
    def of_model(cls, model: Recommender, n_personas: int, n_demographic_features: int) -> PersonaAffinity:
        batch = UserBatch.for_personas(n_personas, n_demographic_features)
        return cls(model.score(batch))

    @property
    def n_personas(self) -> int:
        return int(self.z.shape[0])

    def favourite_persona(self) -> NDArray[np.int64]:
        """(items,) the persona that favours each item most, ties to the earliest persona."""
        return np.argmax(self.z, axis=0).astype(np.int64)

    def shares(self, mix: NDArray[np.floating], items: NDArray[np.integer]) -> NDArray[np.float64]:
        """(len(items), personas): each persona's share of each item's score under ``mix``; rows sum to 1."""
        weights = np.asarray(mix, dtype=np.float64)
        if weights.shape != (self.n_personas,) or (weights < 0).any() or not weights.sum() > 0:
            raise ValueError(
                f"mix must be {self.n_personas} non-negative weights, not all zero, got {weights}"
            )
        with np.errstate(divide="ignore"):
            logits = np.log(weights)[None, :] + self.z[:, np.asarray(items, dtype=np.int64)].T
        logits -= logits.max(axis=1, keepdims=True)
        odds = np.exp(logits)
        return np.asarray(odds / odds.sum(axis=1, keepdims=True), dtype=np.float64)
