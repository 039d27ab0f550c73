"""AltEraser: the contract for each inner optimiser, plus its optimisation properties."""
from __future__ import annotations

import pytest
import torch

from conftest import make_config, tiny_experiment
from recbole_unlearn.config import config_with
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.quick_start import run_unlearner
from recbole_unlearn.unlearner._alteraser_blocks import BlockLosses
from recbole_unlearn.unlearner._hf_newton import HFSettings, hf_newton
from recbole_unlearn.unlearner._bpr_rows import BPRRowDerivatives
from recbole_unlearn.data.remaining import pairs as _pairs
from recbole_unlearn.unlearner.alteraser import AltEraser
from recbole_unlearn.unlearner.base import UnlearnTask
from unlearner_contract import UnlearnerContract


class TestAltEraserAHNewton(UnlearnerContract):
    unlearner = "AltEraser"
    models = ("ENMF",)
    config = {"alt_optimizer": "ah_newton"}


class TestAltEraserHFNewton(UnlearnerContract):
    unlearner = "alteraser"
    models = ("ENMF", "LightGCN", "BPR")
    config = {"alt_optimizer": "hf_newton"}


class TestAltEraserAdamW(UnlearnerContract):
    unlearner = "ALTERASER"
    models = ("ENMF",)
    config = {"alt_optimizer": "adamw"}


def _gradient_norms(model, remaining) -> tuple[float, float]:
    """‖∂F_r/∂P‖ and ‖∂F_r/∂Q‖ over every real user / item row."""
    users, items = _pairs(remaining)
    losses = BlockLosses(model, users, items, seed=0)
    norms = []
    for kind in ("user", "item"):
        rows = torch.arange(1, model.n_users if kind == "user" else model.n_items)
        theta = losses.table(kind).data[rows].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(losses.block_loss(kind, rows)(theta), theta)
        norms.append(float(grad.norm()))
    return norms[0], norms[1]


def test_ah_newton_reaches_the_remaining_data_optimum():
    """Enough passes: ∇F_r ≈ 0 at the result, and its predictions match an independent
    minimisation of F_r from a fresh random start (retraining to convergence)."""
    keys = dict(forget="private", alt_max_passes=1000, alt_tol=-1.0, reg_weight=0.1)  # tol < 0: all passes
    exp = tiny_experiment("ENMF", **keys)
    model = run_unlearner(exp, AltEraser).model
    start = exp.original
    start.set_train_data(exp.remaining)
    g0_user, g0_item = _gradient_norms(start, exp.remaining)
    g_user, g_item = _gradient_norms(model, exp.remaining)
    assert g_user < 1e-3 * g0_user and g_item < 1e-3 * g0_item, (g_user, g0_user, g_item, g0_item)

    # Retraining to convergence: the same objective minimised from a random start (h is not a
    # block and stays Θ_a's).  Weighted MF is not convex, so different starts reach different
    # optima of almost equal value: compare the objective and the predictions' correlation.
    torch.manual_seed(1)
    fresh = type(exp.original)(exp.config, exp.remaining)
    fresh.H_i.weight.data.copy_(exp.original.H_i.weight.data)
    task = UnlearnTask(exp.config, fresh, exp.train, exp.request, exp.valid_r)
    scratch = AltEraser(config_with(exp.config, alt_cache=False), fresh).unlearn(task)
    a_obj, b_obj = run_objective(model, exp.remaining), run_objective(scratch.model, exp.remaining)
    assert abs(a_obj - b_obj) <= 0.005 * abs(b_obj), (a_obj, b_obj)
    predict = lambda m: ((m.user_embedding.weight * m.h) @ m.item_embedding.weight.T)[1:, 1:].detach()  # noqa: E731
    corr = torch.corrcoef(torch.stack([predict(model).flatten(), predict(scratch.model).flatten()]))[0, 1]
    assert corr > 0.9, float(corr)


def run_objective(model, remaining) -> float:
    users, items = _pairs(remaining)
    return BlockLosses(model, users, items, seed=0).objective()


