"""A weighted blend of factor models, served as one inner product.

Unlike models err on different customers: ALS learns a low-rank taste, the linear autoencoder item-to-
item co-occurrence, BPR a pairwise ranking. On MovieLens 100K (ua, ``make model-quality``
2026-12-07, search seed 0) the blend of the engine's searched ALS, linear autoencoder and BPR,
weights fitted on the validation split, scored 0.3199 NDCG@10 against tuned implicit ALS's 0.3087
([+0.0057, +0.0170]); the engine's best single model there, the autoencoder, scored 0.3177 in the
same search (README "Model quality").

Each member's scores are put on one scale before they are weighed: divided by their spread over the
catalogue for that customer, ``σ(q) = sqrt(qᵀ M q - (μ·q)²)`` with ``μ`` the mean and ``M`` the second
moment of the member's item vectors (stored at fit, ``d x d``), so the spread costs one matrix-vector
product per customer instead of a pass over the items. The blend's query vector is then the members'
query vectors, each times ``weight / σ``, side by side, and its item vectors the members' side by
side: a customer's blended scores are one inner product (the mean each member's scores would lose in a
z-score is a constant per customer, which no ranking sees). So the candidate index, batching and
serving treat a blend like any factor model. Members must score by inner product (``als``, ``bpr``,
``linear_autoencoder``).

Personas enter once, at the blend: ``prior_weights`` (one per activity level, level 0 a customer the
blend never saw; ``engine.models.persona_prior``) add the persona popularity of the customer's mix to
the blended scores, as the factor models add it to theirs, all-time or weighted by recency
(``prior_half_life_days``; its ablation then keeps the recency prior at the population's scope, as a
factor model's does: ``without_personas``). Members may carry persona settings of
their own, but ``tune`` and ``compare`` blend members without them and fit the blend's prior weights
on validation: on MovieLens 100K the members' own persona terms, each fitted for the member alone,
stacked three times in the blend and cost it (0.3177 against 0.3220 for the same members without
them, ``compare`` seed 0).

A mix given in a request steers a known customer's blended list with or without the prior: every
member, persona settings off or on, trades the customer's persona for the requested one and turns
towards it by ``UserBatch.steering`` (``ImplicitFactorsModel._steered``), and the query vector is
theirs side by side. On the demo shop such a blend without a prior put 0.88 of the top 10 on a
requested pure persona's shelves at the default steering, against 0.38 in the customer's own list
(README "Steering a known customer's list").
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from engine.models.base import ModelFormatError, Recommender, TrainingSet, UserBatch
from engine.models.fitted_shape import FittedShape, ModelNotFittedError, expect_array
from engine.models.implicit_factors import ImplicitFactorsModel, _check_positive_int, _level_weights
from engine.models.persona_prior import (
    ablated_prior,
    activity_level,
    check_prior_settings,
    levels_from_events,
    prior_state,
)

# The kinds a blend may hold: the models that score by inner product.
MEMBER_KINDS: tuple[str, ...] = ("als", "bpr", "linear_autoencoder")
DEFAULT_MEMBERS: tuple[str, ...] = ("als", "linear_autoencoder", "bpr")
# A member whose scores are the same for every item has no spread to divide by: it then adds nothing.
_MIN_SPREAD = 1e-12


def _member_prefix(index: int) -> str:
    return f"member{index}__"


class ModelBlend(Recommender):
    """Members (``[{kind = "als", factors = 64, ...}, ...]``) fitted on the same data, their standardised
    scores weighed by ``weights`` (non-negative, not all 0; one per member), plus the persona prior
    weighed by ``prior_weights`` (``activity_levels`` + 1 values; None: no prior). See the module
    docstring."""

    kind = "blend"
    # Events of customers outside the fit reach every member; those that cannot fold them in ignore them.
    folds_in_events: ClassVar[bool] = True

    def __init__(
        self,
        members: list[dict[str, Any]] | None = None,
        weights: list[float] | None = None,
        activity_levels: int = 3,
        prior_weights: list[float] | None = None,
        prior_half_life_days: float | None = None,
        prior_scope: str = "personas",
    ) -> None:
        from engine.models.registry import create_model  # the registry lists this module: import late

        specs = (
            [dict(member) for member in members]
            if members is not None
            else [{"kind": k} for k in DEFAULT_MEMBERS]
        )
        if not specs:
            raise ValueError("members must name at least one model")
        built: list[ImplicitFactorsModel] = []
        for position, spec in enumerate(specs):
            kind = spec.pop("kind", None)
            if kind not in MEMBER_KINDS:
                raise ValueError(
                    f"members[{position}]: kind {kind!r} cannot be blended; "
                    f"members score by inner product: {', '.join(MEMBER_KINDS)}"
                )
            try:
                model = create_model(kind, **spec)
            except ValueError as error:
                raise ValueError(f"members[{position}] ({kind}): {error}") from None
            assert isinstance(model, ImplicitFactorsModel)
            built.append(model)
        chosen = [1.0] * len(built) if weights is None else [float(w) for w in weights]
        if len(chosen) != len(built):
            raise ValueError(f"weights has {len(chosen)} values for {len(built)} members")
        if not all(math.isfinite(w) and w >= 0 for w in chosen) or sum(chosen) <= 0:
            raise ValueError(f"weights must be non-negative numbers, not all 0, got {chosen}")
        self.members = built
        self.weights = chosen
        self.activity_levels = _check_positive_int("activity_levels", activity_levels)
        self.prior_weights = _level_weights("prior_weights", prior_weights, activity_levels + 1, None)
        self.prior_half_life_days, self.prior_scope = check_prior_settings(prior_half_life_days, prior_scope)
        self._prior: dict[str, NDArray[np.float32]] | None = None  # counts, edges, persona item scores
        self._moments: list[tuple[NDArray[np.float64], NDArray[np.float64]]] | None = None
        self._shape: FittedShape | None = None
        self._item_vectors: NDArray[np.float32] | None = None

    @classmethod
    def without_personas(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Every member without its persona conditioning, the weights unchanged, and the prior as a
        factor model's ablation has it (``persona_prior.ablated_prior``)."""
        from engine.models.registry import model_class

        members = []
        for member in config.get("members") or [{"kind": k} for k in DEFAULT_MEMBERS]:
            settings = {name: value for name, value in member.items() if name != "kind"}
            ablated = model_class(member["kind"]).without_personas(settings)
            members.append({"kind": member["kind"], **(settings if ablated is None else ablated)})
        return {**config, "members": members, **ablated_prior(config)}

    def get_config(self) -> dict[str, Any]:
        return {
            "members": [{"kind": member.kind, **member.get_config()} for member in self.members],
            "weights": list(self.weights),
            "activity_levels": self.activity_levels,
            "prior_weights": self.prior_weights,
            "prior_half_life_days": self.prior_half_life_days,
            "prior_scope": self.prior_scope,
        }

    def fit(self, data: TrainingSet, *, show_progress: bool = False) -> None:
        spent = 0.0
        for member in self.members:
            member.fit(data, show_progress=show_progress)
            spent += member.library_fit_seconds or 0.0
        self.library_fit_seconds = spent
        self._prior = prior_state(
            data,
            self.activity_levels,
            population=self.prior_scope == "population",
            half_life_days=self.prior_half_life_days,
        )
        self._settle()

    def _settle(self, moments: list[tuple[NDArray[np.float64], NDArray[np.float64]]] | None = None) -> None:
        """Each member's item-vector moments (``moments`` when they are known already), and the
        blend's item vectors."""
        parts = [member.item_vectors() for member in self.members]
        if moments is None:
            moments = []
            for items in (np.asarray(part, dtype=np.float64) for part in parts):
                moments.append((items.mean(axis=0), items.T @ items / max(len(items), 1)))
        self._moments = moments
        self._shape = self.members[0]._fitted()[0]  # every member was fitted on the same data
        if self._uses_prior:
            assert self._prior is not None
            parts.append(self._prior["persona_item_scores"])
        self._item_vectors = np.ascontiguousarray(np.hstack(parts), dtype=np.float32)

    @property
    def _uses_prior(self) -> bool:
        return self.prior_weights is not None and any(w != 0.0 for w in self.prior_weights)

    @property
    def persona_item_scores(self) -> NDArray[np.float32]:
        """(n_items, n_personas): the prior's item side (``engine.models.persona_prior``)."""
        self._fitted()
        assert self._prior is not None
        return self._prior["persona_item_scores"]

    def activity_levels_of(self, users: UserBatch) -> NDArray[np.int64]:
        """Per row: 0 for a customer the blend never saw and who brings no events, else 1..levels by
        training interactions (a newcomer's own events count as theirs)."""
        self._fitted()
        assert self._prior is not None
        counts, edges = self._prior["activity_counts"], self._prior["activity_edges"]
        levels = activity_level(users.user_index, counts, edges)
        if users.events is not None:
            events = users.events.tocsr()
            newcomers = np.flatnonzero((np.asarray(users.user_index) < 0) & (np.diff(events.indptr) > 0))
            levels[newcomers] = levels_from_events(events, newcomers, edges)
        return levels

    def _fitted(self) -> tuple[list[tuple[NDArray[np.float64], NDArray[np.float64]]], NDArray[np.float32]]:
        if self._moments is None or self._item_vectors is None:
            raise ModelNotFittedError(f"{self.kind} model is not fitted; call fit or load first")
        return self._moments, self._item_vectors

    def with_weights(self, weights: list[float], prior_weights: list[float] | None = None) -> ModelBlend:
        """The fitted blend with other weights (no refit: the members and the prior are shared), how
        ``training.blend_weights`` tries weights on a validation split."""
        moments, _ = self._fitted()
        twin = ModelBlend(
            members=self.get_config()["members"],
            weights=weights,
            activity_levels=self.activity_levels,
            prior_weights=prior_weights,
            prior_half_life_days=self.prior_half_life_days,
            prior_scope=self.prior_scope,
        )
        twin.members, twin._prior = self.members, self._prior
        twin._settle(moments)
        return twin

    @property
    def n_items(self) -> int:
        return self.members[0].n_items

    def forget_folded_in(self) -> None:
        for member in self.members:
            member.forget_folded_in()

    def item_vectors(self) -> NDArray[np.float32]:
        return self._fitted()[1]

    def query_vectors(self, users: UserBatch) -> NDArray[np.float32]:
        moments, _ = self._fitted()
        assert self._shape is not None
        self._shape.check_batch(users, self.kind)  # named as the blend, before any member looks
        parts = []
        for member, weight, (mean, second) in zip(self.members, self.weights, moments, strict=True):
            queries = np.asarray(member.query_vectors(users), dtype=np.float64)
            # one matrix-vector product per row: a row's spread is the same bits whatever the batch
            variance = np.array([row @ (second @ row) for row in queries]) - (queries @ mean) ** 2
            spread = np.sqrt(np.maximum(variance, _MIN_SPREAD))
            parts.append(queries * (weight / spread)[:, None])
        if self._uses_prior:
            assert self.prior_weights is not None
            prior = np.asarray(self.prior_weights, dtype=np.float64)[self.activity_levels_of(users)]
            parts.append(prior[:, None] * np.asarray(users.mix, dtype=np.float64))
        return np.ascontiguousarray(np.hstack(parts), dtype=np.float32)

    def score(self, users: UserBatch) -> NDArray[np.float32]:
        return np.asarray(self.query_vectors(users) @ self.item_vectors().T, dtype=np.float32)

    def _arrays(self) -> dict[str, NDArray[Any]]:
        self._fitted()
        assert self._prior is not None
        arrays: dict[str, NDArray[Any]] = dict(self._prior)
        for index, member in enumerate(self.members):
            arrays.update({_member_prefix(index) + name: array for name, array in member._arrays().items()})
        return arrays

    def _restore(self, arrays: dict[str, NDArray[Any]]) -> None:
        for index, member in enumerate(self.members):
            prefix = _member_prefix(index)
            own = {name[len(prefix) :]: array for name, array in arrays.items() if name.startswith(prefix)}
            if not own:
                raise ModelFormatError(
                    f"{self.kind} model: no arrays saved for member {index} ({member.kind})"
                )
            try:
                member._restore(own)
            except ModelFormatError as error:  # name the array as saved, the file a user would look at
                message = re.sub(r"array '([^']+)'", rf"array '{prefix}\1'", str(error))
                raise ModelFormatError(f"{self.kind} model, member {index}: {message}") from None
        shape = self.members[0]._fitted()[0]
        expected = {
            "activity_counts": (shape.n_users,),
            "activity_edges": (max(self.activity_levels - 1, 0),),
            "persona_item_scores": (shape.n_items, shape.n_personas),
        }
        self._prior = {name: expect_array(arrays, name, dims, self.kind) for name, dims in expected.items()}
        self._settle()
