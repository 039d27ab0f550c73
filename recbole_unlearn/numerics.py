"""Numerics shared by the unlearners and the models: a damped conjugate-gradient solver on
Hessian-vector products, Hessian-vector products by double backpropagation, per-row sums of a
pair set's vector features (the sufficient statistics of quadratic row blocks), and the
normalised adjacency of a bipartite user–item graph."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

Tensor = torch.Tensor


def conjugate_gradient(
    hvp: Callable[[Tensor], Tensor], b: Tensor, damping: float, tol: float, max_iter: int,
    with_product: bool = False,
):
    """Solve (H + damping·I) x = b by conjugate gradient, starting from x = 0.

    Args:
        hvp: v ↦ H v for the symmetric matrix H (same shape as ``b``, any shape).
        b: right-hand side.
        damping: λ ≥ 0 added to H's diagonal (Levenberg–Marquardt damping).
        tol: stop when ‖r‖ ≤ tol·‖b‖ (relative residual).
        max_iter: at most this many Hessian-vector products.
        with_product: also return (H + damping·I) x, accumulated from the products CG took
            (Σ αₖ (H+λI) pₖ), so a caller that needs it spends no further product.

    Stopping rule: relative residual below ``tol``, or ``max_iter`` products, or a direction
    of non-positive curvature pᵀ(H+λI)p ≤ 0 (H indefinite even after damping): the iterate
    reached so far is returned, as truncated Newton methods do (x = 0 if it happens first).

    Returns:
        (x, iters): the solution, shaped like ``b``, and the number of products used;
        (x, iters, (H+λI) x) with ``with_product``.
    """
    if damping < 0 or tol < 0 or max_iter < 0:
        raise ValueError("damping, tol and max_iter must be non-negative")
    x = torch.zeros_like(b)
    ax = torch.zeros_like(b) if with_product else None
    r = b.clone()
    p = r.clone()
    rr = torch.sum(r * r)
    threshold = (tol * torch.sqrt(rr)).item()
    iters = 0
    while iters < max_iter and torch.sqrt(rr).item() > threshold:
        ap = hvp(p).add_(p, alpha=damping)
        iters += 1
        curvature = torch.sum(p * ap)
        if curvature.item() <= 0:
            break
        alpha = (rr / curvature).item()
        x.add_(p, alpha=alpha)
        if ax is not None:
            ax.add_(ap, alpha=alpha)
        r.sub_(ap, alpha=alpha)
        rr_new = torch.sum(r * r)
        p.mul_((rr_new / rr).item()).add_(r)
        rr = rr_new
    return (x, iters, ax) if with_product else (x, iters)


def autograd_gradient_and_hvp(losses, theta: torch.Tensor):
    """(g, v ↦ H_Σ v) by double backprop: (influence, remaining) = ``losses(θ)``,
    g = ∇ influence, H_Σ = ∇² remaining, both at θ = ``theta`` [m, d]."""
    theta = theta.detach().requires_grad_(True)
    influence, remaining = losses(theta)
    g = torch.autograd.grad(influence, theta, retain_graph=True)[0]
    grad = torch.autograd.grad(remaining, theta, create_graph=True)[0]

    def hvp(v: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(grad, theta, v, retain_graph=True)[0].detach()

    return g.detach(), hvp


@dataclass
class BlockSums:
    """Per-row sums over a row's interactions: outer [n, d, d], square [n, d], linear [n, d]."""

    outer: torch.Tensor
    square: torch.Tensor
    linear: torch.Tensor

    def add_pairs(self, pos: torch.Tensor, cols: torch.Tensor, weights: torch.Tensor, vectors: torch.Tensor) -> None:
        """In place: row ``pos[k]`` gains w_k f(vectors[cols[k]]) for each pair k (f: v vᵀ, v ⊙ v, v),
        [m] each, ``vectors`` [n_cols, d]; summed in bounded chunks, with no [n, d, d] temporary."""
        device = self.outer.device
        for rows, outer, linear in _bucket_chunks(pos.to(device), cols.to(device), weights.to(device),
                                                 vectors.to(device), len(self.outer)):
            self.outer.index_add_(0, rows, outer)
            self.square.index_add_(0, rows, outer.diagonal(dim1=1, dim2=2))
            self.linear.index_add_(0, rows, linear)

    def select(self, rows: torch.Tensor) -> "BlockSums":
        """The sums of ``rows`` [n] (copies)."""
        return BlockSums(self.outer[rows], self.square[rows], self.linear[rows])


