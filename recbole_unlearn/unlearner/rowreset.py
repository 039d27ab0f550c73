"""RowReset: forget by re-initialising the request's rows and re-solving them on D_r.

For a model trained with BPR on its outputs (LightGCN, BPR-MF).  Θ_a's memory of a forgotten
pair sits in the ego rows of both its ends: fine-tuning all of Θ_a on D_r (WarmStart) or
re-solving those rows from Θ_a's values removes only 10–30% of the membership signal, while
re-initialising them first removes most of it (``benchmarks/diagnose.py``, BENCHMARKS.md).
So RowReset

1. sets the ego rows of the forgetting users and of the request's items (with
   ``reset_user_items`` also the forgetting users' remaining items, which were fitted to those
   users; with ``reset_all_items`` every item; plus ``reset_hops`` rings of D_r neighbours) to
   the values a retrain starts from (the model class's own initialisation under the run's
   seed, as Retrain draws it),
2. re-solves only those rows, every other row fixed, by ``reset_steps`` full-batch Adam steps
   on the D_r BPR objective with ``reset_negatives`` fresh uniform negatives per pair and step
   (an expectation over negatives, as training has: one fixed negative per pair overfits it),
3. then, for ``reset_user_steps`` more steps, the forgetting users' rows alone (the items
   fixed): a user re-solved beside items that are still moving is fitted least;
4. then, for ``reset_refit_steps`` cheap steps (:func:`refit_users`), the forgetting users'
   rows against the item outputs, which are held fixed: a step costs the users' own pairs
   only (25 of them added 0.02–0.06 s to a request on the validation requests of ml-100k and
   amazon-electronics-14core, whose ten joint steps take 0.1–0.2 s).

Why every item (``reset_all_items``, the default): with only some items reset, the forgetting
users' held-out items that kept Θ_a's rows score apart from the re-solved forgotten ones, which
the membership attack reads, and a user's ranking mixes re-solved rows with rows from Θ_a's
long training.  On the validation requests (``benchmarks/validate_keys.py``), resetting every
item removed more of the MIA gap (amazon private 79% → 85%; adm-cure4rec 5-core 77% → 83%
and 75% → 78%) at about the same Recall.  On an under-trained Θ_a (adm-cure4rec 5-core with
seed 2021, stopped after 13 epochs), the partial reset cost every user a third of their
Recall@20, against 1–2% with every item reset.  Every item row is re-solved against the other
users' Θ_a rows, which fix it well.  A step costs the same, because the closed-form gradient
covers every row anyway.

Why the refit (``reset_refit_steps``, 25 by default): after ten joint steps from their
initial values the forgetting users are fitted least (their validation Recall@20 was 7–14%
under Retrain's on ml-100k), and their top-10 lists are what RBO compares.  Scored against a
validation Retrain* as well, 25 refit steps raised RBO@10 on 10 of the 12 validation requests
(ml-100k private, seed 2021: 0.602 → 0.643), brought the forgetting users' Recall@20 closer
to Retrain's on 9, and cost up to four points of the MIA gap on 7 (amazon noise, seed 2021:
93% → 89% removed); the summed shortfall fell from 43.0 to 36.4
(``benchmarks/results/validate_keys/RowReset-LightGCN-refit.md``).

Why four negatives (``reset_negatives``): a step costs about m(k + 1) sampled scores, so two
negatives make a request faster (amazon-electronics-14core: 0.07–0.09 s against 0.10–0.11 s) and
removed a few more points of the MIA gap there, but they cost the forgetting users about a tenth
of their validation Recall@20 on ml-100k (private, seed 2021: −4.2% → −13.9% of Retrain's).
Summed over the validation requests whose Retrain trained past its patience, four kept the least
shortfall (13.78 against 16.65; ``RowReset-LightGCN-negatives.md``).

It builds on AltEraser's re-optimisation of row blocks on D_r (Liu, Wan, Wang, Zhang, Zhang
and Li, "Forgetting Fast in Recommender Systems", RecSys 2022), with LightGCN's graph as the
model (He, Deng, Wang, Li, Zhang and Wang, SIGIR 2020).  A step's gradient is in closed form
(:func:`resolve_rows`): two propagations and one pass over the triples, no backpropagation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from recbole_unlearn.data.remaining import pairs
from recbole_unlearn.numerics import as_csr
from recbole_unlearn.registry import register_unlearner
from recbole_unlearn.unlearner._alteraser_blocks import neighbours, pairs_of_users
from recbole_unlearn.unlearner._bpr_sampled import SampledBPR
from recbole_unlearn.unlearner.base import Params, Unlearner


@dataclass(frozen=True)
class RowResetParams(Params):
    """Keys of ``properties/unlearner/RowReset.yaml`` (documented there)."""

    reset_steps: int = 10
    reset_lr: float = 0.03
    reset_negatives: int = 4
    reset_hops: int = 0
    reset_user_items: bool = True
    reset_all_items: bool = True
    reset_user_steps: int = 0
    reset_refit_steps: int = 25
    reset_refit_lr: float = 0.01


@register_unlearner
class RowReset(Unlearner):
    """Re-initialise the request's ego rows and re-solve them on D_r; see the module docstring."""

    params_class = RowResetParams

    @classmethod
    def refusal(cls, model_class: type) -> str | None:
        return refusal_unless_bpr_on_outputs(model_class, "RowReset re-solves rows")

    def erase(self, task, remaining) -> None:
        model, p = self.model, self.params
        users, items = pairs(remaining)
        f_users = torch.as_tensor(task.request.forget_users, dtype=torch.long)
        f_items = torch.unique(torch.as_tensor(task.request.items, dtype=torch.long))
        if p.reset_all_items:  # every item but the padding id 0
            f_items = torch.arange(1, model.n_items)
        elif p.reset_user_items:  # the forgetting users' remaining items too: they were fitted to those users
            f_items = torch.unique(torch.cat([f_items, pairs_of_users(users, items, f_users, model.n_users)[1]]))
        if p.reset_hops:
            f_users, f_items = neighbours(users, items, f_users, f_items, p.reset_hops)
        rows = torch.cat([f_users, f_items + model.n_users]).to(self.device)  # ego rows: users first
        ego = model.ego_embeddings().detach().clone()
        ego[rows] = self.initial_ego(remaining)[rows]
        users, items, seed = users.to(self.device), items.to(self.device), int(self.config["seed"])
        ego = resolve_rows(model, ego, rows, users, items, p.reset_steps, p.reset_lr, p.reset_negatives, seed)
        if p.reset_user_steps:
            ego = resolve_rows(model, ego, f_users.to(self.device), users, items, p.reset_user_steps, p.reset_lr,
                               p.reset_negatives, seed + 1)
        if p.reset_refit_steps:
            ego, _ = refit_users(model, ego, f_users.to(self.device), users, items, p.reset_refit_steps, p.reset_refit_lr,
                              p.reset_negatives, seed + 2)
        model.write_ego(ego)  # clears the cache
        self.info.update(rows_reset=int(len(rows)), steps=p.reset_steps + p.reset_user_steps,
                         refit_steps=p.reset_refit_steps)


