"""RowReset: the contract, the rows it touches, and the score gap it closes against a retrain."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from conftest import make_config, tiny_experiment
from recbole_unlearn.data.remaining import pairs
from recbole_unlearn.quick_start import run_unlearner
from recbole_unlearn.unlearner._bpr_sampled import SampledBPR
from recbole_unlearn.unlearner.rowreset import RowReset, refit_users, resolve_rows
from recbole_unlearn.testing import score_gap_closed
from unlearner_contract import UnlearnerContract


class TestRowReset(UnlearnerContract):
    unlearner = "RowReset"


def _run(exp, **keys):
    return run_unlearner(exp, RowReset, make_config(exp.config["model"], forget=exp.config["forget"], **keys))


@pytest.mark.parametrize("user_items", [False, True])
def test_only_the_request_rows_move(user_items):
    """Without ``reset_all_items``, every ego row outside the forgetting users and the request's
    items (with ``reset_user_items`` also the forgetting users' remaining items) keeps Θ_a's value."""
    exp = tiny_experiment("LightGCN", forget="private")
    out = _run(exp, reset_user_items=user_items, reset_all_items=False)
    n_users = exp.original.n_users
    touched = torch.zeros(n_users + exp.original.n_items, dtype=torch.bool)
    touched[torch.as_tensor(exp.request.forget_users)] = True
    touched[n_users + torch.as_tensor(exp.request.items)] = True
    if user_items:
        users, items = pairs(exp.remaining)
        theirs = items[torch.isin(users, torch.as_tensor(exp.request.forget_users))]
        assert not bool(touched[n_users + theirs].all())  # the key adds rows
        touched[n_users + theirs] = True
    before, after = exp.original.ego_embeddings().detach(), out.model.ego_embeddings().detach()
    assert torch.equal(before[~touched], after[~touched])
    assert not torch.allclose(before[touched], after[touched])
    assert out.info["rows_reset"] == int(touched.sum())


def test_all_items_reset_leaves_only_the_other_users_rows():
    """With ``reset_all_items`` (the default) every item row moves, and of the users only the
    forgetting ones; the padding rows keep Θ_a's value."""
    exp = tiny_experiment("LightGCN", forget="private")
    out = _run(exp)
    n_users, n_items = exp.original.n_users, exp.original.n_items
    moved = torch.zeros(n_users + n_items, dtype=torch.bool)
    moved[torch.as_tensor(exp.request.forget_users)] = True
    moved[n_users + 1:] = True
    before, after = exp.original.ego_embeddings().detach(), out.model.ego_embeddings().detach()
    assert torch.equal(before[~moved], after[~moved])
    assert bool((before[moved] != after[moved]).any(dim=1).all())  # every reset row changed
    assert out.info["rows_reset"] == int(moved.sum())


def test_user_steps_move_only_the_forgetting_users():
    """``reset_user_steps`` adds steps on the forgetting users' rows alone: the item rows are
    those of the joint re-solve without them, the users' rows move on."""
    exp = tiny_experiment("LightGCN", forget="private")
    joint, more = _run(exp, reset_user_steps=0), _run(exp, reset_user_steps=3)
    users = torch.as_tensor(exp.request.forget_users)
    a, b = joint.model.ego_embeddings().detach(), more.model.ego_embeddings().detach()
    changed = (a != b).any(dim=1)
    assert bool(changed[users].all())
    changed[users] = False
    assert not bool(changed.any())
    assert more.info["steps"] == joint.info["steps"] + 3


def _autograd_resolve(model, ego, rows, users, items, steps, lr, k, seed):
    """The re-solve by backpropagation through the model's D_r BPR objective (the reference)."""
    theta = ego[rows].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([theta], lr=lr)
    draws = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        negatives = torch.randint(1, model.n_items, (len(users), k), generator=draws)
        current = ego.index_put((rows,), theta)
        user_e, item_e = model.propagate(current)
        u = user_e[users]
        pos = (u * item_e[items]).sum(-1, keepdim=True)
        neg = torch.einsum("md,mkd->mk", u, item_e[negatives])
        norms = current.square().sum(-1)
        n = model.n_users
        reg = norms[users].mean() + norms[n + items].mean() + norms[n + negatives].mean()
        loss = -F.logsigmoid(pos - neg).mean() + model.reg_weight / 2 * reg
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return ego.index_put((rows,), theta.detach())


def test_refit_moves_only_the_forgetting_users():
    """``reset_refit_steps`` refits the forgetting users' rows after the re-solve: every other
    row is the re-solve's, theirs move."""
    exp = tiny_experiment("LightGCN", forget="private")
    joint, refit = _run(exp), _run(exp, reset_refit_steps=5)
    users = torch.as_tensor(exp.request.forget_users)
    changed = (joint.model.ego_embeddings().detach() != refit.model.ego_embeddings().detach()).any(dim=1)
    assert bool(changed[users].all())
    changed[users] = False
    assert not bool(changed.any())
    assert refit.info["refit_steps"] == 5


@pytest.mark.parametrize("model", ["LightGCN", "BPR"])
def test_refit_steps_equal_backpropagation_through_the_users_outputs(model):
    """refit_users takes the Adam steps of backpropagation through the documented objective:
    the forgetting users' own BPR terms (k fresh negatives, their mean) with the item outputs
    fixed and each user's output moving with its ego row by ∂U_u/∂e⁰_u (from autograd here),
    plus reg_weight/2 · (their pair counts / their pairs) · ‖e⁰_u‖²."""
    exp = tiny_experiment(model, forget="private")
    m = copy.deepcopy(exp.original)
    m.set_train_data(exp.remaining)
    users, items = pairs(exp.remaining)
    f_users = torch.as_tensor(exp.request.forget_users)
    ego = m.ego_embeddings().detach()
    ours, taken = refit_users(m, ego, f_users, users, items, steps=4, lr=0.01, negatives=3, seed=5)
    assert taken == 4

    user_out, item_out = m.propagate(ego)
    weight = []
    for u in f_users.tolist():  # d U_u[0] / d e⁰_u[0], by backpropagation
        x = ego.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(m.propagate(x)[0][u, 0], x)
        weight.append(g[u, 0])
    weight = torch.stack(weight).unsqueeze(1)
    own = torch.isin(users, f_users)
    pu, pi = users[own], items[own]
    local = torch.searchsorted(f_users.sort().values, pu)
    order = f_users.argsort()
    theta0 = ego[f_users].clone()
    theta = theta0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([theta], lr=0.01)
    draws = torch.Generator().manual_seed(5)
    counts = torch.bincount(pu, minlength=m.n_users)[f_users].float()
    for _ in range(4):
        negatives = torch.randint(1, m.n_items, (len(pu), 3), generator=draws)
        z = (user_out[f_users] + weight * (theta - theta0))[order[local]]  # [m_F, d], the pairs' users
        margin = (z.unsqueeze(1) * (item_out[pi].unsqueeze(1) - item_out[negatives])).sum(-1)
        loss = -F.logsigmoid(margin).mean() + m.reg_weight / 2 * (counts / len(pu) * theta.square().sum(-1)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    reference = ego.index_put((f_users,), theta.detach())
    assert not torch.allclose(ours[f_users], ego[f_users])
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-6)


def test_a_refit_until_a_loss_stops_at_the_first_step_that_reaches_it():
    """With ``until``, refit_users returns the steps it took: none when the users already fit
    their pairs that well, every step (the rows of a refit without ``until``) when they never
    do, and otherwise the first k steps of the same refit, where the users' mean BPR loss
    −log σ(ŷ_ui − ŷ_uj) (the refit's outputs: item outputs held, a user's moved by c_u Δe⁰_u,
    the next draw of negatives) has reached ``until`` and had not after fewer steps."""
    exp = tiny_experiment("LightGCN", forget="private")
    m = copy.deepcopy(exp.original)
    m.set_train_data(exp.remaining)
    users, items = pairs(exp.remaining)
    f_users = torch.as_tensor(exp.request.forget_users)
    ego = m.ego_embeddings().detach().clone()
    ego[f_users] = torch.randn(len(f_users), ego.shape[1], generator=torch.Generator().manual_seed(0)) * 0.01
    refit = lambda steps, until=None: refit_users(m, ego, f_users, users, items, steps, 0.05, 3, 5, until=until)  # noqa: E731
    same, taken = refit(20, until=1e9)
    assert taken == 0 and torch.equal(same, ego)
    full, taken = refit(20, until=0.0)
    assert taken == 20
    torch.testing.assert_close(full, refit(20)[0])
    own = torch.isin(users, f_users)
    pu, pi = users[own], items[own]
    user_out, item_out = m.propagate(ego)  # a refit holds the item outputs and moves a user's by c_u Δe⁰_u
    weight = m.self_weights(f_users)[:, None]
    draws = torch.Generator().manual_seed(5)
    losses = []
    for k in range(21):  # the loss after k steps, under the (k + 1)-th draw
        drawn = torch.randint(1, m.n_items, (len(pu), 3), generator=draws).view(-1)
        moved = refit(k)[0][f_users] - ego[f_users]
        out = user_out.index_add(0, f_users, weight * moved)
        margin = (out[pu].unsqueeze(1) * (item_out[pi].unsqueeze(1) - item_out[drawn.view(len(pu), 3)])).sum(-1)
        losses.append(float(F.softplus(-margin).mean()))
    assert losses[-1] < losses[0]
    until = (losses[0] + losses[-1]) / 2
    part, taken = refit(20, until=until)
    assert 0 < taken < 20 and losses[taken] <= until < min(losses[:taken])
    torch.testing.assert_close(part, refit(taken)[0])


def test_a_refit_until_a_loss_per_user_stops_each_user_where_its_own_pairs_reach_it():
    """With ``until`` a loss per user, each user's row is the row the same refit gives it after
    the first k_u steps at which the mean loss of its own pairs (computed by hand, as above) has
    reached its own ``until``: a user already there keeps its row, a user never there takes every
    step, and the refit ends once every user has stopped."""
    exp = tiny_experiment("LightGCN", forget="private")
    m = copy.deepcopy(exp.original)
    m.set_train_data(exp.remaining)
    users, items = pairs(exp.remaining)
    f_users = torch.as_tensor(exp.request.forget_users)
    assert len(f_users) >= 3
    ego = m.ego_embeddings().detach().clone()
    ego[f_users] = torch.randn(len(f_users), ego.shape[1], generator=torch.Generator().manual_seed(0)) * 0.01
    refit = lambda steps, until=None: refit_users(m, ego, f_users, users, items, steps, 0.05, 3, 5, until=until)  # noqa: E731
    same, taken = refit(20, until=torch.full((len(f_users),), 1e9))
    assert taken == 0 and torch.equal(same, ego)
    own = torch.isin(users, f_users)
    pu, pi = users[own], items[own]
    user_out, item_out = m.propagate(ego)
    weight = m.self_weights(f_users)[:, None]
    draws = torch.Generator().manual_seed(5)
    rows, losses = [], []  # after k steps: the users' rows [F, d], their losses [F] under the (k + 1)-th draw
    for k in range(21):
        drawn = torch.randint(1, m.n_items, (len(pu), 3), generator=draws).view(-1)
        rows.append(refit(k)[0][f_users])
        out = user_out.index_add(0, f_users, weight * (rows[-1] - ego[f_users]))
        margin = (out[pu].unsqueeze(1) * (item_out[pi].unsqueeze(1) - item_out[drawn.view(len(pu), 3)])).sum(-1)
        per_pair = F.softplus(-margin).mean(1)
        losses.append(torch.stack([per_pair[pu == u].mean() for u in f_users]))
    losses = torch.stack(losses)  # [21, F]
    until = (losses[0] + losses[-1]) / 2
    until[0], until[1] = 1e9, -1.0  # the first user is there from the start, the second never gets there
    ours, taken = refit(20, until=until)
    assert taken == 20
    for f, u in enumerate(f_users):
        reached = torch.nonzero(losses[:, f] <= until[f]).flatten()
        k = int(reached[0]) if len(reached) else 20
        torch.testing.assert_close(ours[u], rows[k][f])
    assert torch.equal(ours[f_users[0]], ego[f_users[0]]) and not torch.equal(ours[f_users[1]], ego[f_users[1]])
    until[1] = 1e9  # with every user stopping, the refit ends at the last one's step
    first = [int(torch.nonzero(losses[:, f] <= until[f]).flatten()[0]) if bool((losses[:, f] <= until[f]).any())
             else 20 for f in range(len(f_users))]
    assert max(first) > 0
    assert refit(20, until=until)[1] == max(first)


@pytest.mark.parametrize("dense", [True, False])
def test_sampled_bpr_gradient_equals_backpropagation(dense):
    """SampledBPR's gradient, through the score matrix or through sparse products, is the
    gradient of (1/mk) Σ −log σ(e_uᵀ(e_i − e_j)) over the pairs and the drawn negatives
    (pair-major; on 40 items some repeat within a user's row), and a second draw reuses the
    score buffer without carrying the first one over; ``to_items=False`` gives the users' part
    alone."""
    gen = torch.Generator().manual_seed(5)
    n_u, n_i, d, m, k = 6, 40, 4, 15, 4
    users, items = torch.randint(1, n_u, (m,), generator=gen), torch.randint(1, n_i, (m,), generator=gen)
    user_e, item_e = torch.randn(n_u, d, generator=gen), torch.randn(n_i, d, generator=gen)
    objective = SampledBPR(users, items, k, n_u, n_i, dense=dense)
    assert objective.dense is dense and len(objective) == m * k
    assert SampledBPR(users, items, 8, n_u, 9, dense=False).dense  # 135 entries do not fit in 6 × 9
    for _ in range(2):
        drawn = torch.randint(1, n_i, (m * k,), generator=gen)
        x = (user_e.clone().requires_grad_(True), item_e.clone().requires_grad_(True))
        u = x[0][users].repeat_interleave(k, 0)
        margin = (u * (x[1][items].repeat_interleave(k, 0) - x[1][drawn])).sum(-1)
        reference = torch.autograd.grad(-F.logsigmoid(margin).mean(), x)
        for ours, ref in zip(objective.gradient(user_e, item_e, drawn), reference):
            torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)
        to_user, none = objective.gradient(user_e, item_e, drawn, to_items=False)
        assert none is None
        torch.testing.assert_close(to_user, reference[0], rtol=1e-5, atol=1e-7)
    tracked = SampledBPR(users, items, k, n_u, n_i, dense=dense, track_loss=True)
    drawn = torch.randint(1, n_i, (m * k,), generator=gen)
    tracked.gradient(user_e, item_e, drawn)
    pair = F.softplus(-(user_e[users].unsqueeze(1) * (item_e[items].unsqueeze(1) - item_e[drawn.view(m, k)])).sum(-1)).mean(1)
    torch.testing.assert_close(tracked.loss, pair.mean())
    present = torch.unique(users)
    torch.testing.assert_close(tracked.user_losses(present), torch.stack([pair[users == u].mean() for u in present]))


