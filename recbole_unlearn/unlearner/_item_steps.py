"""ItemNewton's steps (:mod:`recbole_unlearn.unlearner.itemnewton`, whose docstring derives
them): each forgotten item's damped Newton step against its forgotten pairs' pull, the users'
mirror of it, and the sampled margins both read.  ``p`` is an
:class:`~recbole_unlearn.unlearner.itemnewton.ItemNewtonParams`.
"""
from __future__ import annotations

import torch

from recbole_unlearn.unlearner.base import Params


def item_steps(n_items: int, user_out: torch.Tensor, item_out: torch.Tensor, f_users: torch.Tensor,
               f_items: torch.Tensor, users: torch.Tensor, items: torch.Tensor, p: Params, seed: int,
               drift: torch.Tensor | None = None):
    """(ΔI [t, d], the items [t]) of the module docstring's steps 1–3: the output step of each
    item ``f_items`` holds among the forgotten pairs (``f_users``, ``f_items``) [q], from the
    outputs ``user_out`` [n_users, d], ``item_out`` [n_items, d] on D_r's graph, with the
    remaining pairs (``users``, ``items``) [m] giving the curvature, or, with
    ``newton_curvature: drift``, the items' drift from a retrain's initial outputs
    ``drift`` [n_items, d] (:func:`_drift_curvature`)."""
    draws = torch.Generator().manual_seed(seed)
    moved, local = torch.unique(f_items, return_inverse=True)  # [t], [q]
    f_user_out, mean_user = user_out.index_select(0, f_users), user_out[1:].mean(0)  # [q, d], [d]
    f = torch.sigmoid(sampled_margins(user_out, item_out, f_users, f_items, p.newton_negatives, draws)).sub_(1).mean(1, keepdim=True)
    pull = user_out.new_zeros(len(moved), user_out.shape[1]).index_add_(0, local, f * f_user_out)  # [t, d]
    on_moved = torch.isin(items, moved)
    u, i = users[on_moved], items[on_moved]
    s = torch.sigmoid(sampled_margins(user_out, item_out, u, i, 4, draws))
    if drift is None:
        weight = (s * (1 - s)).mean(1) * user_out.index_select(0, u).square().sum(1) / user_out.shape[1]  # [m']
        curvature = user_out.new_zeros(n_items).index_add_(0, i, weight).index_select(0, moved)  # [t]
    else:
        held_pull = user_out.new_zeros(n_items, user_out.shape[1]).index_add_(
            0, i, s.mean(1, keepdim=True).sub_(1) * user_out.index_select(0, u)).index_select(0, moved)
        curvature = _drift_curvature(drift.index_select(0, moved), pull + held_pull, mean_user)
    trust = None
    if p.newton_trust_share > 0:  # the forgotten pairs' share of the item's pairs, times the key
        forgotten = torch.bincount(local, minlength=len(moved)).to(user_out.dtype)
        held = torch.bincount(i, minlength=n_items).index_select(0, moved).to(user_out.dtype)
        trust = (p.newton_trust_share * forgotten / (forgotten + held)).clamp_(max=p.newton_trust)
    step = _damped(pull, curvature, p.newton_scale, p, mean_user, item_out.index_select(0, moved), trust)
    if p.newton_excess > 0:
        step.mul_(_excess_share(f_user_out, item_out.index_select(0, f_items), mean_user, local, step,
                                p.newton_excess)[:, None])
    return step, moved


def user_steps(n_users: int, user_out: torch.Tensor, item_out: torch.Tensor, f_users: torch.Tensor,
               f_items: torch.Tensor, users: torch.Tensor, items: torch.Tensor, p: Params, seed: int):
    """(ΔU [F, d], the users [F]) with ``newton_users: step``: the step of :func:`item_steps`
    with the two sides swapped.  Each forgetting user's output moves against the pull
    Σ_i f_ui I_i of its forgotten items, over the curvature (1/d) Σ_(u,i) ∈ D_r s_ui ‖I_i‖² of
    its remaining pairs, by ``newton_user_scale`` of the damped step, with the component along
    the mean item output removed (with ``newton_hold_popularity``) and the same trust region."""
    draws = torch.Generator().manual_seed(seed)
    stepped, local = torch.unique(f_users, return_inverse=True)  # [F], [q]
    f = torch.sigmoid(sampled_margins(user_out, item_out, f_users, f_items, p.newton_negatives, draws)).sub_(1).mean(1, keepdim=True)
    pull = user_out.new_zeros(len(stepped), user_out.shape[1]).index_add_(0, local, f * item_out.index_select(0, f_items))
    on_stepped = torch.isin(users, stepped)
    u, i = users[on_stepped], items[on_stepped]
    s = torch.sigmoid(sampled_margins(user_out, item_out, u, i, 4, draws))
    weight = (s * (1 - s)).mean(1) * item_out.index_select(0, i).square().sum(1) / user_out.shape[1]
    curvature = user_out.new_zeros(n_users).index_add_(0, u, weight).index_select(0, stepped)  # [F]
    return _damped(pull, curvature, p.newton_user_scale, p, item_out[1:].mean(0), user_out.index_select(0, stepped)), stepped


