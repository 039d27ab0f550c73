"""RowReset: forget by re-initialising the request's rows and re-solving them on D_r.

For a model trained with BPR on its outputs (LightGCN, BPR-MF).  Θ_a's memory of a forgotten
pair sits in the ego rows of both its ends: fine-tuning all of Θ_a on D_r (WarmStart) or
re-solving those rows from Θ_a's values removes only 10–30% of the membership signal, while
re-initialising them first removes most of it (``benchmarks/diagnose.py``, BENCHMARKS.md).
So RowReset

1. sets the ego rows of the forgetting users and of the request's items (plus ``reset_hops``
   rings of D_r neighbours) to the values a retrain starts from (the model class's own
   initialisation under the run's seed, as Retrain draws it), and
2. re-solves only those rows, every other row fixed, by ``reset_steps`` full-batch Adam steps
   on the D_r BPR objective with ``reset_negatives`` fresh uniform negatives per pair and step
   (an expectation over negatives, as training has: one fixed negative per pair overfits it).

It builds on AltEraser's re-optimisation of row blocks on D_r (Liu, Wan, Wang, Zhang, Zhang
and Li, "Forgetting Fast in Recommender Systems", RecSys 2022), with LightGCN's graph as the
model (He, Deng, Wang, Li, Zhang and Wang, SIGIR 2020).  The scores of a step come from one
[n_users, n_items] product where it fits in ``DENSE_SCORES`` entries, else per pair.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from recbole.utils import init_seed

from recbole_unlearn.data.remaining import pairs
from recbole_unlearn.registry import register_unlearner
from recbole_unlearn.unlearner._alteraser_blocks import neighbours
from recbole_unlearn.unlearner.base import Params, Unlearner

DENSE_SCORES = 1 << 25  # score-matrix entries (128 MiB of float32) up to which a step scores densely


@dataclass(frozen=True)
class RowResetParams(Params):
    """Keys of ``properties/unlearner/RowReset.yaml`` (documented there)."""

    reset_steps: int = 40
    reset_lr: float = 0.01
    reset_negatives: int = 4
    reset_hops: int = 0


@register_unlearner
class RowReset(Unlearner):
    """Re-initialise the request's ego rows and re-solve them on D_r; see the module docstring."""

    params_class = RowResetParams

    @classmethod
    def refusal(cls, model_class: type) -> str | None:
        if getattr(model_class, "bpr_on_outputs", False):
            return None
        return (f"RowReset re-solves rows of a model trained with BPR on its outputs (e.g. LightGCN, BPR), "
                f"which {model_class.__name__} is not; use AltEraser")

    def erase(self, task, remaining) -> None:
        model, p = self.model, self.params
        users, items = pairs(remaining)
        f_users = torch.as_tensor(task.request.forget_users, dtype=torch.long)
        f_items = torch.unique(torch.as_tensor(task.request.items, dtype=torch.long))
        if p.reset_hops:
            f_users, f_items = neighbours(users, items, f_users, f_items, p.reset_hops)
        rows = torch.cat([f_users, f_items + model.n_users]).to(self.device)  # ego rows: users first
        ego = model.ego_embeddings().detach().clone()
        ego[rows] = self._initial_ego(remaining)[rows]
        model.write_ego(resolve_rows(model, ego, rows, users.to(self.device), items.to(self.device), p.reset_steps,
                                     p.reset_lr, p.reset_negatives, int(self.config["seed"])))
        model.clear_cache()
        self.info.update(rows_reset=int(len(rows)), steps=p.reset_steps)

    def _initial_ego(self, remaining) -> torch.Tensor:
        """The ego rows a retrain on ``remaining`` starts from, [n_users + n_items, d]."""
        init_seed(self.config["seed"], self.config["reproducibility"])
        return self.config.model_class(self.config, remaining).to(self.device).ego_embeddings().detach()

def resolve_rows(model, ego: torch.Tensor, rows: torch.Tensor, users: torch.Tensor, items: torch.Tensor,
                 steps: int, lr: float, negatives: int, seed: int) -> torch.Tensor:
    """``ego`` [n_users + n_items, d] with its ``rows`` re-solved on the pairs (``users``,
    ``items``) [m] by ``steps`` full-batch Adam steps, every other row fixed; each step draws
    ``negatives`` fresh uniform negatives per pair (a generator seeded with ``seed``)."""
    theta = ego[rows].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([theta], lr=lr)
    draws = torch.Generator().manual_seed(seed)
    dense = model.n_users * model.n_items <= DENSE_SCORES
    for _ in range(steps):
        drawn = torch.randint(1, model.n_items, (len(users), negatives), generator=draws).to(ego.device)
        loss = bpr_objective(model, ego.index_put((rows,), theta), users, items, drawn, dense)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return ego.index_put((rows,), theta.detach())


def bpr_objective(model, ego: torch.Tensor, users, items, negatives, dense: bool) -> torch.Tensor:
    """The D_r BPR objective at ego rows ``ego``: mean of −log σ(ŷ_ui − ŷ_uj) over the pairs
    (``users``, ``items``) [m] and their negatives [m, k], plus the model's L2 term on the
    triples' ego rows (``reg_weight`` / 2 · mean squared norms)."""
    user_e, item_e = model.propagate(ego)
    if dense:  # gathers from one product cost far less than m·(k+1) row products
        scores = user_e @ item_e.T
        pos, neg = scores[users, items].unsqueeze(1), scores[users.unsqueeze(1), negatives]
    else:
        u = user_e[users]
        pos = (u * item_e[items]).sum(-1, keepdim=True)
        neg = torch.einsum("md,mkd->mk", u, item_e[negatives])
    norms = ego.square().sum(-1)  # [n_nodes]
    n_users = model.n_users
    reg = norms[users].mean() + norms[n_users + items].mean() + norms[n_users + negatives].mean()
    return -F.logsigmoid(pos - neg).mean() + model.reg_weight / 2 * reg


__all__ = ["RowReset", "RowResetParams", "resolve_rows"]
