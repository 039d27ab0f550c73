"""AltEraser: alternating per-user / per-item second-order unlearning.

Liu, Wan, Wang, Zhang, Zhang and Li, "Forgetting Fast in Recommender Systems", arXiv:2208.06875
(RecSys 2022 short version).  Starting from Θ_a, AltEraser re-optimises the model on D_r block by
block: the user vectors with everything else fixed, then the item vectors, alternating.  The
blocks of one side are independent, so each side is a batch of small problems.

1. **Erase pass** — the users and items that occur in the request are re-solved on D_r.
2. **Further passes** — over all users/items (``alt_scope: all``) or only the affected ones
   (``affected``: the request's users and items, plus ``alt_hops`` rings of D_r neighbours), until
   the relative decrease of the D_r objective falls below ``alt_tol`` or ``alt_max_passes`` passes.

Inner optimisers (``alt_optimizer``; ``auto`` picks ``ah_newton`` for a model that offers
closed-form row blocks, ``exact_blocks``, else ``hf_newton``):
``ah_newton`` — exact Newton on the closed-form quadratic blocks (ENMF's: ``model.enmf_blocks``),
batched d×d solves; with ``alt_cache`` the item blocks of Θ_a are computed once before any
request (``pretrain_time_s``) and downdated by the forgetting users' pairs in the erase pass —
the paper's remark that H_a can be computed beforehand.
``hf_newton`` — Hessian-free Newton on any differentiable block loss (``_hf_newton``): the
model's ``row_objective`` on D_r (a sampled loss with negatives drawn once, seeded); for a BPR
loss on the outputs (LightGCN, BPR) its gradient and Hessian-vector products are taken in
closed form (``BPRRowDerivatives``: two propagations per product, over the block's k-hop
subgraph where that is smaller than the graph), else by double backprop.
``adamw`` — the paper's first-order ablation on the same block losses.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from recbole_unlearn import distributed
from recbole_unlearn.data.remaining import pairs
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.model.protocol import offers, require
from recbole_unlearn.numerics import BlockSums, take
from recbole_unlearn.registry import register_unlearner
from recbole_unlearn.unlearner._alteraser_blocks import BlockLosses, neighbours
from recbole_unlearn.unlearner._hf_newton import HFSettings, adamw_minimise, hf_newton
from recbole_unlearn.unlearner.base import Params, Unlearner


@dataclass(frozen=True)
class AltEraserParams(Params):
    """Keys of ``properties/unlearner/AltEraser.yaml`` (documented there)."""

    alt_optimizer: str = "auto"
    alt_scope: str = "all"
    alt_hops: int = 0
    alt_max_passes: int = 0
    alt_tol: float = 1e-3
    alt_batch_size: int = 4096
    alt_cache: bool = True
    hf_max_steps: int = 3
    hf_cg_iters: int = 50
    hf_cg_tol: float = 1e-4
    hf_damping: float = 1e-3
    hf_closed_form: bool = True
    adamw_lr: float = 0.01
    adamw_steps: int = 50


@register_unlearner
class AltEraser(Unlearner):
    """Alternating block re-optimisation on D_r; see the module docstring."""

    params_class = AltEraserParams
    sharded_state = ("item_outer", "item_square", "item_linear")  # split by item id in a process group (strided)

    def __init__(self, config, model):
        super().__init__(config, model)
        p = self.params
        exact = offers(require(model, "AltEraser"), "exact_blocks")
        if p.alt_optimizer == "auto":
            p = self.params = replace(p, alt_optimizer="ah_newton" if exact else "hf_newton")
        if p.alt_optimizer == "ah_newton" and not exact:
            raise UnlearnInputError(
                f"alt_optimizer=ah_newton needs closed-form row blocks (exact_blocks), which {type(model).__name__} "
                "does not offer; use hf_newton or adamw"
            )
        self._item_cache = None

    def pretrain(self, task) -> bool:
        """With ah_newton and ``alt_cache``: Θ_a's item block sums on D_a, [n_items, d, d] etc.
        (in a process group, this rank's items only), or, on a chain, the sums the
        previous request left (then nothing is prepared)."""
        if self.params.alt_optimizer != "ah_newton" or not self.params.alt_cache:
            return False
        n_items = task.original.n_items
        self._items = distributed.owned(n_items)
        carried = task.method_state or {}
        if set(self.sharded_state) <= set(carried):
            parts = [carried[k] for k in self.sharded_state]
            if len(parts[0]) == n_items != len(self._items):  # a whole saved state: this rank's rows
                parts = [distributed.my_share(t) for t in parts]
            if len(parts[0]) == len(self._items):
                self._item_cache = BlockSums(*(t.to(self.device) for t in parts))
                self.info.update(cache_carried=True, prepare_time_s=0.0, cache_bytes=self._cache_bytes())
                return False
        blocks = task.original.exact_blocks(*pairs(task.train))
        self._item_cache = blocks.item_sums(self._items)
        self.info["cache_bytes"] = self._cache_bytes()
        return True

    def _cache_bytes(self) -> int:
        c = self._item_cache
        return sum(t.numel() * t.element_size() for t in (c.outer, c.square, c.linear))

    def method_state(self, task, remaining) -> dict | None:
        """The item block sums of Θ_u on D_r: downdated in the erase pass, recomputed after
        further passes (they move every user vector).  In a process group each rank returns
        the rows of its items (:attr:`sharded_state`)."""
        if self._item_cache is None:
            return None
        if self.info.get("passes", 0) > 0:
            blocks = self.model.exact_blocks(*pairs(remaining))
            self._item_cache = blocks.item_sums(self._items)
        c = self._item_cache
        return {"item_outer": c.outer, "item_square": c.square, "item_linear": c.linear}

    # ---- the passes ------------------------------------------------------------------------
    def erase(self, task, remaining) -> None:
        users_r, items_r = pairs(remaining)
        f_users = torch.as_tensor(task.request.forget_users, dtype=torch.long)
        f_items = torch.unique(torch.as_tensor(task.request.items, dtype=torch.long))
        losses = BlockLosses(self.model, users_r, items_r, seed=int(self.config["seed"]))
        forgetting = losses.pairs_of_users(f_users) if losses.blocks is not None else None  # their D_r pairs
        self._update("user", f_users, losses, forgetting)
        if self._item_cache is not None:
            self._erase_items_by_downdate(task, f_users, f_items, losses, forgetting)
        else:
            self._update("item", f_items, losses)
        if self.params.alt_scope == "all":
            scope_u = torch.arange(1, self.model.n_users)
            scope_i = torch.arange(1, self.model.n_items)
        else:
            scope_u, scope_i = neighbours(users_r, items_r, f_users, f_items, self.params.alt_hops)
        self.info["passes"] = 0
        passes = self.params.alt_max_passes
        previous = losses.objective() if passes > 1 else None  # the stopping rule needs it only before a next pass
        for done in range(1, passes + 1):
            self._update("user", scope_u, losses)
            self._update("item", scope_i, losses)
            self.info["passes"] = done
            if done == passes:
                break
            current = losses.objective()
            if previous - current <= self.params.alt_tol * abs(previous):
                break
            previous = current

    def _update(self, kind: str, rows: torch.Tensor, losses: BlockLosses, pairs_of_rows=None) -> None:
        """Re-optimise the ``kind`` ('user' | 'item') vectors of ``rows`` in mini-batches;
        ``pairs_of_rows``: (users, items) [m] holding every D_r pair of ``rows`` (an exact block
        needs only its row's pairs), else all of D_r is scanned."""
        table = losses.table(kind)
        p = self.params
        if p.alt_optimizer == "ah_newton":  # independent exact solves: each process solves the rows it owns
            blocks = losses.blocks if pairs_of_rows is None else self.model.exact_blocks(*pairs_of_rows)
            solve = blocks.solve_users if kind == "user" else blocks.solve_items
            mine = distributed.owner_mask(rows)
            own = rows[mine]
            solved = [solve(own[s : s + p.alt_batch_size]) for s in range(0, len(own), p.alt_batch_size)]
            values = torch.cat(solved) if solved else table.data.new_zeros(0, table.shape[1])
            table.data[rows] = distributed.assemble((len(rows), table.shape[1]), mine, values)
            losses.changed()
            return
        for start in range(0, len(rows), p.alt_batch_size):
            batch = rows[start : start + p.alt_batch_size]
            loss_fn = losses.block_loss(kind, batch)
            if p.alt_optimizer == "hf_newton":
                settings = HFSettings(p.hf_max_steps, p.hf_cg_iters, p.hf_cg_tol, p.hf_damping)
                closed = losses.block_derivatives(kind, batch) if p.hf_closed_form else None  # None: double backprop
                theta, _ = hf_newton(loss_fn if closed is None else closed.loss, table.data[batch], settings, closed)
            else:
                theta, _ = adamw_minimise(loss_fn, table.data[batch], p.adamw_lr, p.adamw_steps)
            table.data[batch] = theta
        losses.changed()

    def _erase_items_by_downdate(self, task, f_users, f_items, losses: BlockLosses, forgetting) -> None:
        """Item blocks on D_r from the cached blocks, in place, so the cache stays exact for Θ_u
        and D_r: each D_r pair of a forgetting user u changes its item's sums by f(z'_u) − f(z_u)
        (re-solved vs Θ_a's vector, f = v ↦ (v vᵀ, v ⊙ v, v)), each forgotten pair removes
        f(z_u); then the request's items are re-solved from the cache.  ``forgetting``: the
        forgetting users' D_r pairs (users, items) [m]."""
        blocks = losses.blocks
        slot = torch.full((self.model.n_users,), -1, dtype=torch.long)
        slot[f_users] = torch.arange(len(f_users))  # a forgetting user's place among them
        kept_u, kept_i = forgetting
        gone_u = torch.as_tensor(task.request.users, dtype=torch.long)
        gone_i = torch.as_tensor(task.request.items, dtype=torch.long)
        rows = torch.unique(torch.cat([kept_i, gone_i]))
        rows = rows[distributed.owner_mask(rows)]  # this process's share of the cache
        place = torch.full((self.model.n_items,), -1, dtype=torch.long)
        place[rows] = distributed.local_index(rows)  # an item's row in this process's cache
        z_old = task.original.exact_blocks(kept_u, kept_i).z()[f_users]
        vectors = torch.cat([blocks.z()[f_users], z_old])  # [2|F|, d]: z'_u, then z_u
        n_kept, n_f = len(kept_i), len(f_users)
        pos = torch.cat([place[kept_i], place[kept_i], place[gone_i]])
        cols = torch.cat([slot[kept_u], slot[kept_u] + n_f, slot[gone_u] + n_f])
        signs = torch.cat([torch.ones(n_kept), -torch.ones(n_kept + len(gone_i))])
        self._item_cache.add_pairs(*take(pos >= 0, pos, cols, signs), vectors)
        mine = distributed.owner_mask(f_items)
        own = f_items[mine]
        solved = blocks.solve_items(own, self._item_cache, distributed.local_index(own))
        table = losses.table("item")
        table.data[f_items] = distributed.assemble((len(f_items), table.shape[1]), mine, solved)
        losses.changed()


__all__ = ["AltEraser", "AltEraserParams"]
