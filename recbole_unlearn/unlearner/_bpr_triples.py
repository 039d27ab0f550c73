"""Fixed weighted BPR triples on a model's output embeddings: the loss, its gradient and exact
Hessian-vector products in closed form (:class:`BPRTriples`).  IFRU and AltEraser's
``hf_newton`` take their derivatives here (through :class:`~recbole_unlearn.unlearner._bpr_rows.
BPRRowDerivatives` for ego rows) instead of by double backpropagation; RowReset's objective,
with fresh negatives at every step, is :class:`~recbole_unlearn.unlearner._bpr_sampled.SampledBPR`.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _csr(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int, n_cols: int) -> Tensor:
    """A float32 CSR matrix [n_rows, n_cols] from COO arrays (duplicates kept)."""
    order = np.argsort(rows, kind="stable")
    crow = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_rows))])
    return torch.sparse_csr_tensor(
        torch.as_tensor(crow, dtype=torch.long), torch.as_tensor(cols[order], dtype=torch.long),
        torch.as_tensor(values[order], dtype=torch.float32), (n_rows, n_cols), check_invariants=False)


class BPRTriples:
    """Fixed weighted BPR triples Σ_t w_t·(−log σ(u_tᵀ(i_t − j_t))) over output embeddings,
    with the exact gradient and Hessian-vector products in closed form.

    With m_t = e_uᵀ(e_i − e_j), f′ = σ(m) − 1 and f″ = σ(m)(1 − σ(m)), a direction
    (W_U, W_I) gives dm_t = W_uᵀ(e_i − e_j) + e_uᵀ(W_i − W_j) and
        (H W)_u = Σ_t w_t [f″ dm_t (e_i − e_j) + f′ (W_i − W_j)],
        (H W)_i = Σ_t w_t [f″ dm_t e_u + f′ W_u] = −(H W)_j,
    the Gauss–Newton part plus the bilinear part (so H is exact, and indefinite in general).
    Two forms of the same products: per triple, with scatters through fixed CSR incidence
    matrices (one-hot users, ±1 items; built on first use), or, when the [n_users, n_items]
    score matrix has few entries per triple, through that matrix: m from one product E_U E_Iᵀ,
    the gradient B E_I and Bᵀ E_U with B = Σ_t f′ (±1 at (u, i), (u, j)).  The score matrix
    holds only the users that have triples (in a process group, a rank's users).
    """

    def __init__(self, users: np.ndarray, pos: np.ndarray, neg: np.ndarray, weight: np.ndarray,
                 n_users: int, n_items: int):
        self.u, self.i, self.j = (torch.as_tensor(a, dtype=torch.long) for a in (users, pos, neg))
        self.w = torch.as_tensor(weight, dtype=torch.float32)
        self.rows, self.local_u = torch.unique(self.u, return_inverse=True)  # the users with triples
        self._coo = (np.asarray(users), np.asarray(pos), n_users, n_items)  # the negatives: from self.j
        self._scatters: tuple[Tensor, Tensor] | None = None
        self._at: tuple | None = None
        self._buffers: tuple | None = None

    def __len__(self) -> int:
        return len(self.u)

    def to(self, device) -> "BPRTriples":
        """The triples with their index and weight tensors on ``device`` (the embeddings')."""
        other = copy.copy(self)
        for name in ("u", "i", "j", "w", "rows", "local_u"):
            setattr(other, name, getattr(self, name).to(device))
        return other

    @property
    def scatters(self) -> tuple[Tensor, Tensor]:
        """(users [n_users, T] one-hot, items [n_items, T] ±1) incidence matrices, CSR."""
        if self._scatters is None:
            users, pos, n_users, n_items = self._coo
            neg = self.j.cpu().numpy()
            t = np.arange(len(users))
            self._scatters = (_csr(users, t, np.ones(len(t)), n_users, len(t)).to(self.u.device),
                              _csr(np.concatenate([pos, neg]), np.concatenate([t, t]),
                                   np.r_[np.ones(len(t)), -np.ones(len(t))], n_items, len(t)).to(self.u.device))
        return self._scatters

    def at(self, user_e: Tensor, item_e: Tensor, dense: bool | None = None) -> "BPRTriples":
        """Fix the point (output embeddings [n_users, d], [n_items, d]) for grad / hvp.

        ``dense``: products through the [n_users, n_items] score matrix (BLAS matmuls, cheaper
        than per-triple gathers when it has few entries per triple); None decides by size
        (≤ 32 entries per triple).
        """
        n_i = len(item_e)
        self._buffers = self._at = self._dense = None
        if self._through_scores(n_i, dense):
            pi, pj = self.local_u * n_i + self.i, self.local_u * n_i + self.j
            ue = user_e.index_select(0, self.rows)  # [r, d]
            ds = ue @ item_e.T  # [r, n_i]: scores now, a work buffer of the products later
            flat = ds.view(-1)
            s = torch.sigmoid(flat.index_select(0, pi) - flat.index_select(0, pj))
            f1, f2 = self.w * (s - 1), self.w * s * (1 - s)
            self._dense = (user_e, item_e, ue, pi, pj, f1, f2, self._pair_matrix(pi, pj, f1, len(ue), n_i), ds)
            return self
        eu = user_e.index_select(0, self.u)
        diff = item_e.index_select(0, self.i) - item_e.index_select(0, self.j)
        s = torch.sigmoid((eu * diff).sum(-1))
        self._at = (eu, diff, self.w * (s - 1), self.w * s * (1 - s))
        return self

    def _through_scores(self, n_i: int, dense: bool | None = None) -> bool:
        """Whether to work through the [r, n_i] score matrix: ``dense``, or for None when it
        has ≤ 32 entries per triple."""
        return bool(dense) or (dense is None and len(self.rows) * n_i <= 32 * len(self))

    def loss(self, user_e: Tensor, item_e: Tensor, dense: bool | None = None) -> Tensor:
        """Σ_t w_t (−log σ(u_tᵀ(i_t − j_t))) at output embeddings ([n_users, d], [n_items, d]),
        a scalar; the margins come from the score matrix as :meth:`at` decides (``dense``)."""
        n_i = len(item_e)
        if self._through_scores(n_i, dense):
            flat = (user_e.index_select(0, self.rows) @ item_e.T).view(-1)
            base = self.local_u * n_i
            margin = flat.index_select(0, base + self.i) - flat.index_select(0, base + self.j)
        else:
            diff = item_e.index_select(0, self.i) - item_e.index_select(0, self.j)
            margin = (user_e.index_select(0, self.u) * diff).sum(-1)
        return (self.w * F.softplus(-margin)).sum()

    @staticmethod
    def _pair_matrix(pi: Tensor, pj: Tensor, values: Tensor, n_u: int, n_i: int) -> Tensor:
        """Σ_t values_t (+1 at (u_t, i_t), −1 at (u_t, j_t)), [n_u, n_i]."""
        return values.new_zeros(n_u * n_i).index_add_(0, pi, values).index_add_(0, pj, -values).view(n_u, n_i)

    def _scatter(self, to_user: Tensor, to_items: Tensor) -> tuple[Tensor, Tensor]:
        user_scatter, item_scatter = self.scatters
        return user_scatter @ to_user, item_scatter @ to_items

    def grad(self, scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Gradient w.r.t. (user_e, item_e) at the point, ([n_users, d], [n_items, d]);
        ``scale`` [T] multiplies each triple's weight (e.g. a mask)."""
        if self._dense is not None:
            user_e, item_e, ue, pi, pj, f1, _, b, _ = self._dense
            if scale is not None:
                b = self._pair_matrix(pi, pj, f1 * scale, len(ue), len(item_e))
            return self._to_users(b @ item_e, user_e), b.T @ ue
        eu, diff, f1, _ = self._at
        f1 = (f1 if scale is None else f1 * scale)[:, None]
        return self._scatter(f1 * diff, f1 * eu)

    def hvp(self, w_user: Tensor, w_item: Tensor) -> tuple[Tensor, Tensor]:
        """H (w_user, w_item) at the point, shaped like the inputs."""
        if self._dense is not None:
            return self._dense_hvp(w_user, w_item)
        eu, diff, f1, f2 = self._at
        if self._buffers is None:  # per-triple work buffers, reused (allocation dominates otherwise)
            self._buffers = tuple(torch.empty_like(eu) for _ in range(3))
        wu, wd, tmp = self._buffers
        torch.index_select(w_user, 0, self.u, out=wu)
        torch.index_select(w_item, 0, self.i, out=wd)
        wd.sub_(torch.index_select(w_item, 0, self.j, out=tmp))
        a = torch.mul(wu, diff, out=tmp).sum(-1).add_(torch.mul(eu, wd, out=tmp).sum(-1)).mul_(f2)[:, None]
        user_scatter, item_scatter = self.scatters
        to_user = user_scatter @ torch.mul(diff, a, out=tmp).addcmul_(wd, f1[:, None])
        return to_user, item_scatter @ torch.mul(eu, a, out=wd).addcmul_(wu, f1[:, None])

    def _to_users(self, rows: Tensor, like: Tensor) -> Tensor:
        """Rows of the users with triples [r, d] placed in a [n_users, d] tensor (zeros elsewhere)."""
        return torch.zeros_like(like).index_copy_(0, self.rows, rows)

    def _dense_hvp(self, w_user: Tensor, w_item: Tensor) -> tuple[Tensor, Tensor]:
        """The same product with pair matrices: dS = W_U Eᵢᵀ + E_U W_Iᵀ, A = Σ_t f″ dm_t (±1 at
        (u,i), (u,j)), B = Σ_t f′ (±1); (H W)_U = A E_I + B W_I, (H W)_I = Aᵀ E_U + Bᵀ W_U."""
        user_e, item_e, ue, pi, pj, _, f2, b, ds = self._dense
        wu = w_user.index_select(0, self.rows)
        torch.matmul(torch.cat([wu, ue], 1), torch.cat([item_e, w_item], 1).T, out=ds)  # [r, n_i]
        flat = ds.view(-1)
        a = f2 * (flat.index_select(0, pi) - flat.index_select(0, pj))
        flat.zero_().index_add_(0, pi, a).index_add_(0, pj, -a)  # ds now holds A
        return self._to_users(torch.addmm(ds @ item_e, b, w_item), user_e), torch.addmm(ds.T @ ue, b.T, wu)
