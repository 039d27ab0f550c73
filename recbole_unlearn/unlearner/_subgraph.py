"""The part of a propagation graph that a block of ego rows reaches.

For a linear propagation M = Σ_k c_k A^k of depth L over a symmetric graph A, a direction v
placed on ego rows R moves the outputs only on S = the nodes within L hops of R, and the
outputs' gradient reaches R only from S: every path of length ≤ L that starts in R stays in S.
So (M v)_S = M_SS v_S and (M y)_R = (M_SS y_S)_R with M_SS the same propagation over the
induced subgraph A_SS (the full graph's normalised values, not renormalised): Hessian-vector
products of a block need the subgraph only, where the whole graph costs |nodes| / |S| more.
S is found by propagating R's indicator over |A| (no assumption on the depth L).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

Tensor = torch.Tensor


def _scipy(graph: Tensor) -> sp.csr_matrix:
    csr = graph.to_sparse_csr().cpu()
    return sp.csr_matrix((csr.values().numpy(), csr.col_indices().numpy(), csr.crow_indices().numpy()),
                         shape=tuple(csr.shape))


def _torch(matrix: sp.csr_matrix, device) -> Tensor:
    matrix = matrix.tocsr()
    return torch.sparse_csr_tensor(
        torch.as_tensor(matrix.indptr, dtype=torch.long), torch.as_tensor(matrix.indices, dtype=torch.long),
        torch.as_tensor(matrix.data, dtype=torch.float32), matrix.shape, device=device, check_invariants=False)


class Subgraph:
    """The nodes ``nodes`` [s] (sorted global ids, users first) that the ego rows ``index`` [m]
    reach through ``model``'s propagation over ``graph`` [n, n], with the induced graph [s, s]
    and the rows' positions among them (``local`` [m])."""

    def __init__(self, model, graph: Tensor, index: Tensor):
        self.model, self._whole, self._graph = model, graph, None
        csr = graph.to_sparse_csr().cpu()
        n = csr.shape[0]
        indicator = torch.zeros(n, 1)
        indicator[index.cpu()] = 1.0
        magnitudes = torch.sparse_csr_tensor(csr.crow_indices(), csr.col_indices(), csr.values().abs(), csr.shape)
        nodes = np.flatnonzero(torch.cat(model.propagate(indicator, magnitudes))[:, 0].numpy())
        self.nodes = torch.as_tensor(nodes, dtype=torch.long, device=graph.device)
        self.size, self.n_nodes = len(nodes), n
        position = np.full(n, -1)
        position[nodes] = np.arange(len(nodes))
        self.local = torch.as_tensor(position[index.cpu().numpy()], dtype=torch.long, device=graph.device)

    @property
    def graph(self) -> Tensor:
        """The induced graph [s, s] (CSR), built on first use."""
        if self._graph is None:
            nodes = self.nodes.cpu().numpy()
            self._graph = _torch(_scipy(self._whole)[nodes][:, nodes], self._whole.device)
        return self._graph

    def member(self) -> Tensor:
        """Whether each node of the whole graph is in the subgraph, [n] bool."""
        inside = torch.zeros(self.n_nodes, dtype=torch.bool, device=self.nodes.device)
        inside[self.nodes] = True
        return inside

    def propagate(self, x: Tensor) -> Tensor:
        """M_SS x for x [s, d] on the subgraph's nodes, [s, d] (the model's propagation over
        the induced graph: its two outputs concatenated)."""
        return torch.cat(self.model.propagate(x, self.graph))


__all__ = ["Subgraph"]
