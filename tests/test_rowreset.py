"""RowReset: the contract, the rows it touches, and the score gap it closes against a retrain."""
from __future__ import annotations

import pytest
import torch

from conftest import make_config, tiny_experiment
from recbole_unlearn.quick_start import run_unlearner
from recbole_unlearn.unlearner.retrain import Retrain
from recbole_unlearn.unlearner.rowreset import RowReset
from unlearner_contract import UnlearnerContract, forgotten_probs


class TestRowReset(UnlearnerContract):
    unlearner = "RowReset"


def _run(exp, **keys):
    return run_unlearner(exp, RowReset, make_config(exp.config["model"], forget=exp.config["forget"], **keys))


def test_only_the_request_rows_move():
    """Every ego row outside the forgetting users and the request's items keeps Θ_a's value."""
    exp = tiny_experiment("LightGCN", forget="private")
    out = _run(exp)
    n_users = exp.original.n_users
    touched = torch.zeros(n_users + exp.original.n_items, dtype=torch.bool)
    touched[torch.as_tensor(exp.request.forget_users)] = True
    touched[n_users + torch.as_tensor(exp.request.items)] = True
    before, after = exp.original.ego_embeddings().detach(), out.model.ego_embeddings().detach()
    assert torch.equal(before[~touched], after[~touched])
    assert not torch.allclose(before[touched], after[touched])
    assert out.info["rows_reset"] == int(touched.sum())


@pytest.mark.parametrize("model", ["LightGCN", "BPR"])
def test_scores_dense_and_per_pair_give_the_same_rows(model, monkeypatch):
    """The score-matrix path and the per-pair path compute one loss: the same re-solved rows."""
    import recbole_unlearn.unlearner.rowreset as rowreset

    exp = tiny_experiment(model, forget="private")
    dense = _run(exp, reset_steps=5).model.ego_embeddings().detach()
    monkeypatch.setattr(rowreset, "DENSE_SCORES", 0)
    per_pair = _run(exp, reset_steps=5).model.ego_embeddings().detach()
    torch.testing.assert_close(dense, per_pair, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scenario", ["private", "noise"])
def test_closes_most_of_the_forgotten_pairs_score_gap_to_a_retrain(scenario):
    """On a small graph, RowReset removes at least 80% of the gap between Θ_a's and an exact
    retrain's mean predicted probability of the forgotten pairs."""
    exp = tiny_experiment("LightGCN", forget=scenario)
    retrain = run_unlearner(exp, Retrain)
    unlearned = _run(exp)
    original, gold, ours = (float(forgotten_probs(m, exp.request).mean())
                            for m in (exp.original, retrain.model, unlearned.model))
    assert original - gold > 0.05  # Θ_a remembers the pairs
    assert (original - ours) / (original - gold) >= 0.8, (original, gold, ours)