def _damped(pull: torch.Tensor, curvature: torch.Tensor, scale: float, p: Params, mean_other: torch.Tensor,
            out: torch.Tensor, trust: torch.Tensor | None = None) -> torch.Tensor:
    """``scale`` · ``pull`` [t, d] / (``curvature`` [t] + damping · its median), its component
    along ``mean_other`` [d] (the other side's mean output) removed with
    ``newton_hold_popularity``, each row at most ``newton_trust`` (or its entry of ``trust``
    [t]) times the norm of its row of ``out`` [t, d] (a trust region)."""
    step = pull.mul(scale / (curvature + p.newton_damping * curvature.median()).clamp_min(1e-12)[:, None])
    if p.newton_hold_popularity:
        direction = mean_other / mean_other.norm().clamp_min(1e-12)
        step -= (step @ direction)[:, None] * direction
    bound = (p.newton_trust if trust is None else trust) * out.norm(dim=1)  # [t]
    return step.mul_((bound / step.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)[:, None])


def _drift_curvature(drift: torch.Tensor, pull: torch.Tensor, mean_user: torch.Tensor) -> torch.Tensor:
    """The curvature [t] that makes a step of ``pull`` [t, d] (the pull of all of each item's
    pairs, Σ f_ui U_u) account for each item's ``drift`` [t, d] (its output minus a retrain's
    initial one), both taken without their component along ``mean_user`` [d]: training moved
    the item by about c_i times its pairs' pull, c_i = −⟨drift, pull⟩ / ‖pull‖², so the
    forgotten pairs' share of that move is c_i times their own pull, a step with curvature
    1 / c_i.  An item that did not move along its pull gets an unbounded curvature (no step)."""
    direction = mean_user / mean_user.norm().clamp_min(1e-12)
    drift = drift - (drift @ direction)[:, None] * direction
    pull = pull - (pull @ direction)[:, None] * direction
    moved = -(drift * pull).sum(1) / pull.square().sum(1).clamp_min(1e-12)  # c_i [t]
    return 1.0 / moved.clamp_min(1e-12)


def _excess_share(f_user_out: torch.Tensor, f_item_out: torch.Tensor, mean_user: torch.Tensor, local: torch.Tensor,
                  step: torch.Tensor, cap: float) -> torch.Tensor:
    """The share [t] of each item's ``step`` [t, d] kept so that its forgotten pairs' scores fall
    by at most ``cap`` times their excess over the item's mean score over all users, summed over
    the item's pairs: ŷ_ui − I_i · Ū, with the pairs' outputs ``f_user_out``, ``f_item_out``
    [q, d], Ū = ``mean_user`` [d] and ``local`` [q] each pair's item among the t."""
    excess = ((f_user_out - mean_user) * f_item_out).sum(1)  # [q]
    fall = -(f_user_out * step.index_select(0, local)).sum(1)  # [q]
    room = step.new_zeros(len(step)).index_add_(0, local, excess.clamp_min(0)).mul_(cap)
    taken = step.new_zeros(len(step)).index_add_(0, local, fall.clamp_min(0))
    return (room / taken.clamp_min(1e-12)).clamp(max=1.0)


def user_means(values: torch.Tensor, users: torch.Tensor, f_users: torch.Tensor) -> torch.Tensor:
    """The mean [F] of ``values`` [m] over each of ``f_users``' entries (``users`` [m])."""
    n = int(max(int(users.max()), int(f_users.max()))) + 1
    total = values.new_zeros(n).index_add_(0, users, values)
    return (total / torch.bincount(users, minlength=n).clamp_min(1).to(values)).index_select(0, f_users)


def sampled_margins(user_out: torch.Tensor, item_out: torch.Tensor, users: torch.Tensor, items: torch.Tensor,
             k: int, draws: torch.Generator, dense_ratio: int = 8) -> torch.Tensor:
    """ŷ_ui − ŷ_uj [m, k] for the pairs (``users``, ``items``) [m] and k uniform negatives j
    each in [1, n_items), drawn from ``draws``.  The scores are read from the score matrix of the
    r users with pairs [r, n_items] (one product) when it has at most ``dense_ratio`` entries per
    score needed, else from the pairs' gathered rows ([m, k, d])."""
    negatives = torch.randint(1, len(item_out), (len(users), k), generator=draws).to(users.device)
    rows, local = torch.unique(users, return_inverse=True)  # [r], [m]
    if len(rows) * len(item_out) <= dense_ratio * len(users) * (k + 1):
        scores = user_out.index_select(0, rows) @ item_out.T  # [r, n_items]
        at = scores.view(-1).index_select(0, (local * len(item_out)).unsqueeze(1).add(
            torch.cat([items.unsqueeze(1), negatives], 1)).view(-1)).view(len(users), k + 1)
        return at[:, :1] - at[:, 1:]
    ue = user_out.index_select(0, users)  # [m, d]
    positive = (ue * item_out.index_select(0, items)).sum(1, keepdim=True)
    negative = torch.bmm(item_out.index_select(0, negatives.view(-1)).view(len(users), k, -1), ue.unsqueeze(2))
    return positive - negative.squeeze(2)


__all__ = ["item_steps", "sampled_margins", "user_means", "user_steps"]
