"""A tiny shop where the right answer is known, for testing every model against the same contract.

Two persona groups of customers each shop in their own block of items (the checkerboard). Every
block has an anchor item that every training customer of the group bought; the evaluation customers
of each group had their anchor held out. So the held-out item is both the most popular item overall
(which global popularity can find) and the most typical item of the customer's group (which
persona-aware and collaborative models can find), while the other block's items are wrong answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from engine.models.base import TrainingSet, UserBatch

PERSONAS = ("bargain_hunter", "brand_loyalist", "health_enthusiast")
DEMOGRAPHICS = ("region:north", "region:south", "age:18-34", "age:35+")
ITEM_ATTRIBUTES = ("category:pantry", "category:gadgets", "category:misc", "price:low", "price:high")
GROUP_MIX = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]])
USERS_PER_GROUP = 60
BLOCK_SIZE = 10
N_NOISE_ITEMS = 4
N_ITEMS = 2 * BLOCK_SIZE + N_NOISE_ITEMS

# Small enough that every kind fits in well under a second on the checkerboard; one thread so the
# Hogwild trainers (LightFM, BPR) are reproducible.
SMALL_CONFIGS: dict[str, dict[str, Any]] = {
    "popularity": {},
    "persona_popularity": {"prior_strength": 20.0},
    "lightfm_hybrid": {"no_components": 8, "epochs": 20, "num_threads": 1, "random_state": 3},
    "als": {"factors": 4, "alpha": 2.0, "regularization": 0.5, "num_threads": 1, "random_state": 3},
    "bpr": {"factors": 16, "iterations": 200, "learning_rate": 0.1, "num_threads": 1, "random_state": 3},
    "linear_autoencoder": {"factors": 16, "dropout": 0.3, "regularization": 1.0, "num_threads": 1},
    "blend": {
        "members": [
            {
                "kind": "als",
                "factors": 4,
                "alpha": 2.0,
                "regularization": 0.5,
                "num_threads": 1,
                "random_state": 3,
            },
            {
                "kind": "linear_autoencoder",
                "factors": 16,
                "dropout": 0.3,
                "regularization": 1.0,
                "num_threads": 1,
            },
        ],
        "weights": [0.4, 0.6],
    },
}

# Whether a model's scores follow the persona mix; global popularity by design does not.
PERSONA_AWARE: dict[str, bool] = {
    "popularity": False,
    "persona_popularity": True,
    "lightfm_hybrid": True,
    "als": True,
    "bpr": True,
    "linear_autoencoder": True,
    "blend": True,
}


@dataclass(frozen=True)
class Checkerboard:
    data: TrainingSet
    group: np.ndarray  # (n_users,) 0 or 1
    eval_users: np.ndarray  # customers whose anchor item was held out
    held_out: np.ndarray  # (len(eval_users),) the held-out item of each evaluation customer

    def block(self, group: int) -> np.ndarray:
        return np.arange(group * BLOCK_SIZE, (group + 1) * BLOCK_SIZE)

    def batch(self, user_index: list[int], mix: np.ndarray | None = None) -> UserBatch:
        """Known (or -1) customers with their own group mix and demographics unless a mix is given."""
        index = np.asarray(user_index, dtype=np.int64)
        if mix is None:
            mix = GROUP_MIX[self.group[np.clip(index, 0, None)]]
        demographics = self.data.user_demographics[np.clip(index, 0, None)]
        demographics = sp.csr_matrix(demographics.multiply((index >= 0)[:, None]), dtype=np.float32)
        return UserBatch(user_index=index, mix=np.asarray(mix, dtype=np.float64), demographics=demographics)

    def cold_batch(self, mix: np.ndarray, demographics: np.ndarray | None = None) -> UserBatch:
        """Customers the models never saw, described by mix (and optionally demographics) only."""
        mix = np.atleast_2d(np.asarray(mix, dtype=np.float64))
        demo = (
            np.zeros((len(mix), len(DEMOGRAPHICS))) if demographics is None else np.atleast_2d(demographics)
        )
        return UserBatch(
            user_index=np.full(len(mix), -1, dtype=np.int64),
            mix=mix,
            demographics=sp.csr_matrix(demo, dtype=np.float32),
        )


def make_checkerboard(seed: int = 7) -> Checkerboard:
    rng = np.random.default_rng(seed)
    n_users = 2 * USERS_PER_GROUP
    group = np.arange(n_users) % 2
    is_eval = (np.arange(n_users) // 2) % 3 == 0
    dense = np.zeros((n_users, N_ITEMS), dtype=np.float32)
    for user in range(n_users):
        block = np.arange(group[user] * BLOCK_SIZE, (group[user] + 1) * BLOCK_SIZE)
        anchor, others = block[0], block[1:]
        chosen = others[rng.random(len(others)) < 0.4]
        if len(chosen) < 2:
            chosen = rng.choice(others, size=2, replace=False)
        dense[user, chosen] = rng.choice([1.0, 3.0], size=len(chosen))
        if not is_eval[user]:
            dense[user, anchor] = 5.0
        if rng.random() < 0.2:
            dense[user, 2 * BLOCK_SIZE + rng.integers(N_NOISE_ITEMS)] = 1.0
    interactions = sp.csr_matrix(dense)
    customers = (dense > 0).sum(axis=0)
    anchors = [0, BLOCK_SIZE]
    if np.sort(customers)[-3] >= customers[anchors].min():
        raise AssertionError(f"seed {seed} does not make the anchors the two most popular items: {customers}")

    demographics = np.zeros((n_users, len(DEMOGRAPHICS)), dtype=np.float32)
    demographics[np.arange(n_users), group] = 1.0  # region follows the group
    demographics[np.arange(n_users), 2 + (np.arange(n_users) % 3 == 0)] = 1.0  # age does not
    item_features = np.zeros((N_ITEMS, len(ITEM_ATTRIBUTES)), dtype=np.float32)
    item_features[:BLOCK_SIZE, 0] = 1.0
    item_features[BLOCK_SIZE : 2 * BLOCK_SIZE, 1] = 1.0
    item_features[2 * BLOCK_SIZE :, 2] = 1.0
    item_features[np.arange(N_ITEMS), 3 + np.arange(N_ITEMS) % 2] = 1.0

    data = TrainingSet(
        interactions=interactions,
        user_mix=GROUP_MIX[group],
        user_demographics=sp.csr_matrix(demographics),
        item_features=sp.csr_matrix(item_features),
        persona_names=PERSONAS,
        demographic_feature_names=DEMOGRAPHICS,
        item_feature_names=ITEM_ATTRIBUTES,
        seed=seed,
    )
    eval_users = np.flatnonzero(is_eval)
    return Checkerboard(data, group, eval_users, held_out=group[eval_users] * BLOCK_SIZE)


def training_set_from_dense(
    interactions: list[list[float]],
    mix: list[list[float]],
    demographics: list[list[float]] | None = None,
    item_features: list[list[float]] | None = None,
) -> TrainingSet:
    """A hand-written TrainingSet for tests that check a formula on a few numbers."""
    dense = np.asarray(interactions, dtype=np.float32)
    n_users, n_items = dense.shape
    mix_array = np.asarray(mix, dtype=np.float64)
    demo = np.zeros((n_users, 1)) if demographics is None else np.asarray(demographics, dtype=np.float32)
    items = np.ones((n_items, 1)) if item_features is None else np.asarray(item_features, dtype=np.float32)
    return TrainingSet(
        interactions=sp.csr_matrix(dense),
        user_mix=mix_array,
        user_demographics=sp.csr_matrix(demo, dtype=np.float32),
        item_features=sp.csr_matrix(items, dtype=np.float32),
        persona_names=tuple(f"persona_{k}" for k in range(mix_array.shape[1])),
        demographic_feature_names=tuple(f"demo_{j}" for j in range(demo.shape[1])),
        item_feature_names=tuple(f"attr_{j}" for j in range(items.shape[1])),
    )
