"""LightGCN with a rebuildable graph.

He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for Recommendation",
SIGIR 2020.  Same class name as RecBole's ``LightGCN``.

The normalised adjacency L = D^-1/2 A D^-1/2 of the (n_users + n_items)-node bipartite graph is
built from COO arrays (RecBole 1.2.1 uses ``dok_matrix._update``, gone in scipy >= 1.13).
``set_train_data`` replaces the graph (e.g. by the graph of the remaining data after
unlearning) and clears the cached propagated embeddings.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.init import xavier_uniform_initialization
from recbole.utils import InputType


def normalized_adjacency(
    users: np.ndarray, items: np.ndarray, n_users: int, n_items: int
) -> torch.Tensor:
    """Sparse symmetric-normalised bipartite adjacency, [(n_users+n_items)]² COO tensor.

    ``users``/``items`` are the internal ids of the edges (duplicates are counted once).
    """
    n = n_users + n_items
    key = np.unique(np.asarray(users, dtype=np.int64) * n_items + np.asarray(items, dtype=np.int64))
    u, i = key // n_items, key % n_items + n_users
    rows = np.concatenate([u, i])
    cols = np.concatenate([i, u])
    deg = np.bincount(rows, minlength=n).astype(np.float64)
    inv_sqrt = np.zeros(n)
    inv_sqrt[deg > 0] = deg[deg > 0] ** -0.5
    vals = inv_sqrt[rows] * inv_sqrt[cols]
    index = torch.from_numpy(np.stack([rows, cols]))
    return torch.sparse_coo_tensor(index, torch.from_numpy(vals).float(), (n, n), check_invariants=False).coalesce()


class LightGCN(GeneralRecommender):
    """LightGCN (BPR loss, layer-mean readout) whose graph can be replaced."""

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.latent_dim: int = config["embedding_size"]
        self.n_layers: int = config["n_layers"]
        self.reg_weight: float = config["reg_weight"]
        self.user_embedding = nn.Embedding(self.n_users, self.latent_dim)
        self.item_embedding = nn.Embedding(self.n_items, self.latent_dim)
        self.apply(xavier_uniform_initialization)
        self.restore_user_e: torch.Tensor | None = None
        self.restore_item_e: torch.Tensor | None = None
        self.other_parameter_name = ["restore_user_e", "restore_item_e"]
        self.set_train_data(dataset)

    def set_train_data(self, dataset) -> None:
        """Rebuild the graph from ``dataset``'s interactions and clear cached outputs."""
        users = dataset.inter_feat[dataset.uid_field].numpy()
        items = dataset.inter_feat[dataset.iid_field].numpy()
        self.norm_adj = normalized_adjacency(users, items, self.n_users, self.n_items).to(
            self.device
        )
        self.clear_cache()

    def trained_pair_keys(self) -> torch.Tensor:
        """Keys user * n_items + item of the edges of the current graph, [n_edges]."""
        rows, cols = self.norm_adj.indices()
        user_side = rows < self.n_users
        return rows[user_side] * self.n_items + (cols[user_side] - self.n_users)

    def clear_cache(self) -> None:
        self.restore_user_e = None
        self.restore_item_e = None

    def train(self, mode: bool = True):
        self.clear_cache()
        return super().train(mode)

    def ego_embeddings(self) -> torch.Tensor:
        """Layer-0 embeddings E0, [n_users + n_items, d]."""
        return torch.cat([self.user_embedding.weight, self.item_embedding.weight], dim=0)

    def propagate(
        self, ego: torch.Tensor | None = None, adj: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-mean outputs (users [n_users, d], items [n_items, d]).

        ``ego`` replaces E0 and ``adj`` the graph, for methods that need either.
        """
        e = self.ego_embeddings() if ego is None else ego
        adj = self.norm_adj if adj is None else adj
        total = e
        for _ in range(self.n_layers):
            e = torch.sparse.mm(adj, e)
            total = total + e
        out = total / (self.n_layers + 1)
        return out[: self.n_users], out[self.n_users :]

    def forward(self):
        return self.propagate()

    def bpr_terms(
        self, user: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, **propagate_kwargs
    ) -> torch.Tensor:
        """Per-triple loss: −log σ(ŷ_ui − ŷ_uj) + reg on the ego rows, [B]."""
        user_e, item_e = self.propagate(**propagate_kwargs)
        u, i, j = user_e[user], item_e[pos], item_e[neg]
        margin = (u * i).sum(-1) - (u * j).sum(-1)
        ego = propagate_kwargs.get("ego")
        if ego is None:
            ego = self.ego_embeddings()
        reg = (
            ego[user].square().sum(-1)
            + ego[self.n_users + pos].square().sum(-1)
            + ego[self.n_users + neg].square().sum(-1)
        )
        return -nn.functional.logsigmoid(margin) + self.reg_weight * reg / 2

    def calculate_loss(self, interaction) -> torch.Tensor:
        self.clear_cache()
        terms = self.bpr_terms(
            interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        )
        return terms.mean()

    def predict(self, interaction) -> torch.Tensor:
        user_e, item_e = self.propagate()
        return (user_e[interaction[self.USER_ID]] * item_e[interaction[self.ITEM_ID]]).sum(-1)

    def predict_proba(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """σ(ŷ_ui) of the given pairs, [B]."""
        user_e, item_e = self.propagate()
        return torch.sigmoid((user_e[user] * item_e[item]).sum(-1))

    def full_sort_predict(self, interaction) -> torch.Tensor:
        if self.restore_user_e is None or self.restore_item_e is None:
            self.restore_user_e, self.restore_item_e = self.propagate()
        u = self.restore_user_e[interaction[self.USER_ID]]
        return (u @ self.restore_item_e.T).reshape(-1)
