"""A BPR model's objective on fixed triples as a function of some ego rows, with its gradient
and Hessian-vector products in closed form (:class:`BPRRowDerivatives`), through the model's
linear, symmetric propagation.

Node layout as LightGCN's ego embeddings: user ``u`` is row ``u``, item ``i`` is row
``n_users + i``.
"""
from __future__ import annotations

import numpy as np
import torch

from recbole_unlearn.numerics import as_csr
from recbole_unlearn.unlearner._bpr_triples import BPRTriples
from recbole_unlearn.unlearner._subgraph import Subgraph

Tensor = torch.Tensor
#: share of the triples touching a block's reach under which BPRRowDerivatives' products run there
SUBGRAPH_SHARE = 0.9
#: rows of θ up to which its propagation runs through the dense columns M[:, rows] (a [n, m] by
#: [m, d] product costs less than a sparse propagation while m is about 2d or under)
COLUMNS_MAX = 128


def node_counts(n_users: int, n_items: int, users: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> Tensor:
    """How often each node (users, then items) appears in the triples (u, i, j), [n_users + n_items]."""
    nodes = np.concatenate([users, n_users + pos, n_users + neg])
    return torch.as_tensor(np.bincount(nodes, minlength=n_users + n_items), dtype=torch.float32)


class BPRRowDerivatives:
    """The gradient and Hessian-vector products of a BPR model's mean objective on fixed
    triples, as a function of some ego rows θ [m, d], in closed form (:class:`BPRTriples`).

    The objective is ``PairwiseModel.objective_fn``: (1/T) Σ_t [−log σ(e_uᵀ(e_i − e_j)) +
    reg_weight/2 (‖e⁰_u‖² + ‖e⁰_i‖² + ‖e⁰_j‖²)], e = M e⁰ with M the model's propagation on its
    current graph (linear and symmetric: the identity without a graph).  Calling it at θ gives
    (g [m, d], v ↦ H v) with g and H exact; each product is two propagations and one pass over
    the triples, where double backpropagation through the objective costs far more.

    ``users``/``items``/``negatives``: [T] internal ids; ``index``: the ego rows of θ (users
    first, item ``i`` is row ``n_users + i``), [m].  With a graph, the Hessian-vector products
    run on the rows' reach (:class:`~recbole_unlearn.unlearner._subgraph.Subgraph`: the
    induced subgraph and the triples that touch it), the same products at a fraction of the
    cost where the reach is small; ``subgraph`` None takes it when under ``SUBGRAPH_SHARE`` of
    the triples touch it, True / False always / never.  Otherwise a block of at most
    ``COLUMNS_MAX`` rows propagates through the dense columns M[:, rows] [n, m] (found by
    propagating the rows' indicator once): M v = M[:, rows] v and (M g)_rows = M[:, rows]ᵀ g.
    """

    def __init__(self, model, users: Tensor, items: Tensor, negatives: Tensor, index: Tensor,
                 subgraph: bool | None = None):
        u, i, j = (torch.as_tensor(a).long().cpu().numpy() for a in (users, items, negatives))
        n_users, n_items, count = model.n_users, model.n_items, len(u)
        self.model, self.index = model, torch.as_tensor(index).long()
        self.triples = BPRTriples(u, i, j, np.full(count, 1.0 / max(count, 1)), n_users, n_items)
        self.reg_all = model.reg_weight / max(count, 1) * node_counts(n_users, n_items, u, i, j)  # [n_nodes]
        self.reg = self.reg_all[self.index][:, None]
        self.graph = as_csr(model.graph())
        self.sub = self.sub_triples = None
        if self.graph is not None and subgraph is not False:
            sub = Subgraph(model, self.graph, self.index)
            inside = sub.member().cpu().numpy()
            touch = inside[u] | inside[n_users + i] | inside[n_users + j]
            if subgraph or touch.sum() < SUBGRAPH_SHARE * count:  # the triples set a product's cost
                self.sub = sub
                weight = np.full(int(touch.sum()), 1.0 / max(count, 1))
                self.sub_triples = BPRTriples(u[touch], i[touch], j[touch], weight, n_users, n_items)
        self.columns = None
        if self.graph is not None and self.sub is None and len(self.index) <= COLUMNS_MAX:
            like = model.ego_embeddings().detach()
            eye = like.new_zeros(len(like), len(self.index))
            eye[self.index, torch.arange(len(self.index), device=like.device)] = 1.0
            self.columns = torch.cat(model.propagate(eye, self.graph))  # M[:, index], [n, m]

    def _back(self, grads: tuple[Tensor, Tensor]) -> Tensor:
        """Mᵀ (= M) of output-space vectors, restricted to the rows of θ, [m, d]."""
        if self.sub is not None:
            return self.sub.propagate(torch.cat(grads).index_select(0, self.sub.nodes)).index_select(0, self.sub.local)
        if self.columns is not None:
            return self.columns.T @ torch.cat(grads)
        user_e, item_e = self.model.propagate(torch.cat(grads), self.graph)
        return torch.cat([user_e, item_e]).index_select(0, self.index)

    @torch.no_grad()
    def loss(self, theta: Tensor) -> Tensor:
        """The objective at θ (the value of ``row_objective``), a scalar."""
        ego = self.model.ego_embeddings().detach().index_copy(0, self.index, theta)
        penalty = 0.5 * (self.reg_all * ego.square().sum(-1)).sum()
        return self.triples.loss(*self.model.propagate(ego, self.graph)) + penalty

    @torch.no_grad()
    def __call__(self, theta: Tensor):
        base = self.model.ego_embeddings().detach()
        point = self.model.propagate(base.index_copy(0, self.index, theta), self.graph)
        triples = self.triples if self.sub is None else self.sub_triples
        triples.at(*point)
        g = self._back(triples.grad()).add_(self.reg * theta)
        full = torch.zeros_like(base)
        n_users = self.model.n_users

        def hvp(v: Tensor) -> Tensor:
            if self.columns is not None:
                out = self.columns @ v
                w = out[:n_users], out[n_users:]
            elif self.sub is None:
                w = self.model.propagate(full.index_copy_(0, self.index, v), self.graph)
            else:  # M v on the reach, placed in the whole graph's rows for the triples
                local = v.new_zeros(self.sub.size, v.shape[1]).index_copy_(0, self.sub.local, v)
                full.index_copy_(0, self.sub.nodes, self.sub.propagate(local))
                w = full[:n_users], full[n_users:]
            return self._back(triples.hvp(*w)).addcmul_(self.reg.expand_as(v), v)

        return g, hvp