def take(mask: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:
    """The entries of each of ``tensors`` [m, ...] where ``mask`` [m] is true: the mask becomes
    indices once (:func:`true_index`), then one gather per tensor, several times faster on the
    CPU than boolean indexing each tensor."""
    index = true_index(mask)
    return tuple(t.index_select(0, index) for t in tensors)


def true_index(mask: Tensor) -> Tensor:
    """The positions where ``mask`` [m] is true, ascending, int64 [k].  On the CPU through
    NumPy, whose ``flatnonzero`` is about 3x faster than ``torch.nonzero`` on a million entries."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return torch.nonzero(mask).squeeze(1)


def block_sums(rows: torch.Tensor, cols: torch.Tensor, targets: torch.Tensor, vectors: torch.Tensor,
               weights: torch.Tensor | None = None) -> BlockSums:
    """Σ over pairs (rows[k], cols[k]) with rows[k] == targets[j] of w_k f(vectors[cols[k]]), per j.

    rows/cols: [m] pair indices; targets: [n] distinct row ids; vectors: [n_cols, d]; weights:
    [m] (None: all 1; ±1 gives a change of the sums in one pass).
    Returns sums of v vᵀ, v ⊙ v and v for each target row (zeros for rows without pairs).
    """
    n, device = len(targets), vectors.device
    rows, cols, targets = rows.to(device), cols.to(device), targets.to(device)
    size = max(int(rows.max()) if len(rows) else -1, int(targets.max()) if len(targets) else -1) + 1
    position = torch.full((size,), -1, device=device)
    position[targets] = torch.arange(n, device=device)
    pos = position[rows] if len(rows) else rows
    keep = pos >= 0
    pos, cols = take(keep, pos, cols)
    values = (torch.ones(len(pos), dtype=vectors.dtype, device=device) if weights is None
              else take(keep, weights.to(device))[0].to(vectors.dtype))
    counts = torch.bincount(pos, minlength=n)
    longest = int(counts.max()) if len(pos) else 0
    if n * longest > 2 * len(pos) or len(pos) > 4 * len(torch.unique(cols)):  # padding would double the work, or many pairs per vector
        return _bucketed_sums(pos, cols, values, vectors, n)
    return _padded_sums(pos, vectors[cols], values, counts, longest)


def _padded_sums(pos: Tensor, v: Tensor, values: Tensor, counts: Tensor, longest: int) -> BlockSums:
    """Few pairs per target, evenly spread (e.g. a few users' rows): each target's pairs in
    one padded batch [n, longest, d], summed by batched products."""
    n, d = len(counts), v.shape[1]
    order = torch.argsort(pos, stable=True)
    pos, v, values = pos[order], v[order], values[order]
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(pos), device=pos.device) - starts[pos]
    batch = v.new_zeros(n, longest, d)
    batch[pos, slot] = v
    weighted = v.new_zeros(n, longest, d)
    weighted[pos, slot] = v * values.unsqueeze(1)
    return BlockSums(torch.bmm(batch.transpose(1, 2), weighted), (batch * weighted).sum(1), weighted.sum(1))


def _bucketed_sums(pos: Tensor, cols: Tensor, values: Tensor, v: Tensor, n: int, budget: int = 1 << 18) -> BlockSums:
    """Many pairs per target (e.g. every item's users): the sums of :func:`_bucket_chunks`, written
    into [n] block sums."""
    outer, linear = v.new_zeros(n, v.shape[1], v.shape[1]), v.new_zeros(n, v.shape[1])
    for t, o, l in _bucket_chunks(pos, cols, values, v, n, budget):
        outer[t], linear[t] = o, l
    return BlockSums(outer, outer.diagonal(dim1=1, dim2=2).clone(), linear)


def _bucket_chunks(pos: Tensor, cols: Tensor, values: Tensor, v: Tensor, n: int, budget: int = 1 << 18):
    """Yield (targets [c], Σ_k w_k v_k v_kᵀ [c, d, d], Σ_k w_k v_k [c, d]) for chunks of the targets
    in [0, n) that have pairs (each target in one chunk).

    The targets are grouped by pair count (powers of two); each group's vectors are gathered
    into zero-padded batches [c, L, d] of at most ``budget`` floats and summed by batched
    products, Σ_k w_k v_k v_kᵀ = Vᵀ(w ⊙ V), whose diagonal is Σ_k w_k v_k ⊙ v_k.  The work is
    dense matrix products, where a sparse product with d×d features per pair is bound by memory
    bandwidth; the padding is less than the pairs."""
    d, device, m = v.shape[1], v.device, len(cols)
    order = torch.argsort(pos, stable=True)
    vz = torch.cat([v, v.new_zeros(1, d)])  # row len(v): the padding's zero vector
    source = torch.cat([cols[order], torch.tensor([len(v)], device=device)])  # pair slot m: the padding
    unit = bool((values == 1).all())
    weight = None if unit else torch.cat([values[order].to(v.dtype), v.new_zeros(1)])
    counts = torch.bincount(pos, minlength=n)
    starts = torch.cumsum(counts, 0) - counts
    level = torch.ceil(torch.log2(counts.clamp(min=1).double())).long()
    level[counts == 0] = -1
    for b in torch.unique(level).tolist():
        if b < 0:
            continue
        targets = torch.nonzero(level == b).squeeze(1)
        longest = int(counts[targets].max())
        slot = torch.arange(longest, device=device)
        step = max(1, budget // (max(longest, d) * d))  # bounds the batch [c, L, d] and the sums [c, d, d]
        for s in range(0, len(targets), step):
            t = targets[s : s + step]
            at = torch.where(slot < counts[t, None], starts[t, None] + slot, m)  # [c, L] pair slots
            vec = vz[source[at]]  # [c, L, d], zero rows past each target's pairs
            weighted = vec if unit else vec * weight[at].unsqueeze(-1)
            yield t, torch.bmm(vec.transpose(1, 2), weighted), weighted.sum(1)


def normalized_adjacency(
    users: np.ndarray, items: np.ndarray, n_users: int, n_items: int
) -> torch.Tensor:
    """Sparse symmetric-normalised bipartite adjacency, [(n_users+n_items)]² COO tensor.

    ``users``/``items`` are the internal ids of the edges (duplicates are counted once).
    """
    n = n_users + n_items
    key = np.unique(np.asarray(users, dtype=np.int64) * n_items + np.asarray(items, dtype=np.int64))
    u, i = key // n_items, key % n_items + n_users
    # the user→item half is sorted by (u, i); a stable sort by item of the other half (u ascends
    # within each item) gives (i, u) order: the indices are sorted and unique, i.e. coalesced
    by_item = np.argsort(i.astype(np.int16 if n < 2**15 else np.int64), kind="stable")
    rows = np.concatenate([u, i[by_item]])
    cols = np.concatenate([i, u[by_item]])
    deg = np.bincount(rows, minlength=n).astype(np.float64)
    inv_sqrt = np.zeros(n)
    inv_sqrt[deg > 0] = deg[deg > 0] ** -0.5
    vals = inv_sqrt[rows] * inv_sqrt[cols]
    index = torch.from_numpy(np.stack([rows, cols]))
    return torch.sparse_coo_tensor(index, torch.from_numpy(vals).float(), (n, n), check_invariants=False,
                                   is_coalesced=True)


class _SymmetricProduct(torch.autograd.Function):
    """y = S x for a constant symmetric sparse S: the gradient is S g, by this same function,
    so double backpropagation (Hessian-vector products) stays a sparse product too."""

    @staticmethod
    def forward(ctx, matrix: Tensor, x: Tensor) -> Tensor:
        ctx.matrix = matrix
        return matrix @ x

    @staticmethod
    def backward(ctx, grad: Tensor):
        return None, _SymmetricProduct.apply(ctx.matrix, grad)


def as_csr(matrix: Tensor | None) -> Tensor | None:
    """A sparse matrix in CSR layout (converted once, for repeated products), None as None
    (a model without a graph)."""
    return None if matrix is None else matrix.to_sparse_csr()


def symmetric_spmm(matrix: Tensor, x: Tensor) -> Tensor:
    """S x, [n, d], for a symmetric sparse S [n, n] (COO or CSR; COO is converted to CSR).

    Same values as ``torch.sparse.mm(S, x)``.  The backward pass uses Sᵀ = S instead of
    transposing a COO matrix at every step, several times faster on one CPU thread; S is a
    constant (no gradient flows to its values).
    """
    if matrix.layout == torch.sparse_coo:
        matrix = matrix.to_sparse_csr()
    return _SymmetricProduct.apply(matrix, x)
