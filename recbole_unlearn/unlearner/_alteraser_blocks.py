"""Block losses of AltEraser: a model's D_r objective as a function of a block of rows.

Everything comes from the model protocol: ``row_objective`` (the objective as a function of
some rows, which a model may write from those rows' own terms), ``objective_fn`` and, where the
model offers it, ``exact_blocks`` (closed-form row systems).  A loss over sampled negatives
(``negatives_per_pair`` > 0) gets one negative per D_r pair, drawn once from a seeded generator
(uniform over items, redrawn once where it hit a positive).
"""
from __future__ import annotations

from typing import Callable

import torch

from recbole_unlearn.model.protocol import offers
from recbole_unlearn.numerics import take
from recbole_unlearn.unlearner._bpr_rows import BPRRowDerivatives


class BlockLosses:
    """Block losses and the full D_r objective of ``model`` on pairs (``users``, ``items``) [m]."""

    def __init__(self, model, users: torch.Tensor, items: torch.Tensor, seed: int):
        self.model = model
        self.users, self.items = users, items
        self.blocks = model.exact_blocks(users, items) if offers(model, "exact_blocks") else None
        self.negatives = None
        if model.negatives_per_pair > 0:
            g = torch.Generator().manual_seed(seed)
            neg = torch.randint(1, model.n_items, (len(items),), generator=g)
            keys = torch.sort(users * model.n_items + items).values
            drawn = users * model.n_items + neg
            clash = keys[torch.searchsorted(keys, drawn).clamp_(max=len(keys) - 1)] == drawn  # a positive
            neg[clash] = torch.randint(1, model.n_items, (int(clash.sum()),), generator=g)
            self.negatives = neg
        self._objective = None

    def table(self, kind: str) -> torch.nn.Parameter:
        """The embedding table of ``kind`` ('user' | 'item')."""
        users, items = self.model.embedding_tables()
        return users if kind == "user" else items

    def pairs_of_users(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The D_r pairs (users [k], items [k]) of the distinct ``users``."""
        return pairs_of_users(self.users, self.items, users, self.model.n_users)

    def changed(self) -> None:
        """Call after writing into the tables (clears propagated caches)."""
        self.model.clear_cache()

    def objective(self) -> float:
        """The D_r objective at the current parameters."""
        if self._objective is None:
            self._objective = self.model.objective_fn(self.users, self.items, self.negatives)
        with torch.no_grad():
            return float(self._objective(self.model.ego_embeddings()))

    def block_loss(self, kind: str, rows: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """loss(θ) with θ [len(rows), d] in place of the ``kind`` vectors of ``rows``."""
        return self.model.row_objective(self.users, self.items, self.negatives, kind, rows)

    def block_derivatives(self, kind: str, rows: torch.Tensor):
        """θ ↦ (g, v ↦ H v) of :meth:`block_loss` in closed form where the model's loss is BPR
        on its outputs (:class:`BPRRowDerivatives`), else None (double backpropagation)."""
        if not self.model.bpr_on_outputs or self.negatives is None:
            return None
        index = rows if kind == "user" else rows + self.model.n_users
        return BPRRowDerivatives(self.model, self.users, self.items, self.negatives, index)


def pairs_of_users(users: torch.Tensor, items: torch.Tensor, chosen: torch.Tensor,
                   n_users: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The pairs (users [k], items [k]) among (``users``, ``items``) [m] whose user is one of
    ``chosen``."""
    member = torch.zeros(n_users, dtype=torch.bool)
    member[chosen] = True
    return take(member[users], users, items)


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
