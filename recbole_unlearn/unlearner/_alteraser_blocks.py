"""Block losses of AltEraser: one model's D_r objective as a function of a block of rows.

For ENMF the loss is written from its pairs (the same expected objective as
``_enmf_blocks``, but evaluated term by term, so Hessian-free Newton and the AdamW ablation
see the model's own loss, not the closed form).  For LightGCN it is the mean BPR loss over the
D_r pairs, each with one negative item drawn once from a seeded generator (uniform over
items, redrawn once where it hit a positive), propagated through the D_r graph.
"""
from __future__ import annotations

from typing import Callable

import torch

from recbole_unlearn.model.enmf import ENMF
from recbole_unlearn.unlearner._enmf_blocks import JITTER, ENMFBlocks


class BlockLosses:
    """Block losses and the full D_r objective of ``model`` on pairs (``users``, ``items``) [m]."""

    def __init__(self, model, users: torch.Tensor, items: torch.Tensor, seed: int):
        self.model = model
        self.users, self.items = users, items
        self.is_enmf = isinstance(model, ENMF)
        self.enmf = ENMFBlocks(model, users, items) if self.is_enmf else None
        if not self.is_enmf:
            g = torch.Generator().manual_seed(seed)
            neg = torch.randint(1, model.n_items, (len(items),), generator=g)
            clash = torch.isin(users * model.n_items + neg, users * model.n_items + items)
            neg[clash] = torch.randint(1, model.n_items, (int(clash.sum()),), generator=g)
            self.negatives = neg

    def table(self, kind: str) -> torch.nn.Parameter:
        """The embedding table of ``kind`` ('user' | 'item')."""
        return self.model.user_embedding.weight if kind == "user" else self.model.item_embedding.weight

    def changed(self) -> None:
        """Call after writing into the tables (clears propagated caches)."""
        if not self.is_enmf:
            self.model.clear_cache()

    def objective(self) -> float:
        """The D_r objective at the current parameters."""
        with torch.no_grad():
            if self.is_enmf:
                return self.enmf.objective()
            return float(self.model.bpr_terms(self.users, self.items, self.negatives).mean())

    def block_loss(self, kind: str, rows: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """loss(θ) with θ [len(rows), d] in place of the ``kind`` vectors of ``rows``."""
        return self._enmf_loss(kind, rows) if self.is_enmf else self._lightgcn_loss(kind, rows)

    def _enmf_loss(self, kind: str, rows: torch.Tensor):
        e = self.enmf
        own, other = (self.users, self.items) if kind == "user" else (self.items, self.users)
        vectors = (e.x() if kind == "user" else e.z()).detach()
        gram = (e.user_gram() if kind == "user" else e.item_gram()).detach()
        position = torch.full((int(max(own.max(), rows.max())) + 1,), -1)
        position[rows] = torch.arange(len(rows))
        pos = position[own]
        keep = pos >= 0
        pos, v = pos[keep], vectors[other[keep]]
        c, r, lam = e.c, e.r, e.lam + JITTER

        def loss(theta: torch.Tensor) -> torch.Tensor:
            t = theta[pos]
            y = (t * v).sum(1)
            positive = (1 - c) * (y.square() + r * (t.square() * v.square()).sum(1)) - 2 * y
            return c * ((theta @ gram) * theta).sum() + positive.sum() + lam * theta.square().sum()

        return loss

    def _lightgcn_loss(self, kind: str, rows: torch.Tensor):
        model = self.model
        ego0 = model.ego_embeddings().detach()
        index = rows if kind == "user" else rows + model.n_users

        def loss(theta: torch.Tensor) -> torch.Tensor:
            ego = ego0.index_put((index,), theta)
            return model.bpr_terms(self.users, self.items, self.negatives, ego=ego).mean()

        return loss


def neighbours(
    users: torch.Tensor, items: torch.Tensor, seed_users: torch.Tensor, seed_items: torch.Tensor, hops: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Users and items within ``hops`` rings of D_r edges (``users``, ``items`` [m]) of the seeds."""
    u, i = torch.unique(seed_users), torch.unique(seed_items)
    for _ in range(hops):
        u, i = (
            torch.unique(torch.cat([u, users[torch.isin(items, i)]])),
            torch.unique(torch.cat([i, items[torch.isin(users, u)]])),
        )
    return u, i