def refusal_unless_bpr_on_outputs(model_class: type, does: str) -> str | None:
    """None for a model trained with BPR on its outputs (the capability ``bpr_on_outputs``), else
    the refusal, naming AltEraser: ``does`` (e.g. "RowReset re-solves rows") of such a model."""
    if getattr(model_class, "bpr_on_outputs", False):
        return None
    return (f"{does} of a model trained with BPR on its outputs (e.g. LightGCN, BPR), "
            f"which {model_class.__name__} is not; use AltEraser")


def resolve_rows(model, ego: torch.Tensor, rows: torch.Tensor, users: torch.Tensor, items: torch.Tensor,
                 steps: int, lr: float, negatives: int, seed: int, graph=None,
                 among: tuple[int, torch.Tensor] | None = None) -> torch.Tensor:
    """``ego`` [n_users + n_items, d] with its ``rows`` [r] re-solved on the pairs (``users``,
    ``items``) [m] by ``steps`` full-batch Adam steps, every other row fixed; each step draws
    ``negatives`` = k fresh uniform negatives per pair (a generator seeded with ``seed``).

    ``graph`` replaces the model's own; ``among`` = (M, positions [m]) places the pairs in a
    base set of M pairs whose negatives are drawn, so that runs on subsets of one base set give
    a pair they share the same negatives (:func:`_negatives`).

    The objective is the model's BPR loss on D_r as an expectation over negatives:
    (1/mk) Σ_(u,i,j) −log σ(ŷ_ui − ŷ_uj) + reg_weight/2 · (mean ‖e⁰‖² of the triples' users,
    positives and negatives).  Its gradient is taken in closed form (:class:`SampledBPR` on the
    outputs, then the propagation's adjoint, which is the propagation: M is symmetric), not by
    backpropagation through the graph.
    """
    m, k, n_users, n_items = len(users), negatives, model.n_users, model.n_items
    objective = SampledBPR(users.to(ego.device), items.to(ego.device), k, n_users, n_items)
    graph = as_csr(model.graph() if graph is None else graph)
    nodes = torch.cat([users.to(ego.device), items.to(ego.device) + n_users])
    on_rows = torch.bincount(nodes, minlength=len(ego)).to(ego.dtype).index_select(0, rows) / m  # [r]
    theta = ego.index_select(0, rows).clone()  # no autograd: its gradient is set each step
    optimizer = torch.optim.Adam([theta], lr=lr)
    draw = _negatives(n_items, m, k, seed, among)
    current = ego.clone()
    for _ in range(steps):
        drawn = draw().to(ego.device)  # pair-major
        current.index_copy_(0, rows, theta)
        out = objective.gradient(*model.propagate(current, graph), drawn)
        g = torch.cat(model.propagate(torch.cat(out), graph)).index_select(0, rows)
        as_negative = torch.bincount(drawn + n_users, minlength=len(ego)).to(ego.dtype).index_select(0, rows)
        theta.grad = g.addcmul_((on_rows + as_negative / (m * k)).unsqueeze(1) * model.reg_weight, theta)
        optimizer.step()
    return current.index_copy_(0, rows, theta)