@pytest.mark.parametrize("model", ["LightGCN", "BPR"])
def test_closed_form_steps_equal_backpropagation(model):
    """The closed-form gradient takes the steps backpropagation through the objective takes."""
    exp = tiny_experiment(model, forget="private")
    m = copy.deepcopy(exp.original)
    m.set_train_data(exp.remaining)
    users, items = pairs(exp.remaining)
    rows = torch.cat([torch.as_tensor(exp.request.forget_users), m.n_users + torch.unique(torch.as_tensor(exp.request.items))])
    ego = m.ego_embeddings().detach()
    ours = resolve_rows(m, ego, rows, users, items, steps=5, lr=0.01, negatives=3, seed=7)
    reference = _autograd_resolve(m, ego, rows, users, items, steps=5, lr=0.01, k=3, seed=7)
    assert not torch.allclose(ours[rows], ego[rows])
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("scenario", ["private", "noise"])
def test_closes_most_of_the_forgotten_pairs_score_gap_to_a_retrain(scenario):
    """On a small graph, RowReset removes at least 80% of the gap between Θ_a's and an exact
    retrain's mean predicted probability of the forgotten pairs."""
    exp = tiny_experiment("LightGCN", forget=scenario)
    assert score_gap_closed(exp, _run(exp).model) >= 0.8
