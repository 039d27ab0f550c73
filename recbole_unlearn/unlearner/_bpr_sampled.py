"""The gradient of the BPR loss over a fixed set of pairs with fresh uniform negatives at every
call (:class:`SampledBPR`), on a model's output embeddings, in closed form.  RowReset takes
its steps with it; :class:`~recbole_unlearn.unlearner._bpr_triples.BPRTriples` serves fixed
triples (their Hessian-vector products).
"""
from __future__ import annotations

import numpy as np
import torch

Tensor = torch.Tensor


def _csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def _offsets(counts: Tensor) -> Tensor:
    """CSR row offsets [n + 1] of rows holding ``counts`` [n] entries."""
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


def _group(ids: Tensor, n: int) -> Tensor:
    """The order [len(ids)] that groups ``ids`` (values in [0, n)) by value: numpy's radix sort
    for ids that fit in 16 bits on the CPU (several times faster), else torch's sort."""
    if ids.device.type == "cpu" and n < 2**15:
        return torch.from_numpy(np.argsort(ids.numpy().astype(np.int16), kind="stable"))
    return torch.argsort(ids, stable=True)


class SampledBPR:
    """(1/mk) Σ_(u,i) Σ_(j ∈ drawn) −log σ(e_uᵀ(e_i − e_j)) over m pairs (``users``, ``items``)
    [m] and k = ``negatives`` drawn negatives per pair, with its gradient in closed form.

    With f′ = σ(margin) − 1 and B = Σ f′/(mk) (+1 at (u, i), −1 at (u, j)) [n_users, n_items],
    the gradient is (B E_I, Bᵀ E_U).  Two paths give it:

    - through the score matrix of the r users with pairs [r, n_items], one preallocated buffer:
      the margins are read from S = E_U E_Iᵀ, the buffer is overwritten by B, and two dense
      products follow (three BLAS products in all), when S has ≤ ``dense_ratio`` entries per
      triple;
    - through sparse products, else: the margins by a sampled product (S only at the pairs'
      and the negatives' entries), B as a CSR matrix over users (each pair's k + 1 entries, the
      pairs sorted by user once) and Bᵀ as the positives' CSR matrix over items (its order
      fixed once) plus the negatives' (grouped by item at every call).  No [mk, d] tensor.
      Only where the m(k + 1) entries fit in the [n_users, n_items] matrix.
    """

    def __init__(self, users: Tensor, items: Tensor, negatives: int, n_users: int, n_items: int,
                 dense: bool | None = None, dense_ratio: int = 8, track_loss: bool = False):
        self.k, self.n_users, self.n_items = int(negatives), int(n_users), int(n_items)
        #: with ``track_loss``, the objective's value (a scalar) at the last gradient's point, and
        #: each pair's mean loss over its k negatives [m] (in the order of ``pair_users``)
        self.track_loss, self.loss, self.pair_losses = bool(track_loss), None, None
        self.m, self.weight = len(users), 1.0 / (len(users) * int(negatives))
        self.rows, local = torch.unique(users, return_inverse=True)  # the users with pairs, [r]
        self.dense = (len(self.rows) * self.n_items <= dense_ratio * len(self)) if dense is None else bool(dense)
        # a sampled product cannot hold more entries than the matrix has (torch 2.x raises)
        self.dense = self.dense or self.m * (self.k + 1) > self.n_users * self.n_items
        self._buffer = None
        if self.dense:
            base = local * self.n_items  # each pair's row offset in the flat score matrix, [m]
            self._positive = base + items  # [m]
            self._base_k = base.repeat_interleave(self.k)  # [mk], pair-major as the draws are
            self.pair_users = users  # [m]
            return
        self._by_user = torch.argsort(users, stable=True)  # the pairs sorted by user, [m]
        users, self._items = users[self._by_user], items[self._by_user]
        self.pair_users = users  # [m], the pairs' users in the order their losses are kept
        self._crow_users = _offsets(torch.bincount(users, minlength=self.n_users) * (self.k + 1))
        self._by_item = _group(self._items, self.n_items)  # the positives grouped by item, [m]
        self._crow_items = _offsets(torch.bincount(self._items, minlength=self.n_items))
        self._positive_users = users.index_select(0, self._by_item)
        self._users_k = users.repeat_interleave(self.k)  # [mk]
        self._zeros = torch.zeros(self.m * (self.k + 1), device=users.device)

    def __len__(self) -> int:
        return self.m * self.k

    def gradient(self, user_e: Tensor, item_e: Tensor, drawn: Tensor,
                 to_items: bool = True) -> tuple[Tensor, Tensor | None]:
        """The gradient w.r.t. (user_e [n_users, d], item_e [n_items, d]) with the negatives
        ``drawn`` [mk] (pair-major: the k negatives of pair 0 first); with ``to_items`` false
        the users' part alone (and None), without the items' products."""
        if self.dense:
            return self._through_scores(user_e, item_e, drawn, to_items)
        return self._through_sparse(user_e, item_e, drawn, to_items)

    def _keep(self, margin: Tensor) -> None:
        if self.track_loss:
            self.pair_losses = torch.nn.functional.softplus(-margin).mean(1)
            self.loss = self.pair_losses.mean()

    def user_losses(self, users: Tensor) -> Tensor:
        """The mean loss [len(users)] of each of ``users``' pairs at the last gradient's point
        (with ``track_loss``; nan for a user without pairs)."""
        total = self.pair_losses.new_zeros(self.n_users).index_add_(0, self.pair_users, self.pair_losses)
        count = torch.bincount(self.pair_users, minlength=self.n_users).to(total.dtype)
        return (total / count).index_select(0, users)

    def _through_scores(self, user_e: Tensor, item_e: Tensor, drawn: Tensor,
                        to_items: bool) -> tuple[Tensor, Tensor | None]:
        ue = user_e.index_select(0, self.rows)  # [r, d]
        if self._buffer is None or self._buffer.dtype != ue.dtype or self._buffer.device != ue.device:
            self._buffer = ue.new_empty(len(self.rows), self.n_items)
        scores = torch.mm(ue, item_e.T, out=self._buffer)  # [r, n_items]
        flat = scores.view(-1)
        negative = self._base_k + drawn  # [mk]
        margin = flat.index_select(0, self._positive).unsqueeze(1) - flat.index_select(0, negative).view(-1, self.k)
        self._keep(margin)
        f1 = torch.sigmoid(margin).sub_(1).mul_(self.weight)  # [m, k]
        flat.zero_().index_add_(0, self._positive, f1.sum(1)).index_add_(0, negative, f1.view(-1), alpha=-1)
        to_user = torch.zeros_like(user_e).index_copy_(0, self.rows, scores @ item_e)
        return to_user, (scores.T @ ue if to_items else None)

    def _through_sparse(self, user_e: Tensor, item_e: Tensor, drawn: Tensor,
                        to_items: bool) -> tuple[Tensor, Tensor | None]:
        m, k, shape = self.m, self.k, (self.n_users, self.n_items)
        negatives = drawn.view(m, k).index_select(0, self._by_user)  # [m, k], the pairs by user
        col = torch.cat([self._items.unsqueeze(1), negatives], 1).view(-1)  # [m(k + 1)]
        at = _csr(self._crow_users, col, self._zeros.to(user_e.dtype), shape)
        scores = torch.sparse.sampled_addmm(at, user_e, item_e.T, beta=0.0).values().view(m, k + 1)
        margin = scores[:, :1] - scores[:, 1:]  # [m, k]
        self._keep(margin)
        f1 = torch.sigmoid(margin).sub_(1).mul_(self.weight)
        total = f1.sum(1)
        to_user = _csr(self._crow_users, col, torch.cat([total.unsqueeze(1), -f1], 1).view(-1), shape) @ item_e
        if not to_items:
            return to_user, None
        flat = negatives.reshape(-1)
        order = _group(flat, self.n_items)
        on_positives = _csr(self._crow_items, self._positive_users, total.index_select(0, self._by_item),
                            (self.n_items, self.n_users))
        on_negatives = _csr(_offsets(torch.bincount(flat, minlength=self.n_items)), self._users_k.index_select(0, order),
                            f1.view(-1).index_select(0, order).neg_(), (self.n_items, self.n_users))
        return to_user, (on_positives @ user_e).add_(on_negatives @ user_e)


__all__ = ["SampledBPR"]
