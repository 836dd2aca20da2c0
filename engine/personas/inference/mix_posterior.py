"""Variational Bayes for customers' mixes under a ``MixPrior``: the posterior a fold-in ends with.

Mixes are posterior means under the mixture-of-Dirichlets prior rather than point estimates, which
shrinks customers with three events towards the personas' typical shapes rather than towards one
average shopper. The coordinate-ascent step itself is compiled per customer (``e_step.customer_step``,
formulas there); the EM fit runs one step per iteration, fold-in repeats steps until mixes settle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class MixPosterior:
    """Variational posterior of groups' mixes (customers) under a MixPrior, one Dirichlet per component.

    gamma:        (components x personas x groups) variational Dirichlet parameters.
    component:    (components x groups) posterior probability of each component.
    log_evidence: (groups,) the variational bound on log p(events | prior), events' scales excluded.
    """

    gamma: NDArray[np.float64]
    component: NDArray[np.float64]
    log_evidence: NDArray[np.float64]

    @property
    def mean(self) -> NDArray[np.float64]:
        """(groups x personas) posterior mean mixes."""
        means = self.gamma / self.gamma.sum(axis=1, keepdims=True)
        return np.ascontiguousarray(np.einsum("cn,ckn->nk", self.component, means), dtype=np.float64)
