"""DeltaReplay: move Θ_a's item rows by what the forgotten pairs change in a short replay of
training, and refit the forgetting users.

For a model trained with BPR on its outputs (LightGCN, BPR-MF).  Θ_a's item rows are close to a
retrain's (both grew from the same initial rows on nearly the same data) except for what the
forgotten pairs pulled into them.  Re-initialising every item row (RowReset) removes that pull
and also the rest of Θ_a's long training, which is what keeps the forgetting users' top-10 close
to a retrain's (RBO); keeping the rows keeps about half of the membership signal
(``benchmarks/diagnose.py``, rows (f) and (g)).  DeltaReplay estimates the pull instead:

1. R(D) is a replay: from the model's rows (``replay_from`` model; ``items``: the model's item
   rows, every user's row at the value a retrain starts from), every ego row
   takes ``replay_steps`` full-batch Adam steps on the BPR objective of the pairs D
   (:func:`resolve_rows`, with ``replay_negatives`` fresh uniform negatives per pair and step).
   The runs on D_a (its graph) and on D_r (D_r's) draw the same negatives for every pair both
   hold (common random numbers), so their difference R(D_r) − R(D_a) [n_users + n_items, d]
   is what the forgotten pairs change, the drift that any short Adam run adds cancelling out.
   From a fitted model a well-memorised pair's gradient is small and the replay barely moves
   it; with ``items`` the users start unfitted, so that every pair pulls on its item as it did
   early in training;
2. every item row becomes Θ_a's plus ``replay_scale`` = c times that difference;
3. the forgetting users' rows are set to the rows a retrain starts from and refit
   (:func:`refit_users`, ``replay_refit_steps`` steps) to their remaining pairs against the
   moved items (``replay_users`` refit), or moved along the difference as the items are
   (``move``).

R(D_a) does not depend on the request: it is the preparation (``pretrain_time_s``, reported
beside the request's time), which a platform can run as soon as a model is published; as it
starts from that model's item rows, every model of a chain needs its own.  A request costs one
replay and the refit, as RowReset's re-solve does.

Where it stands (``benchmarks/results/validate_keys/DeltaReplay-LightGCN.md``, BENCHMARKS.md):
it keeps the forgetting users' top-10 closer to a retrain's than RowReset and their Recall@20
nearer a retrain's, but c is not calibrated to the model: on ml-100k's ``noise`` requests it
leaves a fifth to nearly half of the membership gap, and on amazon-electronics-14core it moves
some requests past a retrain's, which an attacker reads too (seed 2022's private and noise
requests: MIA AUC 0.42 and 0.37 against Retrain's 0.49 and 0.47).  Its summed shortfall on the
validation requests is twice RowReset's (21.60 against 9.67); LightGCN's default is ItemNewton.

It builds on the amnesiac idea of undoing the updates that the forgotten data made (Graves,
Nagisetty and Ganesh, "Amnesiac Machine Learning", AAAI 2021), estimated here by a difference of
two short trainings rather than recorded, on LightGCN (He, Deng, Wang, Li, Zhang and Wang,
SIGIR 2020), with the refit of RowReset (:mod:`recbole_unlearn.unlearner.rowreset`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from recbole_unlearn.data.remaining import pair_rows, pairs
from recbole_unlearn.registry import register_unlearner
from recbole_unlearn.unlearner.base import Params, Unlearner
from recbole_unlearn.unlearner.rowreset import refit_users, refusal_unless_bpr_on_outputs, resolve_rows


@dataclass(frozen=True)
class DeltaReplayParams(Params):
    """Keys of ``properties/unlearner/DeltaReplay.yaml`` (documented there)."""

    replay_steps: int = 10
    replay_lr: float = 0.03
    replay_negatives: int = 4
    replay_scale: float = 2.5
    replay_from: str = "model"
    replay_users: str = "refit"
    replay_refit_steps: int = 25
    replay_refit_lr: float = 0.01


@register_unlearner
class DeltaReplay(Unlearner):
    """Θ_a's item rows moved by c·(R(D_r) − R(D_a)), the forgetting users refit; see the module docstring."""

    params_class = DeltaReplayParams

    @classmethod
    def refusal(cls, model_class: type) -> str | None:
        return refusal_unless_bpr_on_outputs(model_class, "DeltaReplay replays BPR training")

    def pretrain(self, task) -> bool:
        """R(D_a) [n_users + n_items, d] on D_a's graph, and the rows a retrain starts from."""
        self._n_pairs = len(task.train.inter_feat)
        self._initial = self.initial_ego(task.train)
        self._solved_a = self._replay(*pairs(task.train), torch.arange(self._n_pairs))
        return True

    def _replay(self, users: torch.Tensor, items: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """R(D) on the model's current graph for the pairs (``users``, ``items``) [m], which sit
        at ``positions`` [m] of D_a's pairs (whose negatives are drawn), [n_users + n_items, d]."""
        p, start = self.params, self.model.ego_embeddings().detach().clone()
        if p.replay_from == "items":
            start[:self.model.n_users] = self._initial[:self.model.n_users]
        every = torch.arange(len(start), device=self.device)
        return resolve_rows(self.model, start, every, users.to(self.device), items.to(self.device), p.replay_steps,
                            p.replay_lr, p.replay_negatives, int(self.config["seed"]),
                            among=(self._n_pairs, positions))

    def erase(self, task, remaining) -> None:
        model, p = self.model, self.params
        n_users = model.n_users
        kept = torch.ones(self._n_pairs, dtype=torch.bool)
        kept[torch.as_tensor(pair_rows(task.train, task.request.users, task.request.items)[0], dtype=torch.long)] = False
        users, items = (x.to(self.device) for x in pairs(remaining))  # D_a's order, less the request
        difference = self._replay(users, items, torch.nonzero(kept).view(-1)) - self._solved_a
        ego = model.ego_embeddings().detach().clone()
        ego[n_users + 1:] += p.replay_scale * difference[n_users + 1:]
        f_users = torch.unique(torch.as_tensor(task.request.forget_users, dtype=torch.long)).to(self.device)
        if p.replay_users == "move":
            ego[f_users] += p.replay_scale * difference[f_users]
        else:
            ego[f_users] = self._initial[f_users]
            ego, _ = refit_users(model, ego, f_users, users, items, p.replay_refit_steps, p.replay_refit_lr,
                              p.replay_negatives, int(self.config["seed"]) + 2)
        model.write_ego(ego)  # clears the cache
        self.info.update(steps=p.replay_steps, scale=p.replay_scale,
                         refit_steps=p.replay_refit_steps if p.replay_users == "refit" else 0)


__all__ = ["DeltaReplay", "DeltaReplayParams"]