def test_hf_newton_and_ah_newton_agree_on_an_enmf_block():
    exp = tiny_experiment("ENMF", forget="private")
    users, items = _pairs(exp.remaining)
    model = exp.original
    model.set_train_data(exp.remaining)
    losses = BlockLosses(model, users, items, seed=0)
    rows = torch.as_tensor(exp.request.forget_users)
    exact = losses.blocks.solve_users(rows)
    approx, stats = hf_newton(losses.block_loss("user", rows), model.user_embedding.weight.data[rows],
                              HFSettings(max_steps=5, cg_iters=200, cg_tol=1e-8, damping=0.0))
    assert stats["steps"] >= 1
    assert torch.allclose(approx, exact, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("optimizer", ["ah_newton", "hf_newton"])
def test_affected_scope_leaves_other_rows_byte_identical(optimizer):
    exp = tiny_experiment("ENMF", forget="private", alt_scope="affected", alt_hops=0, alt_optimizer=optimizer)
    model = run_unlearner(exp, AltEraser).model
    touched_users = torch.as_tensor(exp.request.forget_users)
    touched_items = torch.unique(torch.as_tensor(exp.request.items))
    for table, touched, original in (
        (model.user_embedding.weight, touched_users, exp.original.user_embedding.weight),
        (model.item_embedding.weight, touched_items, exp.original.item_embedding.weight),
    ):
        keep = torch.ones(len(table), dtype=torch.bool)
        keep[touched] = False
        assert torch.equal(table[keep], original[keep])
        assert not torch.equal(table[touched], original[touched])
    assert torch.equal(model.H_i.weight, exp.original.H_i.weight)


def test_cached_item_blocks_give_the_same_erase_pass():
    """Downdating Θ_a's cached item blocks equals building the D_r blocks from scratch."""
    a = run_unlearner(tiny_experiment("ENMF", forget="private", alt_max_passes=0, alt_cache=True), AltEraser)
    b = run_unlearner(tiny_experiment("ENMF", forget="private", alt_max_passes=0, alt_cache=False), AltEraser)
    assert "pretrain_time_s" in a.info and "pretrain_time_s" not in b.info
    assert torch.allclose(a.model.item_embedding.weight, b.model.item_embedding.weight, atol=1e-4)


def test_ah_newton_refuses_lightgcn_with_a_clear_error():
    config = make_config("LightGCN", alt_optimizer="ah_newton")
    exp = tiny_experiment("LightGCN", forget="private")
    with pytest.raises(UnlearnInputError, match="hf_newton"):
        AltEraser(config, exp.original)


@pytest.mark.parametrize("model_name", ["LightGCN", "BPR"])
@pytest.mark.parametrize("kind", ["user", "item"])
def test_closed_form_block_derivatives_equal_double_backprop(model_name, kind):
    """hf_newton on a BPR model uses BPRRowDerivatives: the same loss, gradient and
    Hessian-vector products as double backpropagation through ``row_objective``."""
    from recbole_unlearn.unlearner._hf_newton import autograd_derivatives

    exp = tiny_experiment(model_name, forget="private")
    model = exp.original
    users, items = _pairs(exp.remaining)
    model.set_train_data(exp.remaining)
    losses = BlockLosses(model, users, items, seed=7)
    rows = torch.unique(torch.as_tensor(exp.request.users if kind == "user" else exp.request.items))
    closed, loss_fn = losses.block_derivatives(kind, rows), losses.block_loss(kind, rows)
    theta = losses.table(kind).data[rows] + 0.01 * torch.randn(len(rows), model.user_embedding.weight.shape[1])
    v = torch.randn_like(theta)
    (g1, hvp1), (g2, hvp2) = closed(theta), autograd_derivatives(loss_fn)(theta)
    torch.testing.assert_close(closed.loss(theta), loss_fn(theta).detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(hvp1(v), hvp2(v), rtol=1e-4, atol=1e-6)


def test_hf_newton_takes_the_same_steps_with_closed_form_derivatives():
    exp = tiny_experiment("LightGCN", forget="private")
    model = exp.original
    users, items = _pairs(exp.remaining)
    model.set_train_data(exp.remaining)
    losses = BlockLosses(model, users, items, seed=7)
    rows = torch.unique(torch.as_tensor(exp.request.users))
    settings = HFSettings(max_steps=3, cg_iters=20, cg_tol=1e-4, damping=1e-3)
    closed = losses.block_derivatives("user", rows)
    a, stats_a = hf_newton(closed.loss, losses.table("user").data[rows], settings, closed)
    b, stats_b = hf_newton(losses.block_loss("user", rows), losses.table("user").data[rows], settings)
    assert stats_a == stats_b
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_hf_closed_form_off_takes_the_same_erase_pass_by_double_backprop():
    """hf_closed_form=false (the derivatives by double backpropagation) gives the same Θ_u as
    the closed forms, within float tolerance, on LightGCN."""
    exp = tiny_experiment("LightGCN", forget="private")
    ours, autograd = (run_unlearner(exp, AltEraser, make_config("LightGCN", forget="private", hf_closed_form=flag))
                      for flag in (True, False))
    before = exp.original.ego_embeddings().detach()
    a, b = ours.model.ego_embeddings().detach(), autograd.model.ego_embeddings().detach()
    assert not torch.allclose(a, before)
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def _assert_same_derivatives(reference, other, losses, kind: str, rows) -> None:
    """Two BPRRowDerivatives of the same block give the same gradient and Hessian-vector products."""
    theta = losses.table(kind).data[rows] + 0.01 * torch.randn(len(rows), losses.table(kind).shape[1])
    (g1, hvp1), (g2, hvp2) = reference(theta), other(theta)
    torch.testing.assert_close(g2, g1, rtol=1e-5, atol=1e-7)
    for _ in range(3):
        v = torch.randn_like(theta)
        torch.testing.assert_close(hvp2(v), hvp1(v), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["user", "item"])
def test_block_products_through_dense_columns_equal_the_propagations(monkeypatch, kind):
    """A small block's products through M[:, rows] equal those through the sparse propagation."""
    exp = tiny_experiment("LightGCN", forget="private")
    model = exp.original
    users, items = _pairs(exp.remaining)
    model.set_train_data(exp.remaining)
    losses = BlockLosses(model, users, items, seed=7)
    rows = torch.unique(torch.as_tensor(exp.request.users if kind == "user" else exp.request.items))
    index = rows if kind == "user" else rows + model.n_users
    dense = BPRRowDerivatives(model, users, items, losses.negatives, index, subgraph=False)
    monkeypatch.setattr("recbole_unlearn.unlearner._bpr_rows.COLUMNS_MAX", 0)
    sparse = BPRRowDerivatives(model, users, items, losses.negatives, index, subgraph=False)
    assert dense.columns is not None and sparse.columns is None
    _assert_same_derivatives(sparse, dense, losses, kind, rows)


@pytest.mark.parametrize("kind", ["user", "item"])
def test_subgraph_hessian_vector_products_equal_the_whole_graphs(kind):
    """LightGCN's block HVPs on the rows' k-hop subgraph (the induced graph and the triples that
    touch it) equal those over the whole graph, and the subgraph is smaller than the graph."""
    exp = tiny_experiment("LightGCN", forget="private")
    model = exp.original
    users, items = _pairs(exp.remaining)
    model.set_train_data(exp.remaining)
    losses = BlockLosses(model, users, items, seed=7)
    side = users if kind == "user" else items
    rows = torch.unique(torch.as_tensor(exp.request.users if kind == "user" else exp.request.items))
    rows = rows[torch.bincount(side, minlength=int(rows.max()) + 1)[rows].argsort()[:1]]  # the least connected
    index = rows if kind == "user" else rows + model.n_users
    whole = BPRRowDerivatives(model, users, items, losses.negatives, index, subgraph=False)
    sub = BPRRowDerivatives(model, users, items, losses.negatives, index, subgraph=True)
    assert sub.sub is not None and whole.sub is None
    assert sub.sub.size < model.n_users + model.n_items and len(sub.sub_triples) < len(whole.triples)
    _assert_same_derivatives(whole, sub, losses, kind, rows)
