"""IFRU: the contract, the CG solver, the influence step on convex blocks, pruning and spillover."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction

from conftest import tiny_experiment
from recbole_unlearn.config import config_with
from recbole_unlearn.data.remaining import dataset_keys
from recbole_unlearn.model.lightgcn import LightGCN, normalized_adjacency
from recbole_unlearn.quick_start import run_unlearner
from recbole_unlearn.unlearner import get_unlearner
from recbole_unlearn.numerics import autograd_gradient_and_hvp, conjugate_gradient
from recbole_unlearn.unlearner._bpr_triples import BPRTriples
from recbole_unlearn.unlearner._influence import importance_scores, keep_by_quantile, spillover_mask
from recbole_unlearn.unlearner.ifru import _BPRTerms, _ObjectiveTerms, influence_step
from unlearner_contract import UnlearnerContract


def _ids(ds):
    return ds.inter_feat[ds.uid_field].numpy(), ds.inter_feat[ds.iid_field].numpy()


def _lightgcn_terms(exp, model, rows, k=1):
    """IFRU's LightGCN terms without spillover (D_f and D_r triples only)."""
    ids_r = _ids(exp.remaining)
    adj_a = normalized_adjacency(*_ids(exp.train), model.n_users, model.n_items)
    return _BPRTerms(
        model, torch.as_tensor(rows), adj_a, ids_r, (exp.request.users, exp.request.items),
        np.zeros(len(ids_r[0]), dtype=bool), np.sort(dataset_keys(exp.train)), k, np.random.default_rng(0),
    )


def lightgcn_losses(terms, theta):
    """Reference of IFRU's LightGCN objective for autograd, from LightGCN.propagate (COO graph):
    (Σ_{D_f} ℓ(G) + Σ_{D_ch} [ℓ(G) − ℓ(G')],  Σ_{D_r} ℓ(G')), up to constants in θ_S."""
    ego = terms.ego(theta)
    out_g, out_r = terms.model.propagate(ego, terms.adj_a), terms.model.propagate(ego)

    def total(out, t, mask=None):
        m = (out[0][t.u] * (out[1][t.i] - out[1][t.j])).sum(-1)
        terms_t = t.w * -torch.nn.functional.logsigmoid(m)
        return (terms_t if mask is None else terms_t[mask]).sum()

    sq = theta.square().sum(-1) / 2
    spill = terms.spill < 0
    influence = total(out_g, terms.on_g) - total(out_r, terms.on_r, spill) + (terms.reg_f * sq).sum()
    return influence, total(out_r, terms.on_r) + (terms.reg_r * sq).sum()


def _remaining(terms):
    return lambda theta: lightgcn_losses(terms, theta)[1]


class TestIFRU(UnlearnerContract):
    unlearner = "IFRU"
    #: the tiny data's losses have other curvature scales than ml-100k's (defaults tuned there)
    config = {"ifru_damping": 0.3}

    def test_graph_is_remaining_graph_and_cache_cleared(self):
        exp = tiny_experiment("LightGCN", forget="private")
        with torch.no_grad():
            exp.original.full_sort_predict(Interaction({"user_id": torch.arange(3)}))  # fills Θ_a's cache
        assert exp.original.restore_user_e is not None
        out = run_unlearner(exp, get_unlearner("ifru"))
        u, i = _ids(out.remaining)
        expected = normalized_adjacency(u, i, exp.original.n_users, exp.original.n_items)
        assert torch.equal(out.model.norm_adj.indices(), expected.indices())
        assert torch.allclose(out.model.norm_adj.values(), expected.values())
        assert out.model.restore_user_e is None and out.model.restore_item_e is None

    def test_only_the_pruned_rows_change(self, model_name):
        """Exactly the rows chosen by score > 40th percentile (1 hop) move; pruning off moves them all."""
        exp = tiny_experiment(model_name, forget="private")
        m = exp.original
        u, i = _ids(exp.train)
        scores = importance_scores(u, i, exp.request.users, exp.request.items, m.n_users, m.n_items, 1)
        expected = keep_by_quantile(scores, 0.4)
        assert 0 < len(expected) < m.n_users + m.n_items - 2

        def moved(model):
            before = torch.cat([m.user_embedding.weight, m.item_embedding.weight])
            after = torch.cat([model.user_embedding.weight, model.item_embedding.weight])
            return np.flatnonzero((after != before).any(dim=1).numpy())

        out = run_unlearner(exp, get_unlearner("ifru"))
        assert np.array_equal(moved(out.model), expected)
        assert out.info["rows_kept"] == len(expected)
        config = config_with(exp.config, ifru_pruning=False)
        full = run_unlearner(exp, get_unlearner("ifru"), config)
        assert full.info["rows_kept"] == m.n_users + m.n_items - 2  # all but the padding rows
        assert len(moved(full.model)) > len(expected)

    def test_spillover_off_drops_the_graph_term(self):
        exp = tiny_experiment("LightGCN", forget="private")
        on = run_unlearner(exp, get_unlearner("ifru"))
        off = run_unlearner(exp, get_unlearner("ifru"), config_with(exp.config, ifru_spillover=False))
        u, i = _ids(exp.remaining)
        m = exp.original
        expected = spillover_mask(u, i, exp.request.users, exp.request.items, m.n_users, m.n_items, 0.01)
        assert on.info["spillover_pairs"] == int(expected.sum()) > 0
        assert off.info["spillover_pairs"] == 0
        assert not torch.equal(on.model.user_embedding.weight, off.model.user_embedding.weight)


