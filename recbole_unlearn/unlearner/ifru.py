"""IFRU: recommendation unlearning via influence functions, with graph spillover and
importance-based pruning.

Zhang, Lu, Bai, Zhang, Feng, He, "Recommendation Unlearning via Influence Function",
ACM Transactions on Recommender Systems, 2024.

Derivation (sum form).  Θ_a minimises L_a(θ) = Σ_{z∈D_a} ℓ(z; θ, G); unlearning wants the
minimiser of L_r(θ) = Σ_{z∈D_r} ℓ(z; θ, G') (G' = the D_r graph), and
L_r = L_a − Σ_{D_f} ℓ(z; θ, G) − Σ_{D_r} [ℓ(z; θ, G) − ℓ(z; θ, G')].  IFRU keeps the last sum over
the spillover set D_ch only (retained edges of nodes that lost more than ``ifru_degree_drop``
of their degree).  With ∇L_a(Θ_a) = 0, ∇L_r(Θ_a) = −g,

    g = ∇_S [Σ_{z∈D_f} ℓ(z; Θ_a, G) + Σ_{z∈D_ch} (ℓ(z; Θ_a, G) − ℓ(z; Θ_a, G'))],

and one Newton step on L_r is θ_S ← θ_S + (H_Σ + λI)⁻¹ g, H_Σ = ∇²_S L_r(Θ_a) = n·H (H the
Hessian of the mean over the n = |D_r| terms): the paper's θ_S ← θ_S + (1/n)·H⁻¹g, damped by λ
(``ifru_damping``, on the summed-loss scale) and scaled by ``ifru_scale`` (1 = Newton step).
S = the embedding rows kept by importance pruning; every other parameter stays at Θ_a.  The
system is solved by conjugate gradient (``numerics.conjugate_gradient``) on exact
Hessian-vector products.  λ and the CG tolerance default per model (the model's
``influence_damping`` and ``influence_cg_tol``: LightGCN 3 and 0.1, ENMF 10 and 0.01), chosen on
ml-100k's validation split (NDCG@20 of all and of the forgetting
users; noise and private scenarios): the two losses' curvatures are two orders of magnitude
apart, λ ≤ 0.5 (LightGCN) or ≤ 3 (ENMF) gave steps that wrecked validation accuracy, and ENMF's
worse-conditioned system needs the tighter tolerance (LightGCN's step is the same at 0.01 and
0.1).  λ is on the summed-loss scale, so other datasets may want another value (the tiny test
data does).

A BPR model on a linear propagation (``bpr_on_outputs``: LightGCN, BPR-MF): ℓ is the BPR term
of a (user, positive, negative) triple through the propagation.
Negatives are drawn once, uniformly among the user's non-D_a items, seeded by ``ifru_seed``:
``ifru_negatives`` per forgotten edge, one per D_r edge (D_ch edges reuse theirs, so
ℓ(G) − ℓ(G') compares the same triple).  H_Σ v = M'[H_out (M' v)] + reg, M' the propagation on
G', H_out in closed form (``_bpr_triples.BPRTriples``; equal to double backprop, see the tests).
Any other model: the model's ``objective_fn`` on D_r and its ``pair_terms`` on D_f, products
by double backprop.  For ENMF (non-sampling loss, dropout in expectation, h fixed) forgetting
(u, i) moves it from the positive to the unobserved part of u's loss and the all-items term does
not depend on the history, so the change of the loss is exactly Σ_{D_f} pair_terms: nothing
spills over.  Spillover needs a graph (``model.graph()``); without one it has no effect.

After the update a graph model runs on the D_r graph (``Unlearner.unlearn`` sets it) with its
cached outputs cleared.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recbole_unlearn import distributed
from recbole_unlearn.data.remaining import dataset_keys, pairs
from recbole_unlearn.model.protocol import require
from recbole_unlearn.numerics import as_csr, autograd_gradient_and_hvp, conjugate_gradient
from recbole_unlearn.registry import register_unlearner
from recbole_unlearn.unlearner._bpr_rows import node_counts
from recbole_unlearn.unlearner._bpr_triples import BPRTriples
from recbole_unlearn.unlearner._influence import importance_scores, keep_by_quantile, sample_negatives, spillover_mask
from recbole_unlearn.unlearner.base import Params, Unlearner


@dataclass(frozen=True)
class IFRUParams(Params):
    """Keys of properties/unlearner/IFRU.yaml (documented there)."""

    ifru_pruning: bool = True
    ifru_k_hop: int = 1
    ifru_prune_quantile: float = 0.4
    ifru_spillover: bool = True
    ifru_degree_drop: float = 0.01
    ifru_damping: float | None = None
    ifru_cg_tol: float | None = None
    ifru_cg_max_iter: int = 50
    ifru_scale: float = 1.0
    ifru_negatives: int = 4
    ifru_seed: int | None = None


def _ids(dataset) -> tuple[np.ndarray, np.ndarray]:
    return tuple(x.numpy() for x in pairs(dataset))


def _share(users: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    """The triples of this process's users, (users, *arrays) (all of them with one process):
    each rank's score matrix then holds its users' rows only."""
    mine = distributed.owner_mask(users)
    return [a[mine] for a in (users, *arrays)]


class _BPRTerms:
    """A BPR model's terms as functions of the kept ego rows θ_S ([m, d]).

    ℓ(u, i, j) = −log σ(e_uᵀ(e_i − e_j)) + reg_weight/2 (‖e⁰_u‖² + ‖e⁰_i‖² + ‖e⁰_j‖²), e = M e⁰
    the model's linear propagation (M symmetric; the identity without a graph) —
    ``PairwiseModel.bpr_terms``.  Triples are fixed:
    each forgotten edge with ``k`` negatives (weight 1/k), each D_r edge with one; the D_ch
    edges reuse theirs, so ℓ(G) − ℓ(G') compares the same triple and the regulariser cancels.
    H_Σ is exact: v ↦ reg·c ⊙ v + [M' H_out M' v]_S with H_out from :class:`BPRTriples`
    (tests/test_ifru.py checks g and H_Σ v against double backprop of the same objective).
    In a process group each rank holds the triples of its users (ids r, r + N, ...) and g and
    every H_Σ v are summed by all-reduce, so the conjugate gradient runs on the same vectors on
    every rank; the propagations are done whole by every rank.
    """

    def __init__(self, model, rows: torch.Tensor, adj_a, ids_r, forget, spill: np.ndarray, positives, k, rng):
        self.model, self.rows, self.adj_a = model, rows, adj_a
        self.csr_a, self.csr_r = as_csr(adj_a), as_csr(model.graph())  # fast products
        self.base = model.ego_embeddings().detach()
        n_u, n_i = model.n_users, model.n_items
        ru, ri = ids_r
        rj = sample_negatives(ru, positives, n_i, rng)
        fu, fi = np.repeat(forget[0], k), np.repeat(forget[1], k)
        fj = sample_negatives(fu, positives, n_i, rng)
        # in a process group each rank holds the triples of its users (all of them alone)
        on_g = _share(np.concatenate([fu, ru[spill]]), np.concatenate([fi, ri[spill]]), np.concatenate([fj, rj[spill]]),
                      np.r_[np.full(len(fu), 1.0 / k), np.ones(spill.sum())])
        self.on_g = BPRTriples(*on_g, n_u, n_i)  # D_f (weight 1/k) and D_ch on G
        su, si, sj, s_spill = _share(ru, ri, rj, spill)
        self.on_r = BPRTriples(su, si, sj, np.ones(len(su)), n_u, n_i)  # D_r on G'
        self.spill = -torch.as_tensor(s_spill, dtype=torch.float32)  # D_ch enters g with −ℓ(G')
        self.reg_r = model.reg_weight * node_counts(n_u, n_i, ru, ri, rj)[rows]
        self.reg_f = model.reg_weight / k * node_counts(n_u, n_i, fu, fi, fj)[rows]

    def ego(self, theta: torch.Tensor) -> torch.Tensor:
        return self.base.index_copy(0, self.rows, theta)

    def _back(self, grads: tuple[torch.Tensor, torch.Tensor], adj) -> torch.Tensor:
        """Mᵀ (= M) applied to output-space vectors, restricted to the kept rows, [m, d]."""
        user_e, item_e = self.model.propagate(torch.cat(grads), adj)
        return torch.cat([user_e, item_e]).index_select(0, self.rows)

    @torch.no_grad()
    def gradient_and_hvp(self, theta: torch.Tensor):
        """(g [m, d], v ↦ H_Σ v) at θ_S = ``theta``."""
        ego = self.ego(theta)
        out_g, out_r = self.model.propagate(ego, self.csr_a), self.model.propagate(ego, self.csr_r)
        g = distributed.all_reduce(self._back(self.on_g.at(*out_g).grad(), self.csr_a)
                                   + self._back(self.on_r.at(*out_r).grad(self.spill), self.csr_r))
        g += self.reg_f[:, None] * theta

        full = torch.zeros_like(self.base)  # v scattered to all rows, reused

        def hvp(v: torch.Tensor) -> torch.Tensor:
            w = self.model.propagate(full.index_copy_(0, self.rows, v), self.csr_r)
            return distributed.all_reduce(self._back(self.on_r.hvp(*w), self.csr_r)).addcmul_(self.reg_r[:, None], v)

        return g, hvp

    def apply(self, theta: torch.Tensor) -> None:
        self.model.write_ego(self.ego(theta.detach()))


class _ObjectiveTerms:
    """Any model's terms as functions of the kept ego rows θ_S ([m, d]): Σ_{D_f} of its
    ``pair_terms`` and its ``objective_fn`` on D_r, differentiated by double backprop."""

    def __init__(self, model, rows: torch.Tensor, ids_r, forget):
        self.model, self.rows = model, rows
        self.base = model.ego_embeddings().detach()
        self.forget = [torch.as_tensor(a).long() for a in forget]
        self.remaining = model.objective_fn(*(torch.as_tensor(a).long() for a in ids_r))

    def ego(self, theta: torch.Tensor) -> torch.Tensor:
        return self.base.index_copy(0, self.rows, theta)

    def losses(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Σ_{D_f} ℓ, the whole D_r objective) at θ_S = ``theta``."""
        ego = self.ego(theta)
        return self.model.pair_terms(*self.forget, ego=ego).sum(), self.remaining(ego)

    def gradient_and_hvp(self, theta: torch.Tensor):
        """(g [m, d], v ↦ H_Σ v) at θ_S = ``theta``, by double backprop."""
        return autograd_gradient_and_hvp(self.losses, theta)

    def apply(self, theta: torch.Tensor) -> None:
        self.model.write_ego(self.ego(theta.detach()))


def influence_step(terms, theta: torch.Tensor, damping: float, tol: float, max_iter: int) -> tuple[torch.Tensor, int]:
    """Δ = (H_Σ + λI)⁻¹ g at θ_S = ``theta`` ([m, d]) by conjugate gradient; returns (Δ, products)."""
    g, hvp = terms.gradient_and_hvp(theta.detach())
    return conjugate_gradient(hvp, g, damping, tol, max_iter)


@register_unlearner
class IFRU(Unlearner):
    """One damped Newton step of the influence of D_f (and its graph spillover) on the kept
    embedding rows; see the module docstring."""

    params_class = IFRUParams

    def erase(self, task, remaining) -> None:
        prm, model = self.params, require(self.model, "IFRU")
        given = (prm.ifru_damping, prm.ifru_cg_tol)
        defaults = (model.influence_damping, model.influence_cg_tol)
        damping, tol = (float(d if v is None else v) for v, d in zip(given, defaults))
        n_u, n_i = model.n_users, model.n_items
        ids_a, ids_r = _ids(task.train), _ids(remaining)
        fu, fi = task.request.users, task.request.items
        if prm.ifru_pruning:
            scores = importance_scores(*ids_a, fu, fi, n_u, n_i, prm.ifru_k_hop)
            rows = keep_by_quantile(scores, prm.ifru_prune_quantile)
        else:
            rows = np.setdiff1d(np.arange(n_u + n_i), [0, n_u])  # every row but the paddings
        rows = torch.as_tensor(rows, dtype=torch.long)
        spill = np.zeros(len(ids_r[0]), dtype=bool)
        graph_a = task.original.graph()
        if model.bpr_on_outputs and graph_a is not None and prm.ifru_spillover:
            spill = spillover_mask(*ids_r, fu, fi, n_u, n_i, prm.ifru_degree_drop)
        if model.bpr_on_outputs:
            seed = prm.ifru_seed if prm.ifru_seed is not None else self.config["seed"]
            terms = _BPRTerms(model, rows, None if graph_a is None else graph_a.to(self.device), ids_r, (fu, fi),
                              spill, np.sort(dataset_keys(task.train)), max(1, prm.ifru_negatives),
                              np.random.default_rng(seed))
        else:
            terms = _ObjectiveTerms(model, rows, ids_r, (fu, fi))
        theta = terms.base[rows].clone()  # [m, d]
        delta, iters = influence_step(terms, theta, damping, tol, prm.ifru_cg_max_iter)
        terms.apply(theta + prm.ifru_scale * delta)
        self.info.update(rows_kept=int(len(rows)), rows_total=int(n_u + n_i), spillover_pairs=int(spill.sum()),
                         damping=damping, cg_tol=tol, cg_iters=int(iters),
                         step_norm=float(delta.norm() * prm.ifru_scale))
