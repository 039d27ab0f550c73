"""The model protocol (recbole_unlearn.model.protocol), checked on every plugin model: each
form of a model's objective agrees with the others and with RecBole's ``calculate_loss``."""
from __future__ import annotations

import pytest
import torch
from recbole.data.interaction import Interaction

from conftest import tiny_experiment
from recbole_unlearn.data.remaining import pairs, train_loader
from recbole_unlearn.model import MODELS
from recbole_unlearn.model.protocol import UnlearnableModel, offers, require
from recbole_unlearn.errors import UnlearnInputError

NAMES = [cls.__name__ for cls in MODELS.values()]


def _model(name):
    exp = tiny_experiment(name, forget="private")
    model = exp.original.eval()  # no dropout: every form is deterministic
    model.set_train_data(exp.remaining)
    return exp, model


def _negatives(model, users):
    if model.negatives_per_pair == 0:
        return None
    return torch.randint(1, model.n_items, (len(users),), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", NAMES)
def test_every_model_speaks_the_protocol(name):
    assert issubclass(MODELS[name.lower()], UnlearnableModel)
    exp, model = _model(name)
    U, I = model.outputs()
    users, items = pairs(exp.remaining)
    with torch.no_grad():
        expected = model.predict(Interaction({model.USER_ID: users, model.ITEM_ID: items}))
        assert torch.allclose((U[users] * I[items]).sum(-1), expected, atol=1e-5)  # ŷ = U·I
        assert torch.allclose(model.predict_proba(users, items), model.proba(expected), atol=1e-6)
    assert model.ego_embeddings().shape == (model.n_users + model.n_items, U.shape[1])
    assert set(model.trained_pair_keys().tolist()) == set((users * model.n_items + items).tolist())


@pytest.mark.parametrize("name", NAMES)
def test_training_loss_with_the_own_embeddings_is_calculate_loss(name):
    exp, model = _model(name)
    batch = next(iter(train_loader(exp.config, exp.remaining)))
    ego = model.ego_embeddings()
    with torch.no_grad():
        ours = model.training_loss(batch, ego=ego, outputs=model.outputs(ego))
        assert torch.allclose(ours, model.calculate_loss(batch), rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_row_objective_has_the_gradient_of_the_objective(name):
    """``row_objective`` (which a model may write from the rows' own terms) differs from the
    full objective by a constant: the same gradient with respect to those rows."""
    exp, model = _model(name)
    users, items = pairs(exp.remaining)
    negatives = _negatives(model, users)
    full = model.objective_fn(users, items, negatives)
    for side, n in (("user", model.n_users), ("item", model.n_items)):
        rows = torch.arange(1, n)
        theta = model.embedding_tables()[0 if side == "user" else 1].detach()[rows].clone().requires_grad_(True)
        g_rows = torch.autograd.grad(model.row_objective(users, items, negatives, side, rows)(theta), theta)[0]
        ego = model.ego_embeddings().detach().clone().requires_grad_(True)
        g_full = torch.autograd.grad(full(ego), ego)[0][rows if side == "user" else rows + model.n_users]
        assert torch.allclose(g_rows, g_full, rtol=1e-3, atol=1e-5)


def test_enmf_objective_is_the_loss_over_all_users_in_both_forms():
    """Without dropout ENMF's objective on D_r is ``calculate_loss`` of one batch of every user,
    and the dense (score-matrix) and per-pair forms agree in value, gradient and curvature."""
    exp, model = _model("ENMF")
    users, items = pairs(exp.remaining)
    ego = model.ego_embeddings().detach().clone().requires_grad_(True)
    rho, model.dropout_prob = model.dropout_prob, 0.0
    every_user = Interaction({model.USER_ID: torch.arange(model.n_users)})
    with torch.no_grad():
        assert torch.allclose(model.objective_fn(users, items)(ego), model.calculate_loss(every_user), rtol=1e-5)
    model.dropout_prob = rho
    v = torch.randn(ego.shape, generator=torch.Generator().manual_seed(2))
    grads = []
    for dense in (True, False):
        g = torch.autograd.grad(model.objective_fn(users, items, dense=dense)(ego), ego, create_graph=True)[0]
        grads.append((g.detach(), torch.autograd.grad(g, ego, v)[0]))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-4)
    assert torch.allclose(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-3)


def test_capabilities_are_asked_for_not_types():
    assert offers(_model("ENMF")[1], "exact_blocks")
    assert not offers(_model("LightGCN")[1], "exact_blocks")
    with pytest.raises(UnlearnInputError, match="needs a model that implements recbole_unlearn's model protocol"):
        require(torch.nn.Linear(2, 2), "IFRU")


def test_the_symmetric_sparse_product_has_torch_sparse_mm_values_gradients_and_curvature():
    """LightGCN propagates with ``symmetric_spmm``: same product, gradient and Hessian-vector
    product as ``torch.sparse.mm`` on the normalised adjacency."""
    import numpy as np

    from recbole_unlearn.numerics import normalized_adjacency, symmetric_spmm

    rng = np.random.default_rng(0)
    adj = normalized_adjacency(rng.integers(0, 7, 40), rng.integers(0, 9, 40), 7, 9).double()
    x0, v = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)

    def grad_and_hvp(product):
        x = x0.clone().requires_grad_(True)
        loss = torch.sigmoid(product(adj, product(adj, x))).pow(2).sum()  # a non-quadratic objective
        (g,) = torch.autograd.grad(loss, x, create_graph=True)
        (hv,) = torch.autograd.grad(g, x, grad_outputs=v)
        return product(adj, x0), g.detach(), hv

    ours, theirs = grad_and_hvp(symmetric_spmm), grad_and_hvp(torch.sparse.mm)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("unit", [False, True], ids=["signed weights", "unit weights"])