def _negatives(n_items: int, m: int, k: int, seed: int, among: tuple[int, torch.Tensor] | None = None):
    """A function drawing k uniform negatives in [1, n_items) for each of m pairs, [mk]
    pair-major, fresh at every call, from a generator seeded with ``seed``.  With ``among`` =
    (M, positions [m]) each call draws for the M pairs of a base set and keeps those at the
    positions: two runs on subsets of one base set draw the same negatives for a pair both hold
    (common random numbers, for a difference of two runs)."""
    draws = torch.Generator().manual_seed(seed)
    if among is None:
        return lambda: torch.randint(1, n_items, (m, k), generator=draws).view(-1)
    base, positions = among[0], among[1].cpu()
    return lambda: torch.randint(1, n_items, (base, k), generator=draws).index_select(0, positions).view(-1)


def refit_users(model, ego: torch.Tensor, f_users: torch.Tensor, users: torch.Tensor, items: torch.Tensor,
                steps: int, lr: float, negatives: int, seed: int, graph=None,
                until: float | torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """(``ego`` [n_users + n_items, d] with the rows of ``f_users`` [F] refitted to their own
    pairs among (``users``, ``items``) [m] by ``steps`` Adam steps, against the item outputs of
    ``ego``, held fixed; the steps taken).

    A user's output moves with its ego row by the propagation's self-weight c_u = ∂U_u/∂e⁰_u
    (1 for matrix factorisation, Σ_l (L^l)_uu / (L + 1) for LightGCN: ``model.self_weights``),
    so the step's gradient is c_u times the output gradient of the users' BPR terms (k fresh
    negatives per pair, their mean), plus the regulariser of the joint objective restricted to
    them.  The users' effect on the items' outputs, and through them on each other's, is left
    out: that is what makes a step cost the F users' pairs only.  ``graph`` as in
    :func:`resolve_rows`.

    With ``until`` (a loss) it stops before ``steps`` once the mean BPR loss of the users'
    pairs, (1/mk) Σ −log σ(ŷ_ui − ŷ_uj) under the step's negatives, is at most ``until`` (read
    off the step's gradient, before the step).  With ``until`` a tensor [F] of losses, one per
    user, each user's row stays where it is from the first step at which the mean loss of its
    own pairs is at most its own ``until``; the refit stops once every user has stopped.
    """
    own = torch.isin(users, f_users)
    users, items = users[own], items[own]
    if not len(users):
        return ego, 0
    n_users, n_items = model.n_users, model.n_items
    graph = as_csr(model.graph() if graph is None else graph)
    self_weight = model.self_weights(f_users, graph).to(ego).unsqueeze(1)  # [F, 1]
    user_out, item_out = model.propagate(ego, graph)
    objective = SampledBPR(users, items, negatives, n_users, n_items, track_loss=until is not None)
    reg = torch.bincount(users, minlength=n_users).to(ego.dtype)[f_users].unsqueeze(1) / len(users) * model.reg_weight
    start = ego.index_select(0, f_users)
    theta = start.clone()
    each = isinstance(until, torch.Tensor)
    # the users stopped, [F]: with ``until`` per user, from the start those without pairs
    done = (torch.bincount(users, minlength=n_users).index_select(0, f_users) == 0) if each else \
        torch.zeros(len(f_users), dtype=torch.bool, device=ego.device)
    held = theta.clone()  # their rows where they stopped
    optimizer = torch.optim.Adam([theta], lr=lr)
    draw = _negatives(n_items, len(users), negatives, seed)
    out = user_out.clone()
    taken = 0
    while taken < steps:
        drawn = draw().to(ego.device)
        out.index_copy_(0, f_users, user_out.index_select(0, f_users) + self_weight * (theta - start))
        to_user = objective.gradient(out, item_out, drawn, to_items=False)[0].index_select(0, f_users)
        if each:
            now = ~done & (objective.user_losses(f_users) <= until.to(ego))
            held[now], done = theta[now], done | now
            if bool(done.all()):
                break
        elif until is not None and float(objective.loss) <= until:
            break
        theta.grad = to_user.mul_(self_weight).addcmul_(reg, theta)
        optimizer.step()
        if each:
            theta.data[done] = held[done]
        taken += 1
    return ego.clone().index_copy_(0, f_users, theta.detach()), taken


__all__ = ["RowReset", "RowResetParams", "refit_users", "refusal_unless_bpr_on_outputs", "resolve_rows"]
