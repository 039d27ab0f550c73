"""LightGCN with a rebuildable graph.

He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for Recommendation",
SIGIR 2020.  Same class name as RecBole's ``LightGCN``.

The normalised adjacency L = D^-1/2 A D^-1/2 of the (n_users + n_items)-node bipartite graph is
built from COO arrays (RecBole 1.2.1 uses ``dok_matrix._update``, gone in scipy >= 1.13).
``set_train_data`` replaces the graph (e.g. by the graph of the remaining data after
unlearning) and clears the cached propagated embeddings.
"""
from __future__ import annotations

import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.init import xavier_uniform_initialization
from recbole.utils import InputType

from recbole_unlearn.model.pairwise import PairwiseModel
from recbole_unlearn.numerics import normalized_adjacency, symmetric_spmm


class LightGCN(PairwiseModel, GeneralRecommender):
    """LightGCN (BPR loss, layer-mean readout) whose graph can be replaced."""

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.latent_dim: int = config["embedding_size"]
        self.n_layers: int = config["n_layers"]
        self.reg_weight: float = config["reg_weight"]
        self._build_tables(self.latent_dim, xavier_uniform_initialization)
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

    def graph(self) -> torch.Tensor:
        """L = D^-1/2 A D^-1/2 of the current training graph, sparse [n_nodes]²."""
        return self.norm_adj

    def propagate(
        self, ego: torch.Tensor | None = None, adj: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-mean outputs (users [n_users, d], items [n_items, d]).

        ``ego`` replaces E0 and ``adj`` the graph (a symmetric normalised adjacency, COO or
        CSR), for methods that need either.
        """
        e = self.ego_embeddings() if ego is None else ego
        adj = self.norm_adj if adj is None else adj
        if adj.layout == torch.sparse_coo:
            adj = adj.to_sparse_csr()  # once per call, not once per layer (well under 1 ms on ml-100k)
        total = e
        for _ in range(self.n_layers):
            e = symmetric_spmm(adj, e)
            total = total + e
        out = total / (self.n_layers + 1)
        return out[: self.n_users], out[self.n_users :]

    @torch.no_grad()
    def self_weights(self, nodes: torch.Tensor, graph=None, chunk: int = 512) -> torch.Tensor:
        """Σ_l (L^l)_vv / (L + 1) [len(nodes)], in closed form for up to 3 layers: the graph is
        bipartite without self-loops, so (L¹)_vv = (L³)_vv = 0 and (L²)_vv = Σ_j L_vj²."""
        if self.n_layers > 3:
            return super().self_weights(nodes, graph, chunk)
        adj = (self.norm_adj if graph is None else graph).to_sparse_csr()
        rows = torch.repeat_interleave(torch.arange(adj.shape[0], device=adj.device), adj.crow_indices().diff())
        squares = torch.zeros(adj.shape[0], dtype=adj.dtype, device=adj.device).index_add_(0, rows, adj.values().square())
        return ((1 + squares * (self.n_layers >= 2)) / (self.n_layers + 1)).index_select(0, nodes)

    def forward(self):
        return self.propagate()
