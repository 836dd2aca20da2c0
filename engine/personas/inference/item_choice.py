"""How a persona picks items: the population's item choice tilted towards its categories, prices and tags.

The item facts are modelled jointly rather than as independent features because they are correlated
through the catalog (premium items are the expensive ones): counted independently they were double
evidence, and on the synthetic shop the latent classes drifted into price-level clusters (mean TV to
the planted mixes 0.36 instead of 0.21).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.personas.traits import EventFeatures

_NEWTON_STEPS = 2  # per EM iteration; warm-started, so a few suffice for the smooth item-choice fit


@dataclass(frozen=True)
class ItemChoice:
    """The item-choice part of the model over item signatures (distinct item-level feature rows).

    Items with identical category, price level and tags are indistinguishable to the model, so they
    are pooled: ``features`` is (signatures x item-level columns), ``base`` the population's share of
    events per signature, and personas choose a signature with probability proportional to
    base(s) exp(tilt . features(s)). Pooling keeps the fit's cost independent of the catalog size.
    """

    features: NDArray[np.float64]
    base: NDArray[np.float64]
    signature_of: NDArray[np.int64]  # per item of the event features' item map

    @classmethod
    def build(cls, events: EventFeatures) -> ItemChoice:
        item_columns = events.space.item_columns
        dense = np.asarray(events.item_matrix[:, item_columns].toarray() > 0)
        packed = np.packbits(dense, axis=1)
        _, first, signature_of = np.unique(packed, axis=0, return_index=True, return_inverse=True)
        counts = np.bincount(events.item_index, weights=events.weight, minlength=len(events.item_ids))
        base = np.bincount(signature_of.ravel(), weights=counts + 0.1, minlength=first.size)
        features = dense[first].astype(np.float64)
        return cls(features, base / base.sum(), signature_of.ravel().astype(np.int64))

    @property
    def n_signatures(self) -> int:
        return int(self.features.shape[0])

    def _choice_probabilities(
        self, tilts: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Per persona, P(signature) (signatures x personas) and log Z (personas,)."""
        scores = self.features @ tilts
        top = scores.max(axis=0)
        unnormalised = self.base[:, None] * np.exp(scores - top)
        totals = unnormalised.sum(axis=0)
        return unnormalised / totals, np.log(totals) + top

    def log_normalisers(self, tilts: NDArray[np.float64]) -> NDArray[np.float64]:
        return self._choice_probabilities(tilts)[1]

    def feature_shares(self, tilts: NDArray[np.float64]) -> NDArray[np.float64]:
        """Share of each persona's item choices showing each item-level value."""
        return np.asarray(self.features.T @ self._choice_probabilities(tilts)[0])

    def fit_tilts(
        self,
        signature_counts: NDArray[np.float64],
        tilts: NDArray[np.float64],
        seed_tilts: NDArray[np.float64],
        strength: float,
    ) -> NDArray[np.float64]:
        """MAP tilts for responsibility-weighted (signatures x personas) counts, Gaussian prior at the seed.

        Newton steps on a concave objective (log-linear choice likelihood minus a quadratic penalty);
        the penalty also pins the directions a categorical group leaves free (adding a constant to
        every category's tilt changes nothing).
        """
        observed = self.features.T @ signature_counts
        totals = signature_counts.sum(axis=0)
        tilts = tilts.copy()
        n_columns, k = tilts.shape
        identity = np.eye(n_columns)
        for _ in range(_NEWTON_STEPS):
            choice, _ = self._choice_probabilities(tilts)
            expected = self.features.T @ choice
            # per persona sum_s choice[s, k] f(s) f(s)': one sparse product for all personas
            second = np.asarray(self.column_pairs @ choice).T.reshape(k, n_columns, n_columns)
            covariance = second - expected.T[:, :, None] * expected.T[:, None, :]
            gradient = observed - totals * expected - strength * (tilts - seed_tilts)
            hessian = totals[:, None, None] * covariance + strength * identity
            tilts += np.linalg.solve(hessian, gradient.T[:, :, None])[:, :, 0].T
        return tilts

    @cached_property
    def column_pairs(self) -> sp.csr_matrix:
        """(columns^2 x signatures) 0/1: entry (i * columns + j, s) is 1 when signature s has i and j.

        The features are 0/1 with a few values per signature, so the second moments the Newton step
        needs are a sparse product with this, not one dense (signatures x columns^2) product per persona.
        """
        n_signatures, n_columns = self.features.shape
        signature, column = np.nonzero(self.features)
        per_signature = np.bincount(signature, minlength=n_signatures)
        first = np.concatenate([[0], np.cumsum(per_signature)])
        partners = per_signature[signature]
        left = np.repeat(np.arange(column.size), partners)
        offset = np.arange(left.size) - np.repeat(np.cumsum(partners) - partners, partners)
        right = first[signature[left]] + offset
        return sp.csr_matrix(
            (np.ones(left.size), (column[left] * n_columns + column[right], signature[left])),
            shape=(n_columns * n_columns, n_signatures),
        )
