"""The gradient of the BPR loss over a fixed set of pairs with fresh uniform negatives at every
call (:class:`SampledBPR`), on a model's output embeddings, in closed form.  RowReset takes
its steps with it; :class:`~recbole_unlearn.unlearner._bpr_triples.BPRTriples` serves fixed
triples (their Hessian-vector products).
"""
from __future__ import annotations

import torch

Tensor = torch.Tensor
#: triples per chunk of the per-triple path (its work tensors are [CHUNK, d])
CHUNK = 1 << 16


class SampledBPR:
    """(1/mk) Σ_(u,i) Σ_(j ∈ drawn) −log σ(e_uᵀ(e_i − e_j)) over m pairs (``users``, ``items``)
    [m] and k = ``negatives`` drawn negatives per pair, with its gradient in closed form.

    With f′ = σ(margin) − 1, the gradient is Σ f′/(mk) (e_i − e_j) on a user and ±f′/(mk) e_u
    on a positive (negative) item.  Two paths give it:

    - through the score matrix of the r users with pairs [r, n_items] (one preallocated buffer):
      the margins are read from S = E_U E_Iᵀ, the buffer is overwritten by B = Σ f′/(mk) (+1 at
      (u, i), −1 at (u, j)), and the gradient is (B E_I, Bᵀ E_U): three BLAS products, taken
      when S has ≤ ``dense_ratio`` entries per triple;
    - per triple, in chunks of :data:`CHUNK` triples with gathers and scatter-adds (no [mk, d]
      tensor is held), for graphs whose score matrix would be too large.
    """

    def __init__(self, users: Tensor, items: Tensor, negatives: int, n_users: int, n_items: int,
                 dense: bool | None = None, dense_ratio: int = 32):
        self.users, self.items, self.k = users, items, int(negatives)
        self.n_users, self.n_items = int(n_users), int(n_items)
        self.weight = 1.0 / (len(users) * self.k)
        self.rows, local = torch.unique(users, return_inverse=True)  # the users with pairs, [r]
        self.dense = (len(self.rows) * self.n_items <= dense_ratio * len(users) * self.k) if dense is None else dense
        self._buffer = None
        if self.dense:
            base = local * self.n_items  # each pair's row offset in the flat score matrix, [m]
            self._positive = base + items  # [m]
            self._base_k = base.repeat_interleave(self.k)  # [mk], pair-major as the draws are
        else:
            self._users_k, self._items_k = users.repeat_interleave(self.k), items.repeat_interleave(self.k)  # [mk]

    def __len__(self) -> int:
        return len(self.users) * self.k

    def gradient(self, user_e: Tensor, item_e: Tensor, drawn: Tensor) -> tuple[Tensor, Tensor]:
        """The gradient w.r.t. (user_e [n_users, d], item_e [n_items, d]) with the negatives
        ``drawn`` [mk] (pair-major: the k negatives of pair 0 first)."""
        if self.dense:
            return self._through_scores(user_e, item_e, drawn)
        return self._per_triple(user_e, item_e, drawn)

    def _through_scores(self, user_e: Tensor, item_e: Tensor, drawn: Tensor) -> tuple[Tensor, Tensor]:
        ue = user_e.index_select(0, self.rows)  # [r, d]
        if self._buffer is None or self._buffer.dtype != ue.dtype or self._buffer.device != ue.device:
            self._buffer = ue.new_empty(len(self.rows), self.n_items)
        scores = torch.mm(ue, item_e.T, out=self._buffer)  # [r, n_items]
        flat = scores.view(-1)
        negative = self._base_k + drawn  # [mk]
        margin = flat.index_select(0, self._positive).unsqueeze(1) - flat.index_select(0, negative).view(-1, self.k)
        f1 = torch.sigmoid(margin).sub_(1).mul_(self.weight)  # [m, k]
        flat.zero_().index_add_(0, self._positive, f1.sum(1)).index_add_(0, negative, f1.view(-1), alpha=-1)
        to_user = torch.zeros_like(user_e).index_copy_(0, self.rows, scores @ item_e)
        return to_user, scores.T @ ue

    def _per_triple(self, user_e: Tensor, item_e: Tensor, drawn: Tensor) -> tuple[Tensor, Tensor]:
        to_user, to_item = torch.zeros_like(user_e), torch.zeros_like(item_e)
        for start in range(0, len(drawn), CHUNK):
            u, i, j = (t[start:start + CHUNK] for t in (self._users_k, self._items_k, drawn))
            eu = user_e.index_select(0, u)
            diff = item_e.index_select(0, i).sub_(item_e.index_select(0, j))
            f1 = torch.sigmoid((eu * diff).sum(-1)).sub_(1).mul_(self.weight).unsqueeze(1)
            to_user.index_add_(0, u, diff.mul_(f1))
            to_item.index_add_(0, i, eu.mul_(f1)).index_add_(0, j, eu.neg_())
        return to_user, to_item


__all__ = ["SampledBPR"]
