"""ItemNewton: take the forgotten pairs' pull out of their items' rows by one damped Newton
step per item, and refit the forgetting users.

For a model trained with BPR on its outputs (LightGCN, BPR-MF).  Θ_a's item rows are close to a
retrain's (both grew from the same initial rows on nearly the same data) except for what the
forgotten pairs pulled into them; re-initialising them (RowReset) also loses the rest of their
long training, which is what keeps the forgetting users' top-10 close to a retrain's (RBO).
With a retrain's item rows, re-initialising the forgetting users and refitting them to their
remaining pairs lands on Retrain's membership signal and above Retrain*'s RBO@10 on a
validation request (``benchmarks/diagnose.py``'s row (k) is that oracle on a test request).
ItemNewton estimates those item rows from Θ_a's:

1. with the outputs (U [n_users, d], I [n_items, d]) of Θ_a's rows on D_r's graph, each
   forgotten pair (u, i) pulled I_i along U_u with the weight f_ui = mean_j σ(ŷ_ui − ŷ_uj) − 1
   over ``newton_negatives`` uniform negatives j: the pull is r_i = Σ_u f_ui U_u [d];
2. the item's curvature (``newton_curvature``).  With ``drift`` (the default) it is read off
   how far training moved the item: c_i = −⟨δ_i, P_i⟩ / ‖P_i‖², δ_i = I_i − I⁰_i the drift of
   its output from the output of the rows a retrain starts from (on D_r's graph), P_i the pull
   of all its pairs (the forgotten ones' r_i and its remaining ones' Σ_u (s̄_ui − 1) U_u, s̄ the
   mean σ over 4 uniform negatives), both without their component along the mean user output,
   and the curvature is 1 / c_i (an item that moved along its pull, or not at all, gets none of
   a step): an item that training moved little per unit of its pull, as on an early-stopped
   model, takes a small step.  With ``hessian`` it is h_i = (1/d) Σ_(u,i) ∈ D_r s_ui ‖U_u‖², s
   the mean of σ′(ŷ_ui − ŷ_uj) over 4 uniform negatives: the mean diagonal of the Hessian of its
   BPR terms as a positive (adding its terms as a sampled negative did not stop a full step's
   overshoot on the validation requests: 139–211% of the membership gap at half a step);
3. the step is ΔI_i = ``newton_scale`` · r_i / (h_i + ``newton_damping`` · median h), with the
   component along the mean user output removed (``newton_hold_popularity``): with the Hessian
   curvature, Θ_a is an early-stopped point, not a minimum, so a full Newton step (scale 1, no
   damping) overshoots by far and the damping bounds the step of an item left with few pairs
   (the drift curvature takes twice its step, undamped, as chosen on the validation
   requests); without the popularity component the step lowers the item for its former users
   rather than for everyone (on the validation requests, holding it brought the forgotten pairs' re-predict
   score from 28% to 4% under Retrain's on ml-100k's ``noise`` request at the same
   membership signal).  A step is at most ``newton_trust`` times the item's output norm
   (a trust region: on amazon-electronics-14core's ``noise`` validation request of seed 2023,
   items whose remaining pairs were saturated had almost no curvature and the unbounded step
   took every user's Recall@20 down by 94%), and, with ``newton_trust_share`` = γ > 0, at
   most γ · q_i / (q_i + n_i) times it, q_i the item's forgotten pairs, n_i its remaining ones:
   an item that keeps most of its pairs moves little (on amazon-electronics-14core's eight
   validation requests the membership signal went to 123–249% of the gap without it, 122–226%
   at γ = 6, the summed shortfall from 11.86 to 8.32).  With ``newton_excess`` = κ > 0 the step
   is also shrunk so that the item's forgotten pairs' scores fall, summed, by at most κ times
   their excess over the item's mean score, ŷ_ui − I_i · Ū (Ū the mean user output; off by
   default, see below).  The item's ego row moves by ΔI_i / c_i, c_i the propagation's
   self-weight (``model.self_weights``);
4. the forgetting users' rows are set to the rows a retrain starts from (``newton_users:
   reset``) or moved by the same damped step with the two sides swapped (``step``, ``user_steps``
   in :mod:`~recbole_unlearn.unlearner._item_steps`: against the pull Σ_i f_ui I_i of their
   forgotten items, over the curvature of their remaining pairs, ``newton_user_scale`` of it,
   the mean item direction held, the same trust region), and refit
   (:func:`~recbole_unlearn.unlearner.rowreset.refit_users`) to their remaining pairs against
   the moved items, until they fit those pairs as well as their rows in Θ_a do
   (``newton_refit_until: fit``: the pairs' mean BPR loss under Θ_a's outputs on D_r's graph,
   4 uniform negatives a pair, is the target), at most ``newton_refit_steps`` steps; with
   ``steps``, always that many; with ``user_fit`` each user's row stops at the first step at
   which its own pairs' loss is at most what its own Θ_a row gave them.

Why the refit stops at Θ_a's fit: how long a refit should run depends on how far Θ_a was
trained.  On the validation requests a refit of 100 steps brought ml-100k's forgetting users'
top-10 closer to a retrain's than 25 (RBO@10 0.750 → 0.794 and 0.706 → 0.798), but on
amazon-electronics-14core, whose models stop early, it moved their Recall@20 13–44% off a
retrain's.  Θ_a's own fit of the users' remaining pairs tells the two apart: ml-100k's users
are not back at it after 100 steps, amazon's are after 5–87 (``ItemNewton-LightGCN-refit-until.md``).

A request costs two propagations (of Θ_a's rows, and with the drift curvature of the rows a
retrain starts from), two passes over sampled scores and the refit: no preparation, no state
carried along a chain.

Where it stands (``benchmarks/results/validate_keys/``, BENCHMARKS.md): LightGCN's default.
On the sixteen validation requests of ml-100k and amazon-electronics-14core (seeds 2021–2027)
its summed shortfall is 11.69, against 12.04 with the Hessian curvature (at newton_scale 0.4,
damping 1), 16.88 without the share trust and 20.50 for the earlier fixed refit of 25 steps
at newton_scale 0.3 (``ItemNewton-LightGCN-four-seeds*.md``, ``-four-seeds-drift.md``); on
adm-cure4rec's 5-core, where no key was chosen, 3.64 against 4.84 with the Hessian curvature
(``ItemNewton-LightGCN-adm-cure4rec-5core-drift.md``; its early-stopped seed-2021 models:
109% and 128% of the membership gap against 171% and 188%);
bands never narrower than one hit.  On the tables' eight test requests of ml-100k and amazon
(``benchmarks/targets.py``) it sums 5.79 and meets 36 of 48 targets, against 12.17 with the
Hessian curvature and 9.35 for the earlier keys: the drift curvature keeps amazon's
early-stopped seed-2022 models from stepping as far (143% and 138% of the membership gap
against 218% and 181%; that request's forgetting users' Recall@20 5% under a retrain's
against 27%) and ml-100k's ``private`` forgetting users' Recall@20 closer (5% above a
retrain's against 8–9%).  What it still misses: RBO@10 under Retrain*'s on six of the eight
(by up to 1.1 units of Retrain*'s own distance), ml-100k's ``noise`` request of seed 2020
(all users' Recall@20 4.8% under a retrain's), and amazon's requests move the membership signal
past a retrain's (128–143%).  Grids that lost: ``newton_excess`` (``ItemNewton-LightGCN-excess.md``),
``newton_users: step`` (``-user-step.md``), ``user_fit`` (``-user-fit.md``), the refit's rate
and cap (``-four-seeds-refit-lr.md``).

It builds on influence-function unlearning, a Newton step removing the data's term (Koh and
Liang, "Understanding Black-box Predictions via Influence Functions", ICML 2017; for
recommendation, IFRU: Zhang, Lu, Bai, Zhang, Feng and He, "Recommendation Unlearning via Influence
Function", ACM TORS 2024), with the curvature taken per item row (as AltEraser's blocks:
Liu et al., RecSys 2022), on LightGCN (He, Deng, Wang, Li, Zhang and Wang, SIGIR 2020), with
RowReset's refit of the users.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from recbole_unlearn.data.remaining import pairs
from recbole_unlearn.numerics import as_csr
from recbole_unlearn.registry import register_unlearner
from recbole_unlearn.unlearner._item_steps import sampled_margins, user_means, item_steps, user_steps
from recbole_unlearn.unlearner.base import Params, Unlearner
from recbole_unlearn.unlearner.rowreset import refit_users, refusal_unless_bpr_on_outputs


@dataclass(frozen=True)
class ItemNewtonParams(Params):
    """Keys of ``properties/unlearner/ItemNewton.yaml`` (documented there)."""

    newton_scale: float = 2.0
    newton_damping: float = 0.0
    newton_negatives: int = 16
    newton_hold_popularity: bool = True
    newton_trust: float = 0.5
    newton_trust_share: float = 6.0
    newton_curvature: str = "drift"
    newton_excess: float = 0.0
    newton_users: str = "reset"
    newton_user_scale: float = 0.3
    newton_refit_steps: int = 100
    newton_refit_lr: float = 0.01
    newton_refit_until: str = "fit"


@register_unlearner
class ItemNewton(Unlearner):
    """Damped per-item Newton step removing the forgotten pairs' pull; see the module docstring."""

    params_class = ItemNewtonParams

    @classmethod
    def refusal(cls, model_class: type) -> str | None:
        return refusal_unless_bpr_on_outputs(model_class, "ItemNewton steps item rows")

    def erase(self, task, remaining) -> None:
        model, p, seed = self.model, self.params, int(self.config["seed"])
        users, items = (x.to(self.device) for x in pairs(remaining))
        f_users = torch.as_tensor(task.request.forget_users, dtype=torch.long, device=self.device)
        q_users, q_items = (torch.as_tensor(x, dtype=torch.long, device=self.device)
                            for x in (task.request.users, task.request.items))
        graph = as_csr(model.graph())
        ego = model.ego_embeddings().detach().clone()
        user_out, item_out = model.propagate(ego, graph)
        initial = self.initial_ego(remaining) if p.newton_users == "reset" or p.newton_curvature == "drift" else None
        drift = item_out - model.propagate(initial, graph)[1] if p.newton_curvature == "drift" else None
        step, moved = item_steps(model.n_items, user_out, item_out, q_users, q_items, users, items, p, seed, drift)
        ego.index_add_(0, moved + model.n_users, step / model.self_weights(moved + model.n_users, graph).to(ego)[:, None])
        if p.newton_users == "step":
            u_step, stepped = user_steps(model.n_users, user_out, item_out, q_users, q_items, users, items, p, seed + 3)
            ego.index_add_(0, stepped, u_step / model.self_weights(stepped, graph).to(ego)[:, None])
        else:
            ego[f_users] = initial[f_users]
        own = torch.isin(users, f_users)  # the forgetting users' remaining pairs (none: whole users deleted)
        target = None
        if p.newton_refit_until != "steps" and bool(own.any()):
            margins = sampled_margins(user_out, item_out, users[own], items[own], 4, torch.Generator().manual_seed(seed + 4))
            losses = torch.nn.functional.softplus(-margins).mean(1)  # [m']
            target = float(losses.mean()) if p.newton_refit_until == "fit" else user_means(losses, users[own], f_users)
        ego, taken = refit_users(model, ego, f_users, users, items, p.newton_refit_steps, p.newton_refit_lr, 4, seed + 2,
                                 graph=graph, until=target)
        model.write_ego(ego)  # clears the cache
        self.info.update(items_moved=int(len(moved)), refit_steps=taken)


__all__ = ["ItemNewton", "ItemNewtonParams"]