def _lightgcn_spill_terms(exp, rows, k=2):
    model = exp.original
    model.set_train_data(exp.remaining)
    u, i = _ids(exp.remaining)
    spill = spillover_mask(u, i, exp.request.users, exp.request.items, model.n_users, model.n_items, 0.01)
    adj_a = normalized_adjacency(*_ids(exp.train), model.n_users, model.n_items)
    return _BPRTerms(model, torch.as_tensor(rows), adj_a, (u, i), (exp.request.users, exp.request.items),
                          spill, np.sort(dataset_keys(exp.train)), k, np.random.default_rng(0)), spill


def test_lightgcn_terms_are_the_model_loss():
    """IFRU's LightGCN objective has the gradients of LightGCN.bpr_terms (Σ_{D_r} on G', and
    Σ_{D_f}/k + Σ_{D_ch}(G) − Σ_{D_ch}(G') for g), and its closed-form g and Hessian-vector
    products equal double backprop through the graph propagation."""
    exp = tiny_experiment("LightGCN", forget="private")
    model = exp.original
    rows = np.arange(1, model.n_users + model.n_items, 3)
    terms, spill = _lightgcn_spill_terms(exp, rows)
    theta = terms.base[rows].clone().requires_grad_(True)
    influence, remaining = lightgcn_losses(terms, theta)
    ego = terms.ego(theta)
    spilled = terms.spill < 0
    nf = len(terms.on_g) - int(spilled.sum())
    g_tr = [t[:nf] for t in (terms.on_g.u, terms.on_g.i, terms.on_g.j)]
    s_tr = [t[spilled] for t in (terms.on_r.u, terms.on_r.i, terms.on_r.j)]
    assert all(torch.equal(a[nf:], b) for a, b in zip((terms.on_g.u, terms.on_g.i, terms.on_g.j), s_tr))
    ref_r = model.bpr_terms(terms.on_r.u, terms.on_r.i, terms.on_r.j, ego=ego).sum()  # every D_r edge
    ref_g = (model.bpr_terms(*g_tr, ego=ego, adj=terms.adj_a).sum() / 2
             + model.bpr_terms(*s_tr, ego=ego, adj=terms.adj_a).sum() - model.bpr_terms(*s_tr, ego=ego).sum())
    for ours, ref in ((remaining, ref_r), (influence, ref_g)):
        a, b = (torch.autograd.grad(x, theta, retain_graph=True)[0] for x in (ours, ref))
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert spill.sum() > 0 and spilled.sum() == spill.sum() and len(terms.on_r) == len(spill)

    g, hvp = terms.gradient_and_hvp(theta.detach())
    g_ref, hvp_ref = autograd_gradient_and_hvp(lambda x: lightgcn_losses(terms, x), theta.detach())
    assert torch.allclose(g, g_ref, rtol=1e-4, atol=1e-5)
    v = torch.randn(theta.shape, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(hvp(v), hvp_ref(v), rtol=1e-4, atol=1e-5)


def test_bpr_triples_closed_forms_match_autograd():
    """BPRTriples' gradient (with and without a mask on the triples) and Hessian-vector
    products, on both paths (per-triple scatters and pair matrices), equal double backprop of Σ_t w_t·(−log σ(e_uᵀ(e_i − e_j))),
    and its loss is that sum."""
    gen = torch.Generator().manual_seed(3)
    n_u, n_i, d, n = 7, 9, 5, 40
    rng = np.random.default_rng(3)
    u, i, j = rng.integers(0, n_u, n), rng.integers(0, n_i, n), rng.integers(0, n_i, n)
    w = rng.uniform(-1, 2, n)
    triples = BPRTriples(u, i, j, w, n_u, n_i)
    user_e, item_e = torch.randn(n_u, d, generator=gen), torch.randn(n_i, d, generator=gen)

    def loss(ue, ie):
        m = (ue[u] * (ie[i] - ie[j])).sum(-1)
        return (torch.as_tensor(w, dtype=torch.float32) * -torch.nn.functional.logsigmoid(m)).sum()

    x = (user_e.clone().requires_grad_(True), item_e.clone().requires_grad_(True))
    grads = torch.autograd.grad(loss(*x), x, create_graph=True)
    wv = (torch.randn(n_u, d, generator=gen), torch.randn(n_i, d, generator=gen))
    ref_hv = torch.autograd.grad(grads, x, wv)
    scale = torch.as_tensor(rng.random(n) < 0.5, dtype=torch.float32)  # a mask on the triples

    def masked_loss(ue, ie):
        m = (ue[u] * (ie[i] - ie[j])).sum(-1)
        return (scale * torch.as_tensor(w, dtype=torch.float32) * -torch.nn.functional.logsigmoid(m)).sum()

    masked = torch.autograd.grad(masked_loss(*x), x)
    for dense in (False, True):
        torch.testing.assert_close(triples.loss(user_e, item_e, dense=dense), loss(user_e, item_e))
        triples.at(user_e, item_e, dense=dense)
        for ours, ref in zip(triples.grad(), grads):
            assert torch.allclose(ours, ref, atol=1e-5)
        for ours, ref in zip(triples.grad(scale), masked):
            assert torch.allclose(ours, ref, atol=1e-5)
        for ours, ref in zip(triples.hvp(*wv), ref_hv):
            assert torch.allclose(ours, ref, atol=1e-4)


# ---- conjugate gradient ---------------------------------------------------------------------
def test_cg_matches_explicit_solve_on_lightgcn_hessian():
    """On a few kept rows of the tiny LightGCN the Hessian is formed explicitly (autograd
    through the propagation): the closed-form products match it and CG equals the solve."""
    exp = tiny_experiment("LightGCN", forget="private")
    rows = np.array([1, 5, 9, exp.original.n_users + 3])
    terms, _ = _lightgcn_spill_terms(exp, rows)
    theta = terms.base[rows].clone()
    n = theta.numel()
    hess = torch.autograd.functional.hessian(_remaining(terms), theta).reshape(n, n)
    damping = max(0.0, -torch.linalg.eigvalsh(hess).min().item()) + 0.5
    g, hvp = terms.gradient_and_hvp(theta)
    v = torch.randn(theta.shape, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(hvp(v).reshape(-1), hess @ v.reshape(-1), rtol=1e-4, atol=1e-5)
    x, iters = conjugate_gradient(hvp, g, damping, tol=1e-7, max_iter=4 * n)
    exact = torch.linalg.solve(hess.double() + damping * torch.eye(n, dtype=torch.float64), g.reshape(-1).double())
    assert torch.allclose(x.reshape(-1).double(), exact, rtol=1e-3, atol=1e-5 * exact.abs().max().item())
    assert 0 < iters <= 4 * n


def test_cg_stopping_rules():
    a = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    b = torch.tensor([1.0, 2.0], dtype=torch.float64)
    x, iters = conjugate_gradient(lambda v: a @ v, b, damping=0.0, tol=1e-12, max_iter=10)
    assert iters == 2 and torch.allclose(x, torch.linalg.solve(a, b))  # exact in n steps
    _, iters = conjugate_gradient(lambda v: a @ v, b, damping=0.0, tol=1e-12, max_iter=1)
    assert iters == 1
    x, iters = conjugate_gradient(lambda v: -a @ v, b, damping=0.0, tol=1e-12, max_iter=10)
    assert iters == 1 and torch.equal(x, torch.zeros(2, dtype=torch.float64))  # negative curvature
    x, _ = conjugate_gradient(lambda v: -a @ v, b, damping=10.0, tol=1e-12, max_iter=10)
    assert torch.allclose(x, torch.linalg.solve(10 * torch.eye(2, dtype=torch.float64) - a, b))
    x, _, product = conjugate_gradient(lambda v: -a @ v, b, damping=10.0, tol=1e-12, max_iter=10, with_product=True)
    assert torch.allclose(product, (10 * torch.eye(2, dtype=torch.float64) - a) @ x)  # from CG's own products
    x, _, product = conjugate_gradient(lambda v: a @ v, b, damping=0.0, tol=1e-12, max_iter=1, with_product=True)
    assert torch.allclose(product, a @ x)  # stopped early: still the product at the iterate returned


# ---- the influence step on convex blocks ----------------------------------------------------
def test_influence_step_is_exact_on_enmf_user_block():
    """With Q and h fixed, ENMF's loss is quadratic in P: from the exact D_a optimum, one
    undamped influence step lands on the exact D_r optimum (closed form per user)."""
    exp = tiny_experiment("ENMF", forget="private")
    model = exp.original.double()
    c, rho, lam = model.negative_weight, model.dropout_prob, model.reg_weight
    h, q = model.h.detach(), model.item_embedding.weight.detach()
    x = q * h  # [n_items, d]
    shared = c * torch.outer(h, h) * (q[1:].T @ q[1:]) + lam * torch.eye(len(h), dtype=h.dtype)

    def optimum(ds):
        users, items = (torch.as_tensor(a) for a in _ids(ds))
        p = torch.zeros(model.n_users, len(h), dtype=h.dtype)
        for u in range(1, model.n_users):
            xi = x[items[users == u]]
            a = shared + (1 - c) * (xi.T @ xi + rho / (1 - rho) * torch.diag(xi.square().sum(0)))
            p[u] = torch.linalg.solve(a, xi.sum(0))
        return p

    p_a, p_r = optimum(exp.train), optimum(exp.remaining)
    with torch.no_grad():
        model.user_embedding.weight.copy_(p_a)
    rows = torch.arange(1, model.n_users)
    terms = _ObjectiveTerms(model, rows, _ids(exp.remaining), (exp.request.users, exp.request.items))
    delta, _ = influence_step(terms, p_a[1:], damping=0.0, tol=1e-12, max_iter=2000)
    assert torch.allclose(p_a[1:] + delta, p_r[1:], atol=1e-8)
    assert (p_a - p_r).norm() > 0.1


def test_influence_step_approaches_retrain_on_bpr_user_block():
    """Ridge-regularised BPR-MF (LightGCN with 0 layers) with the item factor fixed is convex
    in the users: one influence step from the exact D_a optimum removes most of the distance
    to the exact D_r optimum (half of each forgetting user's data goes: a large, non-quadratic
    change, so one Newton step is close but not exact)."""
    exp = tiny_experiment("LightGCN", forget="private")
    model = LightGCN(config_with(exp.config, n_layers=0, reg_weight=0.05), exp.train)
    with torch.no_grad():
        model.item_embedding.weight.copy_(exp.original.item_embedding.weight)
    rows = np.arange(1, model.n_users)
    terms = _lightgcn_terms(exp, model, rows)  # k = 1: D_a loss = D_r loss + forgotten terms

    def minimise(f):
        theta = terms.base[rows].clone().requires_grad_(True)
        opt = torch.optim.LBFGS([theta], lr=1, max_iter=500, tolerance_grad=1e-7,
                                tolerance_change=1e-12, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = f(theta)
            loss.backward()
            return loss

        for _ in range(5):
            opt.step(closure)
        return theta.detach()

    theta_a = minimise(lambda t: sum(lightgcn_losses(terms, t)))
    theta_r = minimise(_remaining(terms))
    delta, _ = influence_step(terms, theta_a, damping=0.0, tol=1e-6, max_iter=2000)
    gap = (theta_a - theta_r).norm()
    assert gap > 0.1
    assert (theta_a + delta - theta_r).norm() < 0.2 * gap


# ---- pruning and spillover on a hand-built graph ------------------------------------------
def test_importance_scores_and_pruning_by_hand():
    # users 0-2, items 0-2 (nodes 3-5); D_a = {(0,0),(0,1),(1,1),(1,2),(2,2)}; forget (0,1).
    users, items = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 2, 2])
    fu, fi = np.array([0]), np.array([1])
    # deg with self-loop: u0 3, u1 3, u2 2, i0 2, i1 3, i2 3; seeds s0(u0) = s0(i1) = 1/3
    s0 = importance_scores(users, items, fu, fi, 3, 3, k_hop=0)
    assert np.allclose(s0, [1 / 3, 0, 0, 0, 1 / 3, 0])
    s1 = importance_scores(users, items, fu, fi, 3, 3, k_hop=1)
    assert np.allclose(s1, [2 / 9, 1 / 9, 0, 1 / 6, 2 / 9, 0])
    assert keep_by_quantile(s1, 0.0).tolist() == [0, 1, 3, 4]  # every reached node
    # 40th percentile of (1/9, 1/6, 2/9, 2/9) is 0.1778: keep u0 and i1
    assert keep_by_quantile(s1, 0.4).tolist() == [0, 4]
    # two hops = the same rule applied again
    adj = np.eye(6)
    for u, i in zip(users, items):
        adj[u, 3 + i] = adj[3 + i, u] = 1
    deg = adj.sum(1)
    s2 = importance_scores(users, items, fu, fi, 3, 3, k_hop=2)
    assert np.allclose(s2, adj @ (adj @ s0 / deg) / deg)


def test_spillover_set_by_hand():
    # D_a: u0 {i0, i1}, u1 {i1, i2}, u2 {i1, i2}, u3 {i1}; forget (0, 1).
    users_a = np.array([0, 0, 1, 2, 3, 1, 2])
    items_a = np.array([0, 1, 1, 1, 1, 2, 2])
    keep = ~((users_a == 0) & (items_a == 1))
    u, i = users_a[keep], items_a[keep]  # D_r: (0,0),(1,1),(2,1),(3,1),(1,2),(2,2)
    fu, fi = np.array([0]), np.array([1])
    # u0 loses 1/2 of its degree, i1 loses 1/4: every D_r edge of u0 or i1 is in D_ch
    assert spillover_mask(u, i, fu, fi, 4, 3, 0.01).tolist() == [True, True, True, True, False, False]
    assert spillover_mask(u, i, fu, fi, 4, 3, 0.3).tolist() == [True, False, False, False, False, False]
    assert not spillover_mask(u, i, fu, fi, 4, 3, 0.5).any()  # a drop must exceed the threshold


@pytest.mark.parametrize("forget", ["private", "noise"])
def test_ifru_through_the_score_matrix_equals_ifru_through_per_triple_scatters(monkeypatch, forget):
    """The pair-matrix path (taken when the score matrix is small) changes no result: the
    unlearned model equals the one every product computed per triple gives."""
    exp = tiny_experiment("LightGCN", forget=forget)
    IFRU = get_unlearner("IFRU")
    fast = run_unlearner(exp, IFRU).model.state_dict()
    real_at = BPRTriples.at
    monkeypatch.setattr(BPRTriples, "at", lambda self, u, i, dense=None: real_at(self, u, i, dense=False))
    scattered = run_unlearner(exp, IFRU).model.state_dict()
    for k, v in scattered.items():
        assert torch.allclose(fast[k], v, rtol=1e-5, atol=1e-6), k
    assert not torch.equal(fast["user_embedding.weight"], exp.original.state_dict()["user_embedding.weight"])
