"""Closed-form per-user / per-item quadratic blocks of ENMF's training objective.

Liu et al., "Forgetting Fast in Recommender Systems" (RecSys 2022), section 4: with the item factors Q
and the prediction vector h fixed, ENMF's loss is quadratic in each user vector p_u (and, with P
fixed, in each q_i), so one Newton step solves a block exactly.

With x_i = h ⊙ q_i, c = negative_weight, r = ρ/(1−ρ) (dropout ρ on p_u in the positive term,
taken in expectation) and λ = reg_weight, the objective the model is trained on is

    F = c Σ_u Σ_i (p_uᵀx_i)² + Σ_{(u,i)∈R} [(1−c)((p_uᵀx_i)² + r Σ_k p_uk² x_ik²) − 2 p_uᵀx_i]
        + λ(‖P‖² + ‖Q‖²),

so ∂F/∂p_u = 2(A_u p_u − b_u) with

    A_u = c·(hhᵀ ⊙ QᵀQ) + (1−c)·(Σ_{i∈R_u} x_i x_iᵀ + r·diag(Σ_{i∈R_u} x_i ⊙ x_i)) + λI,
    b_u = Σ_{i∈R_u} x_i,

and symmetrically for q_i with z_u = h ⊙ p_u in place of x_i.  The sums over R_u are one sparse
product R @ [x⊗x | x⊙x | x]; the shared c·(...) term is one d×d matrix for all blocks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

JITTER = 1e-6


@dataclass
class BlockSums:
    """Per-row sums over a row's interactions: outer [n, d, d], square [n, d], linear [n, d]."""

    outer: torch.Tensor
    square: torch.Tensor
    linear: torch.Tensor

    def update_rows(self, rows: torch.Tensor, remove: "BlockSums", add: "BlockSums") -> None:
        """In place: the sums of ``rows`` [n] lose ``remove``'s and gain ``add``'s (both for the
        same ``rows``)."""
        for mine, r, a in zip((self.outer, self.square, self.linear), (remove.outer, remove.square, remove.linear),
                              (add.outer, add.square, add.linear)):
            mine[rows] = mine[rows].sub_(r).add_(a)

    def select(self, rows: torch.Tensor) -> "BlockSums":
        """The sums of ``rows`` [n] (copies)."""
        return BlockSums(self.outer[rows], self.square[rows], self.linear[rows])


def block_sums(rows: torch.Tensor, cols: torch.Tensor, targets: torch.Tensor, vectors: torch.Tensor) -> BlockSums:
    """Σ over pairs (rows[k], cols[k]) with rows[k] == targets[j] of f(vectors[cols[k]]), per j.

    rows/cols: [m] pair indices; targets: [n] distinct row ids; vectors: [n_cols, d].
    Returns sums of v vᵀ, v ⊙ v and v for each target row (zeros for rows without pairs).
    """
    n, d = len(targets), vectors.shape[1]
    size = max(int(rows.max()) if len(rows) else -1, int(targets.max()) if len(targets) else -1) + 1
    position = torch.full((size,), -1)
    position[targets] = torch.arange(n)
    pos = position[rows] if len(rows) else rows
    keep = pos >= 0
    pos, cols = pos[keep], cols[keep]
    used, cols = torch.unique(cols, return_inverse=True)  # featurise only the vectors the pairs use
    v = vectors[used]
    feats = torch.cat([(v.unsqueeze(2) * v.unsqueeze(1)).reshape(len(v), d * d), v * v, v], dim=1)
    order = torch.argsort(pos)
    incidence = torch.sparse_csr_tensor(
        torch.searchsorted(pos[order], torch.arange(n + 1)), cols[order], torch.ones(len(pos)), (n, len(v)),
        check_invariants=False,
    )
    out = torch.sparse.mm(incidence, feats)  # [n, d² + 2d]
    return BlockSums(out[:, : d * d].reshape(n, d, d), out[:, d * d : d * d + d], out[:, d * d + d :])


class ENMFBlocks:
    """The user and item block systems of an ENMF model on a set of training pairs.

    ``users``/``items``: [m] internal ids of the training pairs (e.g. D_r).
    """

    def __init__(self, model, users: torch.Tensor, items: torch.Tensor):
        self.model = model
        self.users, self.items = users.long(), items.long()
        self.c = float(model.negative_weight)
        rho = float(model.dropout_prob)
        self.r = rho / (1.0 - rho)
        self.lam = float(model.reg_weight)

    @property
    def P(self) -> torch.Tensor:
        return self.model.user_embedding.weight.data

    @property
    def Q(self) -> torch.Tensor:
        return self.model.item_embedding.weight.data

    @property
    def h(self) -> torch.Tensor:
        return self.model.h.data

    def x(self) -> torch.Tensor:
        """x_i = h ⊙ q_i, [n_items, d] (row 0, the padding item, is zero)."""
        return self.Q * self.h

    def z(self) -> torch.Tensor:
        """z_u = h ⊙ p_u, [n_users, d]."""
        return self.P * self.h

    def system(self, shared: torch.Tensor, sums: BlockSums) -> tuple[torch.Tensor, torch.Tensor]:
        """(A [n,d,d], b [n,d]) from the shared Gram matrix [d,d] and the per-row sums
        (built in place: one [n,d,d] buffer)."""
        A = torch.mul(sums.outer, 1 - self.c)
        A.add_(shared, alpha=self.c)
        A.diagonal(dim1=1, dim2=2).add_(sums.square * ((1 - self.c) * self.r)).add_(self.lam + JITTER)
        return A, sums.linear

    def user_sums(self, users: torch.Tensor) -> BlockSums:
        return block_sums(self.users, self.items, users, self.x())

    def item_sums(self, items: torch.Tensor, z: torch.Tensor | None = None) -> BlockSums:
        return block_sums(self.items, self.users, items, self.z() if z is None else z)

    def user_gram(self) -> torch.Tensor:
        """Σ_{i≥1} x_i x_iᵀ = hhᵀ ⊙ QᵀQ, [d, d]."""
        x = self.x()[1:]
        return x.T @ x

    def item_gram(self) -> torch.Tensor:
        """Σ_u z_u z_uᵀ = hhᵀ ⊙ PᵀP, [d, d] (over every user, as the training loss)."""
        z = self.z()
        return z.T @ z

    def solve_users(self, users: torch.Tensor, sums: BlockSums | None = None) -> torch.Tensor:
        """Exact minimisers p_u = A_u⁻¹ b_u of the user blocks, [n, d]."""
        return torch.linalg.solve(*self.system(self.user_gram(), self.user_sums(users) if sums is None else sums))

    def solve_items(self, items: torch.Tensor, sums: BlockSums | None = None) -> torch.Tensor:
        """Exact minimisers q_i = A_i⁻¹ b_i of the item blocks, [n, d]."""
        return torch.linalg.solve(*self.system(self.item_gram(), self.item_sums(items) if sums is None else sums))

    def objective(self) -> float:
        """F on these pairs (dropout in expectation), a float."""
        P, x = self.P, self.x()
        all_items = self.c * torch.sum((P.T @ P) * (x[1:].T @ x[1:]))
        p, xi = P[self.users], x[self.items]
        y = (p * xi).sum(1)
        positive = (1 - self.c) * (y.square() + self.r * (p.square() * xi.square()).sum(1)) - 2 * y
        reg = self.lam * (P.square().sum() + self.Q[1:].square().sum())
        return float(all_items + positive.sum() + reg)
