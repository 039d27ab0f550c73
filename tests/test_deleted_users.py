"""Whole-user deletion: what the model keeps of a deleted user, and how the table says so."""
from __future__ import annotations

import torch

from conftest import tiny_experiment
from recbole_unlearn.config import config_with
from recbole_unlearn.data.remaining import pairs
from recbole_unlearn.quick_start import run_unlearner
from recbole_unlearn.registry import get_unlearner
from recbole_unlearn.report import evaluate_row, format_table, make_eval_setup


def test_every_method_leaves_a_deleted_user_the_row_retrain_has():
    """A deleted user's output is its ego row over the layer count (no edge is left); after
    WarmStart's fine-tune (which never touches that row), RowReset's re-solve and IFRU's
    influence step alike it is Retrain's own (untrained) row, not Θ_a's."""
    exp = tiny_experiment("LightGCN", forget="users", forget_fraction=0.1)
    deleted = torch.as_tensor(exp.request.whole_users)
    assert len(deleted) and not torch.isin(pairs(exp.remaining)[0], deleted).any()
    rows = {}
    for name in ("rowreset", "retrain", "warmstart", "ifru"):
        model = run_unlearner(exp, get_unlearner(name)).model
        rows[name] = model.ego_embeddings().detach()[deleted]
        assert torch.allclose(model.propagate()[0].detach()[deleted], rows[name] / (model.n_layers + 1))
    for name in ("rowreset", "warmstart", "ifru"):
        assert torch.equal(rows[name], rows["retrain"]), name
    assert not torch.equal(rows["warmstart"], exp.original.ego_embeddings().detach()[deleted])


def test_the_table_counts_the_deleted_users_and_keeps_their_figures():
    exp = tiny_experiment("LightGCN", forget="users", forget_fraction=0.1)
    setup = make_eval_setup(exp.config, exp.remaining, exp.valid, exp.test_r, exp.request)
    assert setup.deleted_users == len(exp.request.forget_users) > 0
    row = evaluate_row(exp.original, setup)
    assert row["forget_users_deleted"] == setup.deleted_users
    assert ("test_forget_users" in row) == (setup.test_forget is not None)
    table = format_table({"rows": {"Original": {**row, "train_time_s": 1.0}}})
    assert f"note: {setup.deleted_users} forgetting users have no training data left" in table


def test_a_partial_request_deletes_no_user():
    exp = tiny_experiment("LightGCN", forget="private")
    setup = make_eval_setup(exp.config, exp.remaining, exp.valid, exp.test_r, exp.request)
    row = evaluate_row(exp.original, setup)
    assert setup.deleted_users == 0 and "forget_users_deleted" not in row
    assert "no training data left" not in format_table({"rows": {"Original": {**row, "train_time_s": 1.0}}})


def test_enmf_retrain_shrinks_a_deleted_user_to_the_zero_row_every_method_leaves():
    """ENMF's whole-data term keeps every user in its batches: with no positives left a user's
    row is pulled to the minimiser of c θᵀGθ + λ‖θ‖², 0, and the methods set it there."""
    exp = tiny_experiment("ENMF", forget="users")
    deleted = torch.as_tensor(exp.request.whole_users)
    norms = [run_unlearner(exp, get_unlearner("retrain"), config_with(exp.config, epochs=e, stopping_step=100))
             .model.ego_embeddings().detach()[deleted].norm(dim=1) for e in (2, 40)]
    assert (norms[1] < 0.1 * norms[0]).all(), norms
    for name in ("alteraser", "warmstart", "ifru"):
        outcome = run_unlearner(exp, get_unlearner(name))
        assert not outcome.model.ego_embeddings().detach()[deleted].any(), name
        assert outcome.info["users_reset"] == len(deleted)
