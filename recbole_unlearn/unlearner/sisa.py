"""SISA: Sharded, Isolated, Sliced, Aggregated training — exact unlearning by retraining shards.

Bourtoule et al., "Machine Unlearning", IEEE S&P 2021; used as the exact baseline of the
recommendation-unlearning papers (RecEraser, WWW 2022; "Forgetting Fast in Recommender
Systems", the AltEraser paper).  The users of D_a are split at random into K equal groups, a
user's interactions form one shard, one sub-model is trained per shard, and a request retrains
only the shards of its users (machinery in :mod:`recbole_unlearn.unlearner._shards`).

Partitioning by user keeps one user's request inside one shard, the best case for SISA: a
request of n random users touches about K·(1 − (1 − 1/K)^n) shards.  Slicing (checkpoints
inside a shard) is not used: a recommendation shard retrains in a few epochs.

Aggregation: the mean of the scores of the sub-models that hold data for the user.  With a
user partition that is the score of the user's own shard; the other sub-models never saw the
user, so their user rows are initialisation noise and averaging them in would only add noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.registry import register_unlearner
from recbole_unlearn.unlearner._shards import ShardedUnlearner, ShardEnsemble, ShardParams


class AveragingEnsemble(ShardEnsemble):
    """score(u, i) = Σ_k w_uk · ⟨U_k[u], I_k[i]⟩ with w_u uniform over the shards knowing u."""

    def _user_side(self, user: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        users, items = self.shard_embeddings()  # [n_users, K, d], [n_items, K, d]
        return users[user], self.known_weights(self.knows_user[user])  # [B, K, d], [B, K]

    def full_sort_predict(self, interaction) -> torch.Tensor:
        """Scores of every item for each user, flattened [B * n_items]."""
        u, w = self._user_side(interaction[self.USER_ID])
        items = self.shard_embeddings()[1]
        return ((w.unsqueeze(-1) * u).flatten(1) @ items.flatten(1).T).reshape(-1)

    def _pair_scores(self, user: torch.Tensor, item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, w = self._user_side(user)
        return (u * self.shard_embeddings()[1][item]).sum(-1), w  # [B, K], [B, K]

    def predict(self, interaction) -> torch.Tensor:
        """Scores of the given (user, item) pairs, [B]."""
        scores, w = self._pair_scores(interaction[self.USER_ID], interaction[self.ITEM_ID])
        return (w * scores).sum(1)

    def predict_proba(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """Weighted mean of the sub-models' probabilities (their own link), [B]."""
        scores, w = self._pair_scores(user, item)
        return (w * self.proba(scores)).sum(1)


@dataclass(frozen=True)
class SISAParams(ShardParams):
    """SISA has only the shared shard keys (``n_shards``, ``shard_dir``, ``shard_reuse``)."""


@register_unlearner
class SISA(ShardedUnlearner):
    """Random user partition, one sub-model per shard, score averaging."""

    params_class = SISAParams
    ensemble_class = AveragingEnsemble

    def partition(self, task) -> np.ndarray:
        """Users with data, shuffled (seed ``seed``) and cut into K equal groups, [n_inter]."""
        train = task.train
        users = train.inter_feat[train.uid_field].numpy()
        active = np.unique(users)
        if len(active) < self.params.n_shards:
            raise UnlearnInputError(f"n_shards={self.params.n_shards} exceeds the {len(active)} users with data")
        rng = np.random.default_rng(self.config["seed"])
        user_shard = np.full(train.user_num, -1, dtype=np.int64)
        for k, group in enumerate(np.array_split(rng.permutation(active), self.params.n_shards)):
            user_shard[group] = k
        return user_shard[users]
