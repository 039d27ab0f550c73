"""RecEraser: exact recommendation unlearning with balanced shards and attentive aggregation.

Chen, Sun, Zhang, Ma, Zhang, Liu, Ma, "Recommendation Unlearning", WWW 2022.

1. Balanced partition on the original model's embeddings (``partition``): ``user`` clusters
   users (distance ‖p_u − c_k‖²), ``interaction`` clusters (user, item) pairs (distance
   ‖p_u − c_k^u‖² · ‖q_i − c_k^i‖²).  Each round visits all (point, shard) pairs by increasing
   distance and puts a point in the first shard that still has room (at most
   ⌈max_shard_ratio · n / K⌉ points per shard); centroids become the means of their members;
   at most ``partition_iters`` rounds, stopping early once the assignment no longer changes.
2. One sub-model per shard (shared machinery in :mod:`recbole_unlearn.unlearner._shards`).
3. Attention-based aggregation, trained with the sub-models frozen: shard k's embedding e_k
   (user or item) is moved to a common space by e'_k = e_k W_k + b_k, weighted by
   α_k = softmax_k(hᵀ ReLU(A e'_k + a)) (one attention net for users, one for items) and
   summed; the aggregated embeddings are trained with the base model's own loss on score
   embeddings (its ``score_loss``: ENMF's non-sampling loss with dropout, BPR for LightGCN).
   W_k starts at the identity (the released code starts it near zero); the softmax runs over
   the shards holding data for the row, since a sub-model's row of a user or item it never saw
   is initialisation noise.

Unlearning retrains the touched shards from scratch and retrains the aggregation from a fresh
initialisation on D_r, so no parameter was fitted on a forgotten pair.  The partition itself is
computed once from Θ_a's embeddings and kept (as in the paper); it decides which users share a
shard, not what any sub-model learns.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from recbole.utils import init_seed

from recbole_unlearn.data.remaining import pairs
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.registry import register_unlearner
from recbole_unlearn.unlearner._shards import ShardedUnlearner, ShardEnsemble, ShardParams, score_embeddings


def balanced_assign(dist: np.ndarray, cap: int) -> np.ndarray:
    """Greedy balanced assignment: (point, shard) pairs by increasing ``dist`` [n, K]; a point
    joins the first shard with room (≤ ``cap`` points).  Returns shard ids [n].

    Vectorised: between two moments where a shard fills up, every point simply takes its first
    pair, so each pass accepts those first pairs up to the first overflow (≤ K + 1 passes).
    """
    n, k = dist.shape
    order = np.argsort(dist, axis=None, kind="stable")
    point, shard = order // k, order % k
    assign, room = np.full(n, -1), np.full(k, cap)
    while (assign < 0).any():
        alive = np.flatnonzero((assign[point] < 0) & (room[shard] > 0))
        _, first = np.unique(point[alive], return_index=True)
        pos = alive[np.sort(first)]  # each waiting point's next pair, in visiting order
        cand = shard[pos]
        by_shard = np.argsort(cand, kind="stable")
        rank = np.empty(len(pos), dtype=np.int64)
        rank[by_shard] = np.arange(len(pos)) - np.searchsorted(cand[by_shard], cand[by_shard])
        over = rank >= room[cand]
        take = pos < (pos[over].min() if over.any() else len(order))
        assign[point[pos[take]]] = cand[take]
        room -= np.bincount(cand[take], minlength=k)
    return assign


def balanced_partition(features: list[np.ndarray], n_shards: int, ratio: float, iters: int,
                       rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """RecEraser's balanced clustering of n points described by ``features`` (arrays [n, d_j];
    distance = product over j of squared distances).  Returns (shard ids [n], rounds run)."""
    n = len(features[0])
    if n < n_shards:
        raise UnlearnInputError(f"n_shards={n_shards} exceeds the {n} points to partition")
    if ratio < 1.0:
        raise UnlearnInputError(f"max_shard_ratio must be at least 1, not {ratio}")
    cap = int(np.ceil(ratio * n / n_shards))
    centroids = [f[rng.choice(n, n_shards, replace=False)] for f in features]
    assign, rounds = None, 0
    for rounds in range(1, max(1, iters) + 1):
        dist = np.ones((n, n_shards))
        for f, c in zip(features, centroids):
            sq = (f * f).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2.0 * f @ c.T
            dist *= np.maximum(sq, 0.0)
        new = balanced_assign(dist, cap)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        counts = np.bincount(assign, minlength=n_shards)
        for f, c in zip(features, centroids):
            sums = np.zeros_like(c)
            np.add.at(sums, assign, f)
            c[counts > 0] = sums[counts > 0] / counts[counts > 0, None]
    return assign, rounds


class ShardAttention(nn.Module):
    """α_k = softmax_k(hᵀ ReLU(A e_k + a)) over the shards that know the row; Σ_k α_k e_k."""

    def __init__(self, dim: int, attention_size: int):
        super().__init__()
        self.proj = nn.Linear(dim, attention_size)
        nn.init.xavier_normal_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.h = nn.Parameter(torch.full((attention_size,), 0.01))

    def forward(self, e: torch.Tensor, knows: torch.Tensor) -> torch.Tensor:
        """``e`` [N, K, d], ``knows`` [N, K] bool → aggregated [N, d]."""
        logits = torch.relu(self.proj(e)) @ self.h  # [N, K]
        usable = knows | ~knows.any(1, keepdim=True)
        alpha = torch.softmax(logits.masked_fill(~usable, float("-inf")), dim=1)
        return (alpha.unsqueeze(-1) * e).sum(1)


class AttentiveEnsemble(ShardEnsemble):
    """Shards aggregated by per-shard transfer + attention (users and items separately)."""

    def __init__(self, config, dataset, keys: np.ndarray, shard_of: np.ndarray, submodels: list):
        super().__init__(config, dataset, keys, shard_of, submodels)
        self.dim = int(config["embedding_size"])
        self.attention_size = RecEraserParams.from_config(config).attention_size or max(1, self.dim // 2)
        self.reset_aggregator()

    def reset_aggregator(self) -> None:
        """Fresh aggregation parameters (W_k = I, b_k = 0, new attention nets)."""
        self.trans_w = nn.Parameter(torch.eye(self.dim).repeat(self.n_shards, 1, 1))  # [K, d, d]
        self.trans_b = nn.Parameter(torch.zeros(self.n_shards, self.dim))  # [K, d]
        self.user_attention = ShardAttention(self.dim, self.attention_size)
        self.item_attention = ShardAttention(self.dim, self.attention_size)
        self.clear_cache()

    def set_train_data(self, dataset) -> None:
        super().set_train_data(dataset)
        self.loss_history = self.shards[0].history_of(dataset)  # what the base loss needs of D_r

    def train(self, mode: bool = True):
        self._cache.pop("aggregated", None)
        return super().train(mode)

    def users(self, user: torch.Tensor) -> torch.Tensor:
        """Aggregated user embeddings, [B, d]."""
        e = self.shard_embeddings()[0][user]
        return self.user_attention(torch.einsum("nkd,kde->nke", e, self.trans_w) + self.trans_b, self.knows_user[user])

    def items(self, item: torch.Tensor | None = None) -> torch.Tensor:
        """Aggregated item embeddings of ``item`` (None: all items), [B or n_items, d]."""
        e, knows = self.shard_embeddings()[1], self.knows_item
        if item is not None:
            e, knows = e[item], knows[item]
        return self.item_attention(torch.einsum("nkd,kde->nke", e, self.trans_w) + self.trans_b, knows)

    def calculate_loss(self, interaction) -> torch.Tensor:
        """The base model's loss on the aggregated score embeddings (no regulariser)."""
        u = self.users(interaction[self.USER_ID])
        return self.shards[0].score_loss(u, self.items(), interaction, self.loss_history)

    def _aggregated(self) -> tuple[torch.Tensor, torch.Tensor]:
        if "aggregated" not in self._cache:
            with torch.no_grad():
                self._cache["aggregated"] = (self.users(torch.arange(self.n_users)), self.items())
        return self._cache["aggregated"]

    def full_sort_predict(self, interaction) -> torch.Tensor:
        users, items = self._aggregated()
        return (users[interaction[self.USER_ID]] @ items.T).reshape(-1)

    def predict(self, interaction) -> torch.Tensor:
        users, items = self._aggregated()
        return (users[interaction[self.USER_ID]] * items[interaction[self.ITEM_ID]]).sum(-1)

    def predict_proba(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        users, items = self._aggregated()
        return self.proba((users[user] * items[item]).sum(-1))


@dataclass(frozen=True)
class RecEraserParams(ShardParams):
    """Partition (``partition``: user | interaction, ``max_shard_ratio``, ``partition_iters``)
    and aggregation (``agg_epochs``, ``agg_learning_rate``; ``attention_size`` None: d/2)."""

    partition: str = "user"
    max_shard_ratio: float = 1.2
    partition_iters: int = 50
    agg_epochs: int = 50
    agg_learning_rate: float | None = None
    attention_size: int | None = None


@register_unlearner
class RecEraser(ShardedUnlearner):
    """Balanced partition on Θ_a's embeddings, sub-models per shard, attentive aggregation."""

    params_class = RecEraserParams
    ensemble_class = AttentiveEnsemble
    has_aggregator = True

    def partition(self, task) -> np.ndarray:
        with torch.no_grad():
            users_e, items_e = (x.detach().cpu().double().numpy() for x in score_embeddings(task.original))
        train = task.train
        users, items = (x.numpy() for x in pairs(train))
        rng = np.random.default_rng(self.config["seed"])
        args = (self.params.n_shards, self.params.max_shard_ratio, self.params.partition_iters, rng)
        if self.params.partition == "user":
            active = np.unique(users)
            assign, rounds = balanced_partition([users_e[active]], *args)
            user_shard = np.full(train.user_num, -1, dtype=np.int64)
            user_shard[active] = assign
            shard_of = user_shard[users]
        else:  # interaction (the choices are checked when the unlearner is built)
            shard_of, rounds = balanced_partition([users_e[users], items_e[items]], *args)
        self.info["partition_rounds"] = rounds
        return shard_of

    def refresh_aggregator(self, ensemble: AttentiveEnsemble, data, valid) -> None:
        """Aggregation retrained from a fresh initialisation (seed ``seed``) on ``data``."""
        init_seed(self.config["seed"], self.config["reproducibility"])
        ensemble.reset_aggregator()
        self.model = ensemble
        self.learning_rate = float(self.params.agg_learning_rate or self.config["learning_rate"])
        self.reset_optimizer()
        self.fit_on(data, valid, epochs=self.params.agg_epochs, verbose=False)
        self.info["agg_epochs"] = self.info.pop("epochs")

    def settings_extra(self, task) -> dict:
        """The partition depends on Θ_a: a digest of its parameters."""
        digest = hashlib.sha256()
        for name, value in sorted(task.original.state_dict().items()):
            digest.update(name.encode())
            digest.update(value.detach().cpu().numpy().tobytes())
        return {"original": digest.hexdigest()[:16]}