@pytest.mark.parametrize("shape", ["few pairs per vector", "many pairs per vector", "skewed", "empty"])
def test_block_sums_take_any_path_to_the_same_sums(shape, unit):
    """``block_sums`` sums per target in one padded batch, in padded batches per pair-count
    group, or added in place to existing sums (``BlockSums.add_pairs``); all equal a plain loop
    over the pairs (±1 weights included)."""
    from recbole_unlearn.numerics import BlockSums, _bucketed_sums, _padded_sums, block_sums

    g = torch.Generator().manual_seed(3)
    n_rows, n_cols, d = 30, 50, 4
    m = {"few pairs per vector": 40, "many pairs per vector": 900, "skewed": 60, "empty": 0}[shape]
    rows, cols = torch.randint(0, n_rows, (m,), generator=g), torch.randint(0, n_cols, (m,), generator=g)
    if shape == "skewed":
        rows[:40] = 3
    vectors = torch.randn(n_cols, d, generator=g, dtype=torch.float64)
    weights = torch.ones(m, dtype=torch.float64) if unit else torch.where(torch.rand(m, generator=g) < 0.3, -1.0, 1.0).double()
    targets = torch.tensor([3, 7, 1, 12])
    got = block_sums(rows, cols, targets, vectors, weights)
    for j, t in enumerate(targets.tolist()):
        sel = rows == t
        v, w = vectors[cols[sel]], weights[sel]
        torch.testing.assert_close(got.outer[j], (v * w[:, None]).T @ v)
        torch.testing.assert_close(got.square[j], (v * v * w[:, None]).sum(0))
        torch.testing.assert_close(got.linear[j], (v * w[:, None]).sum(0))
    position = torch.full((n_rows,), -1)
    position[targets] = torch.arange(len(targets))
    keep = position[rows] >= 0
    pos, c, w = position[rows][keep], cols[keep], weights[keep]
    counts = torch.bincount(pos, minlength=len(targets))
    padded = _padded_sums(pos, vectors[c], w, counts, int(counts.max()) if len(pos) else 0)
    bucketed = _bucketed_sums(pos, c, w, vectors, len(targets), budget=8)  # several batches per group
    base = BlockSums(torch.randn(len(targets), d, d, generator=g, dtype=torch.float64),
                     torch.randn(len(targets), d, generator=g, dtype=torch.float64),
                     torch.randn(len(targets), d, generator=g, dtype=torch.float64))
    added = BlockSums(base.outer.clone(), base.square.clone(), base.linear.clone())
    added.add_pairs(pos, c, w, vectors)
    added = BlockSums(added.outer - base.outer, added.square - base.square, added.linear - base.linear)
    for other in (bucketed, added):
        for a, b in ((padded.outer, other.outer), (padded.square, other.square), (padded.linear, other.linear)):
            torch.testing.assert_close(a, b)


def test_take_gathers_what_boolean_indexing_selects():
    from recbole_unlearn.numerics import take, true_index

    g = torch.Generator().manual_seed(5)
    mask = torch.rand(1000, generator=g) < 0.3
    ints, floats = torch.randint(0, 50, (1000,), generator=g), torch.randn(1000, 3, generator=g)
    a, b = take(mask, ints, floats)
    assert torch.equal(a, ints[mask]) and torch.equal(b, floats[mask])
    assert torch.equal(true_index(mask), torch.nonzero(mask).squeeze(1))
    assert len(take(torch.zeros(4, dtype=torch.bool), ints[:4])[0]) == 0


def test_spd_solve_solves_by_cholesky_and_by_lu_where_cholesky_fails():
    """A batch with a positive definite system and an indefinite one: the first by Cholesky,
    the second by the LU fallback; both equal torch.linalg.solve."""
    from recbole_unlearn.model.enmf_blocks import spd_solve

    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 10, 5, generator=g, dtype=torch.float64)
    A = x.mT @ x + torch.eye(5, dtype=torch.float64)
    A[1] -= 2 * torch.linalg.eigvalsh(A[1]).max() * torch.eye(5, dtype=torch.float64)  # negative definite
    b = torch.randn(2, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(spd_solve(A, b), torch.linalg.solve(A, b))


def test_enmf_history_without_a_request_is_the_history_of_the_remaining_data():
    from recbole_unlearn.data.remaining import remaining_dataset
    from recbole_unlearn.model.enmf import PairHistory

    exp = tiny_experiment("ENMF", forget="private")
    remaining = remaining_dataset(exp.train, exp.request)
    model = exp.original
    users, items = torch.as_tensor(exp.request.users), torch.as_tensor(exp.request.items)
    fast, rebuilt = model.history.without(users, items), PairHistory.of(remaining, model.n_users)
    for name in ("items", "starts", "lens"):
        assert torch.equal(getattr(fast, name), getattr(rebuilt, name)), name
    model.drop_pairs(remaining, users, items)
    assert torch.equal(model.history.items, rebuilt.items)
    assert not torch.isin(model.trained_pair_keys(), users * model.n_items + items).any()


@pytest.mark.parametrize("layers", [0, 1, 2, 3, 4])
def test_lightgcn_self_weights_in_closed_form_are_the_propagations(layers):
    """LightGCN's closed-form self-weights Σ_l (L^l)_vv / (L + 1) equal the generic ones read
    off propagations of indicator columns (which it falls back to past 3 layers), on its own
    graph and on another one."""
    from conftest import make_config
    from recbole_unlearn.model.protocol import UnlearnableModel

    exp = tiny_experiment("LightGCN", forget="private")
    config = make_config("LightGCN", forget="private", n_layers=layers)
    model = config.model_class(config, exp.train)
    nodes = torch.arange(model.n_users + model.n_items)
    for graph in (None, _model("LightGCN")[1].graph()):
        closed = model.self_weights(nodes, graph)
        generic = UnlearnableModel.self_weights(model, nodes, graph, chunk=16)
        torch.testing.assert_close(closed, generic, rtol=1e-5, atol=1e-6)
        assert float(closed.min()) >= 1 / (layers + 1) - 1e-6
